"""The ASR stage: client audio in, transcripts and turn events out.

It cuts the stream into 30 ms frames, asks the session's VAD about each, and
feeds the sans-IO :class:`~voicetrio.core.endpointing.Endpointer`, whose events it
turns into work: a partial decode (at most one in flight, never queued) and
a final decode of the whole utterance. Decodes run as tasks of the stage's
own nursery so the frame loop never waits for a model; finals are handed
out in order by one finalizer.

What the client should see (partial and final transcripts, notices) goes to
the session's sink as domain events; what the stage after it should know
goes on its one out channel as turn events (:mod:`voicetrio.core.turn_events`):
speech started, the tentative final, its retraction, the final. The stage
never touches a turn.

The final is decoded *speculatively*: when silence begins, the utterance so
far is decoded at once, while the silence window runs, and its text is
announced as ``Tentative``. If speech resumes the decode is dropped (its
cancel scope) and ``Retracted`` follows; if the window closes, its result
is the final, ready (or nearly) the moment the turn ends. Audio at any rate
from 8 to 48 kHz is resampled to 16 kHz first.

With a turn judge (``engines.turn``, Smart Turn) and the server's own silence
window, the window varies (:mod:`voicetrio.core.turn_policy`): the endpointer
says when the judge is due (``JudgeDue``), the stage runs it in its nursery on
the utterance's audio (dropped if speech resumes or the utterance ends), and
hands the verdict back, with the words so far (partials, the speculative
final). The speculative decode still starts when silence begins; its
``Tentative`` is confirmed by the ``Final`` whenever the policy's window
closes. A judge not loaded, or failed, leaves the fixed window. Every
utterance's words so far also go downstream as ``HeardWords`` (with its
length of speech): barge-in judges them.

A client that takes turns itself (the Realtime API) may also end the turn now
(``Commit``: the stream goes on, unlike ``Stop``), drop the audio not yet
finalized (``ClearAudio``), change the audio rate and how turns end
(``Configure``: the silence window, the pre-roll, or no silence end at all),
and send a recorded clip to be transcribed whole (``AddAudio``). Its requests
about the conversation pass through this stage on the finals' line, so that
the stage after this one sees them in the order the client made them
relative to the audio: a reply asked for after a commit answers the words of
that commit.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import trio

from voicetrio.core import endpointing as ep
from voicetrio.core import inputs
from voicetrio.core.codes import ErrorCode
from voicetrio.core.events import (
    NOTHING_TO_COMMIT,
    AudioCleared,
    Error,
    FinalTranscript,
    Info,
    NoTranscript,
    PartialTranscript,
    UtteranceEnded,
    UtteranceStarted,
)
from voicetrio.core.metrics import TurnMetrics
from voicetrio.core.resample import Resampler, resample
from voicetrio.core.turn_events import Final, HeardWords, Retracted, SpeechStarted, Tentative
from voicetrio.core.turn_policy import TurnSettings, TurnTaker, TurnVerdict
from voicetrio.core.work_queue import Lane
from voicetrio.engines.base import (
    ENGINE_SAMPLE_RATE,
    VAD_FRAME_MS,
    EngineError,
    Engines,
    TextTurnJudge,
    TurnJudge,
)
from voicetrio.logs import log_event
from voicetrio.session.stage import Downstream, StageContext

FRAME_BYTES = ENGINE_SAMPLE_RATE * VAD_FRAME_MS // 1000 * 2
#: Audio kept after the last speech frame for a final decoded at the end of
#: the turn (stop, max duration): word endings trail below the VAD's threshold.
TAIL_MS = 300
#: Real-time factor above which decoding cannot keep up; two in a row and the
#: client is told, once, that a smaller model would serve it better.
SLOW_RTF = 1.5

#: What the session hands this stage, in the client's order.
StageMessage = (
    inputs.Start
    | inputs.Stop
    | inputs.Audio
    | inputs.Commit
    | inputs.ClearAudio
    | inputs.Configure
    | inputs.AddAudio
    | inputs.ConversationRequest
)
StageInput = tuple[StageMessage, float]


@dataclass(slots=True)
class _Frame:
    start_ms: int
    pcm: bytes
    arrived: float


class _Decode:
    """One final decode of an utterance, begun in its silence window
    (speculatively) or at its end, and awaited by the finalizer. Dropping
    it is cancelling its scope: a dropped decode announces nothing."""

    def __init__(self, utterance: int, pcm: bytes, metrics: TurnMetrics) -> None:
        self.utterance = utterance
        self.pcm = pcm
        self.metrics = metrics
        #: When the speech ended (it is made at silence start or at the
        #: utterance's end): the decoder serves the oldest first.
        self.since = trio.current_time()
        #: Set once the decode is over and its text, if any, announced.
        self.done = trio.Event()
        self.scope = trio.CancelScope()
        self.text: str | None = None
        self.error: EngineError | None = None
        self.elapsed_s = 0.0

    async def run(
        self, engines: Engines, announce: Callable[[str], Awaitable[None]] | None = None
    ) -> None:
        started = trio.current_time()
        try:
            with self.scope:
                try:
                    slot = engines.decoder.slot(Lane.URGENT, self.since)
                    text = await engines.asr.transcribe(self.pcm, final=True, slot=slot)
                    self.text = text.strip()
                except EngineError as exc:
                    self.error = exc
                finally:
                    self.elapsed_s = trio.current_time() - started
                if self.text and announce is not None:
                    # Inside the scope: a decode dropped before its text is
                    # out announces nothing, so a Retracted never comes
                    # before the Tentative it retracts.
                    await announce(self.text)
        finally:
            self.done.set()

    def drop(self) -> None:
        self.scope.cancel()


@dataclass(eq=False, slots=True)
class _Utterance:
    """The utterance being spoken: its audio, its figures and the work on it."""

    number: int
    start_ms: int
    pcm: bytearray
    metrics: TurnMetrics
    #: The start of its first speech frame (the endpointer's ms).
    onset_ms: int = 0
    last_partial: str = ""
    #: The scope of the partial decode in flight (at most one).
    partial: trio.CancelScope | None = None
    #: The final, decoded early while the silence window runs.
    speculative: _Decode | None = None
    #: The scope of the turn judge's run in flight (at most one).
    judging: trio.CancelScope | None = None
    #: The scope of the text judge's run in flight (at most one).
    reading: trio.CancelScope | None = None
    #: The latest verdict, for the log.
    verdict: TurnVerdict | None = None


@dataclass(slots=True)
class _PendingFinal:
    decode: _Decode
    started: bool
    reason: str
    #: The utterance's speech (onset to its last speech frame), in ms.
    speech_ms: int = 0


@dataclass(slots=True)
class _Clip:
    """A recorded utterance (16 kHz) to transcribe whole, then add under ``key``."""

    key: str
    pcm: bytes


#: The finals' line: finals, clips, and requests that must wait behind them.
_Pending = _PendingFinal | _Clip | inputs.ConversationRequest


class AsrStage:
    def __init__(self, ctx: StageContext, out: trio.MemorySendChannel[Downstream]) -> None:
        self.ctx = ctx
        self.out = out
        self.vad = ctx.engines.vad()
        self._turns = inputs.TurnTaking()
        self.endpoint_config = self._endpoint_config(self._turns)
        self._rate = ENGINE_SAMPLE_RATE
        self._resampler = Resampler(ENGINE_SAMPLE_RATE)
        self._utterances = 0
        self._finals_done = 0
        self._slow_decodes = 0
        self._slow_told = False
        #: Audio time before the current endpointer (which counts from 0):
        #: the times told to the client count from the session's first audio.
        self._clock_ms = 0
        self.endpointer = ep.Endpointer(self.endpoint_config, self._taker())
        self._reset_stream()

    def _endpoint_config(self, turns: inputs.TurnTaking) -> ep.EndpointConfig:
        config = self.ctx.config
        silence_ms = config.vad_silence_ms if turns.silence_ms is None else turns.silence_ms
        if not turns.detect:
            # Only a commit (or the length limit) ends a turn: a silence
            # window longer than any utterance never closes.
            silence_ms = config.max_utterance_ms + VAD_FRAME_MS
        # A VAD hangover already counts as silence-in-waiting: take it off the
        # window so the final comes vad_silence_ms after the speech really ends.
        hangover = self.vad.hangover_ms
        preroll = {} if turns.preroll_ms is None else {"preroll_ms": turns.preroll_ms}
        return ep.EndpointConfig(
            frame_ms=VAD_FRAME_MS,
            silence_ms=max(VAD_FRAME_MS, silence_ms - hangover),
            partial_interval_ms=config.partial_interval_ms,
            first_partial_ms=config.first_partial_ms,
            max_utterance_ms=config.max_utterance_ms,
            hangover_ms=hangover,
            **preroll,
        )

    def _taker(self) -> TurnTaker | None:
        """The turn taker, when a judge is configured and the session keeps the
        server's silence window: a client that set its own window (or takes
        turns itself) gets exactly that."""
        config = self.ctx.config
        turns = self._turns
        engines = self.ctx.engines
        if engines.turn is None and engines.turn_text is None:
            return None
        if not turns.detect or turns.silence_ms is not None:
            return None
        return TurnTaker(
            TurnSettings(
                complete_silence_ms=config.turn_complete_silence_ms,
                incomplete_silence_ms=config.turn_incomplete_silence_ms,
                fallback_silence_ms=config.vad_silence_ms,
                judge_after_ms=config.turn_judge_after_ms,
                text_complete_p=config.turn_text_complete_p,
                text_incomplete_p=config.turn_text_incomplete_p,
            )
        )

    def _ring_frames(self) -> int:
        config = self.endpoint_config
        return (config.preroll_ms + config.min_speech_ms) // VAD_FRAME_MS + 2

    def _reset_stream(self) -> None:
        self._clock_ms += self.endpointer.now_ms
        self.endpointer = ep.Endpointer(self.endpoint_config, self._taker())
        self.vad.reset()
        self._carry = bytearray()
        self._ring: deque[_Frame] = deque(maxlen=self._ring_frames())
        self._open: _Utterance | None = None

    async def run(self, inbox: trio.MemoryReceiveChannel[StageInput]) -> None:
        # Closing the out channel (at the end, whatever ends it) ends the
        # stage after this one.
        async with self.out:
            finals_send, finals_recv = trio.open_memory_channel[_Pending](8)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._finalizer, finals_recv)
                async with inbox, finals_send:
                    async for message, arrived in inbox:
                        await self._take(message, arrived, finals_send)
                # No more audio: a partial of an utterance that will not end is moot.
                if self._open is not None and self._open.partial is not None:
                    self._open.partial.cancel()

    async def _take(
        self, message: StageMessage, arrived: float, finals: trio.MemorySendChannel[_Pending]
    ) -> None:
        if isinstance(message, inputs.Audio):
            await self._audio(self._resampler.process(message.pcm), arrived, finals)
        elif isinstance(message, inputs.Start):
            self._rate = message.sample_rate
            self._resampler = Resampler(message.sample_rate, ENGINE_SAMPLE_RATE)
            self._reset_stream()
        elif isinstance(message, inputs.Stop):
            await self._audio(self._resampler.flush(), arrived, finals)
            events = self.endpointer.stop()
            if not events:
                self._notice("no_speech", "stop: no speech to finalize")
            await self._handle(events, finals)
            self._reset_stream()
        elif isinstance(message, inputs.Commit):
            # The filter's tail is audio the client sent before the commit.
            await self._audio(self._resampler.flush(), arrived, finals)
            events = self.endpointer.stop()
            if not events:
                self.ctx.sink.emit(NOTHING_TO_COMMIT)
            await self._handle(events, finals, reason="commit")
        elif isinstance(message, inputs.ClearAudio):
            await self._clear()
        elif isinstance(message, inputs.Configure):
            await self._configure(message, arrived, finals)
        elif isinstance(message, inputs.AddAudio):
            await finals.send(_Clip(message.key, resample(message.pcm, message.sample_rate)))
        else:
            # In line behind the finals of the audio before it.
            await finals.send(message)

    async def _clear(self) -> None:
        utterance = self._open
        if utterance is not None:
            if utterance.partial is not None:
                utterance.partial.cancel()
            if utterance.speculative is not None:
                await self._drop(utterance.speculative)
            log_event(self.ctx.sid, "audio_cleared", utterance=utterance.number)
        # The dropped audio still counts: the times told to the client are
        # those of all the audio it sent.
        dropped = len(self._carry) + len(self._resampler.flush())
        self._clock_ms += dropped * 1000 // (2 * ENGINE_SAMPLE_RATE)
        self._reset_stream()
        self.ctx.sink.emit(AudioCleared())

    async def _configure(
        self, settings: inputs.Configure, arrived: float, finals: trio.MemorySendChannel[_Pending]
    ) -> None:
        if settings.sample_rate != self._rate:
            # What was sent at the old rate is heard before the change.
            await self._audio(self._resampler.flush(), arrived, finals)
            self._rate = settings.sample_rate
            self._resampler = Resampler(settings.sample_rate, ENGINE_SAMPLE_RATE)
        if settings.turns != self._turns:
            self._turns = settings.turns
            self.endpoint_config = self._endpoint_config(settings.turns)
            # The endpointer reads its config at every frame, so a new silence
            # window applies to the utterance in progress too.
            self.endpointer.config = self.endpoint_config
            self.endpointer.use_taker(self._taker())
            self._ring = deque(self._ring, maxlen=self._ring_frames())

    async def _audio(
        self, pcm: bytes, arrived: float, finals: trio.MemorySendChannel[_Pending]
    ) -> None:
        self._carry += pcm
        while len(self._carry) >= FRAME_BYTES:
            frame = bytes(self._carry[:FRAME_BYTES])
            del self._carry[:FRAME_BYTES]
            start_ms = self.endpointer.now_ms
            self._ring.append(_Frame(start_ms, frame, arrived))
            if self._open is not None:
                self._open.pcm += frame
            judge, reader = self.ctx.engines.turn, self.ctx.engines.turn_text
            audio_ready = judge is not None and judge.ready
            self.endpointer.audio_judge_ready = audio_ready
            self.endpointer.judge_ready = audio_ready or (reader is not None and reader.ready)
            events = self.endpointer.push(self.vad.is_speech(frame))
            if events:
                await self._handle(events, finals)

    async def _handle(
        self,
        events: list[ep.EndpointEvent],
        finals: trio.MemorySendChannel[_Pending],
        *,
        reason: str | None = None,
    ) -> None:
        """Act on the endpointer's events; ``reason`` names the end of an
        utterance the endpointer was told to end (a commit, not a stop)."""
        for event in events:
            if isinstance(event, ep.SpeechStarted):
                await self._open_utterance(event)
            elif isinstance(event, ep.PartialDue):
                self._start_partial()
            elif isinstance(event, ep.SilenceStarted):
                self._start_speculative()
            elif isinstance(event, ep.SpeechResumed):
                self._stop_judging()
                await self._retract()
            elif isinstance(event, ep.JudgeDue):
                self._start_judge(event)
            elif isinstance(event, ep.UtteranceEnded):
                await self._close_utterance(event, finals, reason or event.reason)

    async def _open_utterance(self, event: ep.SpeechStarted) -> None:
        self._utterances += 1
        frames = [f for f in self._ring if f.start_ms >= event.start_ms]
        onset_ms = event.at_ms - self._debounce_ms()
        onset = next((f for f in frames if f.start_ms >= onset_ms), frames[-1])
        utterance = _Utterance(
            self._utterances,
            event.start_ms,
            bytearray(b"".join(f.pcm for f in frames)),
            TurnMetrics(onset.arrived),
            onset_ms=onset_ms,
        )
        self._open = utterance
        log_event(self.ctx.sid, "speech_start", at_ms=event.at_ms)
        self.ctx.sink.emit(UtteranceStarted(utterance.number, self._clock_ms + onset_ms))
        await self.out.send(SpeechStarted(utterance.number, trio.current_time()))

    def _debounce_ms(self) -> int:
        frames = -(-self.endpoint_config.min_speech_ms // VAD_FRAME_MS)
        return frames * VAD_FRAME_MS

    def _start_partial(self) -> None:
        utterance = self._open
        assert utterance is not None, "partials are due inside an utterance only"
        self.endpointer.partial_started()
        utterance.partial = scope = trio.CancelScope()
        self._nursery.start_soon(self._partial, utterance, scope)

    async def _partial(self, utterance: _Utterance, scope: trio.CancelScope) -> None:
        text: str | None = None
        slot = self.ctx.engines.decoder.slot(Lane.TENTATIVE)
        try:
            with scope:
                # The audio is taken once the decoder is ours: when it was busy,
                # the partial covers what was said while it waited.
                await slot.reserve()
                pcm = bytes(utterance.pcm)
                started = trio.current_time()
                try:
                    text = await self.ctx.engines.asr.transcribe(pcm, final=False, slot=slot)
                except EngineError as exc:
                    log_event(self.ctx.sid, "partial_fail", level=logging.WARNING, reason=str(exc))
                else:
                    text = text.strip()
                    self._decoded(
                        utterance.metrics, trio.current_time() - started, _seconds(pcm), "partial"
                    )
        finally:
            slot.close()
            # Whatever happened, a still open utterance may have its next partial.
            if self._open is utterance:
                utterance.partial = None
                self.endpointer.partial_finished()
        # An utterance that ended meanwhile has its final: this text is stale.
        if text and self._open is utterance and text != utterance.last_partial:
            utterance.last_partial = text
            self.ctx.sink.emit(
                PartialTranscript(text, utterance.number),
                on_sent=utterance.metrics.mark_first_partial,
            )
            await self._heard(utterance, text)

    def _speech_ms(self) -> int:
        """The open utterance's speech so far (onset to its last speech frame)."""
        onset, end = self.endpointer.onset_ms, self.endpointer.speech_end_ms
        return 0 if onset is None or end is None else max(0, end - onset)

    async def _heard(self, utterance: _Utterance, text: str) -> None:
        """The words so far, to the endpointer (an unfinished phrase keeps the
        turn open) and downstream (barge-in)."""
        if self._open is not utterance:
            return
        self.endpointer.transcript(text)
        await self.out.send(HeardWords(utterance.number, text, self._speech_ms()))

    def _start_judge(self, event: ep.JudgeDue) -> None:
        utterance, judge = self._open, self.ctx.engines.turn
        if utterance is None or judge is None:
            return
        self._stop_judging()
        utterance.judging = scope = trio.CancelScope()
        pcm = bytes(utterance.pcm)
        self._nursery.start_soon(self._judge, utterance, judge, event.ticket, pcm, scope)

    async def _judge(
        self,
        utterance: _Utterance,
        judge: TurnJudge,
        ticket: int,
        pcm: bytes,
        scope: trio.CancelScope,
    ) -> None:
        verdict: TurnVerdict | None = None
        started = trio.current_time()
        with scope:
            try:
                verdict = await judge.judge_async(pcm)
            except EngineError as exc:
                # The policy falls back to the fixed window for this silence.
                log_event(self.ctx.sid, "turn_judge_fail", level=logging.WARNING, reason=str(exc))
        if scope.cancelled_caught or self._open is not utterance:
            return  # speech resumed or the utterance ended: the verdict is stale
        utterance.judging = None
        utterance.verdict = verdict
        self.endpointer.verdict(ticket, verdict)
        if verdict is not None:
            log_event(
                self.ctx.sid,
                "turn_judged",
                probability=round(verdict.probability, 3),
                complete=verdict.complete,
                judge_ms=round((trio.current_time() - started) * 1000),
            )

    def _stop_judging(self) -> None:
        utterance = self._open
        if utterance is not None and utterance.judging is not None:
            utterance.judging.cancel()
            utterance.judging = None
        if utterance is not None and utterance.reading is not None:
            utterance.reading.cancel()
            utterance.reading = None

    def _start_speculative(self) -> None:
        utterance = self._open
        if utterance is None:
            return
        decode = _Decode(utterance.number, bytes(utterance.pcm), utterance.metrics)
        utterance.speculative = decode
        self._nursery.start_soon(
            decode.run, self.ctx.engines, partial(self._tentative, utterance, decode)
        )

    async def _tentative(self, utterance: _Utterance, decode: _Decode, text: str) -> None:
        await self.out.send(Tentative(decode.utterance, text, decode.metrics))
        await self._heard(utterance, text)
        self._start_reading(utterance, decode, text)

    def _start_reading(self, utterance: _Utterance, decode: _Decode, text: str) -> None:
        """The text judge on the speculative final's words: they are all the
        words of this silence, which the partials may not be yet."""
        reader = self.ctx.engines.turn_text
        if reader is None or not reader.ready or self._open is not utterance:
            return
        if utterance.speculative is not decode or not self.endpointer.in_trailing_silence:
            return
        if utterance.reading is not None:
            utterance.reading.cancel()
        utterance.reading = scope = trio.CancelScope()
        self._nursery.start_soon(self._read, utterance, reader, text, scope)

    async def _read(
        self, utterance: _Utterance, reader: TextTurnJudge, text: str, scope: trio.CancelScope
    ) -> None:
        end_p: float | None = None
        started = trio.current_time()
        with scope:
            try:
                end_p = await reader.end_probability(text)
            except EngineError as exc:
                log_event(self.ctx.sid, "turn_read_fail", level=logging.WARNING, reason=str(exc))
        if scope.cancelled_caught or self._open is not utterance:
            return  # speech resumed or the utterance ended: the answer is stale
        utterance.reading = None
        if end_p is None:
            return
        self.endpointer.text_verdict(text, end_p)
        log_event(
            self.ctx.sid,
            "turn_read",
            end_p=round(end_p, 3),
            read_ms=round((trio.current_time() - started) * 1000),
        )

    async def _retract(self) -> None:
        utterance = self._open
        if utterance is not None and utterance.speculative is not None:
            speculative, utterance.speculative = utterance.speculative, None
            await self._drop(speculative)

    async def _drop(self, decode: _Decode) -> None:
        decode.drop()
        # Its text may have been announced already: the stage after this one
        # drops what it started for it.
        await self.out.send(Retracted(decode.utterance))

    async def _close_utterance(
        self, event: ep.UtteranceEnded, finals: trio.MemorySendChannel[_Pending], reason: str
    ) -> None:
        self._stop_judging()
        utterance, self._open = self._open, None
        if utterance is not None and utterance.partial is not None:
            utterance.partial.cancel()
        if event.reason == "max_duration":
            self._notice(
                "max_duration",
                f"utterance reached {self.ctx.config.max_utterance_ms} ms; finalizing it",
                code=ErrorCode.MAX_DURATION_EXCEEDED,
            )
        if utterance is None:
            return
        self.ctx.sink.emit(
            UtteranceEnded(utterance.number, self._clock_ms + event.speech_end_ms, reason)
        )
        keep_ms = event.speech_end_ms + TAIL_MS - utterance.start_ms
        keep = min(len(utterance.pcm), keep_ms * ENGINE_SAMPLE_RATE // 1000 * 2)
        pcm = bytes(utterance.pcm[:keep])
        speculative = utterance.speculative
        speech_ms = max(0, event.speech_end_ms - utterance.onset_ms)
        if not pcm:
            if speculative is not None:
                await self._drop(speculative)
            self.ctx.sink.emit(NoTranscript(utterance.number, False, "no audio to transcribe"))
            await self.out.send(HeardWords(utterance.number, "", speech_ms, ended=True))
            return
        verdict = utterance.verdict
        log_event(
            self.ctx.sid,
            "utterance_end",
            reason=reason,
            audio_ms=len(pcm) // 32,
            speculative=speculative is not None,
            turn=event.turn,
            silence_ms=event.at_ms - event.speech_end_ms,
            verdict=None if verdict is None else round(verdict.probability, 3),
        )
        # A speculative decode covers every speech frame: nothing but silence
        # came after it began, or it would have been dropped.
        if speculative is not None:
            await finals.send(_PendingFinal(speculative, True, reason, speech_ms))
        else:
            decode = _Decode(utterance.number, pcm, utterance.metrics)
            await finals.send(_PendingFinal(decode, False, reason, speech_ms))

    async def _finalizer(self, pending: trio.MemoryReceiveChannel[_Pending]) -> None:
        async with pending:
            async for item in pending:
                if isinstance(item, _PendingFinal):
                    await self._finalize(item)
                elif isinstance(item, _Clip):
                    await self._transcribe_clip(item)
                else:
                    await self.out.send(item)

    async def _transcribe_clip(self, clip: _Clip) -> None:
        decode = _Decode(0, clip.pcm, TurnMetrics(trio.current_time()))
        await decode.run(self.ctx.engines)
        if decode.text is None:
            reason = str(decode.error) if decode.error else "decode cancelled"
            log_event(self.ctx.sid, "clip_asr_fail", level=logging.WARNING, reason=reason)
            self.ctx.sink.emit(
                NoTranscript(0, True, f"speech recognition failed: {reason}", key=clip.key)
            )
        else:
            self._decoded(decode.metrics, decode.elapsed_s, _seconds(clip.pcm), "final")
        # The clip is in the conversation even without words, as the client made it.
        await self.out.send(inputs.AddText(clip.key, "user", decode.text or ""))

    async def _finalize(self, item: _PendingFinal) -> None:
        decode = item.decode
        if item.started:
            await decode.done.wait()
        else:
            await decode.run(self.ctx.engines)
        # Every utterance's end goes downstream, words or none: a barge-in
        # candidate waits for it.
        ended = HeardWords(decode.utterance, decode.text or "", item.speech_ms, ended=True)
        await self.out.send(ended)
        if decode.error is not None or decode.text is None:
            reason = str(decode.error) if decode.error else "decode cancelled"
            log_event(self.ctx.sid, "asr_fail", level=logging.WARNING, reason=reason)
            message = f"speech recognition failed: {reason}"
            self.ctx.sink.emit(NoTranscript(decode.utterance, True, message))
            self.ctx.sink.emit(Error(ErrorCode.ASR_FAIL, message))
            return
        metrics = decode.metrics
        self._decoded(metrics, decode.elapsed_s, _seconds(decode.pcm), "final")
        text = decode.text
        if not text:
            if item.reason == "stop":
                self._notice("no_speech", "stop: no words recognized")
            log_event(self.ctx.sid, "final_empty", reason=item.reason)
            self.ctx.sink.emit(NoTranscript(decode.utterance, False, "no words recognized"))
            return
        self._finals_done += 1
        transcript_id = f"{self.ctx.sid}-{self._finals_done}"
        self.ctx.sink.emit(
            FinalTranscript(transcript_id, text, decode.utterance), on_sent=metrics.mark_final
        )
        log_event(self.ctx.sid, "final", id=transcript_id, chars=len(text))
        await self.out.send(Final(decode.utterance, transcript_id, text, metrics))

    def _decoded(self, metrics: TurnMetrics, decode_s: float, audio_s: float, kind: str) -> None:
        self.ctx.observer.decode(kind, decode_s, audio_s)
        metrics.add_decode(decode_s, audio_s)
        slow = audio_s > 0 and decode_s / audio_s > SLOW_RTF
        self._slow_decodes = self._slow_decodes + 1 if slow else 0
        if self._slow_decodes >= 2 and not self._slow_told:
            self._slow_told = True
            rtf = round(decode_s / audio_s, 2)
            log_event(self.ctx.sid, "asr_slow", level=logging.WARNING, rtf=rtf)
            self._notice(
                "asr_slow",
                "speech recognition is slower than real time on this machine; "
                "a smaller model (STREAM_MODEL_WHISPER=tiny.en) would keep up",
                rtf=rtf,
            )

    def _notice(
        self, kind: str, message: str, *, code: ErrorCode | None = None, **details: float
    ) -> None:
        self.ctx.sink.emit(Info(kind, message, code=code, details=tuple(details.items())))


def _seconds(pcm: bytes) -> float:
    return len(pcm) / 2 / ENGINE_SAMPLE_RATE
