"""When the user's turn is over: silence, a turn judge's verdict and the words so far.

Sans-IO. Silence alone is a poor judge of the end of a turn: a finished
question waits the whole window, and a speaker who pauses to think is cut off
once the pause outlasts it. A *turn judge* (Smart Turn, an audio model) says
from the last seconds of speech whether the turn sounds complete; the words
recognized so far can say it is not ("What is the capital of"). This module
turns those signals into one decision per call, with exact numbers:

* :func:`decide` is the pure rule: given the silence so far, the latest
  verdict (None when there is none yet, or no judge) and the transcript so
  far, end the turn now or wait until a given silence.
* :class:`TurnTaker` is the state machine around it for one silence at a
  time: it asks the judge once the silence reaches ``judge_after_ms`` (and,
  if ``judge_interval_ms`` is set, again that often while it waits), takes
  the answers (ignoring stale ones), and calls :func:`decide`.

Silence is in ms of audio since the voice stopped: the caller adds the VAD's
hangover to the endpointer's count (the ASR stage takes it off
``vad_silence_ms`` for the same reason), so the settings mean what a person
would measure.

The rule, with the defaults of :class:`TurnSettings`:

======================================  =====================================
what is known                            the turn ends at a silence of
======================================  =====================================
transcript unfinished (hints on)         ``incomplete_silence_ms`` (2000)
text judge: p(end) >= text_complete_p    ``complete_silence_ms`` (250)
text judge: p(end) < text_incomplete_p   ``incomplete_silence_ms`` (2000)
audio judge says complete                ``complete_silence_ms`` (250)
audio judge says incomplete              ``incomplete_silence_ms`` (2000)
no verdict (no judge, failed, pending)   ``fallback_silence_ms`` (700)
======================================  =====================================

The first row that applies wins. The transcript heuristic only ever vetoes
an end (see :func:`unfinished`), because a cut turn costs more than a slow
one (the assistant answers half a question), and Whisper ends nearly any
text with a period, so punctuation cannot say a turn is finished. The text
judge (a small language model reading the words, :mod:`voicetrio.core.text_turn`)
comes before the audio judge because it is right far more often on our
measurements (``bench/turn_judge.py``); between its two thresholds it is
unsure and says nothing, which leaves the audio verdict or the fixed window.
Its answer counts only for the very words it read: newer words make it stale.
The latest audio verdict counts. ``incomplete_silence_ms`` is a hard limit:
whatever is known, no turn waits longer.

Why the judge is asked once, early, by default (``bench/turn_judge.py``):
Smart Turn judges best with 100-200 ms of silence after the voice; with more,
it calls more and more cut sentences complete (Piper voice, judged complete:
sentences cut mid-flow 7/16 at 100 ms of silence, 12/16 at 600 ms; the same
words said as a sentence of their own 4/16, then 11/16). Asking again as a
pause grows would end most thinking pauses at about half a second, which is
what the patience is for; a new verdict comes with new speech, in the next
silence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

EndReason = Literal["complete", "patience", "fallback"]


@dataclass(frozen=True, slots=True)
class TurnVerdict:
    """A turn judge's answer: the probability that the turn is complete, and
    whether that reaches the judge's threshold."""

    probability: float
    complete: bool

    @classmethod
    def of(cls, probability: float, threshold: float = 0.5) -> TurnVerdict:
        """The verdict for ``probability`` against ``threshold`` (complete at or above it)."""
        if not 0.0 <= probability <= 1.0:  # also rejects NaN
            raise ValueError(f"probability must be within 0..1, got {probability}")
        return cls(probability, probability >= threshold)


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """How long a silence ends a turn, by what is known (all in ms of audio)."""

    #: Silence that ends a turn the judge calls complete: the judge is asked
    #: at ``judge_after_ms`` and answers in 50-120 ms on one thread.
    complete_silence_ms: int = 250
    #: The longest wait: a turn the judge or the words call unfinished ends
    #: after this much silence all the same. A thinking pause of 1.5 s must
    #: not split a question; each ms more is waited by every finished turn
    #: the judge gets wrong (a third of them on synthetic speech).
    incomplete_silence_ms: int = 2000
    #: The fixed window when there is no verdict (no judge, not loaded,
    #: failed, or not answered yet): the window used before the judge.
    fallback_silence_ms: int = 700
    #: Silence when the judge is asked: the model was trained on turns that
    #: end in a short silence, and judges best after 100-200 ms of it.
    judge_after_ms: int = 100
    #: While waiting, ask again this often (0: once per silence). The model
    #: hears the growing silence and drifts to "complete": see above.
    judge_interval_ms: int = 0
    #: Whether a transcript that ends mid-phrase ("... of", "and", a comma)
    #: keeps the turn open (see :func:`unfinished`).
    transcript_hints: bool = True
    #: The text judge's probability of an end at or above which the turn is
    #: complete, and below which it is not (between the two: unsure). On
    #: Whisper's transcripts of synthetic speech (bench/turn_judge.py),
    #: finished sentences scored 0.03-0.88 and cut ones mostly under 0.02.
    text_complete_p: float = 0.1
    text_incomplete_p: float = 0.02

    def __post_init__(self) -> None:
        for name in ("complete_silence_ms", "incomplete_silence_ms", "fallback_silence_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("judge_after_ms", "judge_interval_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0.0 <= self.text_incomplete_p <= self.text_complete_p <= 1.0:
            raise ValueError(
                "need 0 <= text_incomplete_p <= text_complete_p <= 1, got "
                f"{self.text_incomplete_p}, {self.text_complete_p}"
            )
        # A judge never makes a finished turn slower than no judge would, and
        # the patience limit is the longest wait of all.
        if not (
            self.complete_silence_ms <= self.fallback_silence_ms <= self.incomplete_silence_ms
        ):
            raise ValueError(
                "need complete_silence_ms <= fallback_silence_ms <= incomplete_silence_ms, got "
                f"{self.complete_silence_ms}, {self.fallback_silence_ms}, "
                f"{self.incomplete_silence_ms}"
            )


@dataclass(frozen=True, slots=True)
class EndTurn:
    """The turn is over: finalize it."""

    reason: EndReason
    silence_ms: int


@dataclass(frozen=True, slots=True)
class Wait:
    """Not yet. With nothing new (no verdict, no new words), the turn ends at
    a silence of ``until_ms``; the judge is due again at ``ask_at_ms``: None
    while a run is in flight (the next ask waits for its answer), when it was
    just asked, and when it will not be asked again before ``until_ms``."""

    until_ms: int
    ask_at_ms: int | None = None


TurnDecision = EndTurn | Wait

# ------------------------------------------------------------ the words so far

#: Words that (almost) never end a finished English sentence: articles and
#: possessives that need their noun, conjunctions that need their second half,
#: subordinators that need their clause, prepositions that need their object,
#: and hesitation fillers. Kept small on purpose: a word here that does end
#: real sentences ("on" in "turn the light on", "in" in "log me in", "so" in
#: "I think so") would make those wait the patience limit. The prepositions
#: do end some questions ("Where are you from?"), which then wait too: a
#: question mark cannot tell them apart, because Whisper writes one on cut
#: questions as well ("What is the capital of?", bench/turn_judge.py).
UNFINISHED_WORDS: Final = frozenset(
    {
        "a", "an", "the", "my", "your", "our", "their", "every",
        "and", "or", "but", "nor",
        "because", "if", "unless", "whether", "although", "whereas", "than",
        "of", "to", "for", "with", "from", "at", "into", "onto", "about", "toward", "towards",
        "um", "uh", "er", "erm", "uhm",
    }
)  # fmt: skip
#: Trailing marks of a phrase that goes on: a comma, a dash, an ellipsis.
_OPEN_ENDING: Final = re.compile(r"(,|;|:|-|\u2013|\u2014|\.\.\.|\u2026)\s*$")
_CLOSING: Final = "\"')]}\u00bb\u201d\u2019"
_WORD: Final = re.compile(r"[a-z]+(?:'[a-z]+)?")


def unfinished(transcript: str) -> bool:
    """Whether ``transcript`` stops mid-phrase, so its speaker is likely to go on.

    True when it ends with a comma, semicolon, colon, dash or ellipsis, or its
    last word is one of :data:`UNFINISHED_WORDS`, whatever the final period
    or question mark (Whisper writes those on cut sentences too). Empty text
    is not unfinished: there is nothing to go on from.
    """
    text = transcript.strip().rstrip(_CLOSING).rstrip()
    if not text:
        return False
    if _OPEN_ENDING.search(text):
        return True
    words = _WORD.findall(text.lower())
    return bool(words) and words[-1] in UNFINISHED_WORDS


# ------------------------------------------------------------------ the rule


def text_says(settings: TurnSettings, end_p: float | None) -> bool | None:
    """The text judge's answer: True (complete), False (not), None (unsure or none)."""
    if end_p is None:
        return None
    if end_p >= settings.text_complete_p:
        return True
    if end_p < settings.text_incomplete_p:
        return False
    return None


def decide(
    settings: TurnSettings,
    silence_ms: int,
    verdict: TurnVerdict | None,
    transcript: str | None = None,
    text_end_p: float | None = None,
) -> TurnDecision:
    """End the turn or wait, from what is known at ``silence_ms`` of silence.

    ``verdict`` is the latest audio verdict in this silence, None when there
    is none (no judge, the judge failed, or it has not answered yet);
    ``transcript`` the words so far (None or "" when unknown); ``text_end_p``
    the text judge's probability that those very words end the turn (None:
    not judged).
    """
    if silence_ms < 0:
        raise ValueError(f"silence_ms must not be negative, got {silence_ms}")
    limit: int
    reason: EndReason
    text = text_says(settings, text_end_p)
    if settings.transcript_hints and transcript and unfinished(transcript):
        limit, reason = settings.incomplete_silence_ms, "patience"
    elif text is True:
        limit, reason = settings.complete_silence_ms, "complete"
    elif text is False:
        limit, reason = settings.incomplete_silence_ms, "patience"
    elif verdict is None:
        limit, reason = settings.fallback_silence_ms, "fallback"
    elif verdict.complete:
        limit, reason = settings.complete_silence_ms, "complete"
    else:
        limit, reason = settings.incomplete_silence_ms, "patience"
    if silence_ms >= limit:
        return EndTurn(reason, silence_ms)
    return Wait(limit)


# ---------------------------------------------------------- the state machine


@dataclass(frozen=True, slots=True)
class Step:
    """What :meth:`TurnTaker.step` asks of its caller: run the judge on the
    audio so far when ``ask`` is a ticket (hand the answer back with it), and
    end the turn on an :class:`EndTurn`."""

    decision: TurnDecision
    ask: int | None = None


class TurnTaker:
    """One silence at a time: when to ask the judge, and when the turn ends.

    The caller (the ASR stage) calls :meth:`begin` when silence starts,
    :meth:`step` on every silent frame with the silence so far, and
    :meth:`answer` when a judge run it was asked for ends; :meth:`resume`
    when speech comes back. ``judge`` at :meth:`begin` says whether a judge
    can be asked at all (one is configured and loaded): without one, the
    decision is the transcript rule, the text judge and the fallback window.
    The text judge is not asked by the taker: the caller runs it on the
    words of the silence when it has them (the speculative final) and hands
    its answer to :meth:`text_answer`.

    At most one judge run is in flight: a run that is slower than
    ``judge_interval_ms`` delays the next ask, it does not pile them up. An
    answer for an earlier silence, or for no ask, is ignored. A failed run
    (``answer(ticket, None)``) stops the asking for this silence: the
    fallback window applies unless an earlier verdict stands.
    """

    def __init__(self, settings: TurnSettings) -> None:
        self.settings = settings
        self._active = False
        self._judge = False
        self._tickets = 0
        self._pending: int | None = None
        self._asked_ms: int | None = None
        self._verdict: TurnVerdict | None = None
        #: The text judge's latest answer: the words it read, and p(end).
        self._text: tuple[str, float] | None = None
        self._silence_ms = 0

    @property
    def active(self) -> bool:
        """Whether a silence is being judged (between begin and its end or resume)."""
        return self._active

    @property
    def verdict(self) -> TurnVerdict | None:
        """The latest verdict of this silence."""
        return self._verdict

    @property
    def waiting_for_judge(self) -> bool:
        return self._pending is not None

    def begin(self, *, judge: bool) -> None:
        """Silence began: forget the previous silence (its answers are stale now)."""
        self._active = True
        self._judge = judge
        self._pending = None
        self._asked_ms = None
        self._verdict = None
        self._text = None
        self._silence_ms = 0

    def resume(self) -> None:
        """Speech came back: this silence is over, its pending answer stale."""
        self._active = False
        self._pending = None

    def answer(self, ticket: int, verdict: TurnVerdict | None) -> None:
        """The judge run for ``ticket`` ended: its verdict, or None if it failed."""
        if not self._active or ticket != self._pending:
            return
        self._pending = None
        if verdict is None:
            self._judge = False
        else:
            self._verdict = verdict

    def text_answer(self, text: str, end_p: float) -> None:
        """The text judge read ``text`` (the words of this silence) and gave
        ``end_p``: it counts while the transcript is still ``text``."""
        if not 0.0 <= end_p <= 1.0:  # also rejects NaN
            raise ValueError(f"end_p must be within 0..1, got {end_p}")
        if self._active:
            self._text = (text, end_p)

    def text_end_p(self, transcript: str | None) -> float | None:
        """The text judge's p(end) for ``transcript``, if it read exactly that."""
        if self._text is None or transcript is None or self._text[0] != transcript:
            return None
        return self._text[1]

    def step(self, silence_ms: int, transcript: str | None = None) -> Step:
        """The decision at ``silence_ms`` of silence, and whether to ask the judge now."""
        if not self._active:
            raise RuntimeError("step() outside a silence: call begin() first")
        if silence_ms < self._silence_ms:
            raise ValueError(f"silence went back from {self._silence_ms} to {silence_ms} ms")
        self._silence_ms = silence_ms
        settings = self.settings
        text_end_p = self.text_end_p(transcript)
        decision = decide(settings, silence_ms, self._verdict, transcript, text_end_p)
        if isinstance(decision, EndTurn):
            self._active = False
            self._pending = None
            return Step(decision)
        # The words alone keep this turn open: no verdict would end it sooner.
        # So does a sure text judge: the audio judge would not be heard.
        vetoed = settings.transcript_hints and bool(transcript) and unfinished(transcript or "")
        if not self._judge or vetoed or text_says(settings, text_end_p) is not None:
            return Step(decision)
        if self._asked_ms is None:
            due: int | None = settings.judge_after_ms
        elif settings.judge_interval_ms:
            due = self._asked_ms + settings.judge_interval_ms
        else:
            due = None  # once per silence
        if due is None:
            return Step(decision)
        if self._pending is not None or silence_ms < due:
            # Unknown while a run is in flight (the next ask waits for it);
            # none when the turn ends before the next one would be due.
            ask_at = None if self._pending is not None or due >= decision.until_ms else due
            return Step(Wait(decision.until_ms, ask_at))
        self._tickets += 1
        self._pending = self._tickets
        self._asked_ms = silence_ms
        return Step(Wait(decision.until_ms, None), ask=self._pending)


__all__ = [
    "UNFINISHED_WORDS",
    "EndReason",
    "EndTurn",
    "Step",
    "TurnDecision",
    "TurnSettings",
    "TurnTaker",
    "TurnVerdict",
    "Wait",
    "decide",
    "text_says",
    "unfinished",
]
