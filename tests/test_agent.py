"""HAProxy's agent check: the reply from the live state (sans-IO, exact
lines), and a real server answering it on a TCP port of its own through a
drain: ``drain`` at once, /health 503, new sessions refused SERVER_BUSY 1013,
the open session served through the drain delay, then told and closed."""

from __future__ import annotations

import os
import signal
import socket
import sys
from functools import partial

import httpx
import pytest
import trio
import trio.testing

from tests.conftest import FAST_FAKE, quiet, speech
from tests.test_cli import start_workers
from voicetrio.client.connection import ClientClosed, connect
from voicetrio.core.agent import (
    AgentReport,
    AgentState,
    BadReply,
    combine,
    parse,
    report,
    weight_percent,
)
from voicetrio.server.agent import answer_for_workers, ask, serve_agent
from voicetrio.server.app import Running, serve
from voicetrio.server.workers import bind_listener

UP = AgentState.UP
DOWN = AgentState.DOWN
DRAIN = AgentState.DRAIN


# -- sans-IO ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("load", "percent"),
    [(0.0, 100), (0.25, 75), (0.333, 67), (0.5, 50), (0.994, 1), (0.999, 1), (1.0, 1), (7.5, 1)],
)
def test_weight_is_the_room_left_and_a_full_server_keeps_a_trickle(load: float, percent: int) -> None:
    assert weight_percent(load) == percent


def test_weight_of_odd_loads() -> None:
    assert weight_percent(-0.5) == 100  # never above the configured weight
    assert weight_percent(float("nan")) == 1
    assert weight_percent(float("inf")) == 1


def test_reply_lines() -> None:
    assert report(draining=False, ready=True, failed=False, load=0.25).line() == b"up ready 75%\n"
    assert report(draining=False, ready=False, failed=False, load=0.0).line() == b"down#starting\n"
    assert report(draining=False, ready=False, failed=True, load=0.0).line() == b"down#failed\n"
    # Draining wins: over ready, and over a failure (nothing to send it anyway).
    for ready in (True, False):
        for failed in (True, False):
            line = report(draining=True, ready=ready, failed=failed, load=0.0).line()
            assert line == b"drain\n"


def test_down_reason_is_one_word_haproxy_can_show() -> None:
    assert AgentReport(DOWN, 0, "model failed: tts!").line() == b"down#model_failed_tts_\n"
    assert AgentReport(DOWN, 0).line() == b"down\n"


@pytest.mark.parametrize(
    "item",
    [AgentReport(UP, 75), AgentReport(UP, 1), AgentReport(DRAIN, 0), AgentReport(DOWN, 0, "starting")],
)
def test_parse_reads_back_every_line(item: AgentReport) -> None:
    assert parse(item.line()) == item


@pytest.mark.parametrize(
    "data", [b"", b"75%\n", b"up ready 101%\n", b"maint\n", b"\xff\n", b"up ready 5%" + b" " * 300]
)
def test_parse_refuses_what_no_worker_says(data: bytes) -> None:
    with pytest.raises(BadReply):
        parse(data)


def test_combine_the_box_from_its_workers() -> None:
    up = AgentReport(UP, 80)
    drain = AgentReport(DRAIN, 0)
    starting = AgentReport(DOWN, 0, "starting")
    assert combine([up, AgentReport(UP, 40)], draining=False) == AgentReport(UP, 60)
    # A worker that does not serve (restarting, starting) counts 0: its share is missing.
    assert combine([up, None], draining=False) == AgentReport(UP, 40)
    assert combine([up, starting], draining=False) == AgentReport(UP, 40)
    assert combine([AgentReport(UP, 1), None, None], draining=False) == AgentReport(UP, 1)
    assert combine([up, up], draining=True) == drain
    assert combine([drain, drain], draining=False) == drain
    assert combine([starting, None], draining=False) == AgentReport(DOWN, 0, "starting")
    assert combine([None, None], draining=False) == AgentReport(DOWN, 0, "no_answer")
    assert combine([], draining=False) == AgentReport(DOWN, 0, "no_workers")


# -- over real sockets -----------------------------------------------------------


async def read_agent(port: int) -> bytes:
    """What HAProxy reads: everything until the agent closes."""
    data = b""
    with trio.fail_after(5):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            while chunk := await stream.receive_some():
                data += chunk
    return data


