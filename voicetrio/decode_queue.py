"""Who decodes next: the order of speech recognition work across all sessions.

Sans-IO: numbers in, decisions out. One :class:`DecodeQueue` serves every
session of a server. The decoder has ``slots`` (blocking decodes at once,
``STREAM_DECODE_CONCURRENCY``); a request waits in one of two lanes:

- ``FINAL`` (the speculative final decoded while the silence window runs, and
  the final itself): served first, oldest first, because a person is waiting
  for the answer and the reply cannot start without it;
- ``PARTIAL``: served only when no final waits, oldest first, so that every
  talker's partials come round in turn.

Requests of one lane are ordered by ``since`` (when the speech ended, or when
the partial was asked for) and then by arrival. A granted request holds its
slot until :meth:`DecodeQueue.release`.

The queue also keeps the figures admission reads (:attr:`final_wait_s`): a
moving average of how long finals waited for a slot, and how long the oldest
final now waiting has waited.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Final

#: Weight of the newest final's wait in the moving average.
WAIT_EWMA_ALPHA: Final = 0.2
#: The average fades with this time constant while no final comes: a burst
#: long past says nothing about the decoder now.
WAIT_FADE_S: Final = 10.0


class Lane(enum.IntEnum):
    FINAL = 0
    PARTIAL = 1


@dataclass(frozen=True, order=True, slots=True)
class Ticket:
    """One decode request; orders as the queue serves."""

    lane: Lane
    since: float
    seq: int
    asked: float = field(compare=False)


class DecodeQueue:
    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.slots = slots
        self.busy = 0
        self._waiting: list[Ticket] = []
        self._cancelled: set[Ticket] = set()
        self._seq = itertools.count()
        self._final_wait_ewma = 0.0
        self._final_wait_at = 0.0
        self.granted = {Lane.FINAL: 0, Lane.PARTIAL: 0}

    def request(self, lane: Lane, since: float, now: float) -> Ticket:
        """Queue a request; :meth:`grant` says when it may run."""
        ticket = Ticket(lane, since, next(self._seq), now)
        heapq.heappush(self._waiting, ticket)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Withdraw a request that was not granted (no-op for one that was)."""
        if ticket in self._waiting:
            self._cancelled.add(ticket)
            self._prune()

    def grant(self, now: float) -> list[Ticket]:
        """The requests that may run now, best first; each holds a slot."""
        out: list[Ticket] = []
        self._prune()
        while self.busy < self.slots and self._waiting:
            ticket = heapq.heappop(self._waiting)
            self.busy += 1
            self.granted[ticket.lane] += 1
            if ticket.lane is Lane.FINAL:
                average = self._faded_wait(now)
                self._final_wait_ewma = average + WAIT_EWMA_ALPHA * (now - ticket.asked - average)
                self._final_wait_at = now
            out.append(ticket)
            self._prune()
        return out

    def release(self) -> None:
        """A granted request finished (or was abandoned and its work ended)."""
        if self.busy <= 0:
            raise RuntimeError("release without a granted request")
        self.busy -= 1

    def waiting(self, lane: Lane | None = None) -> int:
        return sum(
            1
            for t in self._waiting
            if t not in self._cancelled and (lane is None or t.lane is lane)
        )

    def final_wait_s(self, now: float) -> float:
        """How long a final waits for the decoder now: the larger of the recent
        average and the wait of the oldest final still waiting."""
        oldest = min(
            (now - t.asked for t in self._waiting if t.lane is Lane.FINAL and t not in self._cancelled),
            default=0.0,
        )
        return max(self._faded_wait(now), oldest)

    def _faded_wait(self, now: float) -> float:
        return self._final_wait_ewma * math.exp(-max(0.0, now - self._final_wait_at) / WAIT_FADE_S)

    def _prune(self) -> None:
        # Cancelled tickets leave lazily, when they reach the top of the heap.
        while self._waiting and self._waiting[0] in self._cancelled:
            self._cancelled.discard(heapq.heappop(self._waiting))


__all__ = ["WAIT_EWMA_ALPHA", "WAIT_FADE_S", "DecodeQueue", "Lane", "Ticket"]
