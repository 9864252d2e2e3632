"""Shared by the reliability suite: a server on real sockets with an engine set
of the test's own, a log watch that fails any test in which an exception went
unhandled, engines that fail, hang or stall on cue, and turn helpers.

Every test here talks to a real Hypercorn server on a loopback port through
the project's client. Waits are on events (the client's, or the engines' own
``trio.Event``s, since the server runs in the test's loop), each bounded by
``trio.fail_after``.
"""

from __future__ import annotations

import functools
import logging
import socket
import struct
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final
from urllib.parse import urlsplit

import pytest
import trio
from trio_websocket import wrap_client_stream

from tests.conftest import FAST_FAKE, quiet, speech
from voicetrio.client.connection import ClientClosed, VoiceClient, stream_pcm
from voicetrio.config import Config
from voicetrio.engines.base import ChatMessage, Engines, LlmEngine, SpeechAudio
from voicetrio.engines.fake import EnergyVad, FakeAsr, FakeLlm, FakeTts
from voicetrio.engines.registry import EngineHost
from voicetrio.engines.scheduler import Slot
from voicetrio.server.app import Running, serve

#: Zero engine delays: for tests where timing is irrelevant.
FAST = FAST_FAKE


def fake_set(
    *,
    asr: Any = None,
    llm: Any = None,
    tts: Any = None,
    threshold: int = 500,
) -> Engines:
    """The deterministic engines with zero delays, any of them replaced."""
    return Engines(
        name="reliability",
        vad=functools.partial(EnergyVad, threshold),
        asr=asr if asr is not None else FakeAsr(delay_s=0),
        llm=llm if llm is not None else FakeLlm(first_token_s=0, token_s=0),
        tts=tts if tts is not None else FakeTts(delay_s=0),
    )


async def start_server(
    nursery: trio.Nursery,
    engines: Engines | None = None,
    config: Config = FAST,
    **changes: Any,
) -> Running:
    """A server on a free port in ``nursery``; ``engines`` replaces the set."""
    config = config.replace(**changes)
    host = None if engines is None else EngineHost(config, engines=engines)
    running: Running = await nursery.start(partial(serve, config, host=host))
    return running


# -- the log watch ----------------------------------------------------------


class LogWatch(logging.Handler):
    """Keeps every record of the server's loggers (thread-safe: Handler locks).

    A *problem* is what an unhandled exception leaves behind: a record at
    ERROR or above that carries a traceback (Hypercorn's "Error in ASGI
    Framework", Quart's request errors, anything logged with exc_info), and
    the session's own ``session_crash`` event, whatever its level.
    """

    LOGGERS = ("voicetrio", "hypercorn", "quart")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def attach(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)

    def detach(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)

    def problems(self, since: int = 0) -> list[logging.LogRecord]:
        return [
            r
            for r in self.records[since:]
            if (r.levelno >= logging.ERROR and r.exc_info) or getattr(r, "event", None) == "session_crash"
        ]

    def describe(self, records: Sequence[logging.LogRecord]) -> str:
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        return "\n".join(formatter.format(r) for r in records)


@pytest.fixture(autouse=True)
def log_watch() -> Iterator[LogWatch]:
    """Every reliability test fails if the server logged an unhandled exception."""
    watch = LogWatch()
    watch.attach()
    try:
        yield watch
    finally:
        watch.detach()
    problems = watch.problems()
    assert not problems, "unhandled exceptions in the server log:\n" + watch.describe(problems)


# -- engines that misbehave on cue -------------------------------------------


class ProbeAsr:
    """FakeAsr that reports when a final decode starts and can hang there."""

    ready = True

    def __init__(self, *, hang_final: bool = False) -> None:
        self.inner = FakeAsr(delay_s=0)
        self.hang_final = hang_final
        self.final_started = trio.Event()
        self.active = 0

    async def transcribe(self, pcm: bytes, *, final: bool, slot: Slot | None = None) -> str:
        self.active += 1
        try:
            if final:
                self.final_started.set()
                if self.hang_final:
                    await trio.sleep_forever()
            return await self.inner.transcribe(pcm, final=final, slot=slot)
        finally:
            self.active -= 1


class RtfAsr:
    """FakeAsr whose decodes take ``rtf`` times the audio they decode."""

    ready = True

    def __init__(self, rtf: float) -> None:
        self.inner = FakeAsr(delay_s=0)
        self.rtf = rtf

    async def transcribe(self, pcm: bytes, *, final: bool, slot: Slot | None = None) -> str:
        await trio.sleep(self.rtf * len(pcm) / 32000)
        return await self.inner.transcribe(pcm, final=final, slot=slot)


class StallingLlm:
    """Streams ``tokens`` words, then goes silent until cancelled (a gap).

    ``stall`` can be switched off to heal it; ``opened``/``closed`` count
    streams, like FakeLlm's."""

    ready = True

    def __init__(self, tokens: int = 2) -> None:
        self.tokens = tokens
        self.stall = True
        self.inner = FakeLlm(first_token_s=0, token_s=0)
        self.opened = 0
        self.closed = 0

    @asynccontextmanager
    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[AsyncIterator[str]]:
        self.opened += 1
        try:
            async with self.inner.stream(messages) as deltas:
                yield self._deltas(deltas) if self.stall else deltas
        finally:
            self.closed += 1

    async def _deltas(self, deltas: AsyncIterator[str]) -> AsyncIterator[str]:
        sent = 0
        async for delta in deltas:
            if sent == self.tokens:
                await trio.sleep_forever()
            sent += 1
            yield delta


