"""G.711 μ-law and A-law, 16-bit PCM in and out, vectorized with numpy.

Telephony speaks G.711 at 8 kHz: one byte per sample, a sign, a 3-bit
segment (a power of two) and a 4-bit step within it. These are the ITU-T
G.711 tables as the classic reference code computes them (μ-law on the
14 high bits of a sample, A-law on 13, both with even bits inverted on the
wire as the standard says). Written here rather than taken from
``audioop``, which Python 3.13 removed.

Decoding is a 256-entry table; encoding finds each sample's segment by
where its magnitude falls among the segment ends.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

_QUANT_MASK: Final = 0x0F
_SEG_SHIFT: Final = 4
_SEG_MASK: Final = 0x70
_SIGN_BIT: Final = 0x80

# μ-law works on 14-bit magnitudes, biased by 33 so every segment starts at a
# power of two; a magnitude past the last segment end is clipped.
_ULAW_BIAS: Final = 0x84
_ULAW_CLIP: Final = 8159
_ULAW_SEG_END: Final = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
# A-law works on 13-bit magnitudes; its first two segments share one step size.
_ALAW_SEG_END: Final = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _samples(pcm: bytes) -> npt.NDArray[np.int32]:
    if len(pcm) % 2:
        raise ValueError(f"{len(pcm)} bytes of PCM is not whole 16-bit samples")
    return np.frombuffer(pcm, "<i2").astype(np.int32)


def _ulaw_table() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = ((code & _QUANT_MASK) << 3) + _ULAW_BIAS
    magnitude <<= (code & _SEG_MASK) >> _SEG_SHIFT
    linear = np.where(code & _SIGN_BIT, _ULAW_BIAS - magnitude, magnitude - _ULAW_BIAS)
    return linear.astype(np.int16)


def _alaw_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (code & _SEG_MASK) >> _SEG_SHIFT
    step = (code & _QUANT_MASK) << 4
    magnitude = np.where(segment == 0, step + 8, (step + 0x108) << np.maximum(segment - 1, 0))
    linear = np.where(code & _SIGN_BIT, magnitude, -magnitude)
    return linear.astype(np.int16)


_ULAW_DECODE: Final = _ulaw_table()
_ALAW_DECODE: Final = _alaw_table()


def ulaw_decode(data: bytes) -> bytes:
    """μ-law bytes to 16-bit little-endian PCM (two bytes per byte in)."""
    return _ULAW_DECODE[np.frombuffer(data, np.uint8)].astype("<i2").tobytes()


def alaw_decode(data: bytes) -> bytes:
    """A-law bytes to 16-bit little-endian PCM (two bytes per byte in)."""
    return _ALAW_DECODE[np.frombuffer(data, np.uint8)].astype("<i2").tobytes()


def ulaw_encode(pcm: bytes) -> bytes:
    """16-bit little-endian PCM to μ-law, one byte per sample."""
    value = _samples(pcm) >> 2
    negative = value < 0
    magnitude = np.minimum(np.where(negative, -value, value), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    segment = np.searchsorted(_ULAW_SEG_END, magnitude)
    step = (magnitude >> (segment + 1)) & _QUANT_MASK
    code = np.where(segment >= 8, 0x7F, (segment << _SEG_SHIFT) | step)
    mask = np.where(negative, 0x7F, 0xFF)
    return (code ^ mask).astype(np.uint8).tobytes()


def alaw_encode(pcm: bytes) -> bytes:
    """16-bit little-endian PCM to A-law, one byte per sample."""
    value = _samples(pcm) >> 3
    negative = value < 0
    magnitude = np.where(negative, -value - 1, value)
    segment = np.searchsorted(_ALAW_SEG_END, magnitude)
    shift = np.where(segment < 2, 1, segment)
    step = (magnitude >> shift) & _QUANT_MASK
    code = np.where(segment >= 8, 0x7F, (np.minimum(segment, 7) << _SEG_SHIFT) | step)
    mask = np.where(negative, 0x55, 0xD5)
    return (code ^ mask).astype(np.uint8).tobytes()


__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]
