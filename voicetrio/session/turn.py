"""One assistant turn: LLM tokens, phrases, speech, in one cancel scope.

A :class:`Turn` is started with ``nursery.start`` and hands itself back once
its cancel scope exists. Only the reply stage (:mod:`voicetrio.session.reply`)
starts, releases and cancels turns. Inside, three tasks joined by channels:

    llm reader --deltas--> token pump --phrases--> speaker
    (engine stream)        (timeouts, ReplyDelta,  (TTS, SpeechChunk,
                            phrase aggregation)     PhraseSpoken)

Every effect a turn has outside itself (an event for the client, the memory
update) goes through :meth:`Turn._gate`: a cancelled turn has no more
effects (even those already computed when the cancel landed), and a *held*
turn (a speculative reply started before the end of the user's turn is
confirmed) keeps them in order until :meth:`Turn.release`, or vanishes
without a trace on cancel.

A turn answers either words just heard (``text``: they enter the
conversation with the reply, as one exchange) or, when the client asked for
a reply (``text`` None), the conversation as it stands. A text-only turn
(``speak`` False) writes its reply and speaks nothing. The phrases it spoke
and their lengths are kept, so that a client that played only part of the
speech can have the conversation keep only the words heard (:meth:`Turn.truncate`).

With a toolbox, the model may call tools before it answers
(:mod:`voicetrio.engines.llm.tooling`): the calls run inside the LLM reader,
so cancelling the turn cancels a tool round like any read; only the spoken
answer enters the conversation. A turn with an ``announcement`` says it as
it is, without the model (a timer that rang).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import trio

from voicetrio.core.audio import SpeechAudio
from voicetrio.core.barge_in import SpokenPhrase, recent_reply
from voicetrio.core.codes import ErrorCode
from voicetrio.core.conversation import Conversation, reply_key, utterance_key
from voicetrio.core.events import (
    Error,
    Event,
    Info,
    Metrics,
    Outcome,
    PhraseSpoken,
    ReplyDelta,
    ReplyEnded,
    ReplyStarted,
    ReplyTextDone,
    SpeechChunk,
)
from voicetrio.core.heard import heard_text
from voicetrio.core.metrics import TurnMetrics
from voicetrio.core.phrases import PhraseAggregator
from voicetrio.core.prompt import system_prompt
from voicetrio.core.tools import Toolbox
from voicetrio.core.work_queue import Lane
from voicetrio.engines.base import ChatMessage, EngineError, LlmError
from voicetrio.engines.llm.tooling import open_reply
from voicetrio.logs import log_event
from voicetrio.session.stage import OnSent, StageContext


class LlmTimeout(Exception):
    pass


class Turn:
    """The reply to ``text`` (utterance ``utterance``'s words), or with
    ``text`` None to the conversation as it stands. Held while
    ``transcript_id`` is unknown: a speculative reply, released with the id
    of the final it answers."""

    def __init__(
        self,
        turn_id: int,
        text: str | None,
        metrics: TurnMetrics,
        ctx: StageContext,
        conversation: Conversation,
        *,
        transcript_id: str | None = None,
        utterance: int = 0,
        instructions: str | None = None,
        speak: bool = True,
        tools: Toolbox | None = None,
        announcement: str | None = None,
    ) -> None:
        self.id = turn_id
        self.text = text
        self.utterance = utterance
        self.metrics = metrics
        self.transcript_id = transcript_id
        self.ctx = ctx
        self.conversation = conversation
        self.instructions = instructions
        self.speak = speak
        #: What the model may call while it answers (None: nothing).
        self.tools = tools
        #: Words to say as they are, without the language model (a timer rang).
        self.announcement = announcement
        self.outcome = Outcome.RUNNING
        self.reply_text = ""
        #: Each phrase spoken and its seconds of audio, in order.
        self.spoken: list[tuple[str, float]] = []
        #: Each phrase and when the client plays it (server clock, estimated
        #: from when its audio was written): what an open microphone may
        #: hear of the reply, for barge-in.
        self.played: list[SpokenPhrase] = []
        #: How much of the speech the client played, if it cut it short.
        self._heard_ms: int | None = None
        self._remembered = False
        self.scope = trio.CancelScope()
        self.finished = trio.Event()
        #: The effects of a held turn, in order, until it is released; None
        #: once it is live (or if it never was held).
        self._held: list[Callable[[], None]] | None = [] if transcript_id is None else None
        # The turn's place in the LLM's queue: tentative while held, so that
        # a speculative reply never keeps a confirmed one waiting.
        self._llm_slot = ctx.engines.replies.slot(Lane.TENTATIVE if self.held else Lane.URGENT)
        # Estimated end of playback at the client (server clock), for barge-in
        # after the last chunk was sent but while the client still plays it.
        self.playback_end = -math.inf

    # -- control, from the reply stage --------------------------------------

    @property
    def held(self) -> bool:
        return self._held is not None

    @property
    def active(self) -> bool:
        return not self.finished.is_set()

    def speaking(self, now: float) -> bool:
        return self.active or now < self.playback_end

    def said_between(self, since: float, until: float) -> str:
        """The reply's phrases played (by estimate) at any time in ``[since, until]``."""
        return recent_reply(self.played, since, until)

    def cancel(self) -> int:
        """Stop the turn now; returns how many of its queued events were dropped."""
        if self.outcome is Outcome.RUNNING:
            self.outcome = Outcome.CANCELLED
        self.scope.cancel()
        if self._held is not None:
            self._held.clear()
        self.playback_end = -math.inf
        return self.ctx.sink.discard(self.id)

    def release(self, transcript_id: str) -> None:
        """A held (speculative) turn becomes the reply to ``transcript_id``:
        what it held goes out now, as if it had started at once."""
        effects = self._held
        if effects is None:
            return
        self.transcript_id = transcript_id
        self._held = None
        self._llm_slot.promote()
        for effect in effects:
            effect()

    # -- the gate ------------------------------------------------------------

    def emit(self, event: Event, on_sent: OnSent | None = None) -> None:
        self._gate(lambda: self.ctx.sink.emit(event, turn=self.id, on_sent=on_sent))

    def _gate(self, effect: Callable[[], None]) -> None:
        if self.scope.cancel_called:
            return
        if self._held is not None:
            self._held.append(effect)
        else:
            effect()

    def _answers(self) -> str:
        # Effects that name the final run live, so the transcript id is known.
        assert self.transcript_id is not None, "a held turn has no effects before its release"
        return self.transcript_id

    # -- the turn ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Turn] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self.scope:
                task_status.started(self)
                # Not tagged with the turn: what a protocol opens for a reply
                # stays open until its ReplyEnded, even if the rest is discarded.
                self._gate(
                    lambda: self.ctx.sink.emit(
                        ReplyStarted(self.id, self._answers(), speak=self.speak)
                    )
                )
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
        prompt = system_prompt(
            config.system_prompt if self.instructions is None else self.instructions
        )
        messages = self.conversation.messages(prompt, self.text)
        delta_send, delta_recv = trio.open_memory_channel[str](0)
        phrase_send, phrase_recv = trio.open_memory_channel[str](config.max_pending_phrases)
        try:
            # The timeouts run from when the LLM takes the request: waiting in
            # line (admission keeps it short) is not the model being slow.
            if self.announcement is None:
                with trio.move_on_after(config.llm_timeout_s):
                    await self._llm_slot.reserve()
                if not self._llm_slot.held:
                    raise LlmTimeout(f"the language model was busy for {config.llm_timeout_s:g} s")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._speaker if self.speak else _unspoken, phrase_recv)
                nursery.start_soon(self._llm_reader, messages, delta_send)
                await self._token_pump(delta_recv, phrase_send)
        except* LlmTimeout as group:
            self._fail(Outcome.LLM_TIMEOUT, Error(ErrorCode.LLM_TIMEOUT, _first(group)))
        except* LlmError as group:
            self._fail(
                Outcome.LLM_FAIL,
                Error(ErrorCode.LLM_FAIL, f"the language model failed: {_first(group)}"),
            )
        else:
            self.outcome = Outcome.DONE
            self.emit(ReplyEnded(self.id, Outcome.DONE))
        finally:
            self._llm_slot.close()
        self._emit_metrics()

    def _fail(self, outcome: Outcome, error: Error) -> None:
        if self.outcome is Outcome.RUNNING:
            self.outcome = outcome
        log_event(
            self.ctx.sid, "turn_fail", level=logging.WARNING, turn=self.id, error=error.message
        )
        self.emit(error)
        self.emit(ReplyEnded(self.id, outcome))

    def _emit_metrics(self) -> None:
        # The figures are read when written (t4, the first audio actually
        # sent, may still be queued now); the event is made when it passes
        # the gate, so a held reply that finished before its release names
        # the final it answers, known only at release.
        metrics, observer = self.metrics, self.ctx.observer

        def written(_: float) -> None:
            fields = metrics.fields()
            t2, t3, t4 = (
                fields[k] for k in ("t2_final_ms", "t3_first_token_ms", "t4_first_audio_ms")
            )
            observer.reply_latency(
                None if t2 is None or t3 is None else (t3 - t2) / 1000,
                None if t2 is None or t4 is None else (t4 - t2) / 1000,
            )

        self._gate(
            lambda: self.ctx.sink.emit(
                Metrics(self._answers(), metrics), turn=self.id, on_sent=written
            )
        )

    def _commit_memory(self) -> None:
        self._remembered = True
        reply = self._remembered_reply()
        if self.text is None:
            self.conversation.add(reply_key(self.id), "assistant", reply)
        else:
            self.conversation.add_exchange(
                utterance_key(self.utterance), self.text, reply_key(self.id), reply
            )

    def _remembered_reply(self) -> str:
        if self._heard_ms is None:
            return self.reply_text
        return heard_text(self.spoken, self._heard_ms)

    def truncate(self, heard_ms: int) -> None:
        """The client played only the first ``heard_ms`` of this reply's
        speech: the conversation keeps the words heard, now or when the
        reply enters it."""
        self._heard_ms = heard_ms
        if self._remembered:
            self.conversation.rewrite(reply_key(self.id), self._remembered_reply())

    async def _llm_reader(
        self, messages: list[ChatMessage], out: trio.MemorySendChannel[str]
    ) -> None:
        # Runs in its own task so that the pump's timeouts cancel a channel
        # receive, never the engine's iterator midway.
        if self.announcement is not None:
            async with out:
                await out.send(self.announcement)
            return
        try:
            async with out, open_reply(self.ctx.engines.llm, messages, self.tools) as deltas:
                # Empty deltas too: a model writing a tool call is at work,
                # which the pump's token timeouts must see.
                async for delta in deltas:
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
                    if not delta:
                        continue  # a tool call in the making: no text yet
                    self.reply_text += delta
                    # t3 is when the first token reaches the socket: a held
                    # reply's tokens wait for the end of the user's turn.
                    self.emit(
                        ReplyDelta(self.id, delta),
                        on_sent=None if got_first else self.metrics.mark_first_token,
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
        self.emit(ReplyTextDone(self.id, self.reply_text))
        # Memory after the text is out in full (a cancel during speech keeps
        # it); held, it waits for the release like the text itself.
        self._gate(self._commit_memory)

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
                    log_event(
                        self.ctx.sid, "tts_fail", level=logging.WARNING, seq=seq, reason=reason
                    )
                    self.emit(
                        Info(
                            "tts_fail",
                            f"could not speak phrase {seq}: {reason}",
                            code=ErrorCode.TTS_FAIL,
                            details=(("seq", seq),),
                        )
                    )
                    continue
                self.spoken.append((phrase, audio.duration_s))
                self._emit_audio(seq, phrase, audio)
                self.emit(PhraseSpoken(self.id, seq))

    def _emit_audio(self, seq: int, phrase: str, audio: SpeechAudio) -> None:
        metrics = self.metrics

        def sent(now: float) -> None:
            metrics.mark_first_audio(now)
            # The client plays it after what it was sent before, or now.
            start = max(self.playback_end, now)
            self.playback_end = start + audio.duration_s
            self.played.append(SpokenPhrase(phrase, start, self.playback_end))

        self.emit(SpeechChunk(self.id, seq, audio), on_sent=sent)


async def _unspoken(phrases: trio.MemoryReceiveChannel[str]) -> None:
    """A text-only reply: the phrases are not spoken."""
    async with phrases:
        async for _ in phrases:
            pass


def _first(group: BaseExceptionGroup[Exception]) -> str:
    return str(group.exceptions[0])


__all__ = ["LlmTimeout", "Turn"]
