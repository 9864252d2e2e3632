"""Pyttsx3Tts on the real pyttsx3 + espeak-ng.

espeak-ng is nearly deterministic: a phrase gives the same length of audio
every time (within 1 %; but espeak-ng keeps some state, and a one-word phrase
comes out 9 % longer for good once a long phrase has been spoken), and the
phrases here of different word counts differ by 15 % or more. So the length
of each result says whose phrase it is, which is how these tests catch
results handed to the wrong caller.

Tests that need the engine to be busy at a known moment put a gate at
pyttsx3's door: ``Engine.save_to_file``, which the worker thread calls once per
pass through the engine, waits there for a threading.Event the test opens, so
nothing here waits on a clock. The gate also records every phrase that reached
pyttsx3 and the engine object it reached, which is how the tests see a phrase
skipped, a silent render retried, or a new engine made.
"""

from __future__ import annotations

import ctypes.util
import gc
import itertools
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
import trio.testing

from voicetrio.core import audio
from voicetrio.engines.base import SpeechAudio, TtsError
from voicetrio.engines.tts.espeak import Pyttsx3Tts
from voicetrio.engines.tts.worker import THREAD_NAME, TtsLoadError

pyttsx3 = pytest.importorskip("pyttsx3")
if ctypes.util.find_library("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)", allow_module_level=True)

_TEXT = (
    "the quick brown fox jumps over a lazy dog while seven happy children watch from "
    "behind the old garden wall and their mother calls them home for dinner because the "
    "sun is setting slowly over the quiet green hills near the river where fishermen pull "
    "their boats onto the sand and count the silver fish they caught today"
)
_WORDS = _TEXT.split()
# Word counts whose espeak-ng durations are at least 15 % apart (0.57 s .. 13.7 s).
_COUNTS = (1, 2, 3, 4, 6, 8, 11, 15, 20, 27, 36, 48)
#: How far a result may be from its phrase's reference duration.
_TOLERANCE = 0.12
#: Speech, not near-silence: espeak-ng at full volume is around 2800.
_MIN_RMS = 500.0
_GATE_TIMEOUT_S = 10.0


def phrase(words: int) -> str:
    return " ".join(_WORDS[:words]).capitalize() + "."


SHORT = phrase(2)
LONG = phrase(20)


@pytest.fixture
async def tts() -> AsyncIterator[Pyttsx3Tts]:
    engine = Pyttsx3Tts()
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        yield engine
        nursery.cancel_scope.cancel()


def tts_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def assert_speech(speech: SpeechAudio) -> None:
    assert speech.sample_rate == 22050
    assert len(speech.pcm) % 2 == 0
    assert audio.rms(speech.pcm) > _MIN_RMS


def assert_close(actual_s: float, expected_s: float) -> None:
    assert abs(actual_s - expected_s) <= _TOLERANCE * expected_s, (actual_s, expected_s)


async def references(tts: Pyttsx3Tts, texts: list[str]) -> dict[str, float]:
    """Each text's duration, spoken alone."""
    return {text: (await tts.synthesize(text)).duration_s for text in texts}


