"""Shutdown with 100 open sessions, ten of them mid-reply.

Every client must get ``info shutdown`` and a close with 1001; the idle ones
at once, the talking ones when the grace period cuts their reply (the
scripted reply takes 2.5 s, the grace is 1 s): no ``metrics`` for those, and
nothing closes later than the grace period plus a margin. The server then
returns (``serve``) or exits 0 (``python -m voicetrio serve`` and SIGTERM,
the way an init system stops it), leaving no session and no task.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
import trio.testing

from tests.reliability.conftest import FAST, read_until, say, task_count
from tests.test_cli import read_port
from voicetrio.client.connection import ClientClosed, connect
from voicetrio.server.app import Running, serve

SESSIONS = 100
TALKING = 10
GRACE_S = 1.0
#: How much later than the grace deadline a close may come: the session's own
#: close and the loop's work for 100 sockets on a shared 2-core machine.
MARGIN_S = 1.5


@dataclass
class Outcome:
    talking: bool
    events: list[dict[str, Any]] = field(default_factory=list)
    code: int | None = None
    closed_at: float | None = None


async def client(url: str, index: int, outcome: Outcome, ready: trio.Event) -> None:
    async with connect(url) as voice:
        if index % 3 or outcome.talking:  # a third of the idle ones never start
            await voice.start(16000)
        if outcome.talking:
            await say(voice, 900, 300.0 + 40 * index)
            first = await read_until(voice, "llm_token")
            assert first.closed is None
        ready.set()
        while True:
            try:
                outcome.events.append((await voice.next_event()).event)
            except ClientClosed as closed:
                outcome.code = closed.code
                outcome.closed_at = trio.current_time()
                return


async def open_sessions(url: str, nursery: trio.Nursery) -> list[Outcome]:
    """Start the clients in ``nursery``; return once all are settled."""
    outcomes = [Outcome(talking=i % (SESSIONS // TALKING) == 0) for i in range(SESSIONS)]
    readies = [trio.Event() for _ in outcomes]
    for i, (outcome, ready) in enumerate(zip(outcomes, readies, strict=True)):
        nursery.start_soon(client, url, i, outcome, ready)
    with trio.fail_after(60):
        for ready in readies:
            await ready.wait()
    return outcomes


def check(outcomes: list[Outcome], shutdown_at: float) -> None:
    notice = {"type": "info", "message": "server is shutting down", "event": "shutdown"}
    assert sum(o.talking for o in outcomes) == TALKING
    for outcome in outcomes:
        assert outcome.code == 1001, outcome
        assert notice in outcome.events, outcome.events
        assert outcome.closed_at is not None
        assert outcome.closed_at - shutdown_at < GRACE_S + MARGIN_S
        if outcome.talking:
            kinds = [e["type"] for e in outcome.events]
            # cut at the grace deadline: more tokens came, the turn never ended
            assert "llm_token" in kinds and "metrics" not in kinds, kinds


async def test_shutdown_with_100_sessions(nursery: trio.Nursery) -> None:
    await trio.testing.wait_all_tasks_blocked(0.05)
    tasks_before = task_count()
    config = FAST.replace(
        shutdown_grace_s=GRACE_S, fake_llm_token_ms=100, max_sessions=2 * SESSIONS
    )
    served = trio.Event()

    async def run(task_status: trio.TaskStatus[Running]) -> None:
        await serve(config, task_status=task_status)
        served.set()

    server: Running = await nursery.start(run)
    async with trio.open_nursery() as clients:
        outcomes = await open_sessions(server.url, clients)
        assert len(server.hub.sessions) == SESSIONS
        shutdown_at = trio.current_time()
        server.shutdown.set()
        with trio.fail_after(GRACE_S + 5):
            await served.wait()
        served_after = trio.current_time() - shutdown_at
    check(outcomes, shutdown_at)
    assert served_after < GRACE_S + MARGIN_S + 2  # + Hypercorn's own graceful close
    assert server.hub.sessions == set()
    await trio.testing.wait_all_tasks_blocked(0.05)
    assert task_count() == tasks_before


async def test_sigterm_with_100_sessions_exits_0() -> None:
    env = {
        **os.environ,
        "STREAM_SHUTDOWN_GRACE_S": str(GRACE_S),
        "STREAM_FAKE_LLM_TOKEN_MS": "100",
        "STREAM_MAX_SESSIONS": str(2 * SESSIONS),
    }
    command = [sys.executable, "-m", "voicetrio", "serve", "--port", "0", "--engines", "fake"]
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, command, stderr=subprocess.PIPE, check=False, env=env)
        )
        try:
            port, seen = await read_port(proc)
            log.extend(seen)
            assert proc.stderr is not None
            # The server logs a line per event: keep reading, or it blocks.
            nursery.start_soon(_collect, proc.stderr, log)
            async with trio.open_nursery() as clients:
                outcomes = await open_sessions(f"ws://127.0.0.1:{port}/ws", clients)
                shutdown_at = trio.current_time()
                proc.send_signal(signal.SIGTERM)
                with trio.fail_after(GRACE_S + 10):
                    await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
    assert proc.returncode == 0
    check(outcomes, shutdown_at)
    records = [json.loads(line) for line in log if line.startswith("{")]
    crashes = [r for r in records if r.get("event") == "session_crash" or "exc" in r]
    assert not crashes, crashes
    assert sum(r.get("event") == "session_open" for r in records) == SESSIONS


async def _collect(stream: trio.abc.ReceiveStream, lines: list[str]) -> None:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        lines.extend(line.decode(errors="replace") for line in complete)
