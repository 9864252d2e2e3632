"""Every engine fault gives its code, leaves no trace in the conversation
memory, and the same session's next turn works.

One session per test: a turn against a faulty engine, the engine healed, a
second turn that must be whole. The faults: ASR raising, ASR slower than real
time, an LLM refusing (raising on open), failing mid-stream, hanging before
its first token, stalling mid-reply, a stream cut by the service (a real
``OpenAiLlm`` against a stub service that closes the connection without
``[DONE]``), the embedded LLM process killed mid-reply (the real
``EmbeddedLlmServer`` and ``OpenAiLlm``), and TTS raising and hanging.

The memory is seen as the model sees it: the prompt of the next reply (the
LLM is wrapped in a PromptLog) carries every turn remembered.

A TTS failure skips phrases but not the reply: its text was complete and was
sent, so it *is* kept in memory (docs/protocol.md: a reply that *failed* or
was cancelled is not; TTS_FAIL is "skipped, the reply goes on").
"""

from __future__ import annotations

import inspect
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from tests.reliability.conftest import (
    ProbeTts,
    PromptLog,
    RtfAsr,
    StallingLlm,
    Turn,
    assert_full_turn,
    fake_set,
    read_until,
    remembered,
    say,
    start_server,
)
from voicetrio.client.connection import connect
from voicetrio.engines.base import ChatMessage
from voicetrio.engines.fake import FakeAsr, FakeLlm, FakeTts
from voicetrio.engines.llm.openai_compat import OpenAiLlm
from voicetrio.server.app import Running


def exchange(turn: Turn) -> tuple[str, str]:
    """What a whole turn puts in memory: the words heard and the reply's text."""
    (final,) = turn.of("final_transcript")
    return final["text"], "".join(e["text"] for e in turn.of("llm_token"))


async def fault_then_recovery(
    server: Running,
    llm: PromptLog,
    heal: Callable[[], Awaitable[None] | None],
    *until: str,
    memory_after_fault: int = 0,
    realtime: bool = False,
    **fields: Any,
) -> Turn:
    """Talk once (read up to ``until``), heal, talk again; the second turn is
    whole. The memory each turn left is what the next reply's prompt carries:
    the faulty turn's exchange if ``memory_after_fault`` (else nothing), then
    the healed turn's, seen by a third turn. Returns the first turn's events."""
    assert memory_after_fault in (0, 1)
    async with connect(server.url) as client:
        await client.start(16000)
        await say(client, 900, 440.0, realtime=realtime)
        faulty = await read_until(client, *(until or ("metrics",)), **fields)
        assert faulty.closed is None, f"closed with {faulty.closed}"
        healing = heal()
        if inspect.isawaitable(healing):
            await healing
        asked = len(llm.prompts)
        await say(client, 900, 700.0)
        healed = await read_until(client, "metrics", timeout_s=60)
        assert healed.closed is None
        assert "error" not in healed.types(), healed.events
        assert_full_turn(Turn([e for e in healed.events if e["type"] != "partial_transcript"]))
        assert len(llm.prompts) > asked
        kept = [exchange(faulty)] if memory_after_fault else []
        assert remembered(llm.prompts[-1]) == kept
        asked = len(llm.prompts)
        await say(client, 900, 1000.0)
        last = await read_until(client, "metrics", timeout_s=60)
        assert last.closed is None
        assert len(llm.prompts) > asked
        assert remembered(llm.prompts[-1]) == [*kept, exchange(healed)]
    return faulty


def error_codes(turn: Turn) -> list[str]:
    return [e["code"] for e in turn.of("error")]


def assert_failed_reply(turn: Turn, code: str) -> None:
    """The reply stopped with ``code`` and the turn still ended with metrics."""
    assert error_codes(turn) == [code], turn.events
    kinds = turn.types()
    assert kinds[-1] == "metrics"
    assert "tts_complete" not in kinds
    assert not any(e.get("done") is True for e in turn.of("llm_token"))


# -- ASR -------------------------------------------------------------------------


async def test_asr_raising(nursery: trio.Nursery) -> None:
    asr = FakeAsr(delay_s=0, fail=True)
    prompts = PromptLog(FakeLlm(first_token_s=0, token_s=0))
    server = await start_server(nursery, fake_set(asr=asr, llm=prompts))

    def heal() -> None:
        asr.fail = False

    faulty = await fault_then_recovery(server, prompts, heal, "error")
    assert error_codes(faulty) == ["ASR_FAIL"]
    assert faulty.events[-1]["recoverable"] is True
    assert "final_transcript" not in faulty.types()


