"""Scoring for bench/answers.py, sans-IO: the question set, whether an answer
is right, and whether it is fit to be spoken.

Kept apart from the runner so that the rules can be tested without a model
(tests/test_answer_scoring.py) and read by the tools benchmark, which asks
the same questions (issue 15, item 5).

*Right* is lenient on form and strict on content: every ``accept`` regex must
match somewhere in the answer (case-insensitive; "8" and "eight" are both
written into the regex), and no ``reject`` regex may ("240 minutes in two
hours" is wrong even though it contains a number). Turns about the present
moment name a ``check`` that compares with the clock at the time of asking;
a timer is right only if the session's timers hold one of that length.

*Spoken* is what a listener can follow: no markdown, no list, no emoji, at
most :data:`MAX_SENTENCES` sentences, and not cut off by the token cap.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

QUESTIONS_PATH: Final = Path(__file__).with_name("answers_questions.json")
MAX_SENTENCES: Final = 2
#: A spoken time this close to the clock at the moment of asking is right.
CLOCK_TOLERANCE_MIN: Final = 2

_MARKDOWN: Final = re.compile(r"\*\*|__|`|^\s*#{1,6}\s|\[[^\]]+\]\([^)]+\)", re.MULTILINE)
# A list item at the start of a line ("- x", "* x", "• x", "1. x", "2) x"),
# or two or more numbered items inline ("1. Rest 2. Drink").
_LIST_LINE: Final = re.compile(r"^\s*([-*•]|\d+[.)]|\(\d+\))\s+", re.MULTILINE)
_INLINE_ITEMS: Final = re.compile(r"(?:^|\s)\d+[.)]\s+\S.*?\s\d+[.)]\s+\S", re.DOTALL)
_EMOJI: Final = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf\U0001f1e6-\U0001f1ff]")
# A sentence ends at . ! ? (or …) followed by a space or the end, except after
# an abbreviation or a single initial ("Dr. Smith", "J. K. Rowling").
_SENTENCE_END: Final = re.compile(r"[.!?…]+[\"')\]]*(?=\s|$)")
_ABBREVIATIONS: Final = frozenset(
    {"mr", "mrs", "ms", "dr", "st", "vs", "etc", "e.g", "i.e", "approx", "no", "jr", "sr"}
)

_WEEKDAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS: Final = (
    "january", "february", "march", "april", "may", "june", "july",
    "august", "september", "october", "november", "december",
)  # fmt: skip
_ORDINAL_WORDS: Final = (
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
    "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth",
    "seventeenth", "eighteenth", "nineteenth", "twentieth",
)  # fmt: skip
_CLOCK: Final = re.compile(
    r"\b(\d{1,2})(?:[:.](\d{2}))?\s*(a\.?m\.?|p\.?m\.?|o'?clock)?(?![\d:])", re.IGNORECASE
)


@dataclass(frozen=True)
class Turn:
    text: str
    accept: tuple[str, ...] = ()
    reject: tuple[str, ...] = ()
    check: str | None = None
    tool: str | None = None
    needs_tool: bool = False

    @property
    def scored(self) -> bool:
        return bool(self.accept) or self.check is not None


@dataclass(frozen=True)
class Item:
    id: str
    category: str
    turns: tuple[Turn, ...]

    @property
    def needs_tool(self) -> bool:
        """No model answers it without a tool (the clock, a timer)."""
        return any(t.needs_tool for t in self.turns)

    @property
    def tools(self) -> tuple[str, ...]:
        return tuple(t.tool for t in self.turns if t.tool is not None)


@dataclass(frozen=True)
class Style:
    ok: bool
    sentences: int
    problems: tuple[str, ...] = field(default=())


def load_items(path: Path = QUESTIONS_PATH) -> list[Item]:
    data = json.loads(path.read_text(encoding="utf-8"))
    items = [_item(raw) for raw in data["items"]]
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: item ids repeat")
    return items


def _item(raw: dict[str, Any]) -> Item:
    turns = []
    for t in raw["turns"]:
        turn = Turn(
            text=t["text"],
            accept=tuple(t.get("accept", ())),
            reject=tuple(t.get("reject", ())),
            check=t.get("check"),
            tool=t.get("tool"),
            needs_tool=bool(t.get("needs_tool", False)),
        )
        if turn.check is not None and turn.check not in (*CHECKS, "timer_5min"):
            raise ValueError(f"item {raw['id']}: unknown check {turn.check!r}")
        for pattern in (*turn.accept, *turn.reject):
            re.compile(pattern)  # a typo fails at load, not as a wrong answer
        turns.append(turn)
    if not any(t.scored for t in turns):
        raise ValueError(f"item {raw['id']}: no turn is scored")
    return Item(id=raw["id"], category=raw["category"], turns=tuple(turns))


def select(items: Sequence[Item], wanted: str) -> list[Item]:
    """The items named in ``wanted`` (comma-separated ids, categories, or
    ``tools``, the items that call a tool); all of them for an empty string."""
    if not wanted:
        return list(items)
    names = {w.strip() for w in wanted.split(",") if w.strip()}
    chosen = [
        i for i in items if i.id in names or i.category in names or ("tools" in names and i.tools)
    ]
    known = {i.id for i in items} | {i.category for i in items} | {"tools"}
    unknown = names - known
    if unknown:
        raise ValueError(f"unknown questions or categories: {', '.join(sorted(unknown))}")
    return chosen


def correct(
    turn: Turn, answer: str, asked_at: dt.datetime, *, timers_set_s: Sequence[float] = ()
) -> bool:
    """Whether ``answer`` is a right answer to ``turn``, asked at ``asked_at``
    (local time), with the session's timers (their lengths in seconds) as
    they were after the answer."""
    if turn.check == "timer_5min":
        if not any(abs(s - 300) < 1 for s in timers_set_s):
            return False
    elif turn.check is not None and not CHECKS[turn.check](answer, asked_at):
        return False
    if not all(re.search(p, answer, re.IGNORECASE) for p in turn.accept):
        return False
    return not any(re.search(p, answer, re.IGNORECASE) for p in turn.reject)


def count_sentences(text: str) -> int:
    """Sentences in ``text``; a trailing clause without a stop counts as one."""
    count = 0
    start = 0
    for match in _SENTENCE_END.finditer(text):
        before = text[start : match.start()].split()
        last = before[-1].lower().rstrip(".") if before else ""
        if match.group().startswith(".") and (
            last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())
        ):
            continue
        if before:
            count += 1
        start = match.end()
    if text[start:].strip(" \t\n\"')]"):
        count += 1
    return count


def spoken_style(answer: str, *, cut_off: bool = False) -> Style:
    """Whether ``answer`` suits speech; ``cut_off``: it hit the token cap."""
    problems = []
    if not answer.strip():
        problems.append("empty")
    if _MARKDOWN.search(answer):
        problems.append("markdown")
    if _LIST_LINE.search(answer) or _INLINE_ITEMS.search(answer):
        problems.append("list")
    if _EMOJI.search(answer):
        problems.append("emoji")
    sentences = count_sentences(answer)
    if sentences > MAX_SENTENCES:
        problems.append(f"{sentences} sentences")
    if cut_off:
        problems.append("cut off at the token cap")
    return Style(ok=not problems, sentences=sentences, problems=tuple(problems))


# -- checks against the moment of asking --------------------------------------


def _clock_time(answer: str, asked_at: dt.datetime) -> bool:
    now = asked_at.hour * 60 + asked_at.minute
    for match in _CLOCK.finditer(answer):
        hour, minute, suffix = int(match.group(1)), match.group(2), (match.group(3) or "").lower()
        if minute is None and not suffix:
            continue  # a bare number is not a time
        if hour > 23 or (minute is not None and int(minute) > 59):
            continue
        mins = int(minute or 0)
        if suffix.startswith("p") and hour < 12:
            candidates = [hour + 12]
        elif suffix.startswith("a"):
            candidates = [0 if hour == 12 else hour]
        elif hour <= 12:
            candidates = [hour % 12, hour % 12 + 12]  # "4:50" could be either
        else:
            candidates = [hour]
        for h in candidates:
            gap = abs(h * 60 + mins - now)
            if min(gap, 24 * 60 - gap) <= CLOCK_TOLERANCE_MIN:
                return True
    return False


def _weekday(answer: str, asked_at: dt.datetime) -> bool:
    today = _WEEKDAYS[asked_at.weekday()]
    named = {d for d in _WEEKDAYS if re.search(rf"\b{d}\b", answer, re.IGNORECASE)}
    return named == {today}


def _date(answer: str, asked_at: dt.datetime) -> bool:
    month = _MONTHS[asked_at.month - 1]
    day = asked_at.day
    if not re.search(rf"\b{month}\b", answer, re.IGNORECASE):
        return False
    day_forms = [rf"\b{day}(st|nd|rd|th)?\b"]
    if day <= len(_ORDINAL_WORDS):
        day_forms.append(rf"\b{_ORDINAL_WORDS[day - 1]}\b")
    return any(re.search(form, answer, re.IGNORECASE) for form in day_forms)


CHECKS: Final[dict[str, Callable[[str, dt.datetime], bool]]] = {
    "clock_time": _clock_time,
    "weekday": _weekday,
    "date": _date,
}

__all__ = [
    "CHECKS",
    "MAX_SENTENCES",
    "QUESTIONS_PATH",
    "Item",
    "Style",
    "Turn",
    "correct",
    "count_sentences",
    "load_items",
    "select",
    "spoken_style",
]
