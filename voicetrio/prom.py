"""Prometheus metrics for ``/metrics``: one registry per server, so several
servers in one process (tests) never share counters.

With several worker processes (``voicetrio.server.workers``) a scrape
reaches whichever worker accepts it, so every worker writes its figures to
files in a directory the supervisor made (prometheus-client's multiprocess
mode, chosen by ``PROMETHEUS_MULTIPROC_DIR`` before the library is
imported) and any worker answers for all of them. Counters and histograms
are summed over every process that ever wrote them, the dead included, so
they never go back when a worker is restarted; gauges are summed over the
live processes only (``livesum``), so a dead worker's sessions drop out.
The box's totals keep the names and labels of a single-process server; the
figures that differ per worker carry a ``worker`` label.

The session side sees only :class:`Observer`, a small interface with a
do-nothing default, so the pipeline does not depend on prometheus-client.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)

#: The variable prometheus-client reads, once, when it is first imported.
SHARED_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


class Observer:
    """What a session reports; the base class ignores everything."""

    def event_code(self, code: str) -> None: ...
    def decode(self, kind: str, seconds: float, audio_s: float) -> None: ...
    def turn(self, outcome: str) -> None: ...
    def reply_latency(self, first_token_s: float | None, first_audio_s: float | None) -> None: ...
    def dropped_partial(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Readings:
    """One worker's live figures, read when the gauges are refreshed."""

    sessions: int
    queue_depth: int
    queue_bytes: int
    capacity: int
    load: float
    ready: bool
    decode_wait_s: float
    llm_wait_s: float


def shared_dir() -> str | None:
    """The directory this process shares its metrics through, when the
    supervisor started it in multiprocess mode; else ``None``."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None  # the variable came too late, or not at all
    return os.environ.get(SHARED_DIR_ENV) or None


def make_shared_dir() -> str:
    """A fresh directory for one supervisor's workers: nothing a previous
    run left (a supervisor killed before it could clean up) is ever read."""
    return tempfile.mkdtemp(prefix="voicetrio-metrics-")


def forget_process(directory: str, pid: int) -> None:
    """A worker has exited: drop its gauges (its counters stay, summed)."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def remove_shared_dir(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class PromObserver(Observer):
    def __init__(self, *, worker: int = 0, shared: str | None = None) -> None:
        """``shared``: the multiprocess directory every worker writes to,
        which :meth:`exposition` then reports in full."""
        self.shared = shared
        self.worker = str(worker)
        self._read: Callable[[], Readings] | None = None
        self.registry = CollectorRegistry()
        r = self.registry
        # Box totals: the sum over live workers.
        self.sessions = Gauge(
            "voicetrio_sessions", "Open sessions, all workers", registry=r, multiprocess_mode="livesum"
        )
        self.sessions_total = Counter(
            "voicetrio_sessions_accepted", "Sessions accepted", registry=r
        )
        self.rejected = Counter(
            "voicetrio_sessions_rejected", "Connections refused", ["reason"], registry=r
        )
        self.turns = Counter("voicetrio_turns", "Assistant turns by outcome", ["outcome"], registry=r)
        self.codes = Counter(
            "voicetrio_errors", "error and info events with a code, by code", ["code"], registry=r
        )
        self.decode_seconds = Histogram(
            "voicetrio_decode_seconds",
            "ASR decode time",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rtf = Histogram(
            "voicetrio_decode_rtf", "ASR real-time factor", ["kind"], buckets=RTF_BUCKETS, registry=r
        )
        self.first_token = Histogram(
            "voicetrio_first_token_seconds",
            "Final transcript to first LLM token sent (t3 - t2)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_audio = Histogram(
            "voicetrio_first_audio_seconds",
            "Final transcript to first speech sent (t4 - t2)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dropped = Counter(
            "voicetrio_dropped_partials", "Stale partial transcripts dropped for slow readers", registry=r
        )
        self.queue_depth = Gauge(
            "voicetrio_outbound_queue_depth",
            "Events waiting for slow clients, all sessions",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_bytes = Gauge(
            "voicetrio_outbound_queue_bytes",
            "Bytes waiting for slow clients, all sessions",
            registry=r,
            multiprocess_mode="livesum",
        )
        # Per worker: each series is written by one live process, so its
        # live sum is that worker's figure.
        w = self.worker
        self.starts = Counter(
            "voicetrio_worker_starts", "Times this worker process started", ["worker"], registry=r
        ).labels(worker=w)
        self.worker_sessions = _worker_gauge("voicetrio_worker_sessions", "Open sessions", r, w)
        self.worker_capacity = _worker_gauge(
            "voicetrio_worker_capacity", "Talkers the worker admits at most", r, w
        )
        self.worker_load = _worker_gauge(
            "voicetrio_worker_load", "The load figure a balancer sees (1 is full)", r, w
        )
        self.worker_ready = _worker_gauge(
            "voicetrio_worker_ready", "1 when the worker takes sessions (engines ready, not draining)", r, w
        )
        waits = Gauge(
            "voicetrio_worker_queue_wait_seconds",
            "How long the oldest urgent job has waited for a shared engine",
            ["worker", "queue"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.decode_wait = waits.labels(worker=w, queue="decode")
        self.llm_wait = waits.labels(worker=w, queue="llm")
        self.starts.inc()

    def watch(self, read: Callable[[], Readings]) -> None:
        """Where the gauges come from; read at each :meth:`refresh`."""
        self._read = read
        self.refresh()

    def refresh(self) -> None:
        """Set the gauges from the live figures. A scrape refreshes this
        worker's; the others' are as fresh as their last refresh (the
        server refreshes on every session opened or closed, and on a timer)."""
        if self._read is None:
            return
        now = self._read()
        self.sessions.set(now.sessions)
        self.queue_depth.set(now.queue_depth)
        self.queue_bytes.set(now.queue_bytes)
        self.worker_sessions.set(now.sessions)
        self.worker_capacity.set(now.capacity)
        self.worker_load.set(now.load)
        self.worker_ready.set(1 if now.ready else 0)
        self.decode_wait.set(now.decode_wait_s)
        self.llm_wait.set(now.llm_wait_s)

    def event_code(self, code: str) -> None:
        self.codes.labels(code=code).inc()

    def decode(self, kind: str, seconds: float, audio_s: float) -> None:
        self.decode_seconds.labels(kind=kind).observe(seconds)
        if audio_s > 0:
            self.rtf.labels(kind=kind).observe(seconds / audio_s)

    def turn(self, outcome: str) -> None:
        self.turns.labels(outcome=outcome).inc()

    def reply_latency(self, first_token_s: float | None, first_audio_s: float | None) -> None:
        if first_token_s is not None:
            self.first_token.observe(first_token_s)
        if first_audio_s is not None:
            self.first_audio.observe(first_audio_s)

    def dropped_partial(self) -> None:
        self.dropped.inc()

    def exposition(self) -> bytes:
        self.refresh()
        registry = self.registry
        if self.shared is not None:
            # Every worker's files, merged; a fresh registry per scrape, as
            # the library requires (the collector must not sit beside the
            # metrics it merges).
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.shared)  # type: ignore[no-untyped-call]
        data: Any = generate_latest(registry)
        return bytes(data)


def _worker_gauge(name: str, documentation: str, registry: CollectorRegistry, worker: str) -> Gauge:
    gauge = Gauge(name, documentation, ["worker"], registry=registry, multiprocess_mode="livesum")
    return gauge.labels(worker=worker)
