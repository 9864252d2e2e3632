"""One client connection: a Trio nursery of reader, ASR stage, reply stage, writer.

    transport --reader--> stage inbox --AsrStage--> utterances --reply stage--> Turn
        ^                                                                        |
        +------------------ writer <------------ Outbox <------------------------+

The reader validates every frame through the sans-IO ProtocolMachine and
answers bad input itself; ``cancel`` is acted on at once (it does not wait
behind audio), while ``start``, audio and ``stop`` go to the ASR stage in
order. The writer is the only task that touches the transport. Each reply
is a :class:`~voicetrio.reply.Turn` whose cancel scope the session holds, so
cancel, barge-in and shutdown are each one ``scope.cancel()``.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from voicetrio import protocol
from voicetrio.asr_stage import AsrStage, StageInput
from voicetrio.budget import AudioBudget
from voicetrio.config import Config
from voicetrio.engines.base import Engines
from voicetrio.logs import log_event
from voicetrio.memory import ConversationMemory
from voicetrio.outbound import Frame, OutboundQueue, Outbox, OutItem, Pressure
from voicetrio.prom import Observer
from voicetrio.protocol import CloseCode, ErrorCode, JsonDict, ProtocolError
from voicetrio.reply import Outcome, Turn, Utterance

#: How long the last words to a client (an error, a close frame) may take
#: before the connection is dropped without them.
CLOSE_TIMEOUT_S = 2.0
STAGE_INBOX_SIZE = 64


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


@dataclass(slots=True)
class SessionContext:
    """What the stages share: settings, engines, the outbox, the memory."""

    sid: str
    config: Config
    engines: Engines
    outbox: Outbox
    memory: ConversationMemory
    send_hook: Callable[[OutItem], None]
    observer: Observer = field(default_factory=Observer)
    audio_format: protocol.AudioFormat = "wav"
    stats: dict[str, int] = field(default_factory=dict)

    def send(
        self,
        event: JsonDict,
        *,
        binary: bytes | None = None,
        droppable: bool = False,
        turn: int | None = None,
        on_sent: Callable[[float], None] | None = None,
    ) -> None:
        code = event.get("code")
        if code is not None:
            self.observer.event_code(str(code))
        text = protocol.encode(event)
        frames: tuple[Frame, ...] = (text,) if binary is None else (text, binary)
        self.send_hook(OutItem(frames, droppable=droppable, turn=turn, on_sent=on_sent))

    def send_rendered(self, render: Callable[[], JsonDict], *, turn: int | None = None) -> None:
        self.send_hook(OutItem(lambda: (protocol.encode(render()),), turn=turn))


class Session:
    def __init__(
        self,
        transport: Transport,
        config: Config,
        engines: Engines,
        *,
        session_id: str | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.sid = session_id or uuid.uuid4().hex[:12]
        observer = observer or Observer()
        self.transport = transport
        self.config = config
        self.machine = protocol.ProtocolMachine(config.limits)
        self.outbox = Outbox(
            OutboundQueue(
                config.backpressure_threshold,
                config.backpressure_hard_bytes,
                on_drop=observer.dropped_partial,
            )
        )
        self.ctx = SessionContext(
            sid=self.sid,
            config=config,
            engines=engines,
            outbox=self.outbox,
            memory=ConversationMemory(config.memory_max_turns, config.memory_max_chars),
            send_hook=self._put,
            observer=observer,
        )
        self._audio = AudioBudget(config.audio_burst_s, config.audio_rate_factor)
        self.turn: Turn | None = None
        self.turns_started = 0
        self.closed = trio.Event()
        self.close_code: int | None = None
        self.draining = False
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._throttle_told = False

    @property
    def lean(self) -> bool:
        return self.config.lean

    # -- lifecycle -----------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until the peer leaves, a fatal error, or shutdown."""
        log_event(self.sid, "session_open", lean=self.lean)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                inbox_send, inbox_recv = trio.open_memory_channel[StageInput](STAGE_INBOX_SIZE)
                utt_send: trio.MemorySendChannel[Utterance] | None = None
                if not self.lean:
                    utt_send, utt_recv = trio.open_memory_channel[Utterance](4)
                    nursery.start_soon(self._reply_stage, utt_recv)
                stage = AsrStage(
                    self.ctx,
                    utt_send,
                    self._on_speech_start,
                    self._start_held_turn if self.config.speculative_reply else None,
                )
                nursery.start_soon(stage.run, inbox_recv)
                nursery.start_soon(self._writer)
                nursery.start_soon(self._reader, inbox_send)
        except Exception as exc:  # a bug: this session ends, the server goes on
            log_event(self.sid, "session_crash", level=logging.ERROR, exc_info=True, error=repr(exc))
            await self._last_words(
                protocol.error(ErrorCode.INTERNAL, "internal server error; closing the session"),
                CloseCode.INTERNAL_ERROR,
            )
        finally:
            self.closed.set()
            log_event(
                self.sid,
                "session_close",
                code=self.close_code,
                turns=self.turns_started,
                dropped_partials=self.outbox.queue.dropped_partials,
            )

    async def shutdown(self, deadline: float) -> None:
        """Tell the client, let a turn in flight finish until ``deadline``, close 1001."""
        if self.closed.is_set():
            return
        self.draining = True
        self.ctx.send(protocol.info("server is shutting down", event="shutdown"))
        turn = self.turn
        if turn is not None and turn.active:
            with trio.move_on_at(deadline):
                await turn.finished.wait()
            if turn.active:
                turn.cancel()
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

    def fail(self, event: JsonDict, code: int) -> None:
        """A fatal error from outside the session (e.g. the model failed to load)."""
        self.ctx.send(event)
        self.close(code, str(event.get("code", "")))

    def close(self, code: int, reason: str = "") -> None:
        """Close after everything already queued has been written."""
        if self._closing:
            return
        self._closing = True
        self.close_code = code
        self.outbox.put(OutItem((), close_code=code, on_sent=None))
        self.outbox.close()
        log_event(self.sid, "closing", code=code, reason=reason)

    async def _last_words(self, event: JsonDict, code: int) -> None:
        self.close_code = code
        with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
            scope.shield = True
            try:
                await self.transport.send(protocol.encode(event))
                await self.transport.close(code)
            except TransportClosed:
                pass
        if scope.cancelled_caught:
            self.transport.abort()

    def _drop_now(self, code: int, reason: str) -> None:
        """Close without waiting for the queue: the client is not reading it."""
        self._closing = True
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

    # -- outbound ------------------------------------------------------------

    def _put(self, item: OutItem) -> None:
        if self._closing:
            return
        pressure = self.outbox.put(item)
        if pressure is Pressure.SOFT:
            log_event(self.sid, "backpressure", level=logging.WARNING, depth=len(self.outbox.queue))
            self.outbox.put(
                OutItem(
                    (
                        protocol.encode(
                            protocol.info(
                                "client is reading slowly; partial transcripts are being skipped",
                                event="backpressure",
                                code=str(ErrorCode.BACKPRESSURE),
                                queued=len(self.outbox.queue),
                            )
                        ),
                    )
                )
            )
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
            while not self._closing:
                try:
                    data = await self.transport.receive()
                except TransportClosed:
                    log_event(self.sid, "peer_gone")
                    assert self._nursery is not None
                    self._nursery.cancel_scope.cancel()
                    return
                now = trio.current_time()
                try:
                    message: protocol.ClientMessage = (
                        self.machine.receive_text(data)
                        if isinstance(data, str)
                        else self.machine.receive_bytes(data)
                    )
                except ProtocolError as exc:
                    self._refuse(exc)
                    continue
                if isinstance(message, protocol.Cancel):
                    self._cancel()
                    continue
                if isinstance(message, protocol.Start):
                    self.ctx.audio_format = message.audio_format
                    self.ctx.send(protocol.protocol_hello(self.sid, mode="lean" if self.lean else "full"))
                elif isinstance(message, protocol.Audio):
                    await self._pace(message, now)
                await inbox.send((message, now))

    async def _pace(self, audio: protocol.Audio, now: float) -> None:
        # Faster than real time beyond a burst: stop reading until the budget
        # refills, so the client's own socket slows it down; tell it once.
        rate = self.machine.sample_rate or 16000
        wait_s = self._audio.spend(len(audio.pcm) / 2 / rate, now)
        if wait_s > 0:
            if not self._throttle_told:
                self._throttle_told = True
                log_event(self.sid, "audio_throttled", wait_s=round(wait_s, 3))
                self.ctx.send(
                    protocol.info(
                        "audio is arriving faster than real time; reading it more slowly",
                        event="audio_throttled",
                        max_rate=self.config.audio_rate_factor,
                    )
                )
            await trio.sleep(wait_s)

    def _refuse(self, exc: ProtocolError) -> None:
        log_event(self.sid, "bad_input", level=logging.INFO, code=str(exc.code), reason=exc.reason)
        self.ctx.send(exc.to_event())
        if exc.fatal:
            self.close(CloseCode.POLICY_VIOLATION, exc.reason)

    # -- turns ---------------------------------------------------------------

    def _cancel(self) -> None:
        turn = self.turn
        if turn is not None and turn.active:
            dropped = turn.cancel()
            log_event(self.sid, "cancel", turn=turn.id, dropped=dropped)
            self.ctx.send(protocol.error(ErrorCode.CANCELLED, "reply cancelled by the client"))
        else:
            self.ctx.send(protocol.info("nothing to cancel", event="nothing_to_cancel"))

    def _on_speech_start(self) -> None:
        turn = self.turn
        if not self.config.barge_in or turn is None:
            return
        if turn.speaking(trio.current_time()):
            was_active = turn.active
            dropped = turn.cancel(Outcome.CANCELLED) if was_active else 0
            turn.playback_end = float("-inf")
            log_event(self.sid, "barge_in", turn=turn.id, dropped=dropped, active=was_active)
            self.ctx.send(protocol.info("user spoke over the reply; stopping it", event="barge_in"))

    async def _start_held_turn(self, utterance: Utterance) -> Turn | None:
        """A reply for a turn the user may not have finished: output held."""
        if self._nursery is None or self.draining or self.lean:
            return None
        if self.turn is not None and self.turn.active:
            return None  # never two replies at once
        self.turns_started += 1
        turn: Turn = await self._nursery.start(
            Turn(self.turns_started, utterance, self.ctx, held=True).run
        )
        log_event(self.sid, "turn_held", turn=turn.id)
        return turn

    async def _reply_stage(self, utterances: trio.MemoryReceiveChannel[Utterance]) -> None:
        assert self._nursery is not None
        async with utterances:
            async for utterance in utterances:
                held = utterance.turn
                if self.draining:
                    if held is not None:
                        held.cancel()
                    continue
                if held is not None and held.outcome is not Outcome.CANCELLED:
                    # The end of the user's turn is confirmed: the held reply
                    # goes out as if it had started now, under the final's id.
                    held.utterance.transcript_id = utterance.transcript_id
                    self.turn = turn = held
                    turn.release()
                    log_event(self.sid, "turn_released", turn=turn.id)
                else:
                    self.turns_started += 1
                    turn = Turn(self.turns_started, utterance, self.ctx)
                    self.turn = await self._nursery.start(turn.run)
                await turn.finished.wait()
