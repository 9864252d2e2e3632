"""The Whisper engine on the real tiny.en model and real (espeak-ng) speech.

The model is loaded once for the module; each decode of a few seconds of
audio takes about half a second on two cores, so the tests pick their clips
sparingly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

from tests.speech import SENTENCES, encode_audio, say, wer
from voicetrio.audio_files import decode_audio_file
from voicetrio.core.audio import silence, write_wav
from voicetrio.core.resample import resample
from voicetrio.core.work_queue import Lane
from voicetrio.engines.asr.whisper import (
    STREAMING_DECODE_THREADS,
    WhisperAsr,
    clean_text,
    load_model,
    normalize,
    transcribe_file,
)
from voicetrio.engines.base import AsrEngine, AsrError, ModelLoadError
from voicetrio.engines.models import ModelSpec, resolve_model

MAX_WER = 0.25


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return resolve_model("tiny.en")


@pytest.fixture(scope="module")
def asr(spec: ModelSpec) -> WhisperAsr:
    engine = WhisperAsr(spec)
    # A sync fixture, so outside any test's event loop: a run of its own.
    trio.run(engine.load)
    return engine


@pytest.fixture(scope="module")
def model(spec: ModelSpec) -> Any:
    """The faster-whisper model itself, loaded as the engine loads it, for the
    short-window decode's own tests."""
    return load_model(spec, cpu_threads=STREAMING_DECODE_THREADS)


