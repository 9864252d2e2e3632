"""Audio files of any format decoded to the server's PCM (PyAV, no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.speech import encode_audio
from voicetrio.audio_files import decode_audio_file, read_audio_file
from voicetrio.core.audio import rms, tone, wav_bytes


def test_16_bit_audio_at_the_rate_asked_comes_back_sample_for_sample() -> None:
    # The upload route hands the ASR engine what a session would: nothing is
    # lost on the way through PyAV's float samples.
    pcm = tone(700, 440.0, 16000)
    assert decode_audio_file(wav_bytes(pcm, 16000)) == pcm
    assert decode_audio_file(encode_audio(pcm, 16000, "flac", "flac")) == pcm


@pytest.mark.parametrize(
    ("container_format", "codec"), [("wav", "pcm_s16le"), ("flac", "flac"), ("mp3", "libmp3lame")]
)
def test_other_rates_and_formats_are_resampled(container_format: str, codec: str) -> None:
    source = tone(1000, 440.0, 22050)
    pcm = decode_audio_file(encode_audio(source, 22050, container_format, codec), 16000)
    assert len(pcm) % 2 == 0
    # As long as the clip at 16 kHz, within an MP3 frame, and as loud.
    assert abs(len(pcm) // 2 - len(source) // 2 * 16000 / 22050) <= 1152
    assert rms(pcm) == pytest.approx(rms(source), rel=0.1)


def test_full_scale_samples_stay_in_range() -> None:
    loud = np.array([32767, -32768, 0, 32767, -32768] * 400, "<i2").tobytes()
    assert decode_audio_file(wav_bytes(loud, 16000)) == loud


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty upload"),
        (b"hello world, not audio at all" * 10, "upload: not a readable audio file"),
        (b"RIFF\x00\x00\x00\x00WAVE", "upload: not a readable audio file"),
    ],
)
def test_what_is_not_audio_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_audio_file(data)


def test_a_file_on_disk_and_its_errors_name_it(tmp_path: Path) -> None:
    pcm = tone(300, 440.0, 16000)
    good = tmp_path / "tone.wav"
    good.write_bytes(wav_bytes(pcm, 16000))
    assert read_audio_file(good) == pcm
    with pytest.raises(ValueError, match=r"missing\.wav: no such file"):
        read_audio_file(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio" * 20)
    with pytest.raises(ValueError, match=r"junk\.wav: not a readable audio file"):
        read_audio_file(junk)
