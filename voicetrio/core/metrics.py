"""Per-turn latency marks, sans-IO: monotonic seconds in, rounded milliseconds out.

A turn is one utterance and the reply to it. The session passes in times read
from its own monotonic clock (``trio.current_time()`` or ``time.monotonic()``,
never wall time), and :meth:`TurnMetrics.fields` gives the JSON-able numbers
for the ``metrics`` event and the latency log line::

    t0  first audio frame of the utterance arrived       (always 0.0)
    t1  first partial transcript
    t2  final transcript
    t3  first LLM token
    t4  first TTS audio handed to the socket writer

Each ``mark_*`` keeps its first call only, so the session may call it on
every occurrence. Marks are milliseconds after t0 rounded to 0.1 ms, None
when never marked. Decode stats cover every ASR decode of the turn, partial
and final: ``rtf`` is the real-time factor (decode time / audio time) of the
last decode rounded to 3 places, ``mean_rtf`` the plain mean of the per-decode
factors. A decode of zero seconds of audio counts as a run but has no factor.
"""

from __future__ import annotations

from typing import Final

FIELD_NAMES: Final = (
    "t0_ms",
    "t1_first_partial_ms",
    "t2_final_ms",
    "t3_first_token_ms",
    "t4_first_audio_ms",
    "decode_runs",
    "last_decode_ms",
    "rtf",
    "mean_rtf",
)


def delta_ms(a: float | None, b: float | None) -> float | None:
    """Milliseconds from time ``a`` to time ``b`` (seconds), 0.1 ms; None if either is."""
    if a is None or b is None:
        return None
    return round((b - a) * 1000, 1)


class TurnMetrics:
    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.first_partial: float | None = None
        self.final: float | None = None
        self.first_token: float | None = None
        self.first_audio: float | None = None
        self.decode_runs = 0
        self.last_decode_s: float | None = None
        self._last_rtf: float | None = None
        self._rtf_sum = 0.0
        self._rtf_count = 0

    def mark_first_partial(self, now: float) -> None:
        if self.first_partial is None:
            self.first_partial = now

    def mark_final(self, now: float) -> None:
        if self.final is None:
            self.final = now

    def mark_first_token(self, now: float) -> None:
        if self.first_token is None:
            self.first_token = now

    def mark_first_audio(self, now: float) -> None:
        if self.first_audio is None:
            self.first_audio = now

    def add_decode(self, decode_s: float, audio_s: float) -> None:
        """One ASR decode took ``decode_s`` seconds for ``audio_s`` seconds of audio."""
        self.decode_runs += 1
        self.last_decode_s = decode_s
        if audio_s > 0:
            self._last_rtf = decode_s / audio_s
            self._rtf_sum += self._last_rtf
            self._rtf_count += 1
        else:
            self._last_rtf = None

    def fields(self) -> dict[str, float | int | None]:
        """The turn's numbers, keyed by :data:`FIELD_NAMES`, in that order."""
        last_decode_ms = None if self.last_decode_s is None else round(self.last_decode_s * 1000, 1)
        return {
            "t0_ms": 0.0,
            "t1_first_partial_ms": delta_ms(self.t0, self.first_partial),
            "t2_final_ms": delta_ms(self.t0, self.final),
            "t3_first_token_ms": delta_ms(self.t0, self.first_token),
            "t4_first_audio_ms": delta_ms(self.t0, self.first_audio),
            "decode_runs": self.decode_runs,
            "last_decode_ms": last_decode_ms,
            "rtf": None if self._last_rtf is None else round(self._last_rtf, 3),
            "mean_rtf": round(self._rtf_sum / self._rtf_count, 3) if self._rtf_count else None,
        }


__all__ = ["FIELD_NAMES", "TurnMetrics", "delta_ms"]
