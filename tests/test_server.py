"""The server over real sockets: Hypercorn on port 0, the project's client.

These run on the real clock with zero-delay deterministic engines and audio
sent faster than real time (endpointing counts audio time, so the result is
the same as at real-time pace); they wait on events, never on sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from tests.conftest import FAST_FAKE, quiet, speech
from voicetrio.client.connection import ClientClosed, VoiceClient, connect
from voicetrio.server.app import Running, serve

FAST = FAST_FAKE

ServerFactory = Callable[..., Awaitable[Running]]


@pytest.fixture
def start_server(nursery: trio.Nursery) -> ServerFactory:
    async def start(**changes: Any) -> Running:
        config = FAST.replace(**changes)
        running: Running = await nursery.start(partial(serve, config))
        return running

    return start


async def collect_turn(client: VoiceClient, until: str = "metrics") -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with trio.fail_after(20):
        while True:
            received = await client.next_event()
            events.append(received.event)
            if received.type == until:
                return events


async def say(client: VoiceClient, ms: int = 1200, freq: float = 440.0) -> None:
    pcm = speech(ms, freq) + quiet(1000)
    for offset in range(0, len(pcm), 3200):
        await client.send_audio(pcm[offset : offset + 3200])


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def assert_turn_order(events: list[dict[str, Any]]) -> None:
    kinds = types(events)
    final = kinds.index("final_transcript")
    assert "partial_transcript" in kinds[:final]
    done = next(i for i, e in enumerate(events) if e.get("done") is True)
    first_token = kinds.index("llm_token")
    assert final < first_token <= done
    assert "tts_chunk" in kinds[final:]
    assert kinds[-2:] == ["tts_complete", "metrics"]
    assert kinds.index("tts_complete") > done


async def test_one_utterance_full_event_order(start_server: ServerFactory) -> None:
    server = await start_server()
    async with connect(server.url) as client:
        hello = await client.start(16000)
        assert hello["type"] == "protocol" and hello["version"] == 1 and hello["mode"] == "full"
        await say(client)
        events = await collect_turn(client)
    assert_turn_order(events)
    metrics = events[-1]
    assert metrics["id"] == next(e["id"] for e in events if e["type"] == "final_transcript")


async def test_three_consecutive_utterances(start_server: ServerFactory) -> None:
    server = await start_server()
    async with connect(server.url) as client:
        await client.start(16000)
        finals = []
        for freq in (300.0, 600.0, 900.0):
            await say(client, 900, freq)
            events = await collect_turn(client)
            assert_turn_order(events)
            finals.append(next(e for e in events if e["type"] == "final_transcript"))
    assert [f["id"].rsplit("-", 1)[1] for f in finals] == ["1", "2", "3"]
    assert len({f["text"] for f in finals}) == 3


async def test_lean_server_sends_transcripts_only(start_server: ServerFactory) -> None:
    server = await start_server(lean=True)
    async with connect(server.url) as client:
        hello = await client.start(16000)
        assert hello["mode"] == "lean"
        await say(client)
        events = await collect_turn(client)
    assert set(types(events)) == {"partial_transcript", "final_transcript", "metrics"}


BAD_FRAMES: list[tuple[str | bytes, str, str]] = [
    ("not json", "BAD_MESSAGE", "invalid_json"),
    ("[1]", "BAD_MESSAGE", "not_an_object"),
    ("{}", "BAD_MESSAGE", "missing_type"),
    ('{"type":"hello"}', "BAD_MESSAGE", "unknown_type"),
    ('{"type":"start","sample_rate":"fast"}', "BAD_MESSAGE", "bad_field"),
    ('{"type":"start","sample_rate":7999}', "UNSUPPORTED_SAMPLE_RATE", "unsupported_sample_rate"),
    (b"\x00\x00" * 160, "BAD_MESSAGE", "audio_before_start"),
    ("{" + " " * 5000 + "}", "BAD_MESSAGE", "text_too_large"),
    ('{"type":"stop"}', "BAD_MESSAGE", "not_started"),
]

BAD_WHILE_STREAMING: list[tuple[str | bytes, str, str]] = [
    (b"\x00" * 321, "BAD_MESSAGE", "odd_length"),
    (b"\x00" * 192_002, "BAD_MESSAGE", "frame_too_large"),
    ('{"type":"start","sample_rate":16000}', "BAD_MESSAGE", "already_started"),
]


async def test_every_bad_input_is_answered_and_the_session_goes_on(
    start_server: ServerFactory,
) -> None:
    server = await start_server()
    async with connect(server.url) as client:
        for frame, code, reason in BAD_FRAMES:
            await client.send_raw(frame)
            event = (await client.next_event()).event
            assert (event["type"], event["code"], event["reason"]) == ("error", code, reason)
            assert event["recoverable"] is True and event["message"]
        await client.start(16000)
        for frame, code, reason in BAD_WHILE_STREAMING:
            await client.send_raw(frame)
            event = (await client.next_event()).event
            assert (event["code"], event["reason"]) == (code, reason)
        await say(client)
        assert_turn_order(await collect_turn(client))
        assert client.closed_code is None


async def test_garbage_stream_is_closed_with_protocol_violation(
    start_server: ServerFactory,
) -> None:
    server = await start_server()
    async with connect(server.url) as client:
        for _ in range(20):
            await client.send_raw("garbage")
        events = []
        with pytest.raises(ClientClosed) as closed:
            while True:
                events.append((await client.next_event()).event)
        assert closed.value.code == 1008
    assert events[-1]["code"] == "PROTOCOL_VIOLATION" and events[-1]["recoverable"] is False
    assert len(events) == 20


def task_count() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)


async def test_disconnect_mid_turn_leaves_no_session_task_or_thread(
    start_server: ServerFactory,
) -> None:
    server = await start_server(fake_llm_token_ms=200)
    await trio.testing.wait_all_tasks_blocked(0.05)
    tasks_before, threads_before = task_count(), threading.active_count()
    async with connect(server.url) as client:
        await client.start(16000)
        await say(client)
        while (await client.next_event()).type != "llm_token":
            pass
        (session,) = server.hub.sessions
        assert session.turn is not None and session.turn.active
    with trio.fail_after(10):
        await session.closed.wait()
    await trio.testing.wait_all_tasks_blocked(0.05)
    assert server.hub.sessions == set()
    assert task_count() == tasks_before
    assert threading.active_count() == threads_before


async def test_a_client_that_does_not_read_does_not_slow_another(
    start_server: ServerFactory,
) -> None:
    server = await start_server(fake_tts_ms=0)
    async with connect(server.url) as idle_reader, connect(server.url) as client:
        await idle_reader.start(16000)
        await say(idle_reader, 3000)  # its reply piles up unread
        await client.start(16000)
        await say(client)
        assert_turn_order(await collect_turn(client))


async def test_shutdown_tells_every_session_and_closes_1001(nursery: trio.Nursery) -> None:
    config = FAST.replace(fake_llm_token_ms=100, shutdown_grace_s=1.0)
    served = trio.Event()

    async def run_server(task_status: trio.TaskStatus[Running]) -> None:
        await serve(config, task_status=task_status)
        served.set()

    server: Running = await nursery.start(run_server)
    results: dict[int, tuple[list[dict[str, Any]], int]] = {}

    async def client_session(i: int, talk: bool, ready: trio.Event) -> None:
        async with connect(server.url) as client:
            await client.start(16000)
            if talk:
                await say(client)
                while (await client.next_event()).type != "llm_token":
                    pass
            ready.set()
            events = []
            try:
                while True:
                    events.append((await client.next_event()).event)
            except ClientClosed as closed:
                results[i] = (events, closed.code)

    async with trio.open_nursery() as clients:
        readies = [trio.Event() for _ in range(4)]
        for i, ready in enumerate(readies):
            clients.start_soon(client_session, i, i % 2 == 0, ready)
        for ready in readies:
            await ready.wait()
        t0 = trio.current_time()
        server.shutdown.set()
    with trio.fail_after(10):
        await served.wait()
    elapsed = trio.current_time() - t0
    assert sorted(results) == [0, 1, 2, 3]
    for events, code in results.values():
        assert code == 1001
        assert {"type": "info", "message": "server is shutting down", "event": "shutdown"} in events
    # the talking sessions were mid-reply: their turns were cut at the grace deadline
    assert elapsed < config.shutdown_grace_s + 3


async def test_health_config_and_static_files(start_server: ServerFactory) -> None:
    server = await start_server(openai_api_key="sk-do-not-leak")
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=base, follow_redirects=True) as http:
        health = await http.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "ok" and body["sessions"] == 0 and body["mode"] == "full"
        assert body["engines"]["ready"] == {"asr": True, "llm": True, "tts": True}
        config = await http.get("/api/stream_config")
        assert config.status_code == 200
        assert config.json()["vad_silence_ms"] == 700
        assert "sk-do-not-leak" not in config.text and "openai_api_key" not in config.json()
        index = await http.get("/")
        assert index.status_code == 200 and "voicetrio" in index.text
        assert (await http.get("/static/index.html")).text == index.text
        for path in (
            "/static/../pyproject.toml",
            "/static/%2e%2e/pyproject.toml",
            "/static/..%2fpyproject.toml",
            "/static//etc/passwd",
            "/static/nope.js",
        ):
            assert (await http.get(path)).status_code == 404, path
