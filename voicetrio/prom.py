"""Prometheus metrics for ``/metrics``: one registry per server, so several
servers in one process (tests) never share counters.

The session side sees only :class:`Observer`, a small interface with a
do-nothing default, so the pipeline does not depend on prometheus-client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


class Observer:
    """What a session reports; the base class ignores everything."""

    def event_code(self, code: str) -> None: ...
    def decode(self, kind: str, seconds: float, audio_s: float) -> None: ...
    def turn(self, outcome: str) -> None: ...
    def reply_latency(self, first_token_s: float | None, first_audio_s: float | None) -> None: ...
    def dropped_partial(self) -> None: ...


class PromObserver(Observer):
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("voicetrio_sessions", "Open sessions", registry=r)
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
            "voicetrio_outbound_queue_depth", "Events waiting for slow clients, all sessions", registry=r
        )
        self.queue_bytes = Gauge(
            "voicetrio_outbound_queue_bytes", "Bytes waiting for slow clients, all sessions", registry=r
        )

    def watch(self, depth: Callable[[], float], nbytes: Callable[[], float], sessions: Callable[[], float]) -> None:
        """Gauges read live at scrape time."""
        self.queue_depth.set_function(depth)
        self.queue_bytes.set_function(nbytes)
        self.sessions.set_function(sessions)

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
        data: Any = generate_latest(self.registry)
        return bytes(data)
