"""A turn judge whose verdicts are written in advance: exact turn-taking tests.

:class:`ScriptedTurnJudge` answers from a queue of verdicts, one per run, and
when that is empty from a rule on the audio (by default: always complete).
A rule can read the words of the audio: with the deterministic engine set,
``by_words(words_for, ...)`` judges the fake ASR's transcript of the audio
so far, so a test decides which utterances "sound" finished by the words it
plays. A delay per run is a ``trio.sleep``, so under
``trio.testing.MockClock(autojump_threshold=0)`` a verdict lands at an exact
time; a ``None`` in the script is a failed run (TurnJudgeError).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

import trio

from voicetrio.core.turn_policy import TurnVerdict
from voicetrio.engines.base import ModelLoadError, TurnJudgeError

#: What a script entry may be: a verdict, a probability, or None for a failed run.
Scripted = TurnVerdict | float | None
#: A rule: the verdict (or probability, or None: fail) on the audio so far.
Rule = Callable[[bytes], Scripted]


def always(probability: float) -> Rule:
    """A rule that gives ``probability`` whatever it hears."""
    return lambda _pcm: probability


def by_words(
    transcribe: Callable[[bytes], str], complete: Callable[[str], bool]
) -> Rule:
    """A rule that transcribes the audio (the fake ASR's ``words_for``) and
    calls the turn complete (probability 1.0) or not (0.0) by ``complete``."""
    return lambda pcm: 1.0 if complete(transcribe(pcm)) else 0.0


class ScriptedTurnJudge:
    """A :class:`~voicetrio.engines.base.TurnJudge` that answers as scripted.

    ``script`` is consumed one entry per run; after it, ``rule`` answers
    (default: complete, probability 1.0). ``delay_s`` is each async run's
    ``trio.sleep``. ``calls`` keeps the length in bytes of the audio of each
    run, in order. ``ready`` may be set False to play a judge not loaded
    (its runs then fail); ``load_error`` makes :meth:`load` fail.
    """

    def __init__(
        self,
        script: Iterable[Scripted] = (),
        *,
        rule: Rule | None = None,
        threshold: float = 0.5,
        delay_s: float = 0.0,
        ready: bool = True,
        load_error: str | None = None,
    ) -> None:
        if not delay_s >= 0:  # also rejects NaN
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        self.script: deque[Scripted] = deque(script)
        self.rule = rule if rule is not None else always(1.0)
        self.threshold = threshold
        self.delay_s = delay_s
        self.ready = ready
        self.load_error = load_error
        self.calls: list[int] = []

    async def load(self) -> None:
        if self.load_error is not None:
            raise ModelLoadError(self.load_error)
        self.ready = True

    def judge(self, pcm: bytes) -> TurnVerdict:
        if not self.ready:
            raise TurnJudgeError("the scripted judge is not ready")
        self.calls.append(len(pcm))
        entry = self.script.popleft() if self.script else self.rule(pcm)
        if entry is None:
            raise TurnJudgeError("scripted failure")
        if isinstance(entry, TurnVerdict):
            return entry
        return TurnVerdict.of(entry, self.threshold)

    async def judge_async(self, pcm: bytes) -> TurnVerdict:
        await trio.sleep(self.delay_s)
        return self.judge(pcm)


#: A text rule: p(end) of the words, or None for a failed run.
TextRule = Callable[[str], float | None]


class ScriptedTextJudge:
    """A :class:`~voicetrio.engines.base.TextTurnJudge` whose answers are a
    rule on the words (default: 1.0, the turn is over). ``delay_s`` is each
    run's ``trio.sleep``; ``texts`` keeps what it was asked, in order."""

    def __init__(
        self, rule: TextRule | None = None, *, delay_s: float = 0.0, ready: bool = True
    ) -> None:
        if not delay_s >= 0:  # also rejects NaN
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        self.rule: TextRule = rule if rule is not None else (lambda _text: 1.0)
        self.delay_s = delay_s
        self.ready = ready
        self.texts: list[str] = []

    async def start(self, services: trio.Nursery) -> None:
        self.ready = True

    async def end_probability(self, text: str) -> float:
        await trio.sleep(self.delay_s)
        if not self.ready:
            raise TurnJudgeError("the scripted text judge is not ready")
        self.texts.append(text)
        answer = self.rule(text)
        if answer is None:
            raise TurnJudgeError("scripted failure")
        return answer


__all__ = [
    "Rule",
    "Scripted",
    "ScriptedTextJudge",
    "ScriptedTurnJudge",
    "TextRule",
    "always",
    "by_words",
]
