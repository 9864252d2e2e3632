"""Who runs next on a shared engine: the order of work across all sessions.

Sans-IO: numbers in, decisions out. A :class:`WorkQueue` serves every session
of a server for one engine with ``slots`` (work items at once). A request
waits in one of two lanes:

- ``URGENT``: someone is waiting for it. For the decoder, a final (or the
  speculative final decoded while the silence window runs); for the LLM, a
  reply to a confirmed turn. Served first.
- ``TENTATIVE``: work that may be thrown away or that nobody waits on. For
  the decoder, a partial; for the LLM, a speculative reply prepared before
  the end of the user's turn is confirmed. Served only when no urgent
  request waits, and never in more than ``tentative_slots`` slots at once,
  so that tentative work cannot take the slot an urgent request needs.

Within a lane, requests are served by ``since`` (when the user's speech
ended, or when a partial was asked for), oldest first, then by arrival. A
tentative request can be :meth:`WorkQueue.promote`\\ d (a speculative reply
whose turn was confirmed) and keeps its place in time. A granted request
holds its slot until :meth:`WorkQueue.release`.

The queue also keeps the figure admission reads, :meth:`WorkQueue.urgent_wait_s`:
how long urgent work waits for a slot now.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Final

#: Weight of the newest urgent request's wait in the moving average.
WAIT_EWMA_ALPHA: Final = 0.2
#: The average fades with this time constant while no urgent request comes:
#: a burst long past says nothing about the engine now.
WAIT_FADE_S: Final = 10.0


class Lane(enum.IntEnum):
    URGENT = 0
    TENTATIVE = 1


@dataclass(frozen=True, order=True, slots=True)
class Ticket:
    """One request; tickets order as the queue serves them."""

    lane: Lane
    since: float
    seq: int
    asked: float = field(compare=False)


class WorkQueue:
    def __init__(self, slots: int, tentative_slots: int | None = None) -> None:
        """``tentative_slots`` caps the slots tentative work may hold at once
        (default: all of them)."""
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.slots = slots
        self.tentative_slots = slots if tentative_slots is None else tentative_slots
        if not 1 <= self.tentative_slots <= slots:
            raise ValueError(f"tentative_slots must be in 1..{slots}, got {tentative_slots}")
        self.busy = {Lane.URGENT: 0, Lane.TENTATIVE: 0}
        self.granted = {Lane.URGENT: 0, Lane.TENTATIVE: 0}
        self._waiting: list[Ticket] = []
        self._seq = itertools.count()
        self._wait_ewma = 0.0
        self._wait_at = 0.0

    @property
    def in_use(self) -> int:
        return self.busy[Lane.URGENT] + self.busy[Lane.TENTATIVE]

    def request(self, lane: Lane, since: float, now: float) -> Ticket:
        """Queue a request; :meth:`grant` says when it may run."""
        ticket = Ticket(lane, since, next(self._seq), now)
        heapq.heappush(self._waiting, ticket)
        return ticket

    def cancel(self, ticket: Ticket) -> bool:
        """Withdraw a waiting request; False if it was not waiting."""
        try:
            self._waiting.remove(ticket)
        except ValueError:
            return False
        heapq.heapify(self._waiting)
        return True

    def promote(self, ticket: Ticket) -> Ticket:
        """A waiting tentative request becomes urgent, keeping its ``since``.
        Returns the ticket that now stands for it (the same, if it was not waiting)."""
        if ticket.lane is Lane.URGENT or not self.cancel(ticket):
            return ticket
        urgent = replace(ticket, lane=Lane.URGENT)
        heapq.heappush(self._waiting, urgent)
        return urgent

    def grant(self, now: float) -> list[Ticket]:
        """The requests that may run now, best first; each holds a slot."""
        out: list[Ticket] = []
        deferred: list[Ticket] = []
        while self.in_use < self.slots and self._waiting:
            ticket = heapq.heappop(self._waiting)
            if ticket.lane is Lane.TENTATIVE and self.busy[Lane.TENTATIVE] >= self.tentative_slots:
                deferred.append(ticket)
                continue
            self.busy[ticket.lane] += 1
            self.granted[ticket.lane] += 1
            if ticket.lane is Lane.URGENT:
                average = self._faded_wait(now)
                self._wait_ewma = average + WAIT_EWMA_ALPHA * (now - ticket.asked - average)
                self._wait_at = now
            out.append(ticket)
        for ticket in deferred:
            heapq.heappush(self._waiting, ticket)
        return out

    def release(self, lane: Lane) -> None:
        """A granted request of ``lane`` finished (or was abandoned and its work ended)."""
        if self.busy[lane] <= 0:
            raise RuntimeError(f"release of a {lane.name} slot that was not granted")
        self.busy[lane] -= 1

    def moved(self, ticket: Ticket) -> None:
        """A granted tentative request is now urgent (its slot counts as urgent)."""
        if ticket.lane is Lane.TENTATIVE and self.busy[Lane.TENTATIVE] > 0:
            self.busy[Lane.TENTATIVE] -= 1
            self.busy[Lane.URGENT] += 1

    def waiting(self, lane: Lane | None = None) -> int:
        return sum(1 for t in self._waiting if lane is None or t.lane is lane)

    def urgent_wait_s(self, now: float) -> float:
        """How long urgent work waits for a slot now: the larger of the recent
        average and the wait of the oldest urgent request still waiting."""
        oldest = min(
            (t.asked for t in self._waiting if t.lane is Lane.URGENT), default=now
        )
        return max(self._faded_wait(now), now - oldest)

    def _faded_wait(self, now: float) -> float:
        return self._wait_ewma * math.exp(-max(0.0, now - self._wait_at) / WAIT_FADE_S)


__all__ = ["WAIT_EWMA_ALPHA", "WAIT_FADE_S", "Lane", "Ticket", "WorkQueue"]
