"""Audio files of any common format (WAV, FLAC, MP3, Ogg, ...) as PCM.

Decoded by PyAV through faster-whisper's :func:`faster_whisper.decode_audio`
(it resamples to the rate asked and mixes down to mono), and handed on as
the server's one audio shape: mono 16-bit little-endian PCM (see
:mod:`voicetrio.core.audio`). Blocking and CPU-bound: run it in a thread.

Not part of an engine: the upload routes decode a file before any ASR
engine sees it, so every engine (the deterministic one included) is given
what a streaming session gives it. faster-whisper (and PyAV with it) is
imported only when a file is decoded.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import numpy.typing as npt


def decode_audio_file(data: bytes, sample_rate: int = 16000) -> bytes:
    """The audio of a file held in memory (an upload), as mono 16-bit PCM.

    Raises ValueError for empty input, data that is not audio, or a file with
    no samples in it.
    """
    if not data:
        raise ValueError("empty upload: no audio data")
    return _decode(io.BytesIO(data), "upload", sample_rate)


def read_audio_file(path: str | os.PathLike[str], sample_rate: int = 16000) -> bytes:
    """Like :func:`decode_audio_file`, for a file on disk (ValueError names it)."""
    return _decode(os.fspath(path), os.fspath(path), sample_rate)


def _decode(source: str | io.BytesIO, label: str, sample_rate: int) -> bytes:
    from faster_whisper import decode_audio  # type: ignore[import-untyped]

    try:
        samples: Any = decode_audio(source, sampling_rate=sample_rate)
    except FileNotFoundError:
        raise ValueError(f"{label}: no such file") from None
    except Exception as exc:
        # PyAV's errors (av.error.InvalidDataError and kin) are OSErrors whose
        # str() carries an errno and a placeholder file name; strerror is the news.
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ValueError(f"{label}: not a readable audio file ({reason})") from None
    array = np.asarray(samples, dtype=np.float32)
    if array.size == 0:
        raise ValueError(f"{label}: the file holds no audio samples")
    # PyAV decodes to 16-bit samples, which decode_audio divides by 32768:
    # multiplying back gives the very same integers, so nothing is lost.
    pcm: npt.NDArray[np.int16] = np.rint(array * 32768.0).clip(-32768, 32767).astype("<i2")
    return pcm.tobytes()


__all__ = ["decode_audio_file", "read_audio_file"]
