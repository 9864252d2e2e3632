"""The deterministic engines: exact results and, under MockClock, exact timing.

Delays are powers of two so that virtual times add up exactly in floating
point and can be compared with ``==``.
"""

from __future__ import annotations

import io
import wave

import pytest
import trio
import trio.testing

from voicetrio.config import Config
from voicetrio.core.audio import frames, silence, tone
from voicetrio.engines.base import (
    AsrEngine,
    AsrError,
    ChatMessage,
    Engines,
    LlmEngine,
    LlmError,
    TtsEngine,
    TtsError,
    VadEngine,
    VadFactory,
)
from voicetrio.engines.fake import (
    ASR_WORDS,
    EnergyVad,
    FakeAsr,
    FakeLlm,
    FakeTts,
    default_reply,
    fake_engines,
    words_for,
)
from voicetrio.engines.scheduler import Scheduler

CONVERSATION: list[ChatMessage] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "first answer"},
    {"role": "user", "content": " hello there "},
]
REPLY = default_reply("hello there")


async def collect(llm: FakeLlm, messages: list[ChatMessage]) -> list[tuple[float, str]]:
    """Every delta with the virtual time it arrived at."""
    got: list[tuple[float, str]] = []
    async with llm.stream(messages) as deltas:
        async for delta in deltas:
            got.append((trio.current_time(), delta))
    return got


async def test_engines_satisfy_the_protocols() -> None:
    # The assignments are mypy's check; the calls go through the Protocols only.
    vad: VadEngine = EnergyVad(500)
    factory: VadFactory = EnergyVad
    asr: AsrEngine = FakeAsr(delay_s=0)
    llm: LlmEngine = FakeLlm(first_token_s=0, token_s=0)
    tts: TtsEngine = FakeTts(delay_s=0)
    assert vad.is_speech(tone(30)) and factory().is_speech(tone(30))
    assert await asr.transcribe(tone(300, 440.0), final=True) == "Table"
    async with llm.stream(CONVERSATION) as deltas:
        assert "".join([d async for d in deltas]) == REPLY
    assert (await tts.synthesize("Hi")).duration_s == 0.1


# --------------------------------------------------------------------------
# VAD


def test_energy_vad() -> None:
    vad = EnergyVad(500)
    assert not vad.is_speech(silence(30))
    assert vad.is_speech(tone(30))
    assert vad.is_speech(b"\xf4\x01" * 480)  # constant 500: at the threshold
    assert not vad.is_speech(b"\xf3\x01" * 480)  # constant 499
    assert [EnergyVad(500).is_speech(f) for f in frames(silence(60) + tone(60), 16000, 30)] == [
        False,
        False,
        True,
        True,
    ]
    with pytest.raises(ValueError, match="threshold"):
        EnergyVad(-1)


# --------------------------------------------------------------------------
# ASR


async def test_asr_text_is_deterministic() -> None:
    pcm = tone(900, 440.0)
    asr = FakeAsr(delay_s=0)
    assert await asr.transcribe(pcm, final=False) == "Table table table"
    assert await asr.transcribe(pcm, final=True) == "Table table table"
    assert await FakeAsr(delay_s=0).transcribe(pcm, final=True) == "Table table table"
    assert (asr.calls, asr.final_calls) == (2, 1)


async def test_asr_silence_and_quiet_audio_give_no_words() -> None:
    asr = FakeAsr(delay_s=0)
    assert await asr.transcribe(b"", final=True) == ""
    assert await asr.transcribe(silence(3000), final=True) == ""
    assert await asr.transcribe(tone(900, amplitude=0.015), final=True) == ""  # RMS < 500
    assert await asr.transcribe(tone(299), final=True) == ""  # no full chunk yet


async def test_asr_different_pitches_give_different_words() -> None:
    words = [words_for(tone(300, float(hz))).lower() for hz in (200, 300, 440, 600, 1000)]
    assert len(set(words)) == 5
    assert all(w in ASR_WORDS for w in words)
    # Silence between loud chunks makes no word and does not shift the others.
    assert words_for(tone(300, 300.0) + silence(300) + tone(300, 1000.0)) == "Music winter"


@pytest.mark.parametrize("split_ms", [0, 150, 299, 300, 450, 600, 750, 900, 1200, 1500, 1800, 1950])
def test_asr_is_prefix_stable(split_ms: int) -> None:
    utterance = (
        tone(600, 440.0) + silence(300) + tone(450, 700.0) + tone(300, 250.0) + tone(300, 900.0)
    )
    whole = words_for(utterance).split()
    assert whole == ["Table", "table", "forest", "silver", "pocket"]
    prefix = words_for(utterance[: 32 * split_ms]).split()
    assert whole[: len(prefix)] == prefix


async def test_asr_delay_is_exact(autojump_clock: trio.testing.MockClock) -> None:
    asr = FakeAsr(delay_s=0.25)
    start = trio.current_time()
    await asr.transcribe(tone(300), final=False)
    assert trio.current_time() - start == 0.25


