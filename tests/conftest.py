"""Shared test fixtures: an in-memory transport (the client's side of a
session), engine sets built from the deterministic engines, and audio."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from voicetrio.config import Config
from voicetrio.core.audio import silence, tone
from voicetrio.core.inputs import Frame
from voicetrio.engines.base import Engines
from voicetrio.engines.fake import EnergyVad, FakeAsr, FakeLlm, FakeTts
from voicetrio.session.connection import Session, TransportClosed

RATE = 16000


def speech(ms: int, freq_hz: float = 440.0) -> bytes:
    """Audio the energy VAD calls speech and the fake ASR turns into words."""
    return tone(ms, freq_hz=freq_hz, sample_rate=RATE)


def quiet(ms: int) -> bytes:
    return silence(ms, RATE)


@dataclass
class MemoryTransport:
    """The session's socket, with the test as the client on the other end."""

    inbound_send: trio.MemorySendChannel[Frame | None]
    inbound_recv: trio.MemoryReceiveChannel[Frame | None]
    frames: list[Frame] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    close_code: int | None = None
    blocked: bool = False
    #: A blocked send no cancellation can end, as Hypercorn's socket writes
    #: are: only abort() (or unblock()) frees it.
    shielded: bool = False
    aborted: bool = False
    _unblocked: trio.Event = field(default_factory=trio.Event)
    _changed: trio.Event = field(default_factory=trio.Event)

    @classmethod
    def create(cls) -> MemoryTransport:
        send, recv = trio.open_memory_channel[Frame | None](math.inf)
        return cls(send, recv)

    # -- the session's side --
    async def receive(self) -> Frame:
        item = await self.inbound_recv.receive()
        if item is None:
            raise TransportClosed("peer disconnected")
        return item

    async def send(self, data: Frame) -> None:
        if self.close_code is not None or self.aborted:
            raise TransportClosed("closed")
        with trio.CancelScope(shield=self.shielded):
            await self._wait_unblocked()
        await trio.lowlevel.checkpoint()
        self.frames.append(data)
        self.times.append(trio.current_time())
        self._notify()

    async def close(self, code: int, reason: str = "") -> None:
        # The close frame is a send too: it waits behind a blocked one.
        await self._wait_unblocked()
        await trio.lowlevel.checkpoint()
        self.close_code = code
        self._notify()

    async def _wait_unblocked(self) -> None:
        while self.blocked and not self.aborted:
            await self._unblocked.wait()
        if self.aborted:
            raise TransportClosed("connection severed")

    def abort(self) -> None:
        self.aborted = True
        self._unblocked.set()
        self._unblocked = trio.Event()
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- the client's side --
    def send_json(self, value: Any) -> None:
        self.inbound_send.send_nowait(json.dumps(value))

    def send_text(self, text: str) -> None:
        self.inbound_send.send_nowait(text)

    def send_bytes(self, data: bytes) -> None:
        self.inbound_send.send_nowait(data)

    def disconnect(self) -> None:
        self.inbound_send.send_nowait(None)

    def unblock(self) -> None:
        self.blocked = False
        self._unblocked.set()
        self._unblocked = trio.Event()

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(f) for f in self.frames if isinstance(f, str)]

    def event_times(self) -> list[tuple[float, dict[str, Any]]]:
        return [
            (t, json.loads(f)) for t, f in zip(self.times, self.frames, strict=True) if isinstance(f, str)
        ]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 600) -> None:
        # Under MockClock a wait that nothing will end jumps to this deadline
        # and fails, instead of hanging the run.
        with trio.fail_after(timeout_s):
            while not predicate():
                await self._changed.wait()

    async def wait_for(self, kind: str, count: int = 1, **fields: Any) -> dict[str, Any]:
        def found() -> list[dict[str, Any]]:
            return [
                e
                for e in self.events
                if e["type"] == kind and all(e.get(k) == v for k, v in fields.items())
            ]

        await self.wait_until(lambda: len(found()) >= count)
        return found()[count - 1]

    def time_of(self, kind: str, count: int = 1, **fields: Any) -> float:
        seen = 0
        for t, e in self.event_times():
            if e["type"] == kind and all(e.get(k) == v for k, v in fields.items()):
                seen += 1
                if seen == count:
                    return t
        raise AssertionError(f"no {kind} #{count}")


def make_engines(
    *,
    asr: FakeAsr | None = None,
    llm: FakeLlm | None = None,
    tts: FakeTts | None = None,
    threshold: int = 500,
) -> Engines:
    return Engines(
        name="test",
        vad=lambda: EnergyVad(threshold),
        asr=asr or FakeAsr(delay_s=0.0625),
        llm=llm or FakeLlm(first_token_s=0.125, token_s=0.03125),
        tts=tts or FakeTts(delay_s=0.015625),
    )


@dataclass
class Harness:
    session: Session
    peer: MemoryTransport
    engines: Engines

    async def stream(self, pcm: bytes, frame_ms: int = 100) -> None:
        """Send audio at real-time pace (on the test's clock)."""
        step = RATE * 2 * frame_ms // 1000
        start = trio.current_time()
        for k, offset in enumerate(range(0, len(pcm), step)):
            await trio.sleep_until(start + k * frame_ms / 1000)
            self.peer.send_bytes(pcm[offset : offset + step])
        await trio.sleep_until(start + len(pcm) / 2 / RATE)


#: A server on the deterministic engines with no delays, on a free port.
FAST_FAKE = Config(
    port=0,
    engines="fake",
    fake_asr_ms=0,
    fake_llm_first_token_ms=0,
    fake_llm_token_ms=0,
    fake_tts_ms=0,
    shutdown_grace_s=2.0,
)


@pytest.fixture
def config() -> Config:
    return Config(partial_interval_ms=500, vad_silence_ms=700)


async def open_session(
    nursery: trio.Nursery, config: Config, engines: Engines | None = None
) -> Harness:
    engines = engines or make_engines()
    peer = MemoryTransport.create()
    session = Session(peer, config, engines, session_id="s1")
    nursery.start_soon(session.run)
    return Harness(session, peer, engines)
