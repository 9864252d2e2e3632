"""A session's timers, sans-IO: numbering, bounds, and how they are said.

The Trio side (:mod:`voicetrio.session.timers`) sleeps until a timer is due
and says so; this module decides what may be set and keeps the book: at most
``max_timers`` at once, each from 1 s to ``max_duration_s``, numbered from 1
per session so that the user can say "cancel timer 2".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from voicetrio.core.tools import ToolError

UNITS: Final = {"seconds": 1, "minutes": 60, "hours": 3600}
MIN_DURATION_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class TimerEntry:
    id: int
    duration_s: float
    label: str
    #: When it rings, on the clock the book was given (trio time in a session).
    due: float

    def spoken(self) -> str:
        """What the assistant says when it rings."""
        what = f"{say_duration(self.duration_s)} timer"
        if self.label:
            what += f" for {self.label}"
        return f"Your {what} is done."


def say_duration(seconds: float) -> str:
    """``90`` -> ``"1 minute 30 seconds"``: as a voice would say it."""
    total = round(seconds)
    parts = []
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count} {unit}" + ("" if count == 1 else "s"))
    return " ".join(parts) or "0 seconds"


class TimerBook:
    def __init__(self, *, max_timers: int = 10, max_duration_s: float = 24 * 3600) -> None:
        if max_timers < 1:
            raise ValueError(f"max_timers must be >= 1, got {max_timers}")
        self.max_timers = max_timers
        self.max_duration_s = max_duration_s
        self._next_id = 1
        self._pending: dict[int, TimerEntry] = {}

    @property
    def pending(self) -> list[TimerEntry]:
        return sorted(self._pending.values(), key=lambda t: t.due)

    def add(self, duration: float, unit: str, label: str, now: float) -> TimerEntry:
        """A new timer, due ``duration`` ``unit`` after ``now``; raises ToolError."""
        if unit not in UNITS:
            raise ToolError(f"the unit must be one of: {', '.join(UNITS)}")
        seconds = float(duration) * UNITS[unit]
        if not MIN_DURATION_S <= seconds <= self.max_duration_s:
            raise ToolError(
                f"a timer lasts from {MIN_DURATION_S:g} second to "
                f"{say_duration(self.max_duration_s)}"
            )
        if len(self._pending) >= self.max_timers:
            raise ToolError(f"{self.max_timers} timers are already set; cancel one first")
        entry = TimerEntry(self._next_id, seconds, label.strip(), now + seconds)
        self._next_id += 1
        self._pending[entry.id] = entry
        return entry

    def remove(self, timer_id: int) -> TimerEntry:
        """Take timer ``timer_id`` out of the book (rung or cancelled); raises ToolError."""
        entry = self._pending.pop(timer_id, None)
        if entry is None:
            raise ToolError(f"there is no timer {timer_id}")
        return entry


__all__ = ["UNITS", "TimerBook", "TimerEntry", "say_duration"]
