"""The decode scheduler: one per server, between every session and the decoder.

A Trio shell around the sans-IO :class:`~voicetrio.decode_queue.DecodeQueue`.
Each decode asks for a :class:`DecodeSlot` in its lane (finals before
partials, oldest first) and hands the slot to ``trio.to_thread.run_sync`` as
its ``limiter``: trio then acquires it before the thread starts and releases
it when the thread has *finished*, even if the caller was cancelled and
abandoned the thread, so the decoder never runs more decodes than it has
slots.

A partial may :meth:`DecodeSlot.reserve` its slot first and only then take
the audio to decode: when the decoder was busy it decodes what was said up
to now, never a snapshot that went stale in the queue.
"""

from __future__ import annotations

from types import TracebackType
from typing import cast

import trio

from voicetrio.decode_queue import DecodeQueue, Lane, Ticket


class DecodeScheduler:
    def __init__(self, slots: int) -> None:
        self.queue = DecodeQueue(slots)
        self._granted: dict[Ticket, trio.Event] = {}

    def slot(self, lane: Lane, since: float | None = None) -> DecodeSlot:
        """A slot in ``lane``; ``since`` (trio time) orders it, default now."""
        return DecodeSlot(self, lane, trio.current_time() if since is None else since)

    def final_wait_s(self) -> float:
        """How long a final waits for the decoder now (see DecodeQueue)."""
        return self.queue.final_wait_s(trio.current_time())

    async def _acquire(self, lane: Lane, since: float) -> Ticket:
        ticket = self.queue.request(lane, since, trio.current_time())
        event = self._granted[ticket] = trio.Event()
        self._grant()
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self._release()  # granted as we were cancelled: hand it on
            else:
                self.queue.cancel(ticket)
            raise
        finally:
            del self._granted[ticket]
        return ticket

    def _release(self) -> None:
        self.queue.release()
        self._grant()

    def _grant(self) -> None:
        for ticket in self.queue.grant(trio.current_time()):
            self._granted[ticket].set()


class DecodeSlot:
    """One decode's place in the scheduler; trio's limiter protocol.

    Use once: as ``limiter=`` of ``trio.to_thread.run_sync``, or as
    ``async with slot:`` around work that is not a thread. A slot reserved
    with :meth:`reserve` must be used or :meth:`close`\\ d.
    """

    def __init__(self, scheduler: DecodeScheduler, lane: Lane, since: float) -> None:
        self._scheduler = scheduler
        self.lane = lane
        self.since = since
        self._held = False
        self._used = False

    async def reserve(self) -> None:
        """Wait for this slot's turn, and hold it."""
        if self._held or self._used:
            raise RuntimeError("this decode slot was already taken")
        await self._scheduler._acquire(self.lane, self.since)
        self._held = True

    def close(self) -> None:
        """Give back a reserved slot that no thread took (no-op otherwise)."""
        if self._held and not self._used:
            self._held = False
            self._used = True
            self._scheduler._release()

    def as_limiter(self) -> trio.CapacityLimiter:
        """This slot, for ``trio.to_thread.run_sync(limiter=...)``.

        trio documents that ``limiter`` may be any object with the two
        ``*_on_behalf_of`` methods; only its annotation says CapacityLimiter."""
        return cast(trio.CapacityLimiter, self)

    # trio's limiter protocol

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        if self._used:
            raise RuntimeError("a decode slot is used once")
        if not self._held:
            await self.reserve()
        self._used = True

    def release_on_behalf_of(self, borrower: object) -> None:
        if self._held:
            self._held = False
            self._scheduler._release()

    async def __aenter__(self) -> None:
        await self.acquire_on_behalf_of(None)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release_on_behalf_of(None)


__all__ = ["DecodeScheduler", "DecodeSlot"]
