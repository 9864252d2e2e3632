"""The reply stage: the owner of every assistant turn.

It reads the ASR stage's turn events (:mod:`voicetrio.core.turn_events`) and is
the only code that starts, releases or cancels a :class:`~voicetrio.session.turn.Turn`:

* ``SpeechStarted`` while a reply is playing: a barge-in *candidate*. The
  utterance's words so far (``HeardWords``: partials, the tentative, its
  end) are judged by :func:`voicetrio.core.barge_in.decide` against what the
  reply said meanwhile: a stop word, or enough speech and enough words that
  are neither backchannels nor the reply's own echo, cancel the reply (and
  the utterance is answered); noise, echo and backchannels are not answered
  at all; a short reaction is answered after the reply;
* ``Tentative``: a speculative reply starts, its output held (if nothing else
  is being answered: never two replies at once);
* ``Retracted``: the held reply is dropped, unheard, without a memory trace;
* ``Final``: the held reply for that utterance is released as the answer, or
  a new turn starts; a final that comes while a reply is live waits for it.

Turns run as tasks of the stage's own nursery, so the stage goes on reading
its channel while a turn runs. The reader (client ``cancel``, new settings)
and shutdown reach a turn only through :meth:`ReplyStage.cancel`,
:meth:`ReplyStage.configure` and :meth:`ReplyStage.drain`, methods of this owner.

It also owns the conversation (:mod:`voicetrio.core.conversation`), and on the
same channel, in order with what was heard, takes the client's requests
about it: add text, forget an entry, keep only the heard part of a reply,
reply now. The session's turn-taking settings decide whether a final is
answered at once (else its words join the conversation and wait for a
request) and whether speech over a reply stops it.

It also owns the session's tools (:mod:`voicetrio.core.builtin_tools`): each
turn may call them, and the timers they set sleep in this stage's nursery,
so they die with the session. When a timer rings, the client gets an
``Info("timer", ...)`` at once, and (if the session answers turns by itself)
the assistant says it aloud as a turn of its own, after the reply being
given if there is one.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import trio

from voicetrio.core import barge_in
from voicetrio.core.builtin_tools import builtin_toolbox
from voicetrio.core.codes import ErrorCode
from voicetrio.core.conversation import Conversation, utterance_key
from voicetrio.core.events import (
    NOTHING_TO_CANCEL,
    REPLY_IN_PROGRESS,
    CancelCause,
    EntryAdded,
    EntryRemoved,
    Error,
    Info,
    Outcome,
    ReplyEnded,
    ReplyTruncated,
)
from voicetrio.core.inputs import AddText, Configure, Forget, Respond, Truncate, TurnTaking
from voicetrio.core.metrics import TurnMetrics

# The default system prompt, by the name the benchmarks import it under.
from voicetrio.core.prompt import SPOKEN_SYSTEM_PROMPT as SPOKEN_SYSTEM_PROMPT
from voicetrio.core.timers import TimerEntry
from voicetrio.core.tools import Toolbox
from voicetrio.core.turn_events import Final, HeardWords, Retracted, SpeechStarted, Tentative
from voicetrio.logs import log_event
from voicetrio.session.stage import Downstream, StageContext
from voicetrio.session.timers import SessionTimers
from voicetrio.session.turn import Turn

#: Replies whose speech a client may still cut short (truncate) by turn id;
#: older ones have left the conversation's bounds, or nearly.
RECENT_TURNS = 16


@dataclass(frozen=True, slots=True)
class _Held:
    """A speculative reply and the utterance it answers, if that utterance ends."""

    utterance: int
    turn: Turn


@dataclass(slots=True)
class _Candidate:
    """Speech over a reply, not yet known to be a turn of its own."""

    utterance: int
    turn: Turn
    #: When its speech was heard (trio time): the reply said since a margin
    #: before this may come back as echo.
    at: float
    #: The text the decision was last made on (a repeat changes nothing).
    seen: list[str] = field(default_factory=list)


class ReplyStage:
    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        config = ctx.config
        self.barge_in_settings = barge_in.BargeInSettings(
            min_speech_ms=config.barge_in_min_ms,
            min_words=config.barge_in_min_words,
            echo_margin_ms=config.barge_in_echo_margin_ms,
        )
        self._candidate: _Candidate | None = None
        #: Utterances over a reply that were noise, echo or backchannels:
        #: their finals are not answered.
        self._unanswered: set[int] = set()
        self.conversation = Conversation(config.memory_max_turns, config.memory_max_chars)
        #: The reply being given (or the last one: its audio may still play).
        self.turn: Turn | None = None
        self._recent: dict[int, Turn] = {}
        self._turns = TurnTaking()
        self._instructions: str | None = None
        self._speak = True
        self.turns_started = 0
        self._held: _Held | None = None
        #: Finals confirmed while a reply was live, answered in order after it.
        self._waiting: deque[Final] = deque()
        #: Shutting down: no new reply; the live one may finish until the deadline.
        self._draining = False
        self._nursery: trio.Nursery | None = None
        #: What the model may call; made with the nursery the timers sleep in.
        self.tools: Toolbox | None = None
        self.timers: SessionTimers | None = None
        #: Timers that rang, to be said when no reply is being given.
        self._rung: deque[TimerEntry] = deque()

    async def run(self, events: trio.MemoryReceiveChannel[Downstream]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.timers = SessionTimers(self.ctx.sid, nursery, self._ring, now=_wall_clock)
            self.tools = builtin_toolbox(_wall_clock, self.timers)
            async with events:
                async for event in events:
                    await self._handle(event)
            # The ASR stage ended: nothing can confirm a held reply any more.
            # A live turn (and a final waiting for it) is still answered.
            self._drop_held()
            # The session is ending: its timers end with it.
            self.timers.cancel(None)

    async def _handle(self, event: Downstream) -> None:
        if isinstance(event, SpeechStarted):
            self._speech_started(event)
        elif isinstance(event, HeardWords):
            self._judge_candidate(event)
        elif isinstance(event, Tentative):
            if self._candidate is not None and self._candidate.utterance == event.utterance:
                return  # words over a reply: not a turn of its own (yet)
            await self._hold(event)
        elif isinstance(event, Retracted):
            if self._held is not None and self._held.utterance == event.utterance:
                self._drop_held()
        elif isinstance(event, Final):
            if event.utterance in self._unanswered:
                self._unanswered.discard(event.utterance)
                if self._held is not None and self._held.utterance == event.utterance:
                    self._drop_held()
                log_event(self.ctx.sid, "final_unanswered", utterance=event.utterance)
                return
            if not self._turns.reply:
                # Heard, not answered: the words wait in the conversation.
                self.conversation.add(utterance_key(event.utterance), "user", event.text)
                return
            if self._draining:
                return
            self._waiting.append(event)
            await self._answer_waiting()
        elif isinstance(event, Respond):
            await self._respond(event)
        elif isinstance(event, AddText):
            self.conversation.add(event.key, event.role, event.text)
            self.ctx.sink.emit(EntryAdded(event.key, event.role, event.text))
        elif isinstance(event, Forget):
            self.conversation.forget(event.key)
            self.ctx.sink.emit(EntryRemoved(event.key))
        else:
            self._truncate(event)

    # -- control, from the session ----------------------------------------------

    def configure(self, settings: Configure) -> None:
        """The client's settings from now on (a final already answered stays so)."""
        self._turns = settings.turns
        self._instructions = settings.instructions
        self._speak = settings.speak
        if not settings.turns.reply:
            # A speculative reply waits for a final that will not be answered.
            self._drop_held()

    def cancel(self) -> None:
        """The client's ``cancel``: the live reply stops, its unsent output is dropped."""
        turn = self.turn
        if turn is not None and turn.active:
            dropped = self._cancel(turn, "client")
            log_event(self.ctx.sid, "cancel", turn=turn.id, dropped=dropped)
            self.ctx.sink.emit(Error(ErrorCode.CANCELLED, "reply cancelled by the client"))
        else:
            self.ctx.sink.emit(NOTHING_TO_CANCEL)

    async def drain(self, deadline: float) -> None:
        """Shutdown: start no reply; let the live one finish until ``deadline``, then cancel it."""
        self._draining = True
        self._waiting.clear()
        self._drop_held()
        turn = self.turn
        if turn is not None and turn.active:
            with trio.move_on_at(deadline):
                await turn.finished.wait()
            if turn.active:
                self._cancel(turn, "shutdown")

    # -- turns ------------------------------------------------------------------

    def _live(self) -> bool:
        return self.turn is not None and self.turn.active

    def _speech_started(self, event: SpeechStarted) -> None:
        """Speech while a reply plays opens a candidate: see the module docstring."""
        turn = self.turn
        allowed = self.ctx.config.barge_in and self._turns.interrupt
        self._candidate = None
        if not allowed or turn is None or not turn.speaking(event.at):
            return
        self._candidate = _Candidate(event.utterance, turn, event.at)
        # With no minimum of speech or words, any speech is a barge-in at once.
        self._judge_candidate(HeardWords(event.utterance, "", 0))

    def _judge_candidate(self, heard: HeardWords) -> None:
        candidate = self._candidate
        if candidate is None or candidate.utterance != heard.utterance:
            return
        settings = self.barge_in_settings
        now = trio.current_time()
        reply_text = candidate.turn.said_between(candidate.at - settings.echo_margin_ms / 1000, now)
        decision = barge_in.decide(
            settings, barge_in.Heard(heard.speech_ms, heard.text, reply_text, heard.ended)
        )
        if isinstance(decision, barge_in.Listen):
            return
        self._candidate = None
        if isinstance(decision, barge_in.Interrupt):
            self._barge_in(candidate.turn, decision.reason, heard.speech_ms)
            return
        log_event(
            self.ctx.sid,
            "barge_in_ignored",
            utterance=heard.utterance,
            reason=decision.reason,
            words=len(barge_in.words(heard.text)),
            speech_ms=heard.speech_ms,
        )
        if decision.reason != "short":
            # Noise, the reply's own echo, "uh-huh": nobody asked anything.
            self._unanswered.add(heard.utterance)

    def _barge_in(self, turn: Turn, reason: str, speech_ms: int) -> None:
        if not turn.speaking(trio.current_time()):
            return  # it ended and was played meanwhile: nothing to stop
        was_active = turn.active
        if was_active:
            dropped = self._cancel(turn, "speech")
        else:
            # All of it was written: nothing to drop, but the client is told
            # to stop playing it, and it no longer counts as playing.
            dropped = 0
            turn.playback_end = -math.inf
        log_event(
            self.ctx.sid,
            "barge_in",
            turn=turn.id,
            dropped=dropped,
            active=was_active,
            reason=reason,
            speech_ms=speech_ms,
        )
        self.ctx.sink.emit(Info("barge_in", "user spoke over the reply; stopping it"))

    async def _hold(self, tentative: Tentative) -> None:
        """A reply for a turn the user may not have finished: output held."""
        if (
            not self.ctx.config.speculative_reply
            or not self._turns.reply
            or self._draining
            or self._held is not None
            or self._waiting
            or self._live()
        ):
            return  # never two replies at once
        turn = self._new_turn(tentative, transcript_id=None)
        self._held = _Held(tentative.utterance, turn)
        await self._start(turn)
        log_event(self.ctx.sid, "turn_held", turn=turn.id)

    def _cancel(self, turn: Turn, cause: CancelCause) -> int:
        """Cancel a live turn (it said ReplyStarted, it has not ended): say it ended."""
        dropped = turn.cancel()
        # Untagged, so it is not discarded with the rest of the turn: every
        # reply a protocol saw start, it sees end.
        self.ctx.sink.emit(ReplyEnded(turn.id, Outcome.CANCELLED, cause))
        return dropped

    async def _respond(self, request: Respond) -> None:
        """The client asks for a reply to the conversation as it stands."""
        if self._draining:
            return
        if self._live() or self._waiting:
            self.ctx.sink.emit(REPLY_IN_PROGRESS)
            return
        # A speculative reply answers words the client did not wait for.
        self._drop_held()
        self.turns_started += 1
        turn = Turn(
            self.turns_started,
            None,
            TurnMetrics(trio.current_time()),
            self.ctx,
            self.conversation,
            transcript_id="",
            instructions=self._instructions
            if request.instructions is None
            else request.instructions,
            speak=self._speak if request.speak is None else request.speak,
            tools=self.tools,
        )
        self.turn = turn
        await self._start(turn)

    def _truncate(self, request: Truncate) -> None:
        turn = self._recent.get(request.turn)
        if turn is not None:
            turn.truncate(request.heard_ms)
        # A reply no longer kept is no longer in the conversation either.
        self.ctx.sink.emit(ReplyTruncated(request.turn, request.heard_ms))

    def _drop_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.turn.cancel()

    async def _answer_waiting(self) -> None:
        # Called by the event loop and by a turn ending; a turn made live is
        # marked so at once, before any checkpoint, so only one answers.
        while self._waiting and not self._live():
            final = self._waiting.popleft()
            held = self._held
            if held is not None and held.utterance == final.utterance:
                # The end of the user's turn is confirmed: the held reply goes
                # out as if it had started now, under the final's id.
                self._held = None
                self.turn = held.turn
                held.turn.release(final.transcript_id)
                log_event(self.ctx.sid, "turn_released", turn=held.turn.id)
            else:
                turn = self._new_turn(final, transcript_id=final.transcript_id)
                self.turn = turn
                await self._start(turn)

    def _new_turn(self, heard: Tentative | Final, *, transcript_id: str | None) -> Turn:
        self.turns_started += 1
        return Turn(
            self.turns_started,
            heard.text,
            heard.metrics,
            self.ctx,
            self.conversation,
            transcript_id=transcript_id,
            utterance=heard.utterance,
            instructions=self._instructions,
            speak=self._speak,
            tools=self.tools,
        )

    # -- timers -------------------------------------------------------------------

    def _ring(self, entry: TimerEntry) -> None:
        """A timer rang (in its own task): tell the client, and say it when free."""
        self.ctx.sink.emit(Info("timer", entry.spoken(), details=(("timer", entry.id),)))
        if not self._turns.reply or self._draining:
            return  # the client asks for replies itself: the notice is all
        self._rung.append(entry)
        assert self._nursery is not None
        self._nursery.start_soon(self._announce_rung)

    async def _announce_rung(self) -> None:
        # Like _answer_waiting: the turn is marked live before any checkpoint.
        while self._rung and not self._live() and not self._waiting and not self._draining:
            entry = self._rung.popleft()
            self.turns_started += 1
            turn = Turn(
                self.turns_started,
                None,
                TurnMetrics(trio.current_time()),
                self.ctx,
                self.conversation,
                transcript_id="",
                speak=self._speak,
                announcement=entry.spoken(),
            )
            self.turn = turn
            await self._start(turn)

    async def _start(self, turn: Turn) -> None:
        assert self._nursery is not None
        self._recent[turn.id] = turn
        if len(self._recent) > RECENT_TURNS:
            del self._recent[min(self._recent)]
        await self._nursery.start(self._run_turn, turn)

    async def _run_turn(self, turn: Turn, *, task_status: trio.TaskStatus[Turn]) -> None:
        await turn.run(task_status=task_status)
        if turn is self.turn and not self._draining:
            await self._answer_waiting()
            await self._announce_rung()


def _wall_clock() -> datetime:
    return datetime.now(UTC)


__all__ = ["SPOKEN_SYSTEM_PROMPT", "ReplyStage"]
