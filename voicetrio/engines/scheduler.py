"""The scheduler of a shared engine: one per engine per server, between every
session and the engine's slots.

A Trio shell around the sans-IO :class:`~voicetrio.core.work_queue.WorkQueue`.
Each piece of work asks for a :class:`Slot` in its lane (urgent before
tentative, oldest first). A decode hands its slot to
``trio.to_thread.run_sync`` as the ``limiter`` (:meth:`Slot.as_limiter`):
trio acquires it before the thread starts and releases it when the thread
has *finished*, even if the caller was cancelled and abandoned the thread,
so an engine never runs more work than it has slots.

A partial may :meth:`Slot.reserve` its slot first and only then take the
audio to decode: when the decoder was busy it decodes what was said up to
now, never a snapshot that went stale in the queue. An LLM reply reserves
its slot before its timers start, and holds it for its stream.
"""

from __future__ import annotations

from dataclasses import replace
from types import TracebackType
from typing import cast

import trio

from voicetrio.core.work_queue import Lane, Ticket, WorkQueue


class Scheduler:
    def __init__(self, slots: int, tentative_slots: int | None = None) -> None:
        self.queue = WorkQueue(slots, tentative_slots)
        self._waiters: dict[Ticket, trio.Event] = {}

    def slot(self, lane: Lane, since: float | None = None) -> Slot:
        """A slot in ``lane``; ``since`` (trio time) orders it, default now."""
        return Slot(self, lane, trio.current_time() if since is None else since)

    def urgent_wait_s(self) -> float:
        """How long urgent work waits for a slot now (see WorkQueue)."""
        return self.queue.urgent_wait_s(trio.current_time())

    async def _acquire(self, slot: Slot) -> None:
        ticket = slot._ticket = self.queue.request(slot.lane, slot.since, trio.current_time())
        event = self._waiters[ticket] = trio.Event()
        self._grant()
        try:
            await event.wait()
        except BaseException:
            ticket = slot._ticket  # promotion may have replaced it
            if event.is_set():
                self._release(ticket.lane)  # granted as we were cancelled: hand it on
            else:
                self.queue.cancel(ticket)
            raise
        finally:
            self._waiters.pop(slot._ticket, None)

    def _promote(self, slot: Slot) -> None:
        ticket = slot._ticket
        if ticket is None:
            return  # not asked for yet: it will ask in its new lane
        event = self._waiters.get(ticket)
        if event is None or event.is_set():  # granted: its slot now counts as urgent
            self.queue.moved(ticket)
            slot._ticket = replace(ticket, lane=Lane.URGENT)
            return
        del self._waiters[ticket]
        slot._ticket = promoted = self.queue.promote(ticket)
        self._waiters[promoted] = event
        self._grant()

    def _release(self, lane: Lane) -> None:
        self.queue.release(lane)
        self._grant()

    def _grant(self) -> None:
        for ticket in self.queue.grant(trio.current_time()):
            self._waiters[ticket].set()


class Slot:
    """One piece of work's place in a scheduler; trio's limiter protocol.

    Use once: as ``limiter=slot.as_limiter()`` of ``trio.to_thread.run_sync``,
    or as ``async with slot:`` around work that is not a thread. A slot
    reserved with :meth:`reserve` must be used or :meth:`close`\\ d.
    """

    def __init__(self, scheduler: Scheduler, lane: Lane, since: float) -> None:
        self._scheduler = scheduler
        self.lane = lane
        self.since = since
        self._ticket: Ticket | None = None
        self._held = False
        self._used = False

    @property
    def held(self) -> bool:
        """Reserved and not yet given back."""
        return self._held

    async def reserve(self) -> None:
        """Wait for this slot's turn, and hold it."""
        if self._held or self._used:
            raise RuntimeError("this slot was already taken")
        await self._scheduler._acquire(self)
        self._held = True

    def promote(self) -> None:
        """Tentative work became urgent (a speculative reply, confirmed):
        waiting, it moves ahead of tentative work; holding, it counts as urgent."""
        if self.lane is not Lane.TENTATIVE:
            return
        self.lane = Lane.URGENT
        # Waiting or holding; a slot already given back counts nowhere.
        if self._held or (self._ticket is not None and not self._used):
            self._scheduler._promote(self)

    def close(self) -> None:
        """Give back a held slot (no-op if it is not held)."""
        if self._held:
            self._held = False
            self._used = True
            self._scheduler._release(self.lane)

    def as_limiter(self) -> trio.CapacityLimiter:
        """This slot, for ``trio.to_thread.run_sync(limiter=...)``.

        trio documents that ``limiter`` may be any object with the two
        ``*_on_behalf_of`` methods; only its annotation says CapacityLimiter."""
        return cast(trio.CapacityLimiter, self)

    # trio's limiter protocol

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        if self._used:
            raise RuntimeError("a slot is used once")
        if not self._held:
            await self.reserve()
        self._used = True

    def release_on_behalf_of(self, borrower: object) -> None:
        self.close()

    async def __aenter__(self) -> None:
        await self.acquire_on_behalf_of(None)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["Scheduler", "Slot"]
