"""What a serving process tells HAProxy's agent check: sans-IO.

HAProxy's ``agent-check`` connects to a TCP port of the backend, reads one
ASCII line (words separated by spaces, tabs or commas, ended by ``\\r`` or
``\\n``) and closes. The words used here (HAProxy 2.6, ``agent-check``):

- ``up`` and ``ready``: the process serves. ``ready`` also clears the DRAIN
  admin state, which HAProxy keeps per server line across a restart: a new
  process on the address of one that drained must say it, or it stays
  drained. (It clears an operator's ``set server state drain`` too; to drain
  by hand, ``disable agent`` first, or send the process SIGTERM.)
- ``N%``: the weight, relative to the ``weight`` of the server line, from
  the load figure of :mod:`voicetrio.core.capacity` (1.0 is full):
  ``100 * (1 - load)``, at least :data:`MIN_WEIGHT_PERCENT`. A full process
  keeps a trickle rather than 0%, which HAProxy treats as DRAIN: when the
  whole fleet is full, a client then hears the server's own ``SERVER_BUSY``
  with its retry hint instead of HAProxy's bare 503.
- ``drain``: shutting down; no new sessions, the open ones finish. Only the
  ``/health`` check (503 while draining) then marks the server DOWN.
- ``down#why``: not ready (engines loading, or failed to load).

With ``--workers N`` the supervisor answers for the box from its workers'
reports (:func:`combine`): HAProxy has one server line per address, and the
workers share one.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

#: The weight of a full (but serving) process, in percent of its server line's.
MIN_WEIGHT_PERCENT: Final = 1
#: A reply longer than this is not one of ours.
MAX_REPLY_BYTES: Final = 256


class AgentState(enum.Enum):
    UP = "up"
    DRAIN = "drain"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class AgentReport:
    """One agent reply: the state, the weight (percent, meaningful when up)
    and, when down, why (shown on HAProxy's stats page)."""

    state: AgentState
    weight_percent: int = 100
    why: str = ""

    def line(self) -> bytes:
        """The reply as HAProxy reads it, newline included (HAProxy 2.6
        waits for the end of line even though its manual calls it optional)."""
        if self.state is AgentState.UP:
            return f"up ready {self.weight_percent}%\n".encode("ascii")
        if self.state is AgentState.DRAIN:
            return b"drain\n"
        why = re.sub(r"[^a-z0-9_-]+", "_", self.why.lower())
        return f"down#{why}\n".encode("ascii") if why else b"down\n"


def weight_percent(load: float) -> int:
    """The weight for HAProxy from the load figure (0 idle, 1.0 or more full)."""
    if not math.isfinite(load) or load >= 1:
        return MIN_WEIGHT_PERCENT
    return max(MIN_WEIGHT_PERCENT, min(100, math.floor(100 * (1 - max(0.0, load)) + 0.5)))


def report(*, draining: bool, ready: bool, failed: bool, load: float) -> AgentReport:
    """What a serving process says from its live state. Draining wins over
    everything: a process that is going away takes no new session."""
    if draining:
        return AgentReport(AgentState.DRAIN, 0)
    if failed:
        return AgentReport(AgentState.DOWN, 0, "failed")
    if not ready:
        return AgentReport(AgentState.DOWN, 0, "starting")
    return AgentReport(AgentState.UP, weight_percent(load))


class BadReply(ValueError):
    """An agent line that is not one :meth:`AgentReport.line` writes."""


def parse(data: bytes) -> AgentReport:
    """A worker's reply, read back by its supervisor."""
    if len(data) > MAX_REPLY_BYTES:
        raise BadReply(f"agent reply of {len(data)} bytes")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise BadReply(f"agent reply is not ASCII: {data!r}") from None
    line = re.split(r"[\r\n]", text, maxsplit=1)[0].strip()
    words = re.split(r"[ \t,]+", line)
    if words == ["drain"]:
        return AgentReport(AgentState.DRAIN, 0)
    if words[0].startswith("down"):
        return AgentReport(AgentState.DOWN, 0, words[0].partition("#")[2])
    match = re.fullmatch(r"up ready (\d{1,3})%", line)
    if match is None or not 0 <= int(match.group(1)) <= 100:
        raise BadReply(f"unexpected agent reply {line!r}")
    return AgentReport(AgentState.UP, int(match.group(1)))


def combine(reports: Sequence[AgentReport | None], *, draining: bool) -> AgentReport:
    """The box's reply from its workers' (None: a worker that did not
    answer, e.g. being restarted).

    The box serves while any worker does; its weight is the mean over all
    workers, a worker that does not serve counting 0, since the workers
    share the port and a missing one's share of the box is missing too.
    The box drains when its supervisor does, or when every worker does.
    """
    if draining:
        return AgentReport(AgentState.DRAIN, 0)
    if not reports:
        return AgentReport(AgentState.DOWN, 0, "no_workers")
    up = [r for r in reports if r is not None and r.state is AgentState.UP]
    if up:
        mean = sum(r.weight_percent for r in up) / len(reports)
        return AgentReport(AgentState.UP, max(MIN_WEIGHT_PERCENT, math.floor(mean + 0.5)))
    if all(r is not None and r.state is AgentState.DRAIN for r in reports):
        return AgentReport(AgentState.DRAIN, 0)
    whys = sorted(
        {r.why for r in reports if r is not None and r.state is AgentState.DOWN and r.why}
    )
    return AgentReport(AgentState.DOWN, 0, "_".join(whys) or "no_answer")


__all__ = [
    "MAX_REPLY_BYTES",
    "MIN_WEIGHT_PERCENT",
    "AgentReport",
    "AgentState",
    "BadReply",
    "combine",
    "parse",
    "report",
    "weight_percent",
]
