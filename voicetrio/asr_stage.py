"""The ASR stage: client audio in, partial and final transcripts out.

It cuts the stream into 30 ms frames, asks the session's VAD about each, and
feeds the sans-IO :class:`~voicetrio.endpointing.Endpointer`, whose events it
turns into work: a partial decode (at most one in flight, never queued), a
final decode of the whole utterance, and an :class:`Utterance` for the reply
stage. Decodes run as tasks of the stage's own nursery so the frame loop
never waits for a model; finals are decoded in order by one finalizer task.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from voicetrio import protocol
from voicetrio.endpointing import (
    EndpointConfig,
    Endpointer,
    EndpointEvent,
    PartialDue,
    SpeechStarted,
    UtteranceEnded,
)
from voicetrio.engines.base import ENGINE_SAMPLE_RATE, VAD_FRAME_MS, EngineError
from voicetrio.logs import log_event
from voicetrio.metrics import TurnMetrics
from voicetrio.protocol import ErrorCode
from voicetrio.reply import Utterance

if TYPE_CHECKING:
    from voicetrio.session import SessionContext

FRAME_BYTES = ENGINE_SAMPLE_RATE * VAD_FRAME_MS // 1000 * 2
#: Audio kept after the last speech frame for the final decode: word endings
#: trail below the VAD's threshold.
TAIL_MS = 300

StageInput = tuple[protocol.Start | protocol.Stop | protocol.Audio, float]


@dataclass(slots=True)
class _Frame:
    start_ms: int
    pcm: bytes
    arrived: float


@dataclass(slots=True)
class _PendingFinal:
    pcm: bytes
    metrics: TurnMetrics
    reason: str


class AsrStage:
    def __init__(
        self,
        ctx: SessionContext,
        utterances: trio.MemorySendChannel[Utterance] | None,
        on_speech_start: Callable[[], None],
    ) -> None:
        self.ctx = ctx
        self.utterances = utterances
        self.on_speech_start = on_speech_start
        config = ctx.config
        self.endpoint_config = EndpointConfig(
            frame_ms=VAD_FRAME_MS,
            silence_ms=config.vad_silence_ms,
            partial_interval_ms=config.partial_interval_ms,
            max_utterance_ms=config.max_utterance_ms,
        )
        self._reset_stream()
        self._finals_done = 0

    def _reset_stream(self) -> None:
        self.endpointer = Endpointer(self.endpoint_config)
        self.vad = self.ctx.engines.vad()
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
                        await self._audio(message.pcm, arrived, finals_send)
                    elif isinstance(message, protocol.Start):
                        self._reset_stream()
                    else:
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
            await self._handle(events, finals)

    async def _handle(
        self, events: list[EndpointEvent], finals: trio.MemorySendChannel[_PendingFinal]
    ) -> None:
        for event in events:
            if isinstance(event, SpeechStarted):
                self._open_utterance(event)
            elif isinstance(event, PartialDue):
                self._start_partial()
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
        self._nursery.start_soon(self._partial, bytes(self._utterance), self._generation)

    async def _partial(self, pcm: bytes, generation: int) -> None:
        metrics = self._metrics
        with trio.CancelScope() as scope:
            self._partial_scope = scope
            started = trio.current_time()
            try:
                text = (await self.ctx.engines.asr.transcribe(pcm, final=False)).strip()
            except EngineError as exc:
                log_event(self.ctx.sid, "partial_fail", level=logging.WARNING, reason=str(exc))
                text = ""
            else:
                if metrics is not None:
                    metrics.add_decode(trio.current_time() - started, _seconds(pcm))
            if generation != self._generation:
                return
            self.endpointer.partial_finished()
            if text and text != self._last_partial and metrics is not None:
                self._last_partial = text
                self.ctx.send(
                    protocol.partial_transcript(text),
                    droppable=True,
                    on_sent=metrics.mark_first_partial,
                )

    async def _close_utterance(
        self, event: UtteranceEnded, finals: trio.MemorySendChannel[_PendingFinal]
    ) -> None:
        metrics = self._metrics
        self._generation += 1
        if self._partial_scope is not None:
            self._partial_scope.cancel()
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
            return
        log_event(self.ctx.sid, "utterance_end", reason=event.reason, audio_ms=len(pcm) // 32)
        await finals.send(_PendingFinal(pcm, metrics, event.reason))

    async def _finalizer(self, pending: trio.MemoryReceiveChannel[_PendingFinal]) -> None:
        async with pending:
            async for item in pending:
                await self._finalize(item)

    async def _finalize(self, item: _PendingFinal) -> None:
        started = trio.current_time()
        try:
            text = (await self.ctx.engines.asr.transcribe(item.pcm, final=True)).strip()
        except EngineError as exc:
            log_event(self.ctx.sid, "asr_fail", level=logging.WARNING, reason=str(exc))
            self.ctx.send(protocol.error(ErrorCode.ASR_FAIL, f"speech recognition failed: {exc}"))
            return
        item.metrics.add_decode(trio.current_time() - started, _seconds(item.pcm))
        if not text:
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
        utterance = Utterance(text, transcript_id, item.metrics)
        if self.utterances is None:
            self.ctx.send_rendered(
                lambda: protocol.metrics({"id": transcript_id, **item.metrics.fields()})
            )
        else:
            await self.utterances.send(utterance)


def _seconds(pcm: bytes) -> float:
    return len(pcm) / 2 / ENGINE_SAMPLE_RATE
