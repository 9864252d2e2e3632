"""How often, and how far apart, an engine that failed to load is tried again.

Sans-IO on purpose: :class:`LoadRetry` only answers "how long to wait after
attempt k failed, or is that the end", so its numbers are tested exactly;
:class:`~voicetrio.engines.registry.EngineHost` does the waiting, on Trio's
clock. The pause doubles from ``first_delay_s`` up to ``max_delay_s``: a
fault of the moment (espeak-ng giving a silent warm-up while Whisper and
llama.cpp load beside it) gets a quick second chance, and a lasting one
does not keep a supervisor's restart waiting for long.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

#: The longest pause between two attempts, however many there are.
MAX_DELAY_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class LoadRetry:
    """``attempts`` loads at most (the first included), paused by doubling delays."""

    attempts: int
    first_delay_s: float
    max_delay_s: float = MAX_DELAY_S

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        for name in ("first_delay_s", "max_delay_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")

    def delay_after(self, attempt: int) -> float | None:
        """Seconds to wait after attempt ``attempt`` (1 is the first) failed,
        before the next one; None if it was the last allowed."""
        if attempt < 1:
            raise ValueError(f"attempts count from 1, got {attempt}")
        if attempt >= self.attempts:
            return None
        # The exponent is capped so that a long run of attempts stays a float.
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** min(attempt - 1, 64))

    def delays(self) -> list[float]:
        """Every pause a load that never succeeds waits through, in order."""
        out: list[float] = []
        attempt = 1
        while (delay := self.delay_after(attempt)) is not None:
            out.append(delay)
            attempt += 1
        return out


__all__ = ["MAX_DELAY_S", "LoadRetry"]
