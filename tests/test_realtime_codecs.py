"""The Realtime adapter's audio codecs (sans-IO): G.711 against the ITU
tables, and the three formats' bytes and names.

The reference below is G.711's algorithm written sample by sample, as the
standard's reference code does it (segment search, then the step within the
segment); the vectorized codecs must agree with it on every 16-bit sample
and every code. The fixed values are the standard's own: the segment ends
and the decoded levels at the ends of the scale.
"""

from __future__ import annotations

import numpy as np
import pytest

from voicetrio.wire.realtime import g711
from voicetrio.wire.realtime.formats import ALAW, PCM16, ULAW, from_beta, from_ga

_ULAW_SEGMENT_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_ALAW_SEGMENT_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _segment(value: int, ends: tuple[int, ...]) -> int:
    return next((i for i, end in enumerate(ends) if value <= end), len(ends))


def ref_ulaw(sample: int) -> int:
    value = sample >> 2
    mask = 0x7F if value < 0 else 0xFF
    magnitude = min(abs(value), 8159) + 33
    seg = _segment(magnitude, _ULAW_SEGMENT_ENDS)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((magnitude >> (seg + 1)) & 0x0F)) ^ mask


def ref_ulaw_decode(code: int) -> int:
    code = ~code & 0xFF
    t = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return 0x84 - t if code & 0x80 else t - 0x84


def ref_alaw(sample: int) -> int:
    value = sample >> 3
    mask = 0xD5 if value >= 0 else 0x55
    magnitude = value if value >= 0 else -value - 1
    seg = _segment(magnitude, _ALAW_SEGMENT_ENDS)
    if seg >= 8:
        return 0x7F ^ mask
    step = (magnitude >> (1 if seg < 2 else seg)) & 0x0F
    return ((seg << 4) | step) ^ mask


def ref_alaw_decode(code: int) -> int:
    code ^= 0x55
    seg = (code & 0x70) >> 4
    t = (code & 0x0F) << 4
    t = t + 8 if seg == 0 else (t + 0x108) << max(seg - 1, 0)
    return t if code & 0x80 else -t


EVERY_SAMPLE = np.arange(-32768, 32768, dtype="<i2").tobytes()
EVERY_CODE = bytes(range(256))


def test_ulaw_encodes_every_sample_as_the_reference_does() -> None:
    assert g711.ulaw_encode(EVERY_SAMPLE) == bytes(ref_ulaw(s) for s in range(-32768, 32768))


def test_alaw_encodes_every_sample_as_the_reference_does() -> None:
    assert g711.alaw_encode(EVERY_SAMPLE) == bytes(ref_alaw(s) for s in range(-32768, 32768))


def test_every_code_decodes_as_the_reference_does() -> None:
    ulaw = np.frombuffer(g711.ulaw_decode(EVERY_CODE), "<i2").tolist()
    alaw = np.frombuffer(g711.alaw_decode(EVERY_CODE), "<i2").tolist()
    assert ulaw == [ref_ulaw_decode(c) for c in range(256)]
    assert alaw == [ref_alaw_decode(c) for c in range(256)]


@pytest.mark.parametrize(
    ("codec", "codes", "levels"),
    [
        # μ-law: full scale is ±32124, and both zero codes are silence.
        (
            g711.ulaw_decode,
            [0x00, 0x80, 0x7F, 0xFF, 0xFE, 0xF0, 0xEF],
            [-32124, 32124, 0, 0, 8, 120, 132],
        ),
        # A-law: full scale ±32256, the smallest level ±8, even bits inverted (0xD5 is +8).
        (g711.alaw_decode, [0x2A, 0xAA, 0x55, 0xD5, 0xD4, 0xC5], [-32256, 32256, -8, 8, 24, 264]),
    ],
)
def test_levels_from_the_itu_tables(codec: object, codes: list[int], levels: list[int]) -> None:
    assert callable(codec)
    assert np.frombuffer(codec(bytes(codes)), "<i2").tolist() == levels


@pytest.mark.parametrize(
    ("encode", "silence"), [(g711.ulaw_encode, 0xFF), (g711.alaw_encode, 0xD5)]
)
def test_silence_is_the_idle_code(encode: object, silence: int) -> None:
    assert callable(encode)
    assert encode(b"\x00\x00" * 4) == bytes([silence]) * 4


def test_a_decoded_code_encodes_back_to_itself() -> None:
    # A-law has one code per level; μ-law has two zeros (0x7F, 0xFF), and
    # silence encodes as 0xFF.
    assert g711.alaw_encode(g711.alaw_decode(EVERY_CODE)) == EVERY_CODE
    expected = bytes(0xFF if c == 0x7F else c for c in EVERY_CODE)
    assert g711.ulaw_encode(g711.ulaw_decode(EVERY_CODE)) == expected


def test_encoding_refuses_half_samples() -> None:
    with pytest.raises(ValueError, match="whole 16-bit samples"):
        g711.ulaw_encode(b"\x00\x00\x01")


def test_formats_by_name_in_both_shapes() -> None:
    assert from_beta("pcm16") is PCM16 and from_beta("g711_ulaw") is ULAW
    assert from_beta("g711_alaw") is ALAW
    assert from_ga({"type": "audio/pcm", "rate": 24000}) is PCM16
    assert from_ga({"type": "audio/pcm"}) is PCM16
    assert from_ga({"type": "audio/pcmu"}) is ULAW and from_ga({"type": "audio/pcma"}) is ALAW
    assert PCM16.ga() == {"type": "audio/pcm", "rate": 24000} and ULAW.ga() == {
        "type": "audio/pcmu"
    }
    for bad in ("wav", None):
        with pytest.raises(ValueError):
            from_beta(bad)
    for bad_ga in ({"type": "audio/pcm", "rate": 16000}, {"type": "audio/wav"}, "pcm16"):
        with pytest.raises(ValueError):
            from_ga(bad_ga)


def test_wire_bytes_to_and_from_pcm() -> None:
    assert PCM16.decode(b"\x01\x00\x02\x00") == b"\x01\x00\x02\x00"
    with pytest.raises(ValueError, match="whole 16-bit samples"):
        PCM16.decode(b"\x01\x00\x02")
    assert ULAW.decode(b"\xff\x80") == np.array([0, 32124], "<i2").tobytes()
    # Speech at the TTS rate comes out at the format's rate: 100 ms is
    # 2400 samples of pcm16 at 24 kHz, and 800 bytes of G.711 at 8 kHz.
    tone = (np.sin(np.arange(2205) / 5) * 8000).astype("<i2").tobytes()  # 100 ms at 22050 Hz
    assert len(PCM16.encode(tone, 22050)) == 2 * 2400
    assert len(ULAW.encode(tone, 22050)) == 800 and len(ALAW.encode(tone, 22050)) == 800
    assert PCM16.duration_ms(4800) == 100.0 and ULAW.duration_ms(800) == 100.0
