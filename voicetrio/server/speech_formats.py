"""Synthesized speech as the OpenAI speech formats, encoded as it comes.

A :class:`SpeechEncoder` takes a request's phrases one by one
(:meth:`~SpeechEncoder.feed`) and gives the bytes to send for each, then the
tail (:meth:`~SpeechEncoder.finish`), so ``/v1/audio/speech`` streams while
the TTS engine still speaks. The stream's rate is the first phrase's (the
engine's); a later phrase at another rate is resampled to it.

* ``wav``: a 16-bit mono WAV at the engine's rate. Its header goes out
  before the length is known, so its RIFF and data sizes say 0xFFFFFFFF, as
  streamed WAV does (readers take the data to the end of the stream).
* ``pcm``: raw 16-bit little-endian mono at 24 kHz, the API's ``pcm``,
  resampled with the filter's state kept across phrases.
* ``mp3``: MPEG audio frames from PyAV's libmp3lame, at the engine's rate if
  MP3 has it (else 24 kHz), 64 kbit/s; offered only when that encoder is in
  this PyAV (:func:`served_formats`).

``speed`` other than 1 time-stretches each phrase with FFmpeg's ``atempo``
(pitch kept); a phrase is stretched on its own, so nothing of one is held
back for the next.

PyAV is imported only when an mp3 or a stretch is asked for. The encoding is
blocking CPU work (milliseconds a phrase): the caller runs it in a thread.
"""

from __future__ import annotations

import functools
import math
import struct
from fractions import Fraction
from typing import Any, Final

import numpy as np

from voicetrio.core.audio import SpeechAudio
from voicetrio.core.resample import Resampler, resample

#: The API's ``pcm``: 24 kHz, 16-bit little-endian, mono.
PCM_RATE: Final = 24000
MP3_ENCODER: Final = "libmp3lame"
MP3_BIT_RATE: Final = 64000
MP3_RATES: Final = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
#: One ``atempo`` stage stretches by 0.5..100; slower takes two.
ATEMPO_MIN: Final = 0.5
#: The size of a WAV whose length is not known yet.
UNKNOWN_SIZE: Final = 0xFFFFFFFF

CONTENT_TYPES: Final = {"wav": "audio/wav", "pcm": "audio/pcm", "mp3": "audio/mpeg"}


@functools.cache
def mp3_available() -> bool:
    """Whether this PyAV can encode MP3 (its FFmpeg was built with LAME)."""
    try:
        import av

        av.codec.Codec(MP3_ENCODER, "w")
    except Exception:
        return False
    return True


@functools.cache
def tempo_available() -> bool:
    """Whether this PyAV's FFmpeg has the ``atempo`` filter (for ``speed``)."""
    try:
        import av.filter

        return "atempo" in av.filter.filters_available
    except Exception:
        return False


def served_formats() -> frozenset[str]:
    return frozenset({"wav", "pcm", "mp3"} if mp3_available() else {"wav", "pcm"})


def wav_header(sample_rate: int) -> bytes:
    """The 44-byte header of a streamed 16-bit mono WAV (sizes unknown)."""
    return (
        b"RIFF"
        + struct.pack("<I", UNKNOWN_SIZE)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", UNKNOWN_SIZE)
    )


class SpeechEncoder:
    """One response's encoder: ``feed`` each phrase in order, then ``finish``."""

    def __init__(self, response_format: str, speed: float = 1.0) -> None:
        if response_format not in CONTENT_TYPES:
            raise ValueError(f"no encoder for {response_format!r}")
        if not 0.25 <= speed <= 4.0:
            raise ValueError(f"speed {speed} is outside 0.25..4.0")
        self.response_format = response_format
        self.speed = speed
        self.rate: int | None = None
        self._resampler: Resampler | None = None
        self._mp3: Any = None

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.response_format]

    def feed(self, speech: SpeechAudio) -> bytes:
        """The bytes to send for the next phrase (may be empty: an encoder's delay)."""
        first = self.rate is None
        if self.rate is None:
            self.rate = speech.sample_rate
            self._start(self.rate)
        pcm = speech.pcm
        if speech.sample_rate != self.rate:
            pcm = resample(pcm, speech.sample_rate, self.rate)
        if self.speed != 1.0:
            pcm = stretch(pcm, self.rate, self.speed)
        if self.response_format == "wav":
            return (wav_header(self.rate) if first else b"") + pcm
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        if self.response_format == "pcm":
            return pcm
        return self._encode_mp3(pcm)

    def finish(self) -> bytes:
        """What the encoders held back. A stream that had no phrase is empty."""
        tail = b"" if self._resampler is None else self._resampler.flush()
        if self.response_format == "mp3" and self._mp3 is not None:
            return self._encode_mp3(tail) + self._encode_mp3(None)
        return tail

    def _start(self, rate: int) -> None:
        if self.response_format == "pcm" and rate != PCM_RATE:
            self._resampler = Resampler(rate, PCM_RATE)
        elif self.response_format == "mp3":
            out_rate = rate if rate in MP3_RATES else PCM_RATE
            if out_rate != rate:
                self._resampler = Resampler(rate, out_rate)
            self._mp3 = _mp3_context(out_rate)

    def _encode_mp3(self, pcm: bytes | None) -> bytes:
        import av

        frame = None
        if pcm is not None:
            if not pcm:
                return b""
            frame = av.AudioFrame.from_ndarray(
                np.frombuffer(pcm, "<i2").reshape(1, -1), format="s16p", layout="mono"
            )
            frame.sample_rate = self._mp3.sample_rate
        return b"".join(bytes(packet) for packet in self._mp3.encode(frame))


def _mp3_context(rate: int) -> Any:
    import av

    context = av.CodecContext.create(MP3_ENCODER, "w")
    context.sample_rate = rate
    context.layout = "mono"
    context.format = "s16p"
    context.bit_rate = MP3_BIT_RATE
    return context


def stretch(pcm: bytes, rate: int, speed: float) -> bytes:
    """``pcm`` played ``speed`` times as fast, pitch kept (FFmpeg's atempo)."""
    if not pcm:
        return pcm
    import av
    import av.filter

    # Below atempo's 0.5, two equal stages: each between 0.5 and 1.
    stages = [speed] if speed >= ATEMPO_MIN else [math.sqrt(speed)] * 2
    graph = av.filter.Graph()
    node = graph.add_abuffer(
        sample_rate=rate, format="s16", layout="mono", time_base=Fraction(1, rate)
    )
    for stage in stages:
        tempo = graph.add("atempo", f"{stage:.6f}")
        node.link_to(tempo)
        node = tempo
    sink = graph.add("abuffersink")
    node.link_to(sink)
    graph.configure()
    frame = av.AudioFrame.from_ndarray(
        np.frombuffer(pcm, "<i2").reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = rate
    graph.push(frame)
    graph.push(None)
    out: list[bytes] = []
    while True:
        try:
            stretched = graph.pull()
        except (av.BlockingIOError, av.EOFError):
            break
        out.append(np.asarray(stretched.to_ndarray(), "<i2").tobytes())
    return b"".join(out)


__all__ = [
    "CONTENT_TYPES",
    "PCM_RATE",
    "SpeechEncoder",
    "mp3_available",
    "served_formats",
    "stretch",
    "tempo_available",
    "wav_header",
]
