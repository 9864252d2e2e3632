"""One assistant turn: LLM tokens, phrases, speech, in one cancel scope.

A :class:`Turn` is started with ``nursery.start`` and hands itself back once
its cancel scope exists, so the session can cancel it at any moment (client
``cancel``, barge-in, shutdown). Inside, three tasks joined by channels:

    llm reader --deltas--> token pump --phrases--> speaker
    (engine stream)        (timeouts, llm_token,   (TTS, tts_chunk,
                            phrase aggregation)     tts_phrase_done)

Every event a turn produces goes through :meth:`Turn.emit`, its one gate: a
cancelled turn emits nothing more, and a *held* turn (a speculative reply
started before the end of the user's turn is confirmed) buffers its output
until :meth:`Turn.release`, or vanishes without a trace on cancel. The
memory update is deferred the same way, so a dropped speculative reply
leaves no mark.
"""

from __future__ import annotations

import base64
import enum
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from voicetrio import protocol
from voicetrio.engines.base import ChatMessage, EngineError, LlmError, SpeechAudio
from voicetrio.logs import log_event
from voicetrio.metrics import TurnMetrics
from voicetrio.phrases import PhraseAggregator
from voicetrio.protocol import ErrorCode, JsonDict
from voicetrio.work_queue import Lane

if TYPE_CHECKING:
    from voicetrio.session import SessionContext

SPOKEN_SYSTEM_PROMPT = (
    "You are a helpful voice assistant. Your answers are spoken aloud: reply in one "
    "to three short, plain sentences. No lists, no markdown, no emoji."
)


class Outcome(enum.Enum):
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    LLM_TIMEOUT = "llm_timeout"
    LLM_FAIL = "llm_fail"


@dataclass(slots=True)
class Utterance:
    """A final transcript, handed from the ASR stage to the reply stage.

    ``turn`` is the held reply already started for it during the silence
    window (a speculative reply), which the reply stage adopts and releases.
    """

    text: str
    transcript_id: str
    metrics: TurnMetrics
    turn: Turn | None = None


class LlmTimeout(Exception):
    pass