async def test_asr_scheduler_serializes_decodes(autojump_clock: trio.testing.MockClock) -> None:
    async def finish_times(asr: FakeAsr) -> list[float]:
        done: list[float] = []

        async def one() -> None:
            await asr.transcribe(tone(300), final=False)
            done.append(trio.current_time())

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            nursery.start_soon(one)
        return [t - start for t in done]

    assert await finish_times(FakeAsr(delay_s=0.25)) == [0.25, 0.25]
    limited = FakeAsr(delay_s=0.25, scheduler=Scheduler(1))
    assert await finish_times(limited) == [0.25, 0.5]


async def test_asr_failure_after_the_delay(autojump_clock: trio.testing.MockClock) -> None:
    asr = FakeAsr(delay_s=0.5, fail=True)
    with pytest.raises(AsrError, match="scripted"):
        await asr.transcribe(tone(300), final=True)
    assert trio.current_time() == 0.5
    assert (asr.calls, asr.final_calls) == (1, 1)


# --------------------------------------------------------------------------
# LLM


async def test_llm_streams_the_scripted_reply_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    llm = FakeLlm(first_token_s=0.5, token_s=0.25)
    got = await collect(llm, CONVERSATION)
    deltas = [d for _, d in got]
    assert "".join(deltas) == REPLY
    assert REPLY.startswith("You said: hello there. This is a scripted reply")
    assert deltas[0] == "You"
    assert all(d.startswith(" ") and " " not in d[1:] for d in deltas[1:])
    assert [t for t, _ in got] == [0.5 + 0.25 * i for i in range(len(REPLY.split()))]
    assert (llm.opened, llm.closed) == (1, 1)


async def test_llm_empty_or_missing_user_text_is_nothing() -> None:
    llm = FakeLlm(first_token_s=0, token_s=0)
    empty = [d for _, d in await collect(llm, [{"role": "user", "content": "  "}])]
    assert "".join(empty) == default_reply("")
    assert "".join(empty).startswith("You said: nothing. ")
    none = [d for _, d in await collect(llm, [{"role": "system", "content": "x"}])]
    assert none == empty


async def test_llm_custom_reply() -> None:
    llm = FakeLlm(first_token_s=0, token_s=0, reply=lambda text: text.upper() + "!")
    assert [d for _, d in await collect(llm, CONVERSATION)] == ["HELLO", " THERE!"]
    silent = FakeLlm(first_token_s=0, token_s=0, reply=lambda text: "")
    assert await collect(silent, CONVERSATION) == []
    assert (silent.opened, silent.closed) == (1, 1)


async def test_llm_hang_never_starts(autojump_clock: trio.testing.MockClock) -> None:
    llm = FakeLlm(mode="hang")
    got: list[str] = []
    with trio.move_on_after(3) as scope:
        async with llm.stream(CONVERSATION) as deltas:
            async for delta in deltas:
                got.append(delta)
    assert scope.cancelled_caught
    assert got == []
    assert trio.current_time() == 3
    assert (llm.opened, llm.closed) == (1, 1)


async def test_llm_fail_mode_raises_on_entry() -> None:
    llm = FakeLlm(mode="fail")
    with pytest.raises(LlmError, match="scripted"):
        async with llm.stream(CONVERSATION):
            pytest.fail("the stream should not open")
    assert (llm.opened, llm.closed) == (0, 0)


async def test_llm_stream_cut_mid_reply(autojump_clock: trio.testing.MockClock) -> None:
    llm = FakeLlm(first_token_s=0.5, token_s=0.25, fail_after_tokens=2)
    got: list[str] = []
    with pytest.raises(LlmError, match="after 2 deltas"):
        async with llm.stream(CONVERSATION) as deltas:
            async for delta in deltas:
                got.append(delta)
    assert got == ["You", " said:"]
    assert trio.current_time() == 1.0  # when the third delta was due
    assert (llm.opened, llm.closed) == (1, 1)


async def test_llm_stream_cut_before_first_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    llm = FakeLlm(first_token_s=0.5, token_s=0.25, fail_after_tokens=0)
    with pytest.raises(LlmError, match="after 0 deltas"):
        await collect(llm, CONVERSATION)
    assert trio.current_time() == 0.5


