"""Phrase aggregation, sans-IO: streamed LLM text deltas in, speakable phrases out.

Speech starts sooner when the reply is spoken phrase by phrase instead of
after the last token, but a phrase cut mid-word or mid-number sounds broken.
:class:`PhraseAggregator` buffers deltas and cuts a phrase at the first rule
that applies:

1. **Terminator.** One of ``. ? ! ; :`` followed by whitespace ends a phrase
   (the terminator stays in it). A terminator not followed by whitespace does
   not, so ``3.5``, ``e.g.x`` and ``12:30`` stay whole, and a terminator at the
   very end of the pending text waits for the next delta (or flush/tick) to
   show what follows it. The earliest such terminator wins, provided the
   phrase it ends is at most ``max_length`` characters.
2. **Length.** Once the pending text is longer than ``max_length`` characters
   (so the character after the limit is known), it is cut at the last
   whitespace at or before index ``max_length``; a single word longer than
   that is hard cut at ``max_length`` characters.
3. **Gap.** When no delta arrived for ``gap_ms``, the pending text is a phrase.
   :meth:`PhraseAggregator.deadline_ms` says when; the caller sleeps until
   then and calls :meth:`PhraseAggregator.tick`. A delta that arrives at or
   after the deadline first flushes the older text, since the gap did happen.

Phrases are stripped, never blank and at most ``max_length`` characters long.
No text is lost or duplicated: joined back together, the phrases are the
input with only the whitespace between phrases changed. Without gap flushes
the phrases do not depend on how the text was split into deltas. Empty deltas
are ignored: they carry no text, so they do not postpone the gap deadline.
Times are plain numbers in milliseconds on any clock the caller likes.
"""

from __future__ import annotations

from typing import Final

TERMINATORS: Final = frozenset(".?!;:")


class PhraseAggregator:
    def __init__(
        self, max_length: int = 60, gap_ms: int = 700, first_max_length: int | None = None
    ) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        if first_max_length is not None and first_max_length < 1:
            raise ValueError(f"first_max_length must be at least 1, got {first_max_length}")
        if gap_ms < 0:
            raise ValueError(f"gap_ms must not be negative, got {gap_ms}")
        self.max_length = max_length
        # The first phrase may be cut shorter: the sooner it is complete, the
        # sooner the reply is heard; the rest is spoken while it plays.
        self.first_max_length = first_max_length
        self.gap_ms = gap_ms
        self.phrases_out = 0
        # Invariant between calls: no leading whitespace (it would belong to a
        # joint) and no cut that rules 1 or 2 could make.
        self._pending = ""
        self._last_delta_ms: float | None = None

    @property
    def pending(self) -> str:
        return self._pending

    def deadline_ms(self) -> float | None:
        """When the gap rule flushes the pending text; None if none is pending."""
        if self._last_delta_ms is None or not self._pending:
            return None
        return self._last_delta_ms + self.gap_ms

    def push(self, delta: str, now_ms: float) -> list[str]:
        """Add one delta that arrived at ``now_ms``; return completed phrases."""
        phrases = self.tick(now_ms)
        if not delta:
            return phrases
        self._pending += delta
        self._last_delta_ms = now_ms
        phrases.extend(self._split())
        return phrases

    def tick(self, now_ms: float) -> list[str]:
        """Apply the gap rule: flush if ``now_ms`` reached the deadline."""
        deadline = self.deadline_ms()
        if deadline is None or now_ms < deadline:
            return []
        return self.flush()

    def flush(self) -> list[str]:
        """End of stream (or of a gap): whatever is pending, as one phrase."""
        phrase = self._pending.strip()
        self._pending = ""
        self._last_delta_ms = None
        if not phrase:
            return []
        self.phrases_out += 1
        return [phrase]

    def _split(self) -> list[str]:
        phrases: list[str] = []
        while True:
            text = self._pending.lstrip()
            cut = self._cut(text)
            if cut is None:
                self._pending = text
                return phrases
            # text[0] is not whitespace, so the phrase is never blank.
            phrases.append(text[:cut].rstrip())
            self.phrases_out += 1
            self._pending = text[cut:]

    def _cut(self, text: str) -> int | None:
        """Length of the phrase at the head of ``text``, None if not decided yet."""
        limit = self.max_length
        if self.phrases_out == 0 and self.first_max_length is not None:
            limit = min(limit, self.first_max_length)
        for i, char in enumerate(text[:limit]):
            if char in TERMINATORS and i + 1 < len(text) and text[i + 1].isspace():
                return i + 1
        if len(text) <= limit:
            return None
        for j in range(limit, 0, -1):
            if text[j].isspace():
                return j
        return limit


__all__ = ["TERMINATORS", "PhraseAggregator"]
