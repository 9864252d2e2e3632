"""The built-in tools: a calculator, a clock and timers; sans-IO.

Each is a :class:`~voicetrio.core.tools.Tool` whose outside world is passed
in: the clock reads the time from a function it is given, the timers are set
and cancelled through a :class:`TimerControl` (the session's, which sleeps in
Trio). So every answer here is a plain function of its inputs, tested with
exact values.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Final, Protocol

from voicetrio.core.calculator import CalculationError, calculate
from voicetrio.core.timers import UNITS, TimerEntry, say_duration
from voicetrio.core.tools import Tool, Toolbox, ToolError, object_schema

Now = Callable[[], datetime]

# When each built-in tool is offered (Tool.offered_when): the words of a
# question that may need it, as Whisper writes them (numbers in digits).
#: Two numbers joined by an operator, or a word that asks for a computation.
ARITHMETIC: Final = re.compile(
    r"\d[\d,.]*\s*(?:[-+*/\u00d7\u00f7x^%]|times|plus|minus|divided by|multiplied by"
    r"|to the power of|over)\s*\d|\d\s*(?:%|percent) of"
    r"|\b(?:calculate|compute|square root|percent of|squared|cubed)\b",
    re.IGNORECASE,
)
#: The time, the date, the day.
TIME_WORDS: Final = re.compile(
    r"\b(?:time|clock|o'clock|date|weekday|what day|which day|what year)\b",
    re.IGNORECASE,
)
#: A timer, to set, stop or ask about.
TIMER_WORDS: Final = re.compile(
    r"\b(?:timers?|alarms?|countdown|remind me in|wake me)\b", re.IGNORECASE
)


def _calculate(expression: str) -> str:
    try:
        return calculate(expression)
    except CalculationError as exc:
        raise ToolError(str(exc)) from None


def calculator_tool() -> Tool:
    return Tool(
        name="calculate",
        description=(
            "Compute an arithmetic expression exactly. Use it for any arithmetic. "
            "Numbers with + - * / // % ** and parentheses, e.g. '1234 * 5678' or '(3 + 4) / 2'."
        ),
        parameters=object_schema(
            {"expression": {"type": "string", "maxLength": 200}}, required=["expression"]
        ),
        function=_calculate,
        offered_when=ARITHMETIC,
    )


def describe_time(moment: datetime, zone_name: str) -> str:
    """``moment`` (aware) as the clock tool says it, with its zone and offset."""
    offset = moment.strftime("%z")
    utc = f"UTC{offset[:3]}:{offset[3:]}" if offset else "UTC"
    day = f"{moment:%A} {moment.day} {moment:%B %Y}"
    return f"{moment:%H:%M} on {day} ({zone_name}, {utc})"


def zone_named(name: str) -> tzinfo:
    """The IANA zone ``name``; raises ToolError."""
    try:
        return zoneinfo.ZoneInfo(name.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ToolError(
            f"unknown time zone {name!r}: give an IANA name such as 'Europe/Paris'"
        ) from None


def clock_tool(now: Now, local_zone: tzinfo | None = None, local_name: str = "") -> Tool:
    """The current time and date; in ``local_zone`` (None: the server's) unless asked for another.

    ``now`` returns an aware datetime.
    """

    def get_time(timezone: str = "") -> str:
        if timezone.strip():
            zone = zone_named(timezone)
            return describe_time(now().astimezone(zone), timezone.strip())
        moment = now().astimezone(local_zone)
        return describe_time(moment, local_name or moment.tzname() or "local time")

    return Tool(
        name="get_time",
        # No example zone in the text: a small model copies it into every call.
        description="The current local time, weekday and date.",
        parameters=object_schema(
            {
                "timezone": {
                    "type": "string",
                    "maxLength": 64,
                    "description": "leave out for the local time; an IANA zone name "
                    "only when the user asks about another place",
                }
            }
        ),
        function=get_time,
        offered_when=TIME_WORDS,
    )


class TimerControl(Protocol):
    """A session's timers, as the timer tools use them."""

    def set(self, duration: float, unit: str, label: str) -> TimerEntry:
        """Start a timer; raises ToolError when the book refuses it."""
        ...

    def cancel(self, timer_id: int | None) -> list[TimerEntry]:
        """Stop one timer, or all with None; raises ToolError for an unknown id."""
        ...

    def due_at(self, entry: TimerEntry) -> str:
        """When ``entry`` rings, as a time of day (``"14:05"``)."""
        ...


def timer_tools(timers: TimerControl) -> list[Tool]:
    def set_timer(duration: float, unit: str = "seconds", label: str = "") -> str:
        entry = timers.set(duration, unit, label)
        return (
            f"Timer {entry.id} is set for {say_duration(entry.duration_s)}; "
            f"it rings at {timers.due_at(entry)}, and you will be told."
        )

    def cancel_timer(timer: int = 0) -> str:
        stopped = timers.cancel(timer or None)
        if not stopped:
            return "No timer was running."
        return "Cancelled: " + ", ".join(
            f"timer {t.id} ({say_duration(t.duration_s)})" for t in stopped
        )

    return [
        Tool(
            name="set_timer",
            description=(
                "Set a countdown timer, e.g. duration 5 with unit 'minutes'. "
                "When it ends the user is told."
            ),
            parameters=object_schema(
                {
                    "duration": {"type": "number", "minimum": 0},
                    "unit": {"type": "string", "enum": list(UNITS)},
                    "label": {"type": "string", "maxLength": 60},
                },
                required=["duration"],
            ),
            function=set_timer,
            offered_when=TIMER_WORDS,
        ),
        Tool(
            name="cancel_timer",
            description="Cancel the timer with this number, or every timer if no number is given.",
            parameters=object_schema({"timer": {"type": "integer", "minimum": 0}}),
            function=cancel_timer,
            offered_when=TIMER_WORDS,
        ),
    ]


class NoTimers:
    """Timers where there is no session to ring in (a warm-up, a benchmark)."""

    def set(self, duration: float, unit: str, label: str) -> TimerEntry:
        raise ToolError("timers are not available here")

    def cancel(self, timer_id: int | None) -> list[TimerEntry]:
        return []

    def due_at(self, entry: TimerEntry) -> str:
        return ""


def builtin_toolbox(now: Now, timers: TimerControl, local_zone: tzinfo | None = None) -> Toolbox:
    """The tools every session offers, in a fixed order: the same definitions
    every time, so a model server's prompt cache keeps them."""
    return Toolbox([clock_tool(now, local_zone), *timer_tools(timers), calculator_tool()])


__all__ = [
    "NoTimers",
    "Now",
    "TimerControl",
    "builtin_toolbox",
    "calculator_tool",
    "clock_tool",
    "describe_time",
    "timer_tools",
    "zone_named",
]
