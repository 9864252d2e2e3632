"""One client connection: a Trio nursery of reader, ASR stage, reply stage, writer.

    transport --reader--> stage inbox --AsrStage--> turn events --ReplyStage--> Turn
        ^      (adapter.parse)                                                    |
        +------- writer <------- Outbox <------- adapter.render <- domain events -+

The reader validates every frame through the connection's wire adapter
(:mod:`voicetrio.wire.adapter`; the v1 protocol by default) and answers bad input
itself; ``cancel`` and new settings go at once to the owner of the turns (they
do not wait behind audio), while ``start``, audio, ``stop`` and everything
else (commits, conversation requests) go to the ASR stage in order. The stages talk downstream only: the ASR stage tells the reply stage
what it heard on one channel, and both send what the client should see to
this session as domain events (:mod:`voicetrio.core.events`), which the adapter
renders into the outbox. The writer is the only task that touches the
transport.

A lean session is the same session composed without a reply stage: the
stage after the ASR stage is :class:`~voicetrio.session.transcripts_only.TranscriptsOnly`
(for every session of a lean server, or for one session that asks to only
transcribe).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Protocol

import trio

from voicetrio.config import Config
from voicetrio.core.budget import AudioBudget
from voicetrio.core.codes import CloseCode, ErrorCode
from voicetrio.core.events import (
    Acknowledged,
    Configured,
    Error,
    Event,
    Info,
    Listening,
    Metrics,
    Mode,
    PartialTranscript,
)
from voicetrio.core.inputs import (
    Acknowledge,
    Audio,
    Cancel,
    ClientMessage,
    Configure,
    Frame,
    ProtocolError,
    Start,
)
from voicetrio.engines.base import Engines
from voicetrio.logs import log_event
from voicetrio.prom import Observer
from voicetrio.session.asr_stage import AsrStage, StageInput
from voicetrio.session.outbound import OutboundQueue, Outbox, OutItem, Pressure
from voicetrio.session.reply import ReplyStage
from voicetrio.session.stage import Downstream, OnSent, StageContext
from voicetrio.session.transcripts_only import TranscriptsOnly
from voicetrio.session.turn import Turn
from voicetrio.wire.adapter import WireAdapter
from voicetrio.wire.v1_adapter import V1Adapter

#: How long the last words to a client (an error, a close frame) may take
#: before the connection is dropped without them.
CLOSE_TIMEOUT_S = 2.0
STAGE_INBOX_SIZE = 64
#: Turn events waiting for the stage after the ASR stage, which reads its
#: channel at all times (turns run beside it): a few are plenty.
TURN_EVENTS_SIZE = 8


class TransportClosed(Exception):
    """The peer went away (or the connection broke) while we used it."""


class Transport(Protocol):
    async def receive(self) -> Frame:
        """Next client frame; raises TransportClosed when the peer is gone."""
        ...

    async def send(self, data: Frame) -> None: ...

    async def close(self, code: int, reason: str = "") -> None: ...

    def abort(self) -> None:
        """Drop the connection now, without a close handshake: a send that
        is blocked on it (even one no cancellation can reach) fails."""
        ...


class Responder(Protocol):
    """The stage after the ASR stage: the reply stage, or transcripts only."""

    @property
    def turn(self) -> Turn | None:
        """The reply being given (or the last one), None if there is none."""
        ...

    @property
    def turns_started(self) -> int: ...

    async def run(self, events: trio.MemoryReceiveChannel[Downstream]) -> None: ...

    def configure(self, settings: Configure) -> None:
        """The client's settings from now on: acted on at once."""
        ...

    def cancel(self) -> None:
        """The client's ``cancel``: acted on at once, answered to the client."""
        ...

    async def drain(self, deadline: float) -> None:
        """Shutdown: start nothing new; what runs may finish until ``deadline``."""
        ...


