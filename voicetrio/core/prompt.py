"""What the language model is told: the spoken system prompt and the shape of
a chat message.

A leaf (no Trio, no engines, no session), because three layers need it: the
session's reply stage and its memory build the prompt, the LLM engines take
it, and the engine host warms the embedded model up and probes a turn with
the same system prompt a session would send.
"""

from __future__ import annotations

from typing import Final, Literal, TypedDict

#: The system prompt when ``STREAM_SYSTEM_PROMPT`` sets none: replies are
#: spoken, so they are short and plain. Tuned on bench/answers.py with every
#: catalog model (docs/benchmarks.md, "Answer quality"): "one or two"
#: sentences, the answer first, since a listener waits through every word
#: before the one that answers.
SPOKEN_SYSTEM_PROMPT: Final = (
    "You are a helpful voice assistant. Your answers are spoken aloud: answer in one "
    "or two short, plain sentences, giving the answer first. No lists, no markdown, no emoji."
)


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


def system_prompt(configured: str) -> str:
    """The system prompt a session sends: the configured one, or the spoken default."""
    return configured or SPOKEN_SYSTEM_PROMPT


__all__ = ["SPOKEN_SYSTEM_PROMPT", "ChatMessage", "system_prompt"]
