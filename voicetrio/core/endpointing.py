"""Endpointing, sans-IO: one VAD decision per frame in, utterance events out.

The :class:`Endpointer` never reads a clock. Time is *audio time*: it counts
the frames pushed, each ``frame_ms`` long, and "now" (:attr:`Endpointer.now_ms`)
is the end of the latest frame, ``frames_pushed * frame_ms``. Every event's
``at_ms`` is that "now" at the push that produced it. The session turns events
into work (partial decodes, the final decode, ending a turn); the endpointer
only needs to hear back when a partial decode starts and finishes.

Exact semantics, with ``frame_ms=30`` and the other defaults:

* **Opening.** Silence alone never opens an utterance. It opens on the frame
  that completes ``min_speech_frames = max(1, ceil(min_speech_ms / frame_ms))``
  consecutive speech frames (60 ms: 2 frames; a lone click frame is ignored).
  ``onset_ms`` is the start of the first frame of that run and the utterance
  audio starts at ``start_ms = max(0, onset_ms - preroll_ms, previous_end)``,
  where ``previous_end`` is the ``at_ms`` of the previous ``UtteranceEnded``
  (0 before any), so that pre-roll never hands the same audio to two
  utterances. Speech in frames 10 and 11 gives ``SpeechStarted(at_ms=360,
  start_ms=0)``; in frames 20 and 21, ``SpeechStarted(at_ms=660,
  start_ms=300)``.
* **Utterance time.** ``utterance_ms = now_ms - start_ms`` (pre-roll included:
  it is the length of the audio a decode would see); 0 when idle.
* **Partials.** Partial cycles are due on a fixed grid, ``onset_ms + first +
  k * partial_interval_ms`` for k = 0, 1, ..., where ``first`` is
  ``first_partial_ms`` (default: one interval); a cycle runs on the first frame
  whose end reaches its grid time (several grid times passed within one frame
  make one cycle). The grid does not drift with frame rounding: onset 600 ms
  gives cycles at 1110, 1620, 2100, 2610 ms. A cycle is *skipped*
  (``skipped_partials += 1``) when a partial decode is in flight, or when the
  utterance grew by less than ``min_partial_growth_ms`` since the last
  ``partial_started()``; otherwise it emits ``PartialDue``. A skipped cycle is
  not retried; the next chance is the next grid time.
* **Trailing silence.** The first non-speech frame inside an utterance emits
  ``SilenceStarted`` (the hook for a speculative final decode). Grid times that
  pass during trailing silence are dropped: they are not cycles and are not
  counted as skipped. A speech frame during trailing silence emits
  ``SpeechResumed`` at once (no debounce) and the utterance goes on; a cycle
  due on that same frame follows it. Every ``SilenceStarted`` is later
  answered by exactly one ``SpeechResumed`` or ``UtteranceEnded``, possibly in
  the same push.
* **End by silence.** When ``now_ms - speech_end_ms >= silence_ms``, where
  ``speech_end_ms`` is the end of the last speech frame, the push emits
  ``UtteranceEnded(reason="silence")``. With 700 ms that is the 24th silence
  frame (720 ms); a 23-frame pause (690 ms) does not split the utterance.
* **End by length.** When ``utterance_ms >= max_utterance_ms`` the push emits
  ``UtteranceEnded(reason="max_duration")`` instead of any partial. If silence
  and length both end the utterance on one frame, the reason is ``"silence"``:
  the speaker did finish.
* **End by stop.** :meth:`Endpointer.stop` returns
  ``[UtteranceEnded(reason="stop")]`` inside an utterance and ``[]`` outside;
  either way a half-counted debounce run is forgotten.
* **After an end** the endpointer is idle; the next speech needs a full
  debounce run to open a new utterance. The in-flight flag and the growth
  reference are cleared at once; ``skipped_partials`` keeps the ended
  utterance's count (so the session can log it) until the next utterance
  opens. ``now_ms`` keeps counting.

``partial_started()`` outside an utterance is a no-op, and
``partial_finished()`` with nothing in flight is a no-op, so a decode that
outlives its utterance cannot disturb the next one's bookkeeping, as long as
the session abandons that decode when the utterance ends (it does: the final
decode supersedes it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from voicetrio.core.turn_policy import EndTurn, TurnTaker, TurnVerdict

# Theory of operation
# -------------------
#
# Three phases, one per utterance-or-not:
#
#     IDLE --(min_speech_frames speech frames in a row)--> SPEECH
#     SPEECH --(non-speech frame)--> TRAILING_SILENCE
#     TRAILING_SILENCE --(speech frame)--> SPEECH
#     TRAILING_SILENCE --(silence_ms since the last speech frame)--> IDLE
#     SPEECH | TRAILING_SILENCE --(max_utterance_ms, or stop())--> IDLE
#
# Each push first applies the frame to the phase (emitting SpeechStarted,
# SilenceStarted or SpeechResumed), then checks the two ways an utterance can
# end by itself (silence first, then length), and only if it is still going
# and in SPEECH runs the partial cycle. So one push emits at most one
# phase-change event followed by at most one of PartialDue or UtteranceEnded,
# and never a PartialDue for audio that is about to be finalised anyway.
#
# The partial cycle is the only place with memory of decodes: an in-flight
# flag and the utterance length when the last partial decode started. Both
# belong to one utterance and are wiped when it ends.

EndReason = Literal["silence", "max_duration", "stop"]


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    frame_ms: int = 30
    silence_ms: int = 700
    partial_interval_ms: int = 500
    max_utterance_ms: int = 30_000
    min_partial_growth_ms: int = 200
    min_speech_ms: int = 60
    preroll_ms: int = 300
    #: The first partial cycle, after the onset; later ones follow every
    #: ``partial_interval_ms``. None: one interval, like the rest.
    first_partial_ms: int | None = None
    #: Silence the VAD reports as speech after the voice stops: added to the
    #: turn taker's count of silence, whose settings are the voice's.
    hangover_ms: int = 0

    def __post_init__(self) -> None:
        for name in ("frame_ms", "silence_ms", "partial_interval_ms", "max_utterance_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.first_partial_ms is not None and self.first_partial_ms <= 0:
            raise ValueError(f"first_partial_ms must be positive, got {self.first_partial_ms}")
        for name in ("min_partial_growth_ms", "min_speech_ms", "preroll_ms", "hangover_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")

    @property
    def min_speech_frames(self) -> int:
        """Consecutive speech frames that open an utterance (at least one)."""
        return max(1, -(-self.min_speech_ms // self.frame_ms))


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    at_ms: int
    start_ms: int


@dataclass(frozen=True, slots=True)
class PartialDue:
    at_ms: int
    utterance_ms: int


@dataclass(frozen=True, slots=True)
class SilenceStarted:
    at_ms: int


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    at_ms: int


@dataclass(frozen=True, slots=True)
class JudgeDue:
    """Run the turn judge on the utterance so far; hand its verdict back
    with ``ticket`` (:meth:`Endpointer.verdict`)."""

    at_ms: int
    ticket: int


@dataclass(frozen=True, slots=True)
class UtteranceEnded:
    at_ms: int
    reason: EndReason
    start_ms: int
    speech_end_ms: int
    #: Why the turn taker ended it ("complete", "patience", "fallback");
    #: None when the fixed window (or a stop, or the length) did.
    turn: str | None = None


EndpointEvent = (
    SpeechStarted | PartialDue | SilenceStarted | SpeechResumed | JudgeDue | UtteranceEnded
)


class _Phase(enum.Enum):
    IDLE = "idle"
    SPEECH = "speech"
    TRAILING_SILENCE = "trailing_silence"


class Endpointer:
    """Turns a stream of per-frame VAD decisions into utterance events."""

    def __init__(self, config: EndpointConfig, taker: TurnTaker | None = None) -> None:
        self.config = config
        #: Ends turns by silence, verdict and words instead of ``silence_ms``.
        self.taker = taker
        #: Whether the taker can rule now (an audio or a text judge is
        #: ready): read when each silence begins.
        self.judge_ready = taker is not None
        #: Whether the audio judge can be asked in that silence.
        self.audio_judge_ready = taker is not None
        self._transcript = ""
        #: Whether the taker rules the current silence (else the fixed window).
        self._taking = False
        #: Partial cycles skipped in the current (or most recently ended) utterance.
        self.skipped_partials = 0
        self._frames = 0
        self._phase = _Phase.IDLE
        self._run = 0
        self._floor_ms = 0
        self._onset_ms = 0
        self._start_ms = 0
        self._speech_end_ms = 0
        self._next_cycle_ms = 0
        self._in_flight = False
        self._last_partial_utterance_ms: int | None = None

    # ---------------------------------------------------------------- queries

    @property
    def now_ms(self) -> int:
        return self._frames * self.config.frame_ms

    @property
    def in_utterance(self) -> bool:
        return self._phase is not _Phase.IDLE

    @property
    def in_trailing_silence(self) -> bool:
        return self._phase is _Phase.TRAILING_SILENCE

    @property
    def utterance_ms(self) -> int:
        return self.now_ms - self._start_ms if self.in_utterance else 0

    @property
    def onset_ms(self) -> int | None:
        """Start of the first speech frame of the current utterance, None when idle."""
        return self._onset_ms if self.in_utterance else None

    @property
    def start_ms(self) -> int | None:
        """Audio start of the current utterance, None when idle."""
        return self._start_ms if self.in_utterance else None

    @property
    def speech_end_ms(self) -> int | None:
        """End of the last speech frame of the current utterance, None when idle."""
        return self._speech_end_ms if self.in_utterance else None

    @property
    def partial_in_flight(self) -> bool:
        return self._in_flight

    # ----------------------------------------------------------------- inputs

    def push(self, is_speech: bool) -> list[EndpointEvent]:
        """Account for one VAD frame and return what it caused, in order."""
        self._frames += 1
        now = self.now_ms
        events: list[EndpointEvent] = []
        if self._phase is _Phase.IDLE:
            if not is_speech:
                self._run = 0
                return events
            self._run += 1
            if self._run < self.config.min_speech_frames:
                return events
            events.append(self._open(now))
        elif is_speech:
            if self._phase is _Phase.TRAILING_SILENCE:
                self._phase = _Phase.SPEECH
                events.append(SpeechResumed(at_ms=now))
            self._speech_end_ms = now
            self._stop_taking()
        else:
            if self._phase is _Phase.SPEECH:
                self._phase = _Phase.TRAILING_SILENCE
                events.append(SilenceStarted(at_ms=now))
                self._begin_taking()
            ended = self._silence(now, events)
            if ended is not None:
                events.append(ended)
                return events
        if self.utterance_ms >= self.config.max_utterance_ms:
            events.append(self._end(now, "max_duration"))
            return events
        events.extend(self._cycle(now))
        return events

    def use_taker(self, taker: TurnTaker | None) -> None:
        """Another taker (or none) from now on: a silence under way keeps the
        fixed window, since the new taker did not see it begin."""
        self._stop_taking()
        self.taker = taker
        self.judge_ready = taker is not None
        self.audio_judge_ready = taker is not None

    def transcript(self, text: str) -> None:
        """The words of the current utterance so far (a partial, the speculative final)."""
        if self._phase is not _Phase.IDLE:
            self._transcript = text

    def verdict(self, ticket: int, verdict: TurnVerdict | None) -> None:
        """The judge run for ``ticket`` ended: its verdict, or None if it failed.
        Stale tickets (an earlier silence) are ignored; the next frame decides."""
        if self.taker is not None and self._taking:
            self.taker.answer(ticket, verdict)

    def text_verdict(self, text: str, end_p: float) -> None:
        """The text judge read ``text`` in this silence and gave ``end_p``;
        the next frame decides. Ignored outside a silence the taker rules."""
        if self.taker is not None and self._taking:
            self.taker.text_answer(text, end_p)

    def stop(self) -> list[EndpointEvent]:
        """The client said stop: end the utterance, if any, and go idle."""
        self._run = 0
        if self._phase is _Phase.IDLE:
            return []
        return [self._end(self.now_ms, "stop")]

    def partial_started(self) -> None:
        """The session started a partial decode of the utterance so far."""
        if self._phase is _Phase.IDLE:
            return
        self._in_flight = True
        self._last_partial_utterance_ms = self.utterance_ms

    def partial_finished(self) -> None:
        """The partial decode ended, whether it succeeded or not."""
        self._in_flight = False

    # -------------------------------------------------------------- internals

    def _begin_taking(self) -> None:
        # A judge not ready (loading, failed to load) leaves this silence to
        # the fixed window: the behaviour without a judge, exactly.
        self._taking = self.taker is not None and self.judge_ready
        if self.taker is not None and self._taking:
            self.taker.begin(judge=self.audio_judge_ready)

    def _stop_taking(self) -> None:
        if self.taker is not None and self._taking:
            self.taker.resume()
        self._taking = False

    def _silence(self, now: int, events: list[EndpointEvent]) -> UtteranceEnded | None:
        """The end by silence, if this silent frame ends the utterance."""
        silence = now - self._speech_end_ms
        if self.taker is None or not self._taking:
            return self._end(now, "silence") if silence >= self.config.silence_ms else None
        step = self.taker.step(silence + self.config.hangover_ms, self._transcript or None)
        if isinstance(step.decision, EndTurn):
            return self._end(now, "silence", turn=step.decision.reason)
        if step.ask is not None:
            events.append(JudgeDue(at_ms=now, ticket=step.ask))
        return None

    def _open(self, now: int) -> SpeechStarted:
        config = self.config
        onset = self._onset_ms = now - self._run * config.frame_ms
        self._phase = _Phase.SPEECH
        self._run = 0
        self._start_ms = max(0, onset - config.preroll_ms, self._floor_ms)
        self._speech_end_ms = now
        first = (
            config.partial_interval_ms
            if config.first_partial_ms is None
            else config.first_partial_ms
        )
        self._next_cycle_ms = onset + first
        self._in_flight = False
        self._last_partial_utterance_ms = None
        self.skipped_partials = 0
        self._transcript = ""
        return SpeechStarted(at_ms=now, start_ms=self._start_ms)

    def _end(self, now: int, reason: EndReason, *, turn: str | None = None) -> UtteranceEnded:
        event = UtteranceEnded(
            at_ms=now,
            reason=reason,
            start_ms=self._start_ms,
            speech_end_ms=self._speech_end_ms,
            turn=turn,
        )
        self._stop_taking()
        self._transcript = ""
        self._phase = _Phase.IDLE
        self._run = 0
        self._floor_ms = now
        self._in_flight = False
        self._last_partial_utterance_ms = None
        return event

    def _cycle(self, now: int) -> list[EndpointEvent]:
        if now < self._next_cycle_ms:
            return []
        while self._next_cycle_ms <= now:
            self._next_cycle_ms += self.config.partial_interval_ms
        if self._phase is _Phase.TRAILING_SILENCE:
            return []
        utterance_ms = self.utterance_ms
        last = self._last_partial_utterance_ms
        if self._in_flight or (
            last is not None and utterance_ms - last < self.config.min_partial_growth_ms
        ):
            self.skipped_partials += 1
            return []
        return [PartialDue(at_ms=now, utterance_ms=utterance_ms)]


__all__ = [
    "EndReason",
    "EndpointConfig",
    "EndpointEvent",
    "Endpointer",
    "JudgeDue",
    "PartialDue",
    "SilenceStarted",
    "SpeechResumed",
    "SpeechStarted",
    "UtteranceEnded",
]