def _noise(ms: int, level: float, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    samples = rng.normal(0, level, 16 * ms)
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


# -- loading ------------------------------------------------------------------


def test_streaming_decodes_use_one_thread(spec: ModelSpec) -> None:
    # Two OpenMP threads per decode stall beside the LLM and TTS processes
    # (docs/benchmarks.md, "Capacity with one thread per decode"); a setting wins.
    assert WhisperAsr(spec).cpu_threads == 1
    assert WhisperAsr(spec, cpu_threads=2).cpu_threads == 2


async def test_ready_flips_after_load(spec: ModelSpec) -> None:
    engine = WhisperAsr(spec)
    assert engine.ready is False
    await engine.load()
    assert engine.ready is True
    await engine.load()  # a second load is a no-op
    assert engine.ready is True


async def test_bad_model_folder_fails_on_load(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"not a model")
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    engine = WhisperAsr(resolve_model(str(folder)))
    with pytest.raises(ModelLoadError, match=f"cannot load Whisper model '{folder}' from {folder}"):
        await engine.load()
    assert engine.ready is False


async def test_hub_name_fails_offline_with_a_clear_message() -> None:
    engine = WhisperAsr(ModelSpec("small", None, "small", "int8"))
    with pytest.raises(ModelLoadError) as info:
        await engine.load()
    message = str(info.value)
    assert "'small'" in message
    assert "not installed" in message
    assert "never downloaded" in message


async def test_transcribe_before_load_is_an_asr_error(spec: ModelSpec) -> None:
    engine = WhisperAsr(spec)
    with pytest.raises(AsrError, match="not loaded"):
        await engine.transcribe(silence(500), final=True)


# -- speech ---------------------------------------------------------------------


@pytest.mark.parametrize("sentence", SENTENCES)
async def test_sentences(asr: WhisperAsr, sentence: str) -> None:
    engine: AsrEngine = asr
    text = await engine.transcribe(say(sentence), final=True)
    assert wer(sentence, text) <= MAX_WER, text
    assert asr.last_decode_s > 0


async def test_partial_decode(asr: WhisperAsr) -> None:
    # The first ~60% of a sentence, as a partial sees it mid-utterance.
    pcm = say(SENTENCES[1])
    head = pcm[: len(pcm) * 6 // 10 // 2 * 2]
    text = await asr.transcribe(head, final=False)
    assert normalize(text).startswith("what is the weather")


async def test_short_confident_thanks_is_kept(asr: WhisperAsr) -> None:
    # "Thank you." is a stock hallucination, but said clearly it is speech.
    assert normalize(await asr.transcribe(say("Thank you."), final=True)) == "thank you"


async def test_48k_source(asr: WhisperAsr) -> None:
    for sentence in SENTENCES[:2]:
        pcm = resample(say(sentence, rate_hz=48000), 48000)
        text = await asr.transcribe(pcm, final=True)
        assert wer(sentence, text) <= MAX_WER, text


async def test_8k_source(asr: WhisperAsr) -> None:
    # Telephone-band audio loses everything above 4 kHz and tiny.en misses a
    # word here and there (measured: 0, 0, 0, 0.15, 0.38, 0.57 per sentence),
    # so the bound is on the average. A resampling bug gives garbage instead.
    rates: list[float] = []
    for sentence in SENTENCES:
        pcm = resample(say(sentence, rate_hz=8000), 8000)
        rates.append(wer(sentence, await asr.transcribe(pcm, final=True)))
    assert sum(rates) / len(rates) <= MAX_WER, rates


# -- no speech ------------------------------------------------------------------


async def test_silence_is_empty(asr: WhisperAsr) -> None:
    assert await asr.transcribe(silence(2000), final=True) == ""


@pytest.mark.parametrize("level", [300.0, 3000.0])
async def test_white_noise_is_empty(asr: WhisperAsr, level: float) -> None:
    assert await asr.transcribe(_noise(2000, level), final=True) == ""


async def test_no_audio_is_empty_without_a_decode(asr: WhisperAsr) -> None:
    before = asr.decodes
    assert await asr.transcribe(b"", final=False) == ""
    assert asr.decodes == before


async def test_odd_byte_count_is_an_asr_error(asr: WhisperAsr) -> None:
    with pytest.raises(AsrError, match="not whole 16-bit samples"):
        await asr.transcribe(b"\x00\x00\x00", final=True)


# -- cancellation -----------------------------------------------------------------


async def test_cancelled_decode_is_abandoned_and_the_model_still_works(asr: WhisperAsr) -> None:
    before = asr.decodes
    pcm = say(SENTENCES[2])
    results: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _collect(asr, pcm, results))
        # Every task blocked means the decode is running in its thread.
        await trio.testing.wait_all_tasks_blocked()
        assert asr.scheduler.queue.in_use == 1
        nursery.cancel_scope.cancel()
    assert results == []
    # The abandoned thread still holds its decoder slot until it finishes.
    async with asr.scheduler.slot(Lane.URGENT):
        pass
    assert asr.decodes == before
    text = await asr.transcribe(pcm, final=True)
    assert wer(SENTENCES[2], text) <= MAX_WER


async def _collect(asr: WhisperAsr, pcm: bytes, into: list[str]) -> None:
    into.append(await asr.transcribe(pcm, final=True))


# -- the filter on its own --------------------------------------------------------


@dataclass
class Seg:
    text: str
    no_speech_prob: float = 0.05
    avg_logprob: float = -0.2
    compression_ratio: float = 1.0


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        ([Seg(" Hello there.")], "Hello there."),
        ([Seg(" Hello"), Seg(" there.")], "Hello there."),
        ([Seg(" Hello there.", no_speech_prob=0.9, avg_logprob=-1.3)], ""),
        # Only one of the two signs of silence: kept.
        ([Seg(" Hello there.", no_speech_prob=0.9, avg_logprob=-0.4)], "Hello there."),
        ([Seg(" Hello there.", no_speech_prob=0.3, avg_logprob=-1.4)], "Hello there."),
        ([Seg(" the the the the the the the", compression_ratio=3.1)], ""),
        ([Seg(" ..."), Seg(" ?!")], ""),
        ([Seg(" [BLANK_AUDIO]")], ""),
        ([Seg(" (upbeat music)"), Seg(" ♪ ♪")], ""),
        ([Seg(" Turn it up."), Seg(" [Music]")], "Turn it up."),
        ([Seg(" Thank you.", no_speech_prob=0.5)], ""),
        ([Seg(" Thanks for watching!", avg_logprob=-0.9)], ""),
        ([Seg(" you", no_speech_prob=0.4)], ""),
        ([Seg(" Bye.", no_speech_prob=0.35)], ""),
        ([Seg(" Thank you.", no_speech_prob=0.1, avg_logprob=-0.2)], "Thank you."),
        ([Seg(" Thank you for the help.", no_speech_prob=0.5)], "Thank you for the help."),
        ([], ""),
    ],
)
def test_clean_text(segments: list[Seg], expected: str) -> None:
    assert clean_text(segments) == expected