async def test_asr_slower_than_real_time(nursery: trio.Nursery) -> None:
    asr = RtfAsr(2.0)
    prompts = PromptLog(FakeLlm(first_token_s=0, token_s=0))
    server = await start_server(nursery, fake_set(asr=asr, llm=prompts))

    def heal() -> None:
        asr.rtf = 0.0

    # Slow is not broken: the turn completes (late), the client is told once.
    # At real-time pace, so that decodes run against the audio as it comes.
    faulty = await fault_then_recovery(server, prompts, heal, "metrics", memory_after_fault=1, realtime=True)
    slow = [e for e in faulty.of("info") if e.get("event") == "asr_slow"]
    assert len(slow) == 1 and slow[0]["rtf"] > 1.5
    assert_full_turn(Turn([e for e in faulty.events if e["type"] not in ("info", "partial_transcript")]))


# -- LLM -------------------------------------------------------------------------


async def test_llm_refusing(nursery: trio.Nursery) -> None:
    llm = FakeLlm(first_token_s=0, token_s=0, mode="fail")
    prompts = PromptLog(llm)
    server = await start_server(nursery, fake_set(llm=prompts))

    def heal() -> None:
        llm.mode = "normal"

    faulty = await fault_then_recovery(server, prompts, heal)
    assert_failed_reply(faulty, "LLM_FAIL")
    assert faulty.of("llm_token") == []
    assert faulty.events[-1]["t3_first_token_ms"] is None


async def test_llm_failing_mid_stream(nursery: trio.Nursery) -> None:
    llm = FakeLlm(first_token_s=0, token_s=0.001, fail_after_tokens=3)
    prompts = PromptLog(llm)
    server = await start_server(nursery, fake_set(llm=prompts))

    def heal() -> None:
        llm.fail_after_tokens = None

    faulty = await fault_then_recovery(server, prompts, heal)
    assert_failed_reply(faulty, "LLM_FAIL")
    assert len(faulty.of("llm_token")) == 3
    assert llm.opened == llm.closed


async def test_llm_hanging(nursery: trio.Nursery) -> None:
    llm = FakeLlm(first_token_s=0, token_s=0, mode="hang")
    # llm_timeout_s 1: the first token is due within min(5, 1 / 2) = 0.5 s.
    prompts = PromptLog(llm)
    server = await start_server(nursery, fake_set(llm=prompts), llm_timeout_s=1)

    def heal() -> None:
        llm.mode = "normal"

    faulty = await fault_then_recovery(server, prompts, heal)
    assert_failed_reply(faulty, "LLM_TIMEOUT")
    assert "first token" in faulty.of("error")[0]["message"]
    assert llm.opened == llm.closed


async def test_llm_stalling_mid_reply(nursery: trio.Nursery) -> None:
    llm = StallingLlm(tokens=3)
    prompts = PromptLog(llm)
    server = await start_server(nursery, fake_set(llm=prompts), llm_gap_timeout_s=0.5)

    def heal() -> None:
        llm.stall = False

    faulty = await fault_then_recovery(server, prompts, heal)
    assert_failed_reply(faulty, "LLM_TIMEOUT")
    assert len(faulty.of("llm_token")) == 3
    assert llm.opened == llm.closed


class StubService:
    """An OpenAI-compatible chat endpoint that streams three deltas, then
    either closes the connection (``cut``: no ``[DONE]``) or finishes."""

    def __init__(self) -> None:
        self.cut = True
        self.port = 0

    async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request:
                data = await stream.receive_some()
                if not data:
                    return
                request += data
            head, _, body = request.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += await stream.receive_some()
            out = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            for word in ("Three", " short", " words."):
                chunk = {"choices": [{"delta": {"content": word}, "finish_reason": None}]}
                out += b"data: " + json.dumps(chunk).encode() + b"\n\n"
            if not self.cut:
                out += b"data: [DONE]\n\n"
            await stream.send_all(out)


async def test_llm_stream_cut_by_the_service(nursery: trio.Nursery) -> None:
    stub = StubService()
    port = await nursery.start(stub.serve)
    llm = OpenAiLlm(base_url=f"http://127.0.0.1:{port}/v1", model="stub", max_tokens=50, temperature=0)
    try:
        prompts = PromptLog(llm)
        server = await start_server(nursery, fake_set(llm=prompts))

        def heal() -> None:
            stub.cut = False

        faulty = await fault_then_recovery(server, prompts, heal)
    finally:
        await llm.aclose()
    assert_failed_reply(faulty, "LLM_FAIL")
    assert "without [DONE]" in faulty.of("error")[0]["message"]


