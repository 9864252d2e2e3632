"""The WebRTC VAD on real speech: detection, the energy gate and the hangover."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tests.speech import SENTENCES, say
from voicetrio.core.audio import frames, rms, silence
from voicetrio.engines.base import ENGINE_SAMPLE_RATE, VAD_FRAME_MS, VadEngine
from voicetrio.engines.vad.webrtc import FRAME_BYTES, WebRtcVad


def _frames(pcm: bytes) -> list[bytes]:
    return [f for f in frames(pcm, ENGINE_SAMPLE_RATE, VAD_FRAME_MS) if len(f) == FRAME_BYTES]


@pytest.fixture(scope="module")
def loud_frame() -> bytes:
    """The loudest 30 ms of a spoken sentence: speech to any VAD."""
    return max(_frames(say(SENTENCES[0])), key=rms)


def test_is_a_vad_engine() -> None:
    vad: VadEngine = WebRtcVad()
    assert vad.is_speech(silence(VAD_FRAME_MS)) is False


def test_spoken_sentence_is_mostly_speech_and_silence_is_none() -> None:
    vad = WebRtcVad(hangover_ms=0)
    speech = _frames(say(SENTENCES[1]))
    voiced = sum(vad.is_speech(f) for f in speech)
    # espeak leaves short pauses between words and a little lead-in: most, not all.
    assert voiced >= 0.6 * len(speech)
    assert not any(vad.is_speech(f) for f in _frames(silence(2000)))


def test_quiet_hiss_is_not_speech_at_any_aggressiveness() -> None:
    rng = np.random.default_rng(3)
    hiss = np.rint(rng.normal(0, 40, 16000 * 2)).astype("<i2").tobytes()
    for aggressiveness in (0, 1, 2, 3):
        vad = WebRtcVad(aggressiveness, hangover_ms=0)
        assert not any(vad.is_speech(f) for f in _frames(hiss))


def test_energy_gate_decides_on_level_alone(loud_frame: bytes) -> None:
    vad = WebRtcVad(hangover_ms=0)
    assert vad.is_speech(loud_frame)
    # The same sound scaled to just under the floor.
    samples = np.frombuffer(loud_frame, "<i2").astype(np.float64)
    quiet = np.rint(samples * (70 / rms(loud_frame))).astype("<i2").tobytes()
    assert rms(quiet) < 80
    assert not vad.is_speech(quiet)
    # WebRTC alone still hears it: the gate is what said no.
    assert WebRtcVad(hangover_ms=0, energy_floor=0).is_speech(quiet)


def test_hangover_extends_speech_by_whole_frames(loud_frame: bytes) -> None:
    gap = silence(VAD_FRAME_MS)
    script = [loud_frame, gap, gap, gap, gap, loud_frame, gap, gap]
    vad = WebRtcVad(hangover_ms=90)
    assert [vad.is_speech(f) for f in script] == [True, True, True, True, False, True, True, True]


def test_no_hangover(loud_frame: bytes) -> None:
    gap = silence(VAD_FRAME_MS)
    vad = WebRtcVad(hangover_ms=0)
    assert [vad.is_speech(f) for f in (loud_frame, gap, loud_frame, gap)] == [
        True,
        False,
        True,
        False,
    ]


def test_hangover_rounds_up_to_whole_frames(loud_frame: bytes) -> None:
    vad = WebRtcVad(hangover_ms=100)
    assert vad.hangover_frames == 4
    assert vad.hangover_ms == 120
    gap = silence(VAD_FRAME_MS)
    decisions = [vad.is_speech(f) for f in (loud_frame, gap, gap, gap, gap, gap)]
    assert decisions == [True, True, True, True, True, False]


def test_speech_restarts_the_hangover(loud_frame: bytes) -> None:
    gap = silence(VAD_FRAME_MS)
    vad = WebRtcVad(hangover_ms=60)
    decisions = [vad.is_speech(f) for f in (loud_frame, gap, loud_frame, gap, gap, gap)]
    assert decisions == [True, True, True, True, True, False]


def test_reset_drops_a_hangover_in_progress(loud_frame: bytes) -> None:
    gap = silence(VAD_FRAME_MS)
    vad = WebRtcVad(hangover_ms=90)
    assert vad.is_speech(loud_frame)
    vad.reset()
    assert not vad.is_speech(gap)


def test_trailing_silence_of_a_sentence_ends_after_the_hangover() -> None:
    pcm = say(SENTENCES[3]) + silence(600)
    plain = [WebRtcVad(hangover_ms=0).is_speech(f) for f in _frames(pcm)]
    vad = WebRtcVad(hangover_ms=90)
    held = [vad.is_speech(f) for f in _frames(pcm)]
    last_plain = max(i for i, v in enumerate(plain) if v)
    last_held = max(i for i, v in enumerate(held) if v)
    assert last_held == last_plain + 3


@pytest.mark.parametrize("size", [0, FRAME_BYTES - 2, FRAME_BYTES + 2, 320])
def test_frame_must_be_30_ms_at_16k(size: int) -> None:
    with pytest.raises(ValueError, match="960 bytes"):
        WebRtcVad().is_speech(bytes(size))


@pytest.mark.parametrize(
    "make",
    [
        lambda: WebRtcVad(aggressiveness=4),
        lambda: WebRtcVad(aggressiveness=-1),
        lambda: WebRtcVad(hangover_ms=-30),
        lambda: WebRtcVad(energy_floor=-1.0),
    ],
)
def test_bad_settings_are_refused(make: Callable[[], WebRtcVad]) -> None:
    with pytest.raises(ValueError):
        make()
