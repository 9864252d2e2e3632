"""The conversation as the client sees it: its items, in order, by id.

The adapter keeps what it announced (an item's id, role, content kind and
text), the key the session core knows it by (:mod:`voicetrio.core.conversation`),
and for a spoken reply how much speech was sent, so that a delete or a
truncate naming an item is checked here and passed on by key. The core's
conversation is bounded and may have let an old item go; this table keeps
the last :data:`MAX_ITEMS`, so a client can still delete or retrieve them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from voicetrio.wire.realtime.server_events import Item

MAX_ITEMS: Final = 512


@dataclass(slots=True)
class Entry:
    item: Item
    #: The session core's key for it.
    key: str
    #: The reply it holds (assistant items the session made).
    turn: int | None = None
    #: Milliseconds of speech sent (a spoken reply).
    audio_ms: float = 0.0


class Items:
    def __init__(self) -> None:
        self._by_id: dict[str, Entry] = {}

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._by_id

    def add(self, entry: Entry) -> str | None:
        """Append ``entry``; the id of the item before it (None if first)."""
        previous = self.last()
        self._by_id[entry.item.id] = entry
        if len(self._by_id) > MAX_ITEMS:
            del self._by_id[next(iter(self._by_id))]
        return previous

    def get(self, item_id: str) -> Entry | None:
        return self._by_id.get(item_id)

    def by_key(self, key: str) -> Entry | None:
        return next((e for e in reversed(self._by_id.values()) if e.key == key), None)

    def remove(self, item_id: str) -> None:
        self._by_id.pop(item_id, None)

    def last(self) -> str | None:
        return next(reversed(self._by_id), None) if self._by_id else None

    def previous(self, item_id: str) -> str | None:
        """The id of the item just before ``item_id``."""
        before = None
        for current in self._by_id:
            if current == item_id:
                return before
            before = current
        return None


__all__ = ["MAX_ITEMS", "Entry", "Items"]
