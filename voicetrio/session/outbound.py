"""The session's outbound queue: what waits for the one writer task.

Not a plain memory channel, because a slow client must not slow the
pipeline and must not lose what matters: stale partial transcripts coalesce
(the latest wins), everything else is kept in order, and the queue measures
itself so the session can warn (soft limit, in messages) and finally drop a
client that stays behind (hard limit, in bytes). Items carry the turn they
belong to so a cancelled turn's unsent output can be purged.

:class:`OutboundQueue` is sans-IO; :class:`Outbox` adds the Trio wake-up.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from voicetrio.core.inputs import Frame


class Pressure(enum.Enum):
    OK = "ok"
    SOFT = "soft"  # crossed the soft limit just now: warn once per episode
    HARD = "hard"  # past the hard limit: the client is too far behind


@dataclass(slots=True, eq=False)
class OutItem:
    """One or more frames the writer sends back to back (a pcm16 chunk is a
    JSON header plus its binary frame, which must stay adjacent)."""

    frames: tuple[Frame, ...] | Callable[[], tuple[Frame, ...]]
    droppable: bool = False
    turn: int | None = None
    on_sent: Callable[[float], None] | None = None
    close_code: int | None = None  # a close marker: the writer closes after what came before
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        if callable(self.frames):
            self.nbytes = 256  # rendered at send time (metrics); small
        else:
            self.nbytes = sum(len(f) for f in self.frames)

    def render(self) -> tuple[Frame, ...]:
        return self.frames() if callable(self.frames) else self.frames


class OutboundQueue:
    def __init__(
        self, soft_messages: int, hard_bytes: int, on_drop: Callable[[], None] | None = None
    ) -> None:
        self.soft_messages = soft_messages
        self.on_drop = on_drop
        self.hard_bytes = hard_bytes
        self._items: deque[OutItem] = deque()
        self._bytes = 0
        self._warned = False
        self.dropped_partials = 0
        self.purged = 0
        self.peak_depth = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def put(self, item: OutItem) -> Pressure:
        if item.droppable:
            self._drop_queued_droppable()
        self._items.append(item)
        self._bytes += item.nbytes
        self.peak_depth = max(self.peak_depth, len(self._items))
        if self._bytes > self.hard_bytes:
            return Pressure.HARD
        if len(self._items) > self.soft_messages and not self._warned:
            self._warned = True
            return Pressure.SOFT
        return Pressure.OK

    def _drop_queued_droppable(self) -> None:
        # At most one droppable item is ever queued, so one scan suffices.
        for queued in self._items:
            if queued.droppable:
                self._items.remove(queued)
                self._bytes -= queued.nbytes
                self.dropped_partials += 1
                if self.on_drop is not None:
                    self.on_drop()
                return

    def pop(self) -> OutItem | None:
        if not self._items:
            return None
        item = self._items.popleft()
        self._bytes -= item.nbytes
        # Re-arm the warning once the client has caught up to half the limit.
        if self._warned and len(self._items) <= self.soft_messages // 2:
            self._warned = False
        return item

    def purge_turn(self, turn: int) -> int:
        kept = [i for i in self._items if i.turn != turn]
        dropped = len(self._items) - len(kept)
        if dropped:
            self._items = deque(kept)
            self._bytes = sum(i.nbytes for i in kept)
            self.purged += dropped
        return dropped


class Outbox:
    """Non-blocking producers, one consumer (the writer)."""

    def __init__(self, queue: OutboundQueue) -> None:
        self.queue = queue
        self._wakeup = trio.Event()
        self._closed = False

    def put(self, item: OutItem) -> Pressure:
        if self._closed:
            return Pressure.OK
        pressure = self.queue.put(item)
        self._wakeup.set()
        return pressure

    @property
    def closed(self) -> bool:
        """Closed: what is put now is ignored, and the writer ends once the
        queue is empty. The session's one "closing" state."""
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    async def get(self) -> OutItem:
        while True:
            item = self.queue.pop()
            if item is not None:
                return item
            if self._closed:
                raise trio.EndOfChannel
            await self._wakeup.wait()
            self._wakeup = trio.Event()
