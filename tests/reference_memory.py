"""The v1 protocol's conversation memory, kept as the reference the session's
keyed conversation (``voicetrio.core.conversation``) must match when fed
exchanges only (``tests/test_realtime_conversation.py``); the product no
longer uses it.

Bounded conversation memory for one session, sans-IO.

The LLM sees the last few exchanges so that "and what about tomorrow?" makes
sense, but a long session must not grow its prompt without bound. Memory is
bounded twice, and the oldest whole turns go first:

* at most ``max_turns`` turns; ``max_turns == 0`` keeps nothing at all;
* at most ``max_chars`` characters over all turns (user text plus assistant
  text), except that the newest turn is always kept, alone if it exceeds
  ``max_chars`` by itself: a turn is never truncated, since half a sentence
  misleads the model more than a long prompt costs. With ``max_turns > 0``
  and ``max_chars == 0`` that means just the last turn.
"""

from __future__ import annotations

from collections import deque

from voicetrio.core.prompt import ChatMessage


class ConversationMemory:
    def __init__(self, max_turns: int, max_chars: int) -> None:
        if max_turns < 0:
            raise ValueError(f"max_turns must not be negative, got {max_turns}")
        if max_chars < 0:
            raise ValueError(f"max_chars must not be negative, got {max_chars}")
        self.max_turns = max_turns
        self.max_chars = max_chars
        self._turns: deque[tuple[str, str]] = deque()
        self._chars = 0

    def __len__(self) -> int:
        return len(self._turns)

    @property
    def turns(self) -> tuple[tuple[str, str], ...]:
        """(user, assistant) pairs, oldest first."""
        return tuple(self._turns)

    @property
    def total_chars(self) -> int:
        return self._chars

    def add_turn(self, user: str, assistant: str) -> None:
        if self.max_turns == 0:
            return
        self._turns.append((user, assistant))
        self._chars += len(user) + len(assistant)
        while len(self._turns) > self.max_turns or (
            self._chars > self.max_chars and len(self._turns) > 1
        ):
            old_user, old_assistant = self._turns.popleft()
            self._chars -= len(old_user) + len(old_assistant)

    def clear(self) -> None:
        self._turns.clear()
        self._chars = 0

    def messages(self, system_prompt: str, user_text: str) -> list[ChatMessage]:
        """The prompt for the next reply: system, the remembered turns, the new user text."""
        out: list[ChatMessage] = [{"role": "system", "content": system_prompt}]
        for user, assistant in self._turns:
            out.append({"role": "user", "content": user})
            out.append({"role": "assistant", "content": assistant})
        out.append({"role": "user", "content": user_text})
        return out


__all__ = ["ConversationMemory"]
