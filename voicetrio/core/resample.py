"""Streaming sample-rate conversion of mono 16-bit PCM, for client audio.

Clients send audio at their device's rate; engines see
:data:`~voicetrio.engines.base.ENGINE_SAMPLE_RATE`. Resampling each chunk on
its own would restart the filter at every chunk boundary and click, so a
:class:`Resampler` keeps libsoxr's stream state between calls: feed chunks as
they come with :meth:`Resampler.process`, then :meth:`Resampler.flush` at the
end of the stream for the filter's tail (about 20 ms of output held back).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import soxr  # type: ignore[import-untyped]

MIN_RATE: Final = 8000
MAX_RATE: Final = 48000


class Resampler:
    """Converts ``src_rate`` PCM to ``dst_rate``; a passthrough if they are equal."""

    def __init__(self, src_rate: int, dst_rate: int = 16000) -> None:
        for label, rate in (("source", src_rate), ("target", dst_rate)):
            if isinstance(rate, bool) or not isinstance(rate, int):
                raise ValueError(f"{label} sample rate must be an integer, got {rate!r}")
            if not MIN_RATE <= rate <= MAX_RATE:
                raise ValueError(
                    f"{label} sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz"
                )
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._stream: soxr.ResampleStream | None = self._new_stream()

    @property
    def passthrough(self) -> bool:
        return self.src_rate == self.dst_rate

    def _new_stream(self) -> soxr.ResampleStream | None:
        if self.passthrough:
            return None
        return soxr.ResampleStream(self.src_rate, self.dst_rate, 1, dtype="int16", quality="HQ")

    def process(self, pcm: bytes) -> bytes:
        """The resampled audio for the next chunk; may be a little short, see flush()."""
        if len(pcm) % 2:
            raise ValueError(f"{len(pcm)} bytes of PCM is not whole 16-bit samples")
        if self._stream is None:
            return pcm
        out = self._stream.resample_chunk(np.frombuffer(pcm, "<i2"))
        return np.asarray(out, "<i2").tobytes()

    def flush(self) -> bytes:
        """The filter's held-back tail; the resampler is then ready for a new stream."""
        if self._stream is None:
            return b""
        out = self._stream.resample_chunk(np.zeros(0, "<i2"), last=True)
        self._stream = self._new_stream()
        return np.asarray(out, "<i2").tobytes()


def resample(pcm: bytes, src_rate: int, dst_rate: int = 16000) -> bytes:
    """One-shot conversion of a whole clip."""
    resampler = Resampler(src_rate, dst_rate)
    return resampler.process(pcm) + resampler.flush()


__all__ = ["MAX_RATE", "MIN_RATE", "Resampler", "resample"]
