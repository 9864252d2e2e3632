"""A token bucket for audio seconds: how fast a client may send, sans-IO."""

from __future__ import annotations


class AudioBudget:
    """Lets ``burst_s`` seconds of audio through at once, then ``rate`` seconds
    of audio per second of time. :meth:`spend` says how long to wait."""

    def __init__(self, burst_s: float, rate: float) -> None:
        self.burst_s = burst_s
        self.rate = rate
        self._credit = burst_s
        self._at: float | None = None

    def spend(self, audio_s: float, now: float) -> float:
        """Take ``audio_s``; returns the seconds to wait before reading on (0 if none)."""
        if self._at is not None:
            self._credit = min(self.burst_s, self._credit + (now - self._at) * self.rate)
        self._at = now
        self._credit -= audio_s
        return 0.0 if self._credit >= 0 else -self._credit / self.rate