class KillOnFirstDelta:
    """Wraps an LLM: SIGKILLs the embedded worker as the first delta arrives,
    while llama.cpp is still writing the rest of the reply."""

    def __init__(self, inner: OpenAiLlm, pid: Callable[[], int | None]) -> None:
        self.inner = inner
        self.pid = pid
        self.armed = True

    @property
    def ready(self) -> bool:
        return self.inner.ready

    @asynccontextmanager
    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[AsyncIterator[str]]:
        async with self.inner.stream(messages) as deltas:
            yield self._deltas(deltas)

    async def _deltas(self, deltas: AsyncIterator[str]) -> AsyncIterator[str]:
        async for delta in deltas:
            if self.armed:
                self.armed = False
                pid = self.pid()
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
            yield delta


async def test_embedded_llm_killed_mid_reply(nursery: trio.Nursery) -> None:
    from voicetrio.engines.llm.embedded import SMOLLM2_MODEL_NAME, EmbeddedLlmServer

    embedded = EmbeddedLlmServer(startup_timeout_s=60)
    with trio.fail_after(90):
        base_url = await nursery.start(embedded.run)
    inner = OpenAiLlm(
        base_url=base_url,
        api_key=embedded.api_key,
        model=SMOLLM2_MODEL_NAME,
        max_tokens=120,
        temperature=0,
    )
    llm = KillOnFirstDelta(inner, lambda: embedded.pid)
    # A reply long enough to be cut in the middle.
    prompt = "Count from one to forty in words, separated by commas."
    try:
        prompts = PromptLog(llm)
        server = await start_server(nursery, fake_set(llm=prompts), system_prompt=prompt)
        first_pid = embedded.pid

        async def heal() -> None:
            # The worker is another process; its supervisor sets no event we
            # could wait on, so its state is polled, bounded by fail_after.
            with trio.fail_after(60):
                while not (embedded.ready and embedded.restarts >= 1):  # noqa: ASYNC110
                    await trio.sleep(0.05)
            assert embedded.pid != first_pid

        faulty = await fault_then_recovery(server, prompts, heal)
    finally:
        await inner.aclose()
    assert_failed_reply(faulty, "LLM_FAIL")
    assert "mid-reply" in faulty.of("error")[0]["message"] or "without [DONE]" in faulty.of("error")[0]["message"]


# -- TTS -------------------------------------------------------------------------


async def test_tts_raising(nursery: trio.Nursery) -> None:
    tts = FakeTts(delay_s=0, fail_on=lambda text: True)
    prompts = PromptLog(FakeLlm(first_token_s=0, token_s=0))
    server = await start_server(nursery, fake_set(llm=prompts, tts=tts))

    def heal() -> None:
        tts.fail_on = None

    faulty = await fault_then_recovery(server, prompts, heal, memory_after_fault=1)
    fails = [e for e in faulty.of("info") if e.get("event") == "tts_fail"]
    assert fails and all(e["code"] == "TTS_FAIL" for e in fails)
    assert [e["seq"] for e in fails] == list(range(1, len(fails) + 1))
    assert faulty.of("tts_chunk") == [] and faulty.of("error") == []
    assert faulty.types()[-2:] == ["tts_complete", "metrics"]


async def test_tts_hanging(nursery: trio.Nursery) -> None:
    # The first phrase ("You said: ...") hangs; tts_timeout_s is the least allowed.
    tts = ProbeTts(hang_if="You said")
    prompts = PromptLog(FakeLlm(first_token_s=0, token_s=0))
    server = await start_server(nursery, fake_set(llm=prompts, tts=tts), tts_timeout_s=0.5)

    def heal() -> None:
        tts.hang_if = None

    faulty = await fault_then_recovery(server, prompts, heal, memory_after_fault=1)
    fails = [e for e in faulty.of("info") if e.get("event") == "tts_fail"]
    assert [(e["code"], e["seq"]) for e in fails] == [("TTS_FAIL", 1)]
    assert "longer than 0.5 s" in fails[0]["message"]
    assert [e["seq"] for e in faulty.of("tts_chunk")][:1] == [2]
    assert faulty.types()[-2:] == ["tts_complete", "metrics"]
