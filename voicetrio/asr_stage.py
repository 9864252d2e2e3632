"""The ASR stage: client audio in, partial and final transcripts out.

It cuts the stream into 30 ms frames, asks the session's VAD about each, and
feeds the sans-IO :class:`~voicetrio.endpointing.Endpointer`, whose events it
turns into work: a partial decode (at most one in flight, never queued), a
final decode of the whole utterance, and an :class:`Utterance` for the reply
stage. Decodes run as tasks of the stage's own nursery so the frame loop
never waits for a model; finals are handed out in order by one finalizer.

The final is decoded *speculatively*: when silence begins, the utterance so
far is decoded at once, while the silence window runs. If speech resumes the
decode is cancelled; if the window closes, its result is the final, ready
(or nearly) the moment the turn ends. Audio at any rate from 8 to 48 kHz is
resampled to 16 kHz first.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import trio

from voicetrio import protocol
from voicetrio.endpointing import (
    EndpointConfig,
    Endpointer,
    EndpointEvent,
    PartialDue,
    SilenceStarted,
    SpeechResumed,
    SpeechStarted,
    UtteranceEnded,
)
from voicetrio.engines.base import ENGINE_SAMPLE_RATE, VAD_FRAME_MS, EngineError
from voicetrio.logs import log_event
from voicetrio.metrics import TurnMetrics
from voicetrio.protocol import ErrorCode
from voicetrio.reply import Turn, Utterance
from voicetrio.resample import Resampler
from voicetrio.work_queue import Lane

if TYPE_CHECKING:
    from voicetrio.session import SessionContext

FRAME_BYTES = ENGINE_SAMPLE_RATE * VAD_FRAME_MS // 1000 * 2
#: Audio kept after the last speech frame for a final decoded at the end of
#: the turn (stop, max duration): word endings trail below the VAD's threshold.
TAIL_MS = 300
#: Real-time factor above which decoding cannot keep up; two in a row and the
#: client is told, once, that a smaller model would serve it better.
SLOW_RTF = 1.5

StageInput = tuple[protocol.Start | protocol.Stop | protocol.Audio, float]


@dataclass(slots=True)
class _Frame:
    start_ms: int
    pcm: bytes
    arrived: float


class _Decode:
    """One final decode, started now or speculatively, awaited by the finalizer.

    A speculative decode that found words also starts a *held* reply for
    them (``turn``), so the answer is being written and spoken while the
    silence window still runs; dropping the decode drops the reply unheard.
    """

    def __init__(self, pcm: bytes, metrics: TurnMetrics) -> None:
        self.pcm = pcm
        self.metrics = metrics
        #: When the speech ended (it is made at silence start or at the
        #: utterance's end): the decoder serves the oldest first.
        self.since = trio.current_time()
        self.done = trio.Event()
        self.scope = trio.CancelScope()
        self.text: str | None = None
        self.error: EngineError | None = None
        self.elapsed_s = 0.0
        self.turn: Turn | None = None
        self.dropped = False

    async def run(self, stage: AsrStage, *, speculative: bool = False) -> None:
        started = trio.current_time()
        try:
            with self.scope:
                slot = stage.ctx.engines.decoder.slot(Lane.URGENT, self.since)
                text = await stage.ctx.engines.asr.transcribe(self.pcm, final=True, slot=slot)
                self.text = text.strip()
        except EngineError as exc:
            self.error = exc
        finally:
            self.elapsed_s = trio.current_time() - started
            self.done.set()
        if speculative and self.text and not self.dropped and stage.start_held_turn is not None:
            turn = await stage.start_held_turn(Utterance(self.text, "", self.metrics))
            self.turn = turn
            if turn is not None and self.dropped:
                turn.cancel()

    def drop(self) -> None:
        self.dropped = True
        self.scope.cancel()
        if self.turn is not None:
            self.turn.cancel()


@dataclass(slots=True)
class _PendingFinal:
    decode: _Decode
    started: bool
    metrics: TurnMetrics
    reason: str


class AsrStage:
    def __init__(
        self,
        ctx: SessionContext,
        utterances: trio.MemorySendChannel[Utterance] | None,
        on_speech_start: Callable[[], None],
        start_held_turn: Callable[[Utterance], Awaitable[Turn | None]] | None = None,
    ) -> None:
        self.ctx = ctx
        self.utterances = utterances
        self.on_speech_start = on_speech_start
        self.start_held_turn = start_held_turn
        config = ctx.config
        self.vad = ctx.engines.vad()
        # A VAD hangover already counts as silence-in-waiting: take it off the
        # window so the final comes vad_silence_ms after the speech really ends.
        hangover = int(getattr(self.vad, "hangover_ms", 0))
        self.endpoint_config = EndpointConfig(
            frame_ms=VAD_FRAME_MS,
            silence_ms=max(VAD_FRAME_MS, config.vad_silence_ms - hangover),
            partial_interval_ms=config.partial_interval_ms,
            first_partial_ms=config.first_partial_ms,
            max_utterance_ms=config.max_utterance_ms,
        )
        self._resampler = Resampler(ENGINE_SAMPLE_RATE)
        self._reset_stream()
        self._finals_done = 0
        self._slow_decodes = 0
        self._slow_told = False

    def _reset_stream(self) -> None:
        self.endpointer = Endpointer(self.endpoint_config)
        reset = getattr(self.vad, "reset", None)
        if reset is not None:
            reset()
        self._carry = bytearray()
        ring_frames = (
            self.endpoint_config.preroll_ms + self.endpoint_config.min_speech_ms
        ) // VAD_FRAME_MS + 2
        self._ring: deque[_Frame] = deque(maxlen=ring_frames)
        self._utterance = bytearray()
        self._utt_start_ms = 0
        self._metrics: TurnMetrics | None = None
        self._generation = 0
        self._partial_scope: trio.CancelScope | None = None
        self._last_partial = ""
        self._speculative: _Decode | None = None

    async def run(self, inbox: trio.MemoryReceiveChannel[StageInput]) -> None:
        finals_send, finals_recv = trio.open_memory_channel[_PendingFinal](8)
        try:
            await self._run(inbox, finals_send, finals_recv)
        finally:
            if self.utterances is not None:
                await self.utterances.aclose()

    async def _run(
        self,
        inbox: trio.MemoryReceiveChannel[StageInput],
        finals_send: trio.MemorySendChannel[_PendingFinal],
        finals_recv: trio.MemoryReceiveChannel[_PendingFinal],
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._finalizer, finals_recv)
            async with inbox, finals_send:
                async for message, arrived in inbox:
                    if isinstance(message, protocol.Audio):
                        pcm = self._resampler.process(message.pcm)
                        await self._audio(pcm, arrived, finals_send)
                    elif isinstance(message, protocol.Start):
                        self._resampler = Resampler(message.sample_rate, ENGINE_SAMPLE_RATE)
                        self._reset_stream()
                    else:
                        await self._audio(self._resampler.flush(), arrived, finals_send)
                        events = self.endpointer.stop()
                        if not events:
                            self.ctx.send(protocol.info("stop: no speech to finalize", event="no_speech"))
                        await self._handle(events, finals_send)
                        self._reset_stream()
            if self._partial_scope is not None:
                self._partial_scope.cancel()

    async def _audio(
        self, pcm: bytes, arrived: float, finals: trio.MemorySendChannel[_PendingFinal]
    ) -> None:
        self._carry += pcm
        while len(self._carry) >= FRAME_BYTES:
            frame = bytes(self._carry[:FRAME_BYTES])
            del self._carry[:FRAME_BYTES]
            start_ms = self.endpointer.now_ms
            self._ring.append(_Frame(start_ms, frame, arrived))
            if self.endpointer.in_utterance:
                self._utterance += frame
            events = self.endpointer.push(self.vad.is_speech(frame))
            if events:
                await self._handle(events, finals)

    async def _handle(
        self, events: list[EndpointEvent], finals: trio.MemorySendChannel[_PendingFinal]
    ) -> None:
        for event in events:
            if isinstance(event, SpeechStarted):
                self._open_utterance(event)
            elif isinstance(event, PartialDue):
                self._start_partial()
            elif isinstance(event, SilenceStarted):
                self._start_speculative()
            elif isinstance(event, SpeechResumed):
                self._drop_speculative()
            elif isinstance(event, UtteranceEnded):
                await self._close_utterance(event, finals)

    def _open_utterance(self, event: SpeechStarted) -> None:
        self._generation += 1
        self._utt_start_ms = event.start_ms
        frames = [f for f in self._ring if f.start_ms >= event.start_ms]
        self._utterance = bytearray(b"".join(f.pcm for f in frames))
        onset_ms = event.at_ms - self._debounce_ms()
        onset = next((f for f in frames if f.start_ms >= onset_ms), frames[-1])
        self._metrics = TurnMetrics(onset.arrived)
        self._last_partial = ""
        log_event(self.ctx.sid, "speech_start", at_ms=event.at_ms)
        self.on_speech_start()

    def _debounce_ms(self) -> int:
        frames = -(-self.endpoint_config.min_speech_ms // VAD_FRAME_MS)
        return frames * VAD_FRAME_MS

    def _start_partial(self) -> None:
        self.endpointer.partial_started()
        self._nursery.start_soon(self._partial, self._generation)

    async def _partial(self, generation: int) -> None:
        metrics = self._metrics
        text = ""
        slot = self.ctx.engines.decoder.slot(Lane.TENTATIVE)
        try:
            with trio.CancelScope() as scope:
                self._partial_scope = scope
                # The audio is taken once the decoder is ours: when it was busy,
                # the partial covers what was said while it waited.
                await slot.reserve()
                pcm = bytes(self._utterance)
                started = trio.current_time()
                try:
                    text = await self.ctx.engines.asr.transcribe(pcm, final=False, slot=slot)
                except EngineError as exc:
                    log_event(self.ctx.sid, "partial_fail", level=logging.WARNING, reason=str(exc))
                else:
                    text = text.strip()
                    self._decoded(metrics, trio.current_time() - started, _seconds(pcm), "partial")
        finally:
            slot.close()
            # Whatever happened, this utterance may have its next partial.
            if generation == self._generation:
                self.endpointer.partial_finished()
        if generation != self._generation or scope.cancelled_caught:
            return
        if text and text != self._last_partial and metrics is not None:
            self._last_partial = text
            self.ctx.send(
                protocol.partial_transcript(text),
                droppable=True,
                on_sent=metrics.mark_first_partial,
            )

    def _start_speculative(self) -> None:
        if self._metrics is None:
            return
        decode = _Decode(bytes(self._utterance), self._metrics)
        self._speculative = decode
        self._nursery.start_soon(partial(decode.run, self, speculative=True))

    def _drop_speculative(self) -> None:
        if self._speculative is not None:
            self._speculative.drop()
            self._speculative = None

    async def _close_utterance(
        self, event: UtteranceEnded, finals: trio.MemorySendChannel[_PendingFinal]
    ) -> None:
        metrics = self._metrics
        self._generation += 1
        if self._partial_scope is not None:
            self._partial_scope.cancel()
        speculative, self._speculative = self._speculative, None
        keep_ms = event.speech_end_ms + TAIL_MS - self._utt_start_ms
        keep = min(len(self._utterance), keep_ms * ENGINE_SAMPLE_RATE // 1000 * 2)
        pcm = bytes(self._utterance[:keep])
        self._utterance = bytearray()
        self._metrics = None
        if event.reason == "max_duration":
            self.ctx.send(
                protocol.info(
                    f"utterance reached {self.ctx.config.max_utterance_ms} ms; finalizing it",
                    event="max_duration",
                    code=str(ErrorCode.MAX_DURATION_EXCEEDED),
                )
            )
        if metrics is None or not pcm:
            if speculative is not None:
                speculative.drop()
            return
        log_event(
            self.ctx.sid,
            "utterance_end",
            reason=event.reason,
            audio_ms=len(pcm) // 32,
            speculative=speculative is not None,
        )
        # A speculative decode covers every speech frame: nothing but silence
        # came after it began, or it would have been dropped.
        if speculative is not None:
            await finals.send(_PendingFinal(speculative, True, metrics, event.reason))
        else:
            await finals.send(_PendingFinal(_Decode(pcm, metrics), False, metrics, event.reason))

    async def _finalizer(self, pending: trio.MemoryReceiveChannel[_PendingFinal]) -> None:
        async with pending:
            async for item in pending:
                await self._finalize(item)

    async def _finalize(self, item: _PendingFinal) -> None:
        decode = item.decode
        if item.started:
            await decode.done.wait()
        else:
            await decode.run(self)
        if decode.error is not None or decode.text is None:
            decode.drop()
            reason = str(decode.error) if decode.error else "decode cancelled"
            log_event(self.ctx.sid, "asr_fail", level=logging.WARNING, reason=reason)
            self.ctx.send(protocol.error(ErrorCode.ASR_FAIL, f"speech recognition failed: {reason}"))
            return
        self._decoded(item.metrics, decode.elapsed_s, _seconds(decode.pcm), "final")
        text = decode.text
        if not text:
            decode.drop()
            if item.reason == "stop":
                self.ctx.send(protocol.info("stop: no words recognized", event="no_speech"))
            log_event(self.ctx.sid, "final_empty", reason=item.reason)
            return
        self._finals_done += 1
        transcript_id = f"{self.ctx.sid}-{self._finals_done}"
        self.ctx.send(
            protocol.final_transcript(text, transcript_id), on_sent=item.metrics.mark_final
        )
        log_event(self.ctx.sid, "final", id=transcript_id, chars=len(text))
        utterance = Utterance(text, transcript_id, item.metrics, turn=decode.turn)
        metrics = item.metrics
        if self.utterances is None:
            self.ctx.send_rendered(
                lambda: protocol.metrics({"id": transcript_id, **metrics.fields()})
            )
        else:
            await self.utterances.send(utterance)

    def _decoded(
        self, metrics: TurnMetrics | None, decode_s: float, audio_s: float, kind: str
    ) -> None:
        self.ctx.observer.decode(kind, decode_s, audio_s)
        if metrics is not None:
            metrics.add_decode(decode_s, audio_s)
        slow = audio_s > 0 and decode_s / audio_s > SLOW_RTF
        self._slow_decodes = self._slow_decodes + 1 if slow else 0
        if self._slow_decodes >= 2 and not self._slow_told:
            self._slow_told = True
            log_event(self.ctx.sid, "asr_slow", level=logging.WARNING, rtf=round(decode_s / audio_s, 2))
            self.ctx.send(
                protocol.info(
                    "speech recognition is slower than real time on this machine; "
                    "a smaller model (STREAM_MODEL_WHISPER=tiny.en) would keep up",
                    event="asr_slow",
                    rtf=round(decode_s / audio_s, 2),
                )
            )


def _seconds(pcm: bytes) -> float:
    return len(pcm) / 2 / ENGINE_SAMPLE_RATE