async def test_llm_stream_cut_after_a_short_reply(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The stream still fails rather than ending cleanly.
    llm = FakeLlm(first_token_s=0.5, token_s=0.25, reply=lambda t: "a b", fail_after_tokens=9)
    got: list[str] = []
    with pytest.raises(LlmError, match="after 2 deltas"):
        async with llm.stream(CONVERSATION) as deltas:
            async for delta in deltas:
                got.append(delta)
    assert got == ["a", " b"]
    assert trio.current_time() == 1.0


async def test_llm_closed_after_cancellation_mid_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    llm = FakeLlm(first_token_s=0.5, token_s=0.25)
    got: list[str] = []
    with trio.move_on_after(0.875) as scope:
        async with llm.stream(CONVERSATION) as deltas:
            async for delta in deltas:
                got.append(delta)
    assert scope.cancelled_caught
    assert got == ["You", " said:"]
    assert (llm.opened, llm.closed) == (1, 1)


async def test_llm_closed_when_consumer_stops_early() -> None:
    llm = FakeLlm(first_token_s=0, token_s=0)
    async with llm.stream(CONVERSATION) as deltas:
        async for delta in deltas:
            assert delta == "You"
            break
        assert llm.closed == 0
    assert (llm.opened, llm.closed) == (1, 1)


def test_llm_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="token_s"):
        FakeLlm(token_s=-1)
    with pytest.raises(ValueError, match="fail_after_tokens"):
        FakeLlm(fail_after_tokens=-1)


# --------------------------------------------------------------------------
# TTS


async def test_tts_speaks_a_valid_wav_whose_length_follows_the_text() -> None:
    tts = FakeTts(delay_s=0)
    speech = await tts.synthesize("Hello there.")  # 12 characters
    assert speech.sample_rate == 16000
    assert len(speech.pcm) == 2 * 16000 * 12 * 40 // 1000
    assert speech.duration_s == 0.48
    with wave.open(io.BytesIO(speech.wav()), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.readframes(w.getnframes()) == speech.pcm
    assert (await tts.synthesize("Hi")).duration_s == 0.1  # at least 100 ms
    assert (await FakeTts(delay_s=0, ms_per_char=10).synthesize("x" * 50)).duration_s == 0.5
    assert (await FakeTts(delay_s=0, sample_rate=8000).synthesize("x" * 5)).pcm == tone(
        200, 300 + (5 * ord("x")) % 400, 8000
    )
    assert tts.calls == 2


async def test_tts_is_deterministic_and_pitch_follows_the_text() -> None:
    tts = FakeTts(delay_s=0)
    a = await tts.synthesize("Good morning.")
    assert a == await FakeTts(delay_s=0).synthesize("Good morning.")
    b = await tts.synthesize("Good evening.")
    assert len(a.pcm) == len(b.pcm) and a.pcm != b.pcm
    # Played back into the fake ASR, speech is heard as words.
    assert words_for(a.pcm) == words_for(a.pcm) != ""


async def test_tts_fail_on(autojump_clock: trio.testing.MockClock) -> None:
    tts = FakeTts(delay_s=0.25, fail_on=lambda text: "bad" in text)
    assert (await tts.synthesize("good phrase")).pcm
    with pytest.raises(TtsError, match="bad phrase"):
        await tts.synthesize("a bad phrase")
    assert trio.current_time() == 0.5
    assert tts.calls == 2


async def test_tts_limiter(autojump_clock: trio.testing.MockClock) -> None:
    tts = FakeTts(delay_s=0.25, limiter=trio.CapacityLimiter(1))
    async with trio.open_nursery() as nursery:
        for text in ("one", "two", "three"):
            nursery.start_soon(tts.synthesize, text)
    assert trio.current_time() == 0.75


# --------------------------------------------------------------------------
# The set


async def test_fake_engines_follow_the_config(autojump_clock: trio.testing.MockClock) -> None:
    config = Config().replace(
        vad_energy_threshold=800,
        fake_asr_ms=250,
        fake_llm_first_token_ms=500,
        fake_llm_token_ms=125,
        fake_llm_mode="hang",
        fake_tts_ms=0,
    )
    decoder = Scheduler(1)
    engines: Engines = fake_engines(config, decoder)
    assert engines.name == "fake"
    assert engines.readiness() == {"asr": True, "llm": True, "tts": True}

    vad_a, vad_b = engines.vad(), engines.vad()
    assert isinstance(vad_a, EnergyVad) and vad_a is not vad_b
    assert vad_a.threshold == 800

    assert isinstance(engines.asr, FakeAsr)
    assert (engines.asr.delay_s, engines.asr.scheduler) == (0.25, decoder)
    assert engines.decoder is decoder
    assert isinstance(engines.llm, FakeLlm)
    llm = engines.llm
    assert (llm.first_token_s, llm.token_s, llm.mode) == (0.5, 0.125, "hang")
    assert isinstance(engines.tts, FakeTts)
    assert engines.tts.delay_s == 0

    await engines.asr.transcribe(tone(300), final=True)
    assert trio.current_time() == 0.25


def test_default_config_gives_default_timings() -> None:
    engines = fake_engines(Config(), Scheduler(1))
    assert isinstance(engines.asr, FakeAsr) and engines.asr.delay_s == FakeAsr().delay_s
    assert isinstance(engines.llm, FakeLlm)
    assert (engines.llm.first_token_s, engines.llm.token_s) == (0.05, 0.02)
    assert isinstance(engines.tts, FakeTts) and engines.tts.delay_s == FakeTts().delay_s