class Session:
    def __init__(
        self,
        transport: Transport,
        config: Config,
        engines: Engines,
        *,
        session_id: str | None = None,
        observer: Observer | None = None,
        adapter: WireAdapter | None = None,
        lean: bool | None = None,
    ) -> None:
        self.sid = session_id or uuid.uuid4().hex[:12]
        self.observer = observer or Observer()
        self.transport = transport
        self.config = config
        self.wire: WireAdapter = adapter or V1Adapter(config.limits)
        self.outbox = Outbox(
            OutboundQueue(
                config.backpressure_threshold,
                config.backpressure_hard_bytes,
                on_drop=self.observer.dropped_partial,
            )
        )
        self.ctx = StageContext(self.sid, config, engines, sink=self, observer=self.observer)
        # The one place lean mode is decided: which stage follows the ASR stage
        # (the server's setting, unless the connection asked for one).
        lean = config.lean if lean is None else lean
        self.mode: Mode = "lean" if lean else "full"
        self.replies: Responder = TranscriptsOnly(self.ctx) if lean else ReplyStage(self.ctx)
        self._audio = AudioBudget(config.audio_burst_s, config.audio_rate_factor)
        self._sample_rate = 16000  # of the last accepted start: audio before one is refused
        self.closed = trio.Event()
        self.close_code: int | None = None
        self._nursery: trio.Nursery | None = None
        self._throttle_told = False

    @property
    def turn(self) -> Turn | None:
        """The reply being given now (or the last one); for observers, read-only."""
        return self.replies.turn

    # -- lifecycle -----------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until the peer leaves, a fatal error, or shutdown."""
        log_event(self.sid, "session_open", lean=self.mode == "lean")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                inbox_send, inbox_recv = trio.open_memory_channel[StageInput](STAGE_INBOX_SIZE)
                turns_send, turns_recv = trio.open_memory_channel[Downstream](TURN_EVENTS_SIZE)
                nursery.start_soon(self.replies.run, turns_recv)
                nursery.start_soon(AsrStage(self.ctx, turns_send).run, inbox_recv)
                nursery.start_soon(self._writer)
                nursery.start_soon(self._reader, inbox_send)
        except Exception as exc:  # a bug: this session ends, the server goes on
            log_event(
                self.sid, "session_crash", level=logging.ERROR, exc_info=True, error=repr(exc)
            )
            await self._last_words(
                Error(ErrorCode.INTERNAL, "internal server error; closing the session"),
                CloseCode.INTERNAL_ERROR,
            )
        finally:
            self.closed.set()
            log_event(
                self.sid,
                "session_close",
                code=self.close_code,
                turns=self.replies.turns_started,
                dropped_partials=self.outbox.queue.dropped_partials,
            )

    async def shutdown(self, deadline: float) -> None:
        """Tell the client, let a turn in flight finish until ``deadline``, close 1001."""
        if self.closed.is_set():
            return
        self.emit(Info("shutdown", "server is shutting down"))
        await self.replies.drain(deadline)
        self.close(CloseCode.GOING_AWAY, "server shutdown")
        with trio.move_on_at(max(deadline, trio.current_time()) + CLOSE_TIMEOUT_S):
            await self.closed.wait()
        if not self.closed.is_set():
            # The client is not taking what we send: cut the connection, or
            # a writer stuck on it would hold the shutdown forever.
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
            self.transport.abort()
            await self.closed.wait()

    def fail(self, error: Error, code: int) -> None:
        """A fatal error from outside the session (e.g. the model failed to load)."""
        self.emit(error)
        self.close(code, str(error.code))

    async def refuse(self, event: Error | Info, code: int, reason: str) -> None:
        """Turn the connection away before the session runs: one event, then close."""
        for frame in self.wire.render(event):
            await self.transport.send(frame)
        await self.transport.close(code, reason)

    def close(self, code: int, reason: str = "") -> None:
        """Close after everything already queued has been written."""
        if self.outbox.closed:
            return
        self.close_code = code
        self.outbox.put(OutItem((), close_code=code, on_sent=None))
        self.outbox.close()
        log_event(self.sid, "closing", code=code, reason=reason)

    async def _last_words(self, error: Error, code: int) -> None:
        self.close_code = code
        with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
            scope.shield = True
            try:
                for frame in self.wire.render(error):
                    await self.transport.send(frame)
                await self.transport.close(code)
            except TransportClosed:
                pass
        if scope.cancelled_caught:
            self.transport.abort()

    def _drop_now(self, code: int, reason: str) -> None:
        """Close without waiting for the queue: the client is not reading it."""
        self.outbox.close()
        self.close_code = code
        log_event(self.sid, "dropped", level=logging.WARNING, code=code, reason=reason)
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        self._nursery.start_soon(self._force_close, code, reason)

    async def _force_close(self, code: int, reason: str) -> None:
        with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
            scope.shield = True
            with contextlib.suppress(TransportClosed):
                await self.transport.close(code, reason)
        if scope.cancelled_caught:
            # The close frame waits behind data the client does not read.
            self.transport.abort()

    # -- outbound: the stages' EventSink ---------------------------------------

    def emit(self, event: Event, *, turn: int | None = None, on_sent: OnSent | None = None) -> None:
        """Render ``event`` for the client and queue it, never blocking."""
        if isinstance(event, Error | Info) and event.code is not None:
            self.observer.event_code(str(event.code))
        if self.outbox.closed:
            return
        if isinstance(event, Metrics):
            # Rendered when written: t4 (the first audio written) may be
            # marked by the write of an item queued before this one.
            self._put(OutItem(lambda: self.wire.render(event), turn=turn, on_sent=on_sent))
            return
        frames = self.wire.render(event)
        if not frames:
            return  # this protocol does not show it
        # Only the newest partial transcript matters to a client behind
        # (unless the protocol sends each as an increment of the last).
        droppable = isinstance(event, PartialTranscript) and self.wire.coalesce_partials
        self._put(OutItem(frames, droppable=droppable, turn=turn, on_sent=on_sent))

    def discard(self, turn: int) -> int:
        return self.outbox.queue.purge_turn(turn)

    def _put(self, item: OutItem) -> None:
        pressure = self.outbox.put(item)
        if pressure is Pressure.SOFT:
            log_event(self.sid, "backpressure", level=logging.WARNING, depth=len(self.outbox.queue))
            notice = Info(
                "backpressure",
                "client is reading slowly; partial transcripts are being skipped",
                code=ErrorCode.BACKPRESSURE,
                details=(("queued", len(self.outbox.queue)),),
            )
            # Straight into the queue: this notice never raises pressure itself.
            self.outbox.put(OutItem(self.wire.render(notice)))
        elif pressure is Pressure.HARD:
            self._drop_now(CloseCode.POLICY_VIOLATION, "client too far behind")

    async def _writer(self) -> None:
        while True:
            try:
                item = await self.outbox.get()
            except trio.EndOfChannel:
                return
            if item.close_code is not None:
                await self._force_close(item.close_code, "")
                assert self._nursery is not None
                self._nursery.cancel_scope.cancel()
                return
            try:
                for frame in item.render():
                    await self.transport.send(frame)
            except TransportClosed:
                assert self._nursery is not None
                self._nursery.cancel_scope.cancel()
                return
            if item.on_sent is not None:
                item.on_sent(trio.current_time())

    # -- inbound -------------------------------------------------------------

    async def _reader(self, inbox: trio.MemorySendChannel[StageInput]) -> None:
        async with inbox:
            for message in self.wire.opening():
                await self._take(message, trio.current_time(), inbox)
            while not self.outbox.closed:
                try:
                    data = await self.transport.receive()
                except TransportClosed:
                    log_event(self.sid, "peer_gone")
                    assert self._nursery is not None
                    self._nursery.cancel_scope.cancel()
                    return
                now = trio.current_time()
                try:
                    message = self.wire.parse(data)
                except ProtocolError as exc:
                    self._refuse(exc)
                    continue
                await self._take(message, now, inbox)

    async def _take(
        self, message: ClientMessage, now: float, inbox: trio.MemorySendChannel[StageInput]
    ) -> None:
        if isinstance(message, Cancel):
            # A method of the turns' owner, called at once: a cancel
            # must not wait behind the audio queued for the ASR stage
            # (nor behind its turn events), and it goes downstream.
            self.replies.cancel()
            return
        if isinstance(message, Acknowledge):
            self.emit(Acknowledged(message.payload))
            return
        if isinstance(message, Start):
            self._sample_rate = message.sample_rate
            self.emit(Listening(self.sid, self.mode))
        elif isinstance(message, Configure):
            # The owner of the turns applies it now; the ASR stage (audio
            # rate, silence window) in order with the audio around it.
            self._sample_rate = message.sample_rate
            self.replies.configure(message)
            self.emit(Configured())
        elif isinstance(message, Audio):
            await self._pace(message, now)
        await inbox.send((message, now))

    async def _pace(self, audio: Audio, now: float) -> None:
        # Faster than real time beyond a burst: stop reading until the budget
        # refills, so the client's own socket slows it down; tell it once.
        wait_s = self._audio.spend(len(audio.pcm) / 2 / self._sample_rate, now)
        if wait_s > 0:
            if not self._throttle_told:
                self._throttle_told = True
                log_event(self.sid, "audio_throttled", wait_s=round(wait_s, 3))
                self.emit(
                    Info(
                        "audio_throttled",
                        "audio is arriving faster than real time; reading it more slowly",
                        details=(("max_rate", self.config.audio_rate_factor),),
                    )
                )
            await trio.sleep(wait_s)

    def _refuse(self, exc: ProtocolError) -> None:
        log_event(self.sid, "bad_input", level=logging.INFO, code=str(exc.code), reason=exc.reason)
        self.emit(Error(exc.code, exc.message, reason=exc.reason, details=exc.details))
        if exc.fatal:
            self.close(CloseCode.POLICY_VIOLATION, exc.reason)
