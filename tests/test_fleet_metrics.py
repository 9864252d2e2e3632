"""``/metrics`` of a multi-worker server answers for every worker.

Real processes: ``voicetrio serve`` with ``STREAM_WORKERS=2`` and the
deterministic engines, real WebSocket sessions from the client library,
scrapes over real HTTP connections. ``STREAM_MAX_SESSIONS=4`` gives each
worker a share of 2, so four admitted sessions are two on each worker
whatever order the workers accept in (a session that reaches a full worker
is refused with SERVER_BUSY, as any client would be, and tried again).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import trio

from tests.conftest import FAST_FAKE, RATE, quiet, speech
from tests.test_cli import PYTHON, LogLines, start_workers
from voicetrio.client.connection import ClientClosed, StartRejected, VoiceClient, connect
from voicetrio.prom import SHARED_DIR_ENV
from voicetrio.server.app import Running, serve

Samples = dict[str, float]


def parse(text: str) -> Samples:
    """The exposition's samples by name and labels, as written."""
    samples: Samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def scrape(port: int) -> tuple[int, Samples]:
    """/health then /metrics on one keep-alive connection: the worker that
    answered, and the metrics it gave."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        worker = int((await http.get("/health")).json()["worker"])
        response = await http.get("/metrics")
        assert response.status_code == 200
        # Still the same connection, so still the same worker.
        assert int((await http.get("/health")).json()["worker"]) == worker
        return worker, parse(response.text)


async def scrape_each_worker(port: int, check: Callable[[Samples], None]) -> None:
    """Scrape through fresh connections until both workers have answered; every
    answer must pass ``check``. The kernel picks the worker; 60 tries at even
    odds all landing on one worker would take a broken supervisor."""
    answered: set[int] = set()
    for _ in range(60):
        worker, samples = await scrape(port)
        check(samples)
        answered.add(worker)
        if answered == {0, 1}:
            return
    raise AssertionError(f"only worker(s) {answered} answered 60 scrapes")


class Sessions:
    """Sessions held open, each after one full turn, until the test lets go
    or the server drops them."""

    def __init__(self, url: str, nursery: trio.Nursery) -> None:
        self.url = url
        self.nursery = nursery
        self.refused = 0
        # The close codes of sessions the server ended, as they end.
        self.dropped_send, self.dropped = trio.open_memory_channel[int](16)
        self.release = trio.Event()

    async def admit(self, count: int) -> None:
        admitted = 0
        with trio.fail_after(60):
            while admitted < count:
                if await self.nursery.start(self._talk):
                    admitted += 1
                else:
                    self.refused += 1

    async def _talk(self, task_status: trio.TaskStatus[bool]) -> None:
        async with connect(self.url) as client:
            try:
                await client.start(RATE)
            except StartRejected as exc:
                assert exc.code == "SERVER_BUSY", exc
                task_status.started(False)
                return
            except ClientClosed as exc:  # closed before our start got there
                assert exc.code == 1013, exc
                task_status.started(False)
                return
            await self._one_turn(client)
            task_status.started(True)
            await self._hold(client)

    async def _one_turn(self, client: VoiceClient) -> None:
        pcm = speech(1200) + quiet(1000)
        for offset in range(0, len(pcm), 3200):
            await client.send_audio(pcm[offset : offset + 3200])
        while (await client.next_event()).type != "metrics":
            pass

    async def _hold(self, client: VoiceClient) -> None:
        async with trio.open_nursery() as nursery:

            async def until_dropped() -> None:
                try:
                    while True:
                        await client.next_event()
                except ClientClosed as exc:
                    await self.dropped_send.send(exc.code)
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_dropped)
            await self.release.wait()
            nursery.cancel_scope.cancel()


def worker_dir(pid: int) -> Path:
    """Where the supervisor told this worker to write its metrics."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    values = dict(item.decode().split("=", 1) for item in environ if b"=" in item)
    return Path(values[SHARED_DIR_ENV])