class PromptLog:
    """Wraps an LLM and keeps every prompt it is given, refused or not: the
    next reply's prompt shows what the conversation memory holds."""

    def __init__(self, inner: LlmEngine) -> None:
        self.inner = inner
        self.prompts: list[list[ChatMessage]] = []

    @property
    def ready(self) -> bool:
        return self.inner.ready

    def stream(
        self, messages: Sequence[ChatMessage]
    ) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        self.prompts.append(list(messages))
        return self.inner.stream(messages)


def remembered(prompt: Sequence[ChatMessage]) -> list[tuple[str, str]]:
    """The (user, assistant) turns a prompt carries between its system
    message and the new question: the conversation memory."""
    history = prompt[1:-1]
    return [(u["content"], a["content"]) for u, a in zip(history[::2], history[1::2], strict=True)]


class ProbeTts:
    """FakeTts that reports each synthesis and can hang on phrases that match."""

    ready = True

    def __init__(self, *, hang_if: str | None = None, ms_per_char: int = 40) -> None:
        self.inner = FakeTts(delay_s=0, ms_per_char=ms_per_char)
        self.hang_if = hang_if
        self.started = trio.Event()
        self.calls = 0

    async def synthesize(self, text: str) -> SpeechAudio:
        self.calls += 1
        self.started.set()
        if self.hang_if is not None and (self.hang_if == "*" or self.hang_if in text):
            await trio.sleep_forever()
        return await self.inner.synthesize(text)


# -- talking -------------------------------------------------------------------


async def say(
    client: VoiceClient,
    ms: int = 1200,
    freq: float = 440.0,
    silence_ms: int = 1000,
    *,
    realtime: bool = False,
) -> None:
    """Speech then silence, in 100 ms frames, as fast as the socket takes them
    (endpointing counts audio time, so the turn is the same as at real time),
    or at real-time pace where decode time against audio time matters."""
    pcm = speech(ms, freq) + quiet(silence_ms)
    await stream_pcm(client, pcm, 16000, frame_ms=100, realtime=realtime)


@dataclass
class Turn:
    events: list[dict[str, Any]] = field(default_factory=list)
    closed: int | None = None

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def codes(self) -> list[str]:
        return [str(e.get("code")) for e in self.events if e.get("code") is not None]


async def read_until(
    client: VoiceClient, *kinds: str, timeout_s: float = 20, **fields: Any
) -> Turn:
    """Events up to and including the first of ``kinds`` (with ``fields``)."""
    turn = Turn()
    with trio.fail_after(timeout_s):
        while True:
            try:
                event = (await client.next_event()).event
            except ClientClosed as closed:
                turn.closed = closed.code
                return turn
            turn.events.append(event)
            if event["type"] in kinds and all(event.get(k) == v for k, v in fields.items()):
                return turn


def assert_full_turn(turn: Turn) -> None:
    """A complete turn: final, tokens, speech, tts_complete, metrics, in order."""
    kinds = turn.types()
    assert "final_transcript" in kinds, kinds
    final = kinds.index("final_transcript")
    done = next(i for i, e in enumerate(turn.events) if e.get("done") is True)
    assert final < kinds.index("llm_token") <= done, kinds
    assert "tts_chunk" in kinds[final:], kinds
    assert kinds[-2:] == ["tts_complete", "metrics"], kinds
    assert turn.events[-1]["id"] == turn.events[final]["id"]


# Base64 WAV chunks of long phrases outgrow trio-websocket's 1 MiB default
# (voicetrio.client.connection allows the same).
_MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024


@asynccontextmanager
async def connect_over_socket(url: str) -> AsyncIterator[tuple[VoiceClient, trio.SocketStream]]:
    """A session like ``connect(url)``'s, over a TCP stream the test opened,
    so that it can act on the connection below the WebSocket: cut it (FIN or
    RST, no close frame) or shrink its receive buffer. trio-websocket keeps
    the stream of a connection it opened to itself; ``wrap_client_stream``
    is its public way to speak over a stream of one's own. Closes (1000) on
    exit, unless the connection is gone already."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream, trio.open_nursery() as nursery:
        ws = await wrap_client_stream(
            nursery,
            stream,
            f"{parts.hostname}:{parts.port}",
            parts.path or "/",
            max_message_size=_MAX_MESSAGE_BYTES,
        )
        try:
            yield VoiceClient(ws), stream
        finally:
            with trio.move_on_after(5):
                await ws.aclose()
            # Its reader task, should the close not have ended it.
            nursery.cancel_scope.cancel()


def small_receive_buffer(stream: trio.SocketStream, size: int = 32 * 1024) -> None:
    """Cap what the kernel queues for a client that does not read. Set after
    connecting, it still takes effect."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


async def abort(client: VoiceClient, stream: trio.SocketStream, *, reset: bool = False) -> None:
    """Drop ``client``'s TCP connection (its ``stream``) without a close frame:
    FIN, or RST with ``reset``."""
    if reset:
        # SO_LINGER 0: close() sends RST and drops unsent data.
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()
    # trio-websocket's reader task may be blocked handing over an event we
    # never read; reading what it holds lets it see the closed stream and end.
    with trio.fail_after(10):
        while True:
            try:
                await client.next_event()
            except ClientClosed:
                return


def task_count() -> int:
    """Tasks in this trio run's task tree."""

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)


async def sessions_gone(running: Running, timeout_s: float = 10) -> None:
    """Wait until the hub holds no session (each one's ``closed`` event, then
    the hub's own bookkeeping, which follows it in the same task)."""
    with trio.fail_after(timeout_s):
        while running.hub.sessions:
            for session in list(running.hub.sessions):
                await session.closed.wait()
            # run_session discards the session right after run() returns.
            await trio.lowlevel.checkpoint()
