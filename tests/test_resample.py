"""Streaming resampling: lengths, chunking that changes nothing, pitch kept."""

from __future__ import annotations

import numpy as np
import pytest

from voicetrio.core.audio import tone
from voicetrio.core.resample import Resampler, resample


def _samples(pcm: bytes) -> np.ndarray[tuple[int], np.dtype[np.int16]]:
    return np.frombuffer(pcm, "<i2")


def _crossings_per_s(pcm: bytes, rate: int) -> float:
    negative = _samples(pcm) < 0
    return float(np.count_nonzero(negative[1:] != negative[:-1])) * rate / (len(pcm) // 2)


@pytest.mark.parametrize("src", [8000, 11025, 22050, 44100, 48000])
def test_one_second_becomes_16000_samples(src: int) -> None:
    r = Resampler(src)
    body = r.process(tone(1000, 440, src))
    tail = r.flush()
    # The filter holds some output back until flush; together they are 1 s.
    assert len(body) // 2 < 16000
    assert abs((len(body) + len(tail)) // 2 - 16000) <= 2


def test_downsampling_to_another_target() -> None:
    out = resample(tone(1000, 440, 16000), 16000, 8000)
    assert abs(len(out) // 2 - 8000) <= 2


@pytest.mark.parametrize("src", [8000, 44100, 48000])
def test_streaming_in_ragged_chunks_equals_one_shot(src: int) -> None:
    rng = np.random.default_rng(7)
    pcm = tone(700, 300, src, amplitude=0.4) + tone(700, 1200, src, amplitude=0.2)
    whole = resample(pcm, src)

    r = Resampler(src)
    pieces: list[bytes] = []
    pos = 0
    while pos < len(pcm):
        step = 2 * int(rng.integers(1, 1500))
        pieces.append(r.process(pcm[pos : pos + step]))
        pos += step
    pieces.append(r.flush())
    streamed = b"".join(pieces)

    assert len(streamed) == len(whole)
    # Same filter state carried across chunks: no click at any boundary, only
    # int16 rounding differences at most.
    diff = np.abs(_samples(streamed).astype(np.int32) - _samples(whole).astype(np.int32))
    assert int(diff.max()) <= 2


def test_pitch_is_kept() -> None:
    out = resample(tone(1000, 1000, 48000), 48000)
    # A 1 kHz sine crosses zero 2000 times a second at any sample rate.
    assert _crossings_per_s(out, 16000) == pytest.approx(2000, rel=0.01)


def test_passthrough_returns_the_input_unchanged() -> None:
    r = Resampler(16000, 16000)
    pcm = tone(100, 440, 16000)
    assert r.passthrough
    assert r.process(pcm) is pcm
    assert r.flush() == b""


def test_reusable_after_flush() -> None:
    r = Resampler(44100)
    pcm = tone(300, 500, 44100)
    first = r.process(pcm) + r.flush()
    second = r.process(pcm) + r.flush()
    assert first == second


def test_empty_chunks_are_fine() -> None:
    r = Resampler(8000)
    assert r.process(b"") == b""
    assert r.flush() == b""


@pytest.mark.parametrize(
    ("src", "dst"), [(7999, 16000), (48001, 16000), (16000, 96000), (0, 16000)]
)
def test_rates_outside_8000_to_48000_are_refused(src: int, dst: int) -> None:
    with pytest.raises(ValueError, match=r"outside 8000\.\.48000"):
        Resampler(src, dst)


def test_odd_byte_count_is_refused() -> None:
    with pytest.raises(ValueError, match="not whole 16-bit samples"):
        Resampler(8000).process(b"\x00\x01\x02")
