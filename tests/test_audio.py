"""PCM helpers: WAV parsing of every integer width, test signals, framing, RMS."""

from __future__ import annotations

import io
import math
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from voicetrio.core.audio import (
    SpeechAudio,
    decode_wav,
    frames,
    read_wav,
    rms,
    silence,
    tone,
    wav_bytes,
    write_wav,
)


def pcm16(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def wave_file(raw: bytes, *, channels: int, width: int, rate: int = 16000) -> bytes:
    """A WAV file written by the standard library, for widths it supports."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return buf.getvalue()


def riff(*chunks: tuple[bytes, bytes]) -> bytes:
    body = b"WAVE"
    for chunk_id, data in chunks:
        body += chunk_id + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_chunk(tag: int, channels: int, rate: int, bits: int) -> bytes:
    block = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)


def extensible_fmt(channels: int, rate: int, bits: int, subformat: int) -> bytes:
    guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    return (
        fmt_chunk(0xFFFE, channels, rate, bits)
        + struct.pack("<HHI", 22, bits, 0x4)
        + struct.pack("<H", subformat)
        + guid_tail
    )


# --------------------------------------------------------------------------
# WAV


def test_wav_round_trip(tmp_path: Path) -> None:
    pcm = pcm16(0, 1, -1, 32767, -32768, 1234)
    write_wav(tmp_path / "a.wav", pcm, 22050)
    assert read_wav(tmp_path / "a.wav") == (pcm, 22050)
    assert read_wav(str(tmp_path / "a.wav")) == (pcm, 22050)


def test_wav_bytes_is_speech_audio_wav() -> None:
    pcm = tone(50)
    assert wav_bytes(pcm, 16000) == SpeechAudio(pcm, 16000).wav()
    assert decode_wav(wav_bytes(pcm, 16000)) == (pcm, 16000)


def test_wav_bytes_rejects_odd_length() -> None:
    with pytest.raises(ValueError, match="not whole 16-bit samples"):
        wav_bytes(b"\x00\x01\x02", 16000)


def test_empty_wav() -> None:
    assert decode_wav(wav_bytes(b"", 8000)) == (b"", 8000)


def test_stereo_is_averaged() -> None:
    raw = pcm16(1000, 3000, 100, -300, -32768, -32768, 32767, 32767)
    assert decode_wav(wave_file(raw, channels=2, width=2)) == (
        pcm16(2000, -100, -32768, 32767),
        16000,
    )


def test_eight_bit_is_unsigned() -> None:
    raw = bytes([128, 255, 0, 129])
    assert decode_wav(wave_file(raw, channels=1, width=1)) == (
        pcm16(0, 127 << 8, -32768, 256),
        16000,
    )


def test_twenty_four_bit_keeps_high_bytes() -> None:
    raw = b"\x56\x34\x12" + b"\xff\xff\xff" + b"\x00\x00\x80" + b"\xff\xff\x7f"
    assert decode_wav(wave_file(raw, channels=1, width=3)) == (
        pcm16(0x1234, -1, -32768, 32767),
        16000,
    )


def test_thirty_two_bit() -> None:
    raw = struct.pack("<4i", 0x12345678, -65536, -(2**31), 2**31 - 1)
    assert decode_wav(wave_file(raw, channels=1, width=4, rate=48000)) == (
        pcm16(0x1234, -1, -32768, 32767),
        48000,
    )


def test_extensible_stereo_24_bit() -> None:
    # What most tools write for 24-bit audio; the wave module of 3.11 refuses it.
    raw = b"\x00\x10\x00" + b"\x00\x30\x00"  # left 0x0010, right 0x0030
    data = riff((b"fmt ", extensible_fmt(2, 44100, 24, 1)), (b"data", raw))
    assert decode_wav(data) == (pcm16(0x20), 44100)


def test_unknown_chunks_and_padding_are_skipped() -> None:
    data = riff(
        (b"LIST", b"odd"),  # odd size: followed by a pad byte
        (b"fmt ", fmt_chunk(1, 1, 8000, 16)),
        (b"junk", b"\x01\x02"),
        (b"data", pcm16(7, -7)),
    )
    assert decode_wav(data) == (pcm16(7, -7), 8000)


def test_oversized_data_chunk_takes_what_is_there() -> None:
    # Streamed WAVs often declare a huge data size; a trailing half sample is dropped.
    fmt = fmt_chunk(1, 1, 16000, 16)
    data = (
        b"RIFF\xff\xff\xff\xffWAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data\xff\xff\xff\xff"
        + pcm16(1, 2)
        + b"\x03"
    )
    assert decode_wav(data) == (pcm16(1, 2), 16000)


def test_not_a_wav_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("hello, not audio")
    with pytest.raises(ValueError, match=r"notes\.wav: not a WAV file"):
        read_wav(path)
    with pytest.raises(ValueError, match="not a WAV file"):
        decode_wav(b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (riff((b"fmt ", fmt_chunk(3, 1, 16000, 32)), (b"data", b"\0" * 8)), "format tag 0x0003"),
        (
            riff((b"fmt ", extensible_fmt(1, 16000, 32, 3)), (b"data", b"\0" * 8)),
            "format tag 0x0003",
        ),
        (riff((b"fmt ", fmt_chunk(1, 1, 16000, 12)), (b"data", b"")), "12 bits"),
        (riff((b"fmt ", fmt_chunk(1, 0, 16000, 16)), (b"data", b"")), "0 channels"),
        (riff((b"data", pcm16(1))), "no fmt chunk"),
        (riff((b"fmt ", fmt_chunk(1, 1, 16000, 16))), "no data chunk"),
        (riff((b"fmt ", b"\x01\x00")), "truncated"),
        (riff((b"fmt ", fmt_chunk(0xFFFE, 1, 16000, 16)), (b"data", b"")), "truncated"),
    ],
    ids=[
        "float",
        "extensible-float",
        "12-bit",
        "no-channels",
        "no-fmt",
        "no-data",
        "short-fmt",
        "short-extensible",
    ],
)
def test_unsupported_wav_formats(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_wav(data)


def test_read_wav_names_the_file_on_unsupported_format(tmp_path: Path) -> None:
    path = tmp_path / "float.wav"
    path.write_bytes(riff((b"fmt ", fmt_chunk(3, 1, 16000, 32)), (b"data", b"\0" * 8)))
    with pytest.raises(ValueError, match=r"float\.wav: unsupported WAV encoding"):
        read_wav(path)


# --------------------------------------------------------------------------
# Signals


def test_silence() -> None:
    assert silence(30) == bytes(960)
    assert silence(10, sample_rate=8000) == bytes(160)
    assert silence(0) == b""
    with pytest.raises(ValueError, match="negative"):
        silence(-1)


def test_tone_length_and_level() -> None:
    pcm = tone(100)
    assert len(pcm) == 2 * 1600
    samples = np.frombuffer(pcm, "<i2")
    assert int(np.abs(samples).max()) <= round(0.3 * 32767)
    assert int(np.abs(samples).max()) >= round(0.29 * 32767)
    # A second-long tone, so the fades hardly weigh on the level.
    assert rms(tone(1000)) == pytest.approx(0.3 * 32767 / math.sqrt(2), rel=0.01)
    assert len(tone(250, sample_rate=8000)) == 2 * 2000


def test_tone_fades_in_and_out() -> None:
    samples = np.abs(np.frombuffer(tone(100, 1000.0), "<i2")).astype(int)
    fade = 80  # 5 ms at 16 kHz
    assert samples[0] == 0
    assert samples[:fade].max() < samples[fade : 2 * fade].max()
    assert samples[-fade:].max() < samples[-2 * fade : -fade].max()
    assert samples[-1] < 0.3 * 32767 / fade * 2


def test_tone_pitch() -> None:
    samples = np.frombuffer(tone(1000, 440.0), "<i2")
    negative = samples < 0
    crossings = int(np.count_nonzero(negative[1:] != negative[:-1]))
    assert abs(crossings - 880) <= 2


def test_tone_is_deterministic_and_validates_amplitude() -> None:
    assert tone(40, 300.0) == tone(40, 300.0)
    assert tone(40, amplitude=0.0) == silence(40)
    assert tone(3) != b""  # shorter than two fades
    with pytest.raises(ValueError, match="amplitude"):
        tone(10, amplitude=1.5)


def test_frames_split_with_partial_last() -> None:
    pcm = pcm16(*range(1000))
    parts = list(frames(pcm, 16000, 30))
    assert [len(p) for p in parts] == [960, 960, 80]
    assert b"".join(parts) == pcm
    assert list(frames(b"", 16000, 30)) == []
    assert list(frames(bytes(960), 16000, 30)) == [bytes(960)]


def test_frames_rejects_empty_frame_size_eagerly() -> None:
    with pytest.raises(ValueError, match="holds no samples"):
        frames(b"\0\0", 16000, 0)


def test_rms() -> None:
    assert rms(b"") == 0.0
    assert rms(silence(30)) == 0.0
    assert rms(pcm16(1000, -1000, 1000, -1000)) == 1000.0
    assert rms(pcm16(3, 4)) == pytest.approx(math.sqrt(12.5))
    assert rms(pcm16(-32768)) == 32768.0
    with pytest.raises(ValueError, match="not whole 16-bit samples"):
        rms(b"\x01")