# -- files and uploads ------------------------------------------------------------


def test_transcribe_wav_and_flac_files(spec: ModelSpec, tmp_path: Path) -> None:
    sentence = SENTENCES[3]
    pcm = say(sentence, rate_hz=22050)
    wav = tmp_path / "speech.wav"
    write_wav(wav, pcm, 22050)
    flac = tmp_path / "speech.flac"
    flac.write_bytes(encode_audio(pcm, 22050, "flac", "flac"))
    for path in (wav, flac):
        assert wer(sentence, transcribe_file(path, spec)) <= MAX_WER


def test_transcribe_file_errors(spec: ModelSpec, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        transcribe_file(tmp_path / "missing.wav", spec)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio" * 20)
    with pytest.raises(ValueError, match="not a readable audio file"):
        transcribe_file(junk, spec)


async def test_an_uploaded_file_transcribes(asr: WhisperAsr) -> None:
    # The upload route's path: any file, decoded to the PCM a session sends.
    sentence = SENTENCES[0]
    upload = encode_audio(say(sentence, rate_hz=22050), 22050, "flac", "flac")
    text = await asr.transcribe(decode_audio_file(upload), final=True)
    assert wer(sentence, text) <= MAX_WER


# -- the short-window decode -------------------------------------------------------


def test_window_frames() -> None:
    from voicetrio.engines.asr.whisper_short import window_frames

    assert window_frames(0) == 1000  # the floor
    assert window_frames(850) == 1100  # 850 + 200 padding, rounded up to 100
    assert window_frames(900) == 1100
    assert window_frames(2800) == 3000  # never past Whisper's own window


def test_short_window_matches_the_full_window(model: Any) -> None:
    from voicetrio.engines.asr.whisper import clean_text, pcm_to_samples
    from voicetrio.engines.asr.whisper_short import decode_short

    short_wers, full_wers = [], []
    for sentence in SENTENCES:
        samples = pcm_to_samples(say(sentence))
        short = decode_short(model, samples, language="en", beam_size=1)
        assert short is not None
        found, _ = model.transcribe(samples, language="en", beam_size=1, without_timestamps=True)
        short_wers.append(wer(sentence, clean_text(short)))
        full_wers.append(wer(sentence, clean_text(list(found))))
    assert max(short_wers) <= MAX_WER
    assert sum(short_wers) <= sum(full_wers) + 0.1


def test_long_audio_takes_the_full_window(model: Any) -> None:
    from voicetrio.engines.asr.whisper import pcm_to_samples
    from voicetrio.engines.asr.whisper_short import decode_short

    samples = pcm_to_samples(silence(29_000))
    assert decode_short(model, samples, language="en", beam_size=1) is None


async def test_short_phrases_do_not_loop(asr: WhisperAsr) -> None:
    for phrase in ("Thank you.", "Yes.", "Stop."):
        for final in (False, True):
            text = await asr.transcribe(say(phrase), final=final)
            assert normalize(text) == normalize(phrase), (phrase, final, text)


def test_short_window_pads_with_silence_not_zero_features(model: Any) -> None:
    # Whisper was trained on audio padded with zero samples: after the speech
    # its encoder expects the log-mel floor, not faster-whisper's 0.0 padding.
    from voicetrio.engines.asr.whisper import pcm_to_samples
    from voicetrio.engines.asr.whisper_short import silence_padded_features, window_frames

    samples = pcm_to_samples(say(SENTENCES[2]))
    frames = samples.size // 160 + 1
    window = window_frames(frames)
    features = silence_padded_features(model, samples, window)
    assert features.shape == (80, window)
    floor = float(features.min())
    tail = features[:, frames + 5 :]
    assert tail.size > 0
    assert np.allclose(tail, floor)  # every padded frame is silence
    assert floor < -0.3  # far below the 0.0 that zero-filled features would hold