class Turn:
    def __init__(self, turn_id: int, utterance: Utterance, ctx: SessionContext, *, held: bool = False) -> None:
        self.id = turn_id
        self.utterance = utterance
        self.ctx = ctx
        self.held = held
        self.outcome = Outcome.RUNNING
        self.reply_text = ""
        self.scope = trio.CancelScope()
        self.finished = trio.Event()
        # The turn's place in the LLM's queue: tentative while held, so that
        # a speculative reply never keeps a confirmed one waiting.
        self._llm_slot = ctx.engines.replies.slot(Lane.TENTATIVE if held else Lane.URGENT)
        self._held_sends: list[Callable[[], None]] = []
        self._memory_pending = False
        # Estimated end of playback at the client (server clock), for barge-in
        # after the last chunk was sent but while the client still plays it.
        self.playback_end = -math.inf

    # -- control, from other tasks ------------------------------------------

    @property
    def active(self) -> bool:
        return not self.finished.is_set()

    def speaking(self, now: float) -> bool:
        return self.active or now < self.playback_end

    def cancel(self, outcome: Outcome = Outcome.CANCELLED) -> int:
        """Stop the turn now; returns how many queued items were dropped."""
        if self.outcome is Outcome.RUNNING:
            self.outcome = outcome
        self.scope.cancel()
        self._held_sends.clear()
        self._memory_pending = False
        self.playback_end = -math.inf
        return self.ctx.outbox.queue.purge_turn(self.id)

    def release(self) -> None:
        """A held (speculative) turn becomes the real reply: flush and go live."""
        if not self.held:
            return
        self.held = False
        self._llm_slot.promote()
        for send in self._held_sends:
            send()
        self._held_sends.clear()
        if self._memory_pending:
            self._commit_memory()

    # -- output gate ---------------------------------------------------------

    def emit(
        self,
        event: JsonDict,
        binary: bytes | None = None,
        on_sent: Callable[[float], None] | None = None,
    ) -> None:
        self._gate(lambda: self.ctx.send(event, binary=binary, turn=self.id, on_sent=on_sent))

    def _gate(self, send: Callable[[], None]) -> None:
        if self.scope.cancel_called or self.outcome is Outcome.CANCELLED:
            return
        if self.held:
            self._held_sends.append(send)
        else:
            send()

    def _commit_memory(self) -> None:
        self._memory_pending = False
        self.ctx.memory.add_turn(self.utterance.text, self.reply_text)

    # -- the turn ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Turn] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self.scope:
                task_status.started(self)
                await self._body()
        finally:
            self.finished.set()
            self.ctx.observer.turn(self.outcome.value)
            log_event(
                self.ctx.sid,
                "turn_end",
                turn=self.id,
                outcome=self.outcome.value,
                reply_chars=len(self.reply_text),
            )

    async def _body(self) -> None:
        config = self.ctx.config
        messages = self.ctx.memory.messages(
            config.system_prompt or SPOKEN_SYSTEM_PROMPT, self.utterance.text
        )
        delta_send, delta_recv = trio.open_memory_channel[str](0)
        phrase_send, phrase_recv = trio.open_memory_channel[str](config.max_pending_phrases)
        try:
            # The timeouts run from when the LLM takes the request: waiting in
            # line (admission keeps it short) is not the model being slow.
            with trio.move_on_after(config.llm_timeout_s):
                await self._llm_slot.reserve()
            if not self._llm_slot.held:
                raise LlmTimeout(f"the language model was busy for {config.llm_timeout_s:g} s")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._speaker, phrase_recv)
                nursery.start_soon(self._llm_reader, messages, delta_send)
                await self._token_pump(delta_recv, phrase_send)
        except* LlmTimeout as group:
            self._fail(Outcome.LLM_TIMEOUT, protocol.error(ErrorCode.LLM_TIMEOUT, _first(group)))
        except* LlmError as group:
            self._fail(
                Outcome.LLM_FAIL,
                protocol.error(ErrorCode.LLM_FAIL, f"the language model failed: {_first(group)}"),
            )
        else:
            self.outcome = Outcome.DONE
            self.emit(protocol.tts_complete())
        finally:
            self._llm_slot.close()
        self.emit_metrics()

    def _fail(self, outcome: Outcome, event: JsonDict) -> None:
        if self.outcome is Outcome.RUNNING:
            self.outcome = outcome
        log_event(self.ctx.sid, "turn_fail", level=logging.WARNING, turn=self.id, error=event["message"])
        self.emit(event)

    def emit_metrics(self) -> None:
        utterance = self.utterance
        metrics = utterance.metrics
        # Rendered when written, so that t4 (first audio actually sent) is
        # known even if the chunk was still queued when the turn ended, and
        # so that a held reply that finished before its release carries the
        # id of the final it answers, which is only known at release.
        observer = self.ctx.observer

        def render() -> JsonDict:
            fields = metrics.fields()
            t2, t3, t4 = (fields[k] for k in ("t2_final_ms", "t3_first_token_ms", "t4_first_audio_ms"))
            observer.reply_latency(
                None if t2 is None or t3 is None else (t3 - t2) / 1000,
                None if t2 is None or t4 is None else (t4 - t2) / 1000,
            )
            return protocol.metrics({"id": utterance.transcript_id, **fields})

        self._gate(lambda: self.ctx.send_rendered(render, turn=self.id))

    async def _llm_reader(
        self, messages: list[ChatMessage], out: trio.MemorySendChannel[str]
    ) -> None:
        # Runs in its own task so that the pump's timeouts cancel a channel
        # receive, never the engine's iterator midway.
        try:
            async with out, self.ctx.engines.llm.stream(messages) as deltas:
                async for delta in deltas:
                    if delta:
                        await out.send(delta)
        finally:
            self._llm_slot.close()  # the reply is written: the next may start

    async def _token_pump(
        self, deltas: trio.MemoryReceiveChannel[str], phrases: trio.MemorySendChannel[str]
    ) -> None:
        config = self.ctx.config
        aggregator = PhraseAggregator(
            max_length=config.tts_max_phrase_length,
            gap_ms=config.tts_phrase_gap_ms,
            first_max_length=config.tts_first_phrase_length,
        )
        started = trio.current_time()
        total_deadline = started + config.llm_timeout_s
        token_deadline = started + config.llm_first_token_timeout_s
        got_first = False
        async with phrases, deltas:
            while True:
                gap = aggregator.deadline_ms()
                phrase_deadline = math.inf if gap is None else gap / 1000
                with trio.move_on_at(min(token_deadline, total_deadline, phrase_deadline)):
                    try:
                        delta = await deltas.receive()
                    except trio.EndOfChannel:
                        break
                    now = trio.current_time()
                    token_deadline = now + config.llm_gap_timeout_s
                    self.reply_text += delta
                    # t3 is when the first token reaches the socket: a held
                    # reply's tokens wait for the end of the user's turn.
                    self.emit(
                        protocol.llm_token(delta),
                        on_sent=None if got_first else self.utterance.metrics.mark_first_token,
                    )
                    got_first = True
                    for phrase in aggregator.push(delta, now * 1000):
                        await phrases.send(phrase)
                    continue
                now = trio.current_time()
                if now >= total_deadline:
                    raise LlmTimeout(f"the reply took longer than {config.llm_timeout_s:g} s")
                if now >= token_deadline:
                    if got_first:
                        raise LlmTimeout(
                            f"no token for {config.llm_gap_timeout_s:g} s in the middle of the reply"
                        )
                    raise LlmTimeout(
                        f"no first token within {config.llm_first_token_timeout_s:g} s"
                    )
                for phrase in aggregator.tick(now * 1000):
                    await phrases.send(phrase)
            for phrase in aggregator.flush():
                await phrases.send(phrase)
        self.emit(protocol.llm_done())
        if self.held:
            self._memory_pending = True
        else:
            self._commit_memory()

    async def _speaker(self, phrases: trio.MemoryReceiveChannel[str]) -> None:
        config = self.ctx.config
        seq = 0
        async with phrases:
            async for phrase in phrases:
                seq += 1
                try:
                    with trio.fail_after(config.tts_timeout_s):
                        audio = await self.ctx.engines.tts.synthesize(phrase)
                except (EngineError, trio.TooSlowError) as exc:
                    reason = (
                        f"synthesis took longer than {config.tts_timeout_s:g} s"
                        if isinstance(exc, trio.TooSlowError)
                        else str(exc)
                    )
                    log_event(self.ctx.sid, "tts_fail", level=logging.WARNING, seq=seq, reason=reason)
                    self.emit(
                        protocol.info(
                            f"could not speak phrase {seq}: {reason}",
                            event="tts_fail",
                            code=str(ErrorCode.TTS_FAIL),
                            seq=seq,
                        )
                    )
                    continue
                self._emit_audio(seq, audio)
                self.emit(protocol.tts_phrase_done(seq))

    def _emit_audio(self, seq: int, audio: SpeechAudio) -> None:
        metrics = self.utterance.metrics

        def sent(now: float) -> None:
            metrics.mark_first_audio(now)
            self.playback_end = max(self.playback_end, now) + audio.duration_s

        if self.ctx.audio_format == "pcm16":
            header = protocol.tts_chunk_pcm16(seq, audio.sample_rate, len(audio.pcm))
            self.emit(header, binary=audio.pcm, on_sent=sent)
        else:
            b64 = base64.b64encode(audio.wav()).decode("ascii")
            self.emit(protocol.tts_chunk_b64(seq, b64), on_sent=sent)


def _first(group: BaseExceptionGroup[Exception]) -> str:
    return str(group.exceptions[0])