async def test_a_server_answers_its_agent_port_through_a_drain(nursery: trio.Nursery) -> None:
    # A long delay: the open session must be served during it, the new refused.
    config = FAST_FAKE.replace(drain_delay_s=60.0, max_sessions=4)
    agent_socket = bind_listener("127.0.0.1", 0)
    running: Running = await nursery.start(partial(serve, config, agent_listener=agent_socket))
    assert running.agent_port is not None
    assert running.agent_port == agent_socket.getsockname()[1]
    with trio.fail_after(10):
        while not running.hub.ready:
            await trio.testing.wait_all_tasks_blocked()
    assert await read_agent(running.agent_port) == b"up ready 100%\n"

    async with connect(running.url) as client, httpx.AsyncClient() as http:
        await client.start(16000)
        # One talker of four: the weight follows /health's load.
        health = (await http.get(f"http://127.0.0.1:{running.port}/health")).json()
        assert health["load"] == 0.25
        assert await read_agent(running.agent_port) == b"up ready 75%\n"

        running.shutdown.set()  # what SIGTERM does
        await trio.testing.wait_all_tasks_blocked()
        assert await read_agent(running.agent_port) == b"drain\n"
        answer = await http.get(f"http://127.0.0.1:{running.port}/health")
        assert (answer.status_code, answer.json()["status"]) == (503, "draining")

        # A new session is refused at once, to retry elsewhere.
        async with connect(running.url) as late:
            event = (await late.next_event()).event
            assert (event["code"], event["retry_after_s"]) == ("SERVER_BUSY", 0)
            assert "draining" in event["message"]
            with pytest.raises(ClientClosed) as closed:
                await late.next_event()
            assert closed.value.code == 1013

        # The open session goes on as before during the delay: a whole turn.
        pcm = speech(1200, 440.0) + quiet(1000)
        for offset in range(0, len(pcm), 3200):
            await client.send_audio(pcm[offset : offset + 3200])
        kinds = []
        with trio.fail_after(20):
            while (kind := (await client.next_event()).type) != "metrics":
                kinds.append(kind)
        assert "final_transcript" in kinds and "tts_chunk" in kinds
        assert "info" not in kinds  # not told to leave yet


async def test_the_drain_delay_ends_in_the_usual_shutdown(nursery: trio.Nursery) -> None:
    config = FAST_FAKE.replace(drain_delay_s=0.2)
    served = trio.Event()

    async def run(task_status: trio.TaskStatus[Running]) -> None:
        await serve(config, agent_listener=bind_listener("127.0.0.1", 0), task_status=task_status)
        served.set()

    running: Running = await nursery.start(run)
    assert running.agent_port is not None
    async with connect(running.url) as client:
        await client.start(16000)
        t0 = trio.current_time()
        running.shutdown.set()
        events = []
        with pytest.raises(ClientClosed) as closed:
            while True:
                events.append((await client.next_event()).event)
        assert closed.value.code == 1001
        assert events[-1]["event"] == "shutdown"
        # Told no sooner than the delay: the balancer's time to see the drain.
        assert trio.current_time() - t0 >= config.drain_delay_s
    with trio.fail_after(10):
        await served.wait()
    # The agent has closed with the server.
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", running.agent_port)


async def test_the_supervisor_answers_for_its_workers(nursery: trio.Nursery) -> None:
    """The box's agent asks each worker's (loopback) agent; a worker that
    does not answer counts as not serving; drain as soon as it stops."""
    lines = [AgentReport(UP, 90), AgentReport(UP, 30)]

    async def worker_answer(index: int) -> AgentReport:
        return lines[index]

    worker_ports = []
    for index in range(2):
        port = await nursery.start(
            serve_agent, bind_listener("127.0.0.1", 0), partial(worker_answer, index)
        )
        worker_ports.append(port)
    # A third worker being restarted: its port is bound by nobody.
    with socket.socket() as gone:
        gone.bind(("127.0.0.1", 0))
        worker_ports.append(gone.getsockname()[1])
    box = bind_listener("127.0.0.1", 0)
    box_port = box.getsockname()[1]
    stopping, until, ended = trio.Event(), trio.Event(), trio.Event()

    async def supervisor() -> None:
        await answer_for_workers(box, worker_ports, stopping, until)
        ended.set()

    nursery.start_soon(supervisor)
    assert await ask("127.0.0.1", worker_ports[0]) == AgentReport(UP, 90)
    assert await ask("127.0.0.1", worker_ports[2]) is None
    assert await read_agent(box_port) == b"up ready 40%\n"
    lines[1] = AgentReport(DOWN, 0, "starting")
    assert await read_agent(box_port) == b"up ready 30%\n"
    stopping.set()
    assert await read_agent(box_port) == b"drain\n"
    until.set()
    with trio.fail_after(5):
        await ended.wait()


async def test_with_workers_the_supervisor_answers_for_the_box() -> None:
    """``--workers 2`` as a user runs it: one agent port for the box, whose
    weight counts a dead worker as 0 and which says drain on SIGTERM."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        agent_port = probe.getsockname()[1]
    env = {
        **os.environ,
        "STREAM_AGENT_PORT": str(agent_port),
        "STREAM_DRAIN_DELAY_S": "0.5",
        "STREAM_SHUTDOWN_GRACE_S": "1",
        "STREAM_LOG_LEVEL": "INFO",
    }
    command = [sys.executable, "-m", "voicetrio", "serve", "--port", "0", "--engines", "fake", "--workers", "2"]
    async with trio.open_nursery() as nursery:
        proc, log, started = await start_workers(nursery, command, env, ready="engines_ready")
        assert await read_agent(agent_port) == b"up ready 100%\n"
        # One worker gone: half the box (the supervisor starts it again after a pause).
        os.kill(started[0]["pid"], signal.SIGKILL)
        await log.event("worker_died", worker=started[0]["worker"])
        assert await read_agent(agent_port) == b"up ready 50%\n"
        await log.event("engines_ready", worker=started[0]["worker"])
        assert await read_agent(agent_port) == b"up ready 100%\n"
        proc.send_signal(signal.SIGTERM)
        await log.event("signal")
        assert await read_agent(agent_port) == b"drain\n"
        with trio.fail_after(15):
            await proc.wait()
        assert proc.returncode == 0
