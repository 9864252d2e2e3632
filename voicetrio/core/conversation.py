"""The conversation a session's replies see: keyed entries, bounded, sans-IO.

The language model sees the last few exchanges so that "and what about
tomorrow?" makes sense. Each entry has a key, so that a client that names
its items (the OpenAI Realtime API) can forget one or cut a reply down to
what was heard; the keys of what the session itself adds are made here
(:func:`utterance_key`, :func:`reply_key`), the client's own are its business.

An *exchange* is the user's words (one entry or several in a row) and what
follows them up to the user's next words (entries before the first user
entry make one exchange too). The bounds are
those of the v1 protocol's memory, counted in exchanges:

* at most ``max_turns`` exchanges; ``max_turns == 0`` keeps nothing once a
  reply is in;
* at most ``max_chars`` characters over all entries, except that the newest
  exchange is always kept whole: a half sentence misleads the model more
  than a long prompt costs.

The bounds are applied when a reply (an assistant entry) comes in, never
when a user entry does: words waiting for an answer are never dropped
before the answer sees them.

Entries with empty text are kept (a truncated reply, a clip without words)
but never shown to the model. A forgotten key stays forgotten: a reply that
commits its exchange after the client deleted the user's item does not bring
it back.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from voicetrio.core.inputs import Role
from voicetrio.core.prompt import ChatMessage


def utterance_key(utterance: int) -> str:
    """The key of a heard utterance's words (utterances are numbered from 1)."""
    return f"utterance-{utterance}"


def reply_key(turn: int) -> str:
    """The key of reply ``turn``'s text."""
    return f"reply-{turn}"


@dataclass(slots=True)
class Entry:
    key: str
    role: Role
    text: str


class Conversation:
    def __init__(self, max_turns: int, max_chars: int) -> None:
        if max_turns < 0:
            raise ValueError(f"max_turns must not be negative, got {max_turns}")
        if max_chars < 0:
            raise ValueError(f"max_chars must not be negative, got {max_chars}")
        self.max_turns = max_turns
        self.max_chars = max_chars
        self._entries: list[Entry] = []
        self._forgotten: set[str] = set()

    @property
    def entries(self) -> tuple[Entry, ...]:
        return tuple(self._entries)

    @property
    def exchanges(self) -> int:
        return sum(1 for _ in self._exchange_starts())

    @property
    def total_chars(self) -> int:
        return sum(len(e.text) for e in self._entries)

    def __contains__(self, key: object) -> bool:
        return any(e.key == key for e in self._entries)

    def add(self, key: str, role: Role, text: str) -> bool:
        """Append an entry (or give an existing key new text); False if
        ``key`` was forgotten. A reply applies the bounds."""
        if key in self._forgotten:
            return False
        existing = self._find(key)
        if existing is not None:
            existing.text = text
        else:
            self._entries.append(Entry(key, role, text))
        if role == "assistant":
            self._trim()
        return True

    def add_exchange(self, user_key: str, user_text: str, reply_key: str, reply_text: str) -> None:
        """The user's words and the reply to them, at once (a reply to what
        was heard enters with it); a forgotten side stays out."""
        if user_key not in self._forgotten:
            self._entries.append(Entry(user_key, "user", user_text))
        self.add(reply_key, "assistant", reply_text)

    def forget(self, key: str) -> bool:
        """Remove ``key`` now and refuse it later; whether it was there."""
        self._forgotten.add(key)
        before = len(self._entries)
        self._entries = [e for e in self._entries if e.key != key]
        return len(self._entries) != before

    def rewrite(self, key: str, text: str) -> bool:
        """Replace the text of ``key``; False if there is no such entry."""
        entry = self._find(key)
        if entry is None:
            return False
        entry.text = text
        return True

    def messages(self, system_prompt: str, user_text: str | None = None) -> list[ChatMessage]:
        """The prompt for the next reply: system, the entries with words, then
        ``user_text`` (the words being answered, not yet an entry) if given."""
        out: list[ChatMessage] = [{"role": "system", "content": system_prompt}]
        out.extend({"role": e.role, "content": e.text} for e in self._entries if e.text)
        if user_text is not None:
            out.append({"role": "user", "content": user_text})
        return out

    # -- internals --------------------------------------------------------------

    def _find(self, key: str) -> Entry | None:
        return next((e for e in self._entries if e.key == key), None)

    def _exchange_starts(self) -> Iterator[int]:
        previous: Role | None = None
        for i, entry in enumerate(self._entries):
            if i == 0 or (entry.role == "user" and previous != "user"):
                yield i
            previous = entry.role

    def _trim(self) -> None:
        if self.max_turns == 0:
            self._entries.clear()
            return
        while True:
            starts = list(self._exchange_starts())
            over_count = len(starts) > self.max_turns
            over_chars = self.total_chars > self.max_chars and len(starts) > 1
            if not (over_count or over_chars):
                return
            # The oldest whole exchange goes first.
            del self._entries[: starts[1] if len(starts) > 1 else len(self._entries)]


__all__ = ["Conversation", "Entry", "reply_key", "utterance_key"]
