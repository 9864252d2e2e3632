"""PCM helpers: WAV in and out, test signals, framing and loudness.

Everything the server moves around is mono 16-bit little-endian PCM as plain
``bytes``; this module is where other shapes are turned into that one and
where the few measurements on it live. Pure functions on numpy, no Trio, so
that the CLI, the benchmarks, the deterministic engines and the tests share
them.

WAV files are parsed here rather than with :mod:`wave`, which on Python 3.11
refuses ``WAVE_FORMAT_EXTENSIBLE`` headers, the ones most tools write for
24-bit and multichannel audio.

A leaf: the engines import it (speech comes back from a TTS engine as a
:class:`SpeechAudio`), never the other way round.
"""

from __future__ import annotations

import io
import math
import os
import struct
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

_FORMAT_PCM: Final = 0x0001
_FORMAT_EXTENSIBLE: Final = 0xFFFE
_FADE_MS: Final = 5
_FULL_SCALE: Final = 32767


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    """Mono 16-bit little-endian PCM and its rate: speech with its format."""

    pcm: bytes
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate

    def wav(self) -> bytes:
        """A complete WAV file holding this audio."""
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.sample_rate)
            w.writeframes(self.pcm)
        return buf.getvalue()


def read_wav(path: str | os.PathLike[str]) -> tuple[bytes, int]:
    """Read an integer-PCM WAV file as (mono 16-bit LE PCM, sample rate).

    Channels are averaged; 8-, 24- and 32-bit samples are converted to 16-bit.
    Raises ValueError naming the file if it is not a WAV file or not integer PCM.
    """
    data = Path(path).read_bytes()
    try:
        return decode_wav(data)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)}: {exc}") from None


def decode_wav(data: bytes) -> tuple[bytes, int]:
    """Like :func:`read_wav`, for a WAV file already in memory."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file (no RIFF/WAVE header)")
    fmt: bytes | None = None
    body: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        # A streamed WAV may declare a larger data chunk than it holds: take what is there.
        chunk = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            fmt = chunk
        elif chunk_id == b"data":
            body = chunk
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
    if fmt is None:
        raise ValueError("WAV file has no fmt chunk")
    channels, rate, width = _parse_fmt(fmt)
    if body is None:
        raise ValueError("WAV file has no data chunk")
    block = channels * width
    body = body[: len(body) - len(body) % block]

    samples: npt.NDArray[np.int16]
    if width == 1:
        # 8-bit WAV is the one unsigned width.
        samples = (np.frombuffer(body, np.uint8).astype(np.int16) - 128) << 8
    elif width == 2:
        samples = np.frombuffer(body, "<i2")
    elif width == 3:
        # Keep the two high bytes of each little-endian 24-bit sample.
        samples = np.frombuffer(body, np.uint8).reshape(-1, 3)[:, 1:].copy().view("<i2")
    else:
        samples = (np.frombuffer(body, "<i4") >> 16).astype(np.int16)
    samples = samples.reshape(-1)
    if channels > 1:
        samples = np.rint(samples.reshape(-1, channels).mean(axis=1)).astype(np.int16)
    return samples.astype("<i2").tobytes(), rate


def _parse_fmt(fmt: bytes) -> tuple[int, int, int]:
    """(channels, sample rate, bytes per sample) of a fmt chunk, integer PCM only."""
    if len(fmt) < 16:
        raise ValueError("WAV fmt chunk is truncated")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _FORMAT_EXTENSIBLE:
        if len(fmt) < 40:
            raise ValueError("WAV extensible fmt chunk is truncated")
        # The real encoding is the first two bytes of the SubFormat GUID.
        tag = int.from_bytes(fmt[24:26], "little")
    if tag != _FORMAT_PCM:
        raise ValueError(
            f"unsupported WAV encoding (format tag {tag:#06x}); only integer PCM can be read"
        )
    if bits not in (8, 16, 24, 32):
        raise ValueError(f"unsupported WAV sample size of {bits} bits; expected 8, 16, 24 or 32")
    if channels < 1 or rate < 1:
        raise ValueError(f"invalid WAV header: {channels} channels at {rate} Hz")
    width = bits // 8
    if block_align != channels * width:
        raise ValueError(
            f"invalid WAV header: block size {block_align} for {channels} x {bits}-bit samples"
        )
    return channels, rate, width


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """A complete mono 16-bit WAV file holding ``pcm``."""
    _check_pcm(pcm)
    return SpeechAudio(pcm, sample_rate).wav()


def write_wav(path: str | os.PathLike[str], pcm: bytes, sample_rate: int) -> None:
    Path(path).write_bytes(wav_bytes(pcm, sample_rate))


def silence(ms: int, sample_rate: int = 16000) -> bytes:
    return bytes(2 * _samples_for(ms, sample_rate))


def tone(
    ms: int, freq_hz: float = 440.0, sample_rate: int = 16000, amplitude: float = 0.3
) -> bytes:
    """A sine wave; ``amplitude`` is a fraction of full scale.

    The first and last 5 ms are faded so that the tone starts and stops
    without a click when played between other audio.
    """
    if not 0.0 <= amplitude <= 1.0:
        raise ValueError(f"amplitude {amplitude} is outside 0..1")
    n = _samples_for(ms, sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    signal = amplitude * _FULL_SCALE * np.sin(2.0 * np.pi * freq_hz * t)
    fade = min(_FADE_MS * sample_rate // 1000, n // 2)
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
        signal[:fade] *= ramp
        signal[n - fade :] *= ramp[::-1]
    return np.rint(signal).astype("<i2").tobytes()


def frames(pcm: bytes, sample_rate: int, frame_ms: int) -> Iterator[bytes]:
    """Consecutive ``frame_ms`` slices of ``pcm``; the last one may be shorter."""
    size = 2 * (sample_rate * frame_ms // 1000)
    if size <= 0:
        raise ValueError(f"a {frame_ms} ms frame at {sample_rate} Hz holds no samples")
    # A generator expression, not a generator function, so a bad size fails here.
    return (pcm[i : i + size] for i in range(0, len(pcm), size))


def rms(pcm: bytes) -> float:
    """Root mean square of 16-bit samples, in sample units (0.0 for no audio)."""
    _check_pcm(pcm)
    if not pcm:
        return 0.0
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    # A dot product: several times cheaper than np.mean on the VAD's 30 ms frames.
    return math.sqrt(float(samples @ samples) / len(samples))


def _samples_for(ms: int, sample_rate: int) -> int:
    if ms < 0:
        raise ValueError(f"duration {ms} ms is negative")
    if sample_rate <= 0:
        raise ValueError(f"sample rate {sample_rate} is not positive")
    return ms * sample_rate // 1000


def _check_pcm(pcm: bytes) -> None:
    if len(pcm) % 2:
        raise ValueError(f"{len(pcm)} bytes of PCM is not whole 16-bit samples")


__all__ = [
    "SpeechAudio",
    "decode_wav",
    "frames",
    "read_wav",
    "rms",
    "silence",
    "tone",
    "wav_bytes",
    "write_wav",
]
