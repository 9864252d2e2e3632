"""What the listener heard of a spoken reply cut short, sans-IO.

A client that stops playing a reply (the user talked over it) tells the
server how much of its audio was played; the conversation should then hold
only the words heard, or the model will later assume the user knows what
they never heard. Speech is made phrase by phrase, so the words heard are
those of every phrase whose audio ended by then, and of the phrase being
played, its first words in proportion to the time played of it (speech
rate is near enough constant within one phrase).
"""

from __future__ import annotations

from collections.abc import Sequence


def heard_text(spoken: Sequence[tuple[str, float]], heard_ms: float) -> str:
    """The words of ``spoken`` ((phrase, seconds of audio), in order) that
    the first ``heard_ms`` of their audio carried."""
    words: list[str] = []
    start_ms = 0.0
    for phrase, seconds in spoken:
        if heard_ms <= start_ms:
            break
        end_ms = start_ms + seconds * 1000
        phrase_words = phrase.split()
        if heard_ms >= end_ms:
            words.extend(phrase_words)
        else:
            fraction = (heard_ms - start_ms) / (end_ms - start_ms)
            words.extend(phrase_words[: int(len(phrase_words) * fraction)])
            break
        start_ms = end_ms
    return " ".join(words)


__all__ = ["heard_text"]