async def test_any_worker_reports_every_worker_and_a_restart_counts_once() -> None:
    env = {
        **os.environ,
        "STREAM_WORKERS": "2",
        "STREAM_ENGINES": "fake",
        "STREAM_MAX_SESSIONS": "4",
        "STREAM_SHUTDOWN_GRACE_S": "1",
        "STREAM_LOG_LEVEL": "INFO",
    }
    env.pop(SHARED_DIR_ENV, None)
    command = [PYTHON, "-m", "voicetrio", "serve", "--port", "0"]
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, command, stderr=subprocess.PIPE, check=False, env=env)
        )
        log = LogLines(proc)
        port = await log.port()
        started = {e["worker"]: e for e in [await log.event("worker_started") for _ in range(2)]}
        for index in started:
            await log.event("listening", worker=index)
        shared = worker_dir(started[0]["pid"])
        assert shared == worker_dir(started[1]["pid"]) and shared.is_dir()

        async with trio.open_nursery() as clients:
            sessions = Sessions(f"ws://127.0.0.1:{port}/ws", clients)
            await sessions.admit(4)

            def four_on_two_workers(s: Samples) -> None:
                assert s["voicetrio_sessions"] == 4
                assert s['voicetrio_worker_sessions{worker="0"}'] == 2
                assert s['voicetrio_worker_sessions{worker="1"}'] == 2
                assert s["voicetrio_sessions_accepted_total"] == 4
                assert s['voicetrio_turns_total{outcome="done"}'] == 4
                assert s['voicetrio_decode_seconds_count{kind="final"}'] == 4
                assert s["voicetrio_first_audio_seconds_count"] == 4
                assert s.get('voicetrio_sessions_rejected_total{reason="busy"}', 0) == sessions.refused
                assert s['voicetrio_worker_ready{worker="0"}'] == 1
                assert s['voicetrio_worker_ready{worker="1"}'] == 1
                # Each full: the load figure a balancer sees.
                assert s['voicetrio_worker_load{worker="0"}'] == 1
                assert s['voicetrio_worker_starts_total{worker="0"}'] == 1
                assert s['voicetrio_worker_starts_total{worker="1"}'] == 1

            await scrape_each_worker(port, four_on_two_workers)

            # Worker 0 dies with its two sessions open; the supervisor starts it again.
            victim = started[0]["pid"]
            os.kill(victim, signal.SIGKILL)
            await log.event("worker_died", worker=0)
            again = await log.event("worker_started", worker=0)
            await log.event("listening", worker=0)
            # Its live gauges went with it; its counters stay, to be summed.
            names = {p.name for p in shared.iterdir()}
            assert f"gauge_livesum_{victim}.db" not in names
            assert f"counter_{victim}.db" in names and f"histogram_{victim}.db" in names
            assert worker_dir(again["pid"]) == shared

            def after_the_restart(s: Samples) -> None:
                assert s["voicetrio_sessions"] == 2
                assert s['voicetrio_worker_sessions{worker="0"}'] == 0
                assert s['voicetrio_worker_sessions{worker="1"}'] == 2
                # Counted once: not lost with the dead process, not doubled.
                assert s["voicetrio_sessions_accepted_total"] == 4
                assert s['voicetrio_turns_total{outcome="done"}'] == 4
                assert s['voicetrio_worker_starts_total{worker="0"}'] == 2
                assert s['voicetrio_worker_starts_total{worker="1"}'] == 1

            # Worker 1 is full, so it leaves new connections to the new worker 0
            # (server/front.py): the scrape is most likely the newcomer's answer.
            after_the_restart((await scrape(port))[1])
            # Exactly its two sessions saw the connection go, without a close frame.
            with trio.fail_after(10):
                assert [await sessions.dropped.receive() for _ in range(2)] == [1006, 1006]

            # Two more: worker 1 is full, so they end up on the new worker 0.
            await sessions.admit(2)

            def six_accepted(s: Samples) -> None:
                assert s["voicetrio_sessions"] == 4
                assert s['voicetrio_worker_sessions{worker="0"}'] == 2
                assert s['voicetrio_worker_sessions{worker="1"}'] == 2
                assert s["voicetrio_sessions_accepted_total"] == 6
                assert s['voicetrio_turns_total{outcome="done"}'] == 6
                assert s.get('voicetrio_sessions_rejected_total{reason="busy"}', 0) == sessions.refused

            await scrape_each_worker(port, six_accepted)
            sessions.release.set()
        # Let go by us: none of the other four was dropped by the server.
        assert sessions.dropped.statistics().current_buffer_used == 0

        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            await proc.wait()
        assert proc.returncode == 0
    # The supervisor removed the directory on its way out.
    assert not shared.exists()



async def test_servers_in_one_process_keep_their_own_figures(nursery: trio.Nursery) -> None:
    """One process, two single-worker servers (as the tests run them): each
    counts its own sessions, with ``worker="0"``, and shares nothing."""
    first: Running = await nursery.start(partial(serve, FAST_FAKE))
    second: Running = await nursery.start(partial(serve, FAST_FAKE))
    assert first.hub.observer.shared is None
    async with trio.open_nursery() as clients:
        sessions = Sessions(first.url, clients)
        await sessions.admit(2)
        _, one = await scrape(first.port)
        _, other = await scrape(second.port)
        sessions.release.set()
    assert one["voicetrio_sessions"] == 2 and one['voicetrio_worker_sessions{worker="0"}'] == 2
    assert one["voicetrio_sessions_accepted_total"] == 2
    assert one['voicetrio_turns_total{outcome="done"}'] == 2
    assert other["voicetrio_sessions"] == 0 and other["voicetrio_sessions_accepted_total"] == 0
    assert other['voicetrio_worker_starts_total{worker="0"}'] == 1


async def test_workers_remove_the_directory_of_a_killed_supervisor() -> None:
    """A supervisor killed (SIGKILL) cannot clean up: its orphaned workers do."""
    env = {**os.environ, "STREAM_WORKERS": "2", "STREAM_ENGINES": "fake", "STREAM_LOG_LEVEL": "INFO"}
    command = [PYTHON, "-m", "voicetrio", "serve", "--port", "0"]
    async with trio.open_nursery() as nursery:
        proc, log, started = await start_workers(nursery, command, env)
        shared = worker_dir(started[0]["pid"])
        assert shared.is_dir()
        proc.send_signal(signal.SIGKILL)
        for _ in range(2):
            await log.event("supervisor_gone")
        # Their stderr is the pipe we read: it ends when the last has exited.
        await log.until_closed()
        await proc.wait()
    assert not shared.exists()
