"""A session's timers in Trio: each sleeps in the reply stage's nursery, so
it dies with the session, and rings through a function the stage gives.

What happens when one rings is the reply stage's call (:mod:`voicetrio.session.reply`):
the client gets an ``Info("timer", ...)`` at once, and the assistant says
so aloud as soon as it is not already speaking. Deadlines are on the Trio
clock (a mock clock in tests); the time of day it rings at is said on the
wall clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo

import trio

from voicetrio.core.builtin_tools import Now
from voicetrio.core.timers import TimerBook, TimerEntry
from voicetrio.core.tools import ToolError
from voicetrio.logs import log_event


class SessionTimers:
    """The session's :class:`~voicetrio.core.builtin_tools.TimerControl`."""

    def __init__(
        self,
        sid: str,
        nursery: trio.Nursery,
        ring: Callable[[TimerEntry], None],
        *,
        now: Now,
        local_zone: tzinfo | None = None,
        book: TimerBook | None = None,
    ) -> None:
        self._sid = sid
        self._nursery = nursery
        self._ring = ring
        self._now = now
        self._zone = local_zone
        self.book = book if book is not None else TimerBook()
        self._scopes: dict[int, trio.CancelScope] = {}

    def set(self, duration: float, unit: str, label: str) -> TimerEntry:
        entry = self.book.add(duration, unit, label, trio.current_time())
        scope = trio.CancelScope()
        self._scopes[entry.id] = scope
        self._nursery.start_soon(self._wait, entry, scope)
        log_event(self._sid, "timer_set", timer=entry.id, seconds=entry.duration_s)
        return entry

    def cancel(self, timer_id: int | None) -> list[TimerEntry]:
        ids = [e.id for e in self.book.pending] if timer_id is None else [timer_id]
        stopped = []
        for one in ids:
            if one not in self._scopes:
                raise ToolError(f"there is no timer {one}")
            self._scopes.pop(one).cancel()
            stopped.append(self.book.remove(one))
        return stopped

    def due_at(self, entry: TimerEntry) -> str:
        left = entry.due - trio.current_time()
        moment: datetime = self._now().astimezone(self._zone) + timedelta(seconds=left)
        return f"{moment:%H:%M:%S}"

    async def _wait(self, entry: TimerEntry, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_until(entry.due)
            self._scopes.pop(entry.id, None)
            self.book.remove(entry.id)
            log_event(self._sid, "timer_rang", timer=entry.id)
            self._ring(entry)


__all__ = ["SessionTimers"]