class Gate:
    """Holds every phrase at pyttsx3's ``Engine.save_to_file`` (on the worker
    thread) until the test opens it, and records what reached pyttsx3.

    ``say``, when set, replaces the text pyttsx3 is given (the error messages
    still quote the phrase asked for).
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, opened: bool = False) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        if opened:
            self.opened.set()
        #: Texts that reached the engine, in order.
        self.texts: list[str] = []
        #: The pyttsx3 engine each of them reached.
        self.engines: list[Any] = []
        self.say: Callable[[str], str] | None = None
        save = pyttsx3.Engine.save_to_file

        def gated(engine: Any, text: str, filename: str, name: str | None = None) -> None:
            self.texts.append(text)
            self.engines.append(engine)
            self.entered.set()
            if not self.opened.wait(_GATE_TIMEOUT_S):
                raise RuntimeError("the test never opened the gate")
            save(engine, text if self.say is None else self.say(text), filename, name)

        monkeypatch.setattr(pyttsx3.Engine, "save_to_file", gated)

    async def wait_entered(self) -> None:
        assert await trio.to_thread.run_sync(self.entered.wait, _GATE_TIMEOUT_S)


async def test_ten_phrases_in_a_row_are_speech_in_order(tts: Pyttsx3Tts) -> None:
    texts = [SHORT, LONG] * 5
    results = [await tts.synthesize(text) for text in texts]
    for speech in results:
        assert_speech(speech)
    short = [s.duration_s for s in results[0::2]]
    long = [s.duration_s for s in results[1::2]]
    # Twenty words take far longer than two, and each phrase always the same.
    assert max(short) < 1.5 < 4.0 < min(long)
    for durations in (short, long):
        assert_close(max(durations), min(durations))
    assert tts.calls == 10
    assert tts.last_synthesis_s > 0


async def test_longer_text_gives_longer_audio(tts: Pyttsx3Tts) -> None:
    durations = list((await references(tts, [phrase(n) for n in _COUNTS])).values())
    assert durations == sorted(durations)
    for shorter, longer in itertools.pairwise(durations):
        assert longer > 1.1 * shorter


async def test_concurrent_callers_each_get_their_own_phrase(tts: Pyttsx3Tts) -> None:
    texts = [phrase(n) for n in _COUNTS]
    expected = await references(tts, texts)
    got: dict[str, SpeechAudio] = {}

    async def caller(mine: list[str]) -> None:
        for text in mine:
            got[text] = await tts.synthesize(text)

    async with trio.open_nursery() as nursery:
        for k in range(3):
            # Interleaved, so short and long phrases from different callers queue together.
            nursery.start_soon(caller, texts[k::3])
    assert set(got) == set(texts)
    for text, speech in got.items():
        assert_speech(speech)
        assert_close(speech.duration_s, expected[text])
        nearest = min(texts, key=lambda t: abs(expected[t] - speech.duration_s))
        assert nearest == text


async def test_caller_cancelled_while_queued_is_skipped(
    tts: Pyttsx3Tts, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = await references(tts, [SHORT, LONG])
    gate = Gate(monkeypatch)
    first: list[SpeechAudio] = []
    queued = trio.CancelScope()

    async def speak_first() -> None:
        first.append(await tts.synthesize(LONG))

    async def speak_queued() -> None:
        with queued:
            await tts.synthesize("This phrase is never spoken.")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(speak_first)
        await gate.wait_entered()
        nursery.start_soon(speak_queued)
        await trio.testing.wait_all_tasks_blocked()
        queued.cancel()
        await trio.testing.wait_all_tasks_blocked()
        gate.opened.set()

    assert queued.cancelled_caught
    assert_close(first[0].duration_s, expected[LONG])
    after = await tts.synthesize(SHORT)
    assert_speech(after)
    assert_close(after.duration_s, expected[SHORT])
    # The cancelled phrase never reached the engine.
    assert gate.texts == [LONG, SHORT]


async def test_caller_cancelled_mid_synthesis_returns_at_once(
    tts: Pyttsx3Tts, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = await references(tts, [SHORT, LONG])
    gate = Gate(monkeypatch)
    doomed = trio.CancelScope()
    returned = trio.Event()

    async def speak_doomed() -> None:
        with doomed:
            await tts.synthesize(LONG)
        returned.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(speak_doomed)
        await gate.wait_entered()
        doomed.cancel()
        # The caller is back while the engine is still held mid-phrase.
        await returned.wait()
        assert not gate.opened.is_set()
        gate.opened.set()

    assert doomed.cancelled_caught
    after = await tts.synthesize(SHORT)
    assert_speech(after)
    # Its own phrase, not the long one whose result was dropped.
    assert_close(after.duration_s, expected[SHORT])
    # The long phrase was finished (the engine was not left half-way) before
    # the next one went in.
    assert gate.texts == [LONG, SHORT]


async def test_turn_timeout_then_next_phrase_works(
    tts: Pyttsx3Tts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # reply.py wraps each phrase in fail_after(tts_timeout_s); the gate makes
    # the engine certain to be slower than the deadline.
    expected = await references(tts, [SHORT])
    gate = Gate(monkeypatch)
    with pytest.raises(trio.TooSlowError), trio.fail_after(0.01):
        await tts.synthesize(LONG)
    gate.opened.set()
    after = await tts.synthesize(SHORT)
    assert_close(after.duration_s, expected[SHORT])
    assert gate.texts[-1] == SHORT


async def test_stopping_answers_queued_callers_and_ends_the_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tts = Pyttsx3Tts()
    run_scope = trio.CancelScope()
    results: dict[str, SpeechAudio | TtsError] = {}

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with run_scope:
            await tts.run(task_status=task_status)

    async def speak(text: str) -> None:
        try:
            results[text] = await tts.synthesize(text)
        except TtsError as exc:
            results[text] = exc

    async with trio.open_nursery() as nursery:
        await nursery.start(run)
        gate = Gate(monkeypatch)
        nursery.start_soon(speak, LONG)
        await gate.wait_entered()
        nursery.start_soon(speak, SHORT)
        await trio.testing.wait_all_tasks_blocked()
        run_scope.cancel()
        # run() is now waiting for the thread, which still holds LONG.
        await trio.testing.wait_all_tasks_blocked()
        assert not tts.ready
        gate.opened.set()

    # The phrase under way is finished and delivered; the queued one is refused.
    long = results[LONG]
    assert isinstance(long, SpeechAudio)
    assert_speech(long)
    assert isinstance(results[SHORT], TtsError)
    assert gate.texts == [LONG]
    assert tts_threads() == []


async def test_stopping_run_leaves_no_thread() -> None:
    tts = Pyttsx3Tts()
    assert not tts.ready
    with pytest.raises(TtsError, match="not running"):
        await tts.synthesize("Too early.")
    async with trio.open_nursery() as nursery:
        await nursery.start(tts.run)
        assert tts.ready
        assert len(tts_threads()) == 1
        assert_speech(await tts.synthesize(SHORT))
        nursery.cancel_scope.cancel()
    assert not tts.ready
    assert tts_threads() == []
    with pytest.raises(TtsError, match="not running"):
        await tts.synthesize("Too late.")


async def test_empty_text_is_refused_without_the_engine(
    tts: Pyttsx3Tts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refused at once, even while the engine is held on another phrase: the
    # check is made before the phrase would queue for the engine thread.
    gate = Gate(monkeypatch)
    refused: list[str] = []

    async def refuse(text: str) -> None:
        with pytest.raises(TtsError, match="empty"):
            await tts.synthesize(text)
        refused.append(text)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tts.synthesize, LONG)
        await gate.wait_entered()
        try:
            for text in ("", "   ", "\n\t"):
                nursery.start_soon(refuse, text)
            await trio.testing.wait_all_tasks_blocked()
            # All three answered while the engine is still held.
            assert sorted(refused) == sorted(["", "   ", "\n\t"])
        finally:
            gate.opened.set()
    assert tts.calls == 4
    assert gate.texts == [LONG]


async def test_silent_result_is_retried_once_then_refused(
    tts: Pyttsx3Tts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Punctuation alone is spoken as silence: the same path as an empty file.
    gate = Gate(monkeypatch, opened=True)
    with pytest.raises(TtsError, match="no audible speech"):
        await tts.synthesize("...")
    assert gate.texts == ["...", "..."]
    assert_speech(await tts.synthesize(SHORT))


async def test_lone_surrogate_is_dropped_not_fatal(tts: Pyttsx3Tts) -> None:
    # json.loads accepts "\ud800"; espeak-ng's UTF-8 encoder would raise on it.
    assert_speech(await tts.synthesize("Hello \ud800 world."))


async def test_settings_change_the_speech() -> None:
    durations: dict[int, float] = {}
    for rate in (120, 240):
        tts = Pyttsx3Tts(voice="en-us", rate_wpm=rate, volume=0.5)
        async with trio.open_nursery() as nursery:
            await nursery.start(tts.run)
            speech = await tts.synthesize(LONG)
            nursery.cancel_scope.cancel()
        assert 500 < audio.rms(speech.pcm) < 2500  # half volume
        durations[rate] = speech.duration_s
    assert durations[120] > 1.6 * durations[240]


async def test_unknown_voice_fails_to_start_and_frees_the_engine() -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(TtsLoadError, match="no-such-voice"):
            await nursery.start(Pyttsx3Tts(voice="no-such-voice").run)
    assert tts_threads() == []
    tts = Pyttsx3Tts()
    async with trio.open_nursery() as nursery:
        await nursery.start(tts.run)
        assert_speech(await tts.synthesize(SHORT))
        nursery.cancel_scope.cancel()


async def test_a_start_with_a_silent_warm_up_lets_the_next_start_make_a_new_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = Gate(monkeypatch, opened=True)
    first = Pyttsx3Tts()
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        nursery.cancel_scope.cancel()
    old = gate.engines[-1]
    # The warm-up phrase heard as silence, twice: what failed one server start
    # in 29. Punctuation alone is spoken as silence.
    gate.say = lambda text: "..."
    async with trio.open_nursery() as nursery:
        with pytest.raises(TtsLoadError, match=r"no audible speech for 'Ready\.', twice"):
            await nursery.start(Pyttsx3Tts().run)
    # Both tries went to the engine that had worked before.
    assert gate.texts[-2:] == ["Ready.", "Ready."]
    assert gate.engines[-2:] == [old, old]
    assert tts_threads() == []
    gate.say = None
    tts = Pyttsx3Tts()
    async with trio.open_nursery() as nursery:
        await nursery.start(tts.run)
        assert_speech(await tts.synthesize(SHORT))
        # This start made an engine of its own rather than take up the old one.
        assert gate.engines[-1] is not old
        # The old engine, collected now, leaves the new one its voice.
        del old
        gate.engines.clear()
        gc.collect()
        assert_speech(await tts.synthesize(SHORT))
        nursery.cancel_scope.cancel()


async def test_one_running_engine_per_process(tts: Pyttsx3Tts) -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(TtsLoadError, match="another Pyttsx3Tts is running"):
            await nursery.start(Pyttsx3Tts().run)
    assert_speech(await tts.synthesize(SHORT))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_wpm": 10}, "rate_wpm"),
        ({"volume": 0.0}, "volume"),
        ({"volume": float("nan")}, "volume"),
        ({"voice": " "}, "voice"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Pyttsx3Tts(**kwargs)
