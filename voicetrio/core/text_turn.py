"""Whether the words so far end a turn, asked of a small language model (sans-IO).

An audio turn judge hears how a sentence was said; a language model reads
what was said. "What is the capital of France" is over, "What is the
capital of" is not, and a chat model knows it: after a user message that is
finished, its most likely next tokens close the sentence (".", "?", "!") or
the message (``<|im_end|>``); after an unfinished one, they carry on ("the",
"France"). That is how LiveKit's end-of-utterance model works, on a model
trained for it; an ordinary small instruct model (SmolLM2-135M) already tells
them apart well enough (``bench/turn_judge.py``).

The transcript is normalized first: lower case, punctuation dropped. Whisper
writes a period or question mark on nearly every text, cut sentences too
("What is the capital of?"), and the model would take that mark as the end.

This module builds the completion prompt (ChatML, the template of SmolLM2
and Qwen2.5) and reads the answer: the probability mass the model puts on
ending, from the top log-probabilities of the one next token. The engine in
``engines/turn/text_judge.py`` does the I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Final

#: Next tokens that end the user's message: the sentence's closing mark, or
#: the end of the message itself. A newline is not among them: small models
#: put weight on it after unfinished fragments as well.
END_TOKENS: Final = frozenset({".", "?", "!", "<|im_end|>", "<|endoftext|>"})
#: How many alternatives the server is asked for: enough that the end tokens
#: are among them whenever they carry any real weight.
TOP_LOGPROBS: Final = 20
#: The system message: short, so the prompt costs a few ms, and the same
#: kind of conversation the model will be in.
SYSTEM: Final = "You are a helpful voice assistant."
#: Longest transcript judged, in characters: only the end of a long
#: utterance matters, and the prompt stays small.
MAX_CHARS: Final = 400

_PUNCTUATION: Final = re.compile(r"[^\w\s']+")
_SPACES: Final = re.compile(r"\s+")


def normalize(text: str) -> str:
    """``text`` as the model reads it: lower case, no punctuation, single spaces."""
    words = _SPACES.sub(" ", _PUNCTUATION.sub(" ", text.lower())).strip()
    if len(words) > MAX_CHARS:
        words = words[-MAX_CHARS:].split(" ", 1)[-1]
    return words


def prompt(text: str) -> str | None:
    """The raw completion prompt that asks what follows ``text`` in a user
    message, or None when there are no words to judge."""
    words = normalize(text)
    if not words:
        return None
    return f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{words}"


def end_probability(top: Iterable[Mapping[str, object]]) -> float:
    """The probability that the message ends here, from one token's
    ``top_logprobs`` (OpenAI completions shape: ``{"token", "logprob"}``
    each). Raises ValueError on a malformed entry."""
    mass = 0.0
    for entry in top:
        token, logprob = entry.get("token"), entry.get("logprob")
        if not isinstance(token, str) or not isinstance(logprob, int | float):
            raise ValueError(f"malformed top_logprobs entry: {entry!r}")
        if token.strip() in END_TOKENS:
            mass += math.exp(min(0.0, float(logprob)))
    return min(1.0, mass)


__all__ = ["END_TOKENS", "MAX_CHARS", "SYSTEM", "TOP_LOGPROBS", "end_probability", "normalize", "prompt"]
