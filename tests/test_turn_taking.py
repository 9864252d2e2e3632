"""Turn-taking in the session (issue 13): the end of a turn by a turn judge's
verdict and the words, and barge-in that ignores backchannels, noise and the
reply's own echo.

The endpointer's rules are sans-IO tests with exact numbers; the session's
run under MockClock(autojump_threshold=0) on the deterministic engines, with
the scripted judge (engines/turn/scripted.py), and for barge-in the engines
whose speech round-trips (engines/fake_echo.py: the reply's audio fed back
into the microphone is heard as the reply's words)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest
import trio
import trio.testing

from tests.conftest import Harness, make_engines, open_session, quiet, speech
from voicetrio.config import Config
from voicetrio.core import endpointing as ep
from voicetrio.core.turn_policy import TurnSettings, TurnTaker, TurnVerdict
from voicetrio.engines.base import Engines
from voicetrio.engines.fake import FakeLlm
from voicetrio.engines.fake_echo import WordAsr, WordTts, hear, speak, vocabulary_reply
from voicetrio.engines.turn.scripted import ScriptedTurnJudge

START = {"type": "start", "sample_rate": 16000}

# -- the endpointer with a turn taker (sans-IO) ---------------------------------------


def pushes(
    endpointer: ep.Endpointer, pattern: Sequence[bool]
) -> list[tuple[int, ep.EndpointEvent]]:
    """Push each frame; (frame number from 1, event) for every event."""
    out: list[tuple[int, ep.EndpointEvent]] = []
    for is_speech in pattern:
        for event in endpointer.push(is_speech):
            out.append((endpointer.now_ms // endpointer.config.frame_ms, event))
    return out


def ended(events: list[tuple[int, ep.EndpointEvent]]) -> list[ep.UtteranceEnded]:
    return [e for _, e in events if isinstance(e, ep.UtteranceEnded)]


def with_taker(hangover_ms: int = 0) -> ep.Endpointer:
    return ep.Endpointer(
        ep.EndpointConfig(frame_ms=30, silence_ms=700, hangover_ms=hangover_ms),
        TurnTaker(TurnSettings()),
    )


def test_a_complete_verdict_ends_the_turn_after_250_ms() -> None:
    e = with_taker()
    events = pushes(e, [True] * 10 + [False] * 4)
    # Silence began at frame 11 (330 ms); 120 ms of it is the first step past 100.
    due = [(n, ev) for n, ev in events if isinstance(ev, ep.JudgeDue)]
    assert due == [(14, ep.JudgeDue(at_ms=420, ticket=1))]
    e.verdict(1, TurnVerdict.of(0.9))
    events = pushes(e, [False] * 10)
    # 270 ms of silence is the first frame at or past 250.
    assert ended(events) == [
        ep.UtteranceEnded(
            at_ms=570, reason="silence", start_ms=0, speech_end_ms=300, turn="complete"
        )
    ]


def test_the_hangover_counts_as_silence() -> None:
    e = with_taker(hangover_ms=90)
    events = pushes(e, [True] * 10 + [False])
    assert [type(ev) for _, ev in events] == [ep.SpeechStarted, ep.SilenceStarted, ep.JudgeDue]


def test_an_incomplete_verdict_waits_through_a_long_pause() -> None:
    e = with_taker()
    pushes(e, [True] * 10 + [False] * 4)
    e.verdict(1, TurnVerdict.of(0.1))
    # A 1.5 s pause (50 frames) does not end it; speech comes back.
    events = pushes(e, [False] * 46 + [True] * 10)
    assert not ended(events)
    assert ep.SpeechResumed in [type(ev) for _, ev in events]
    # The next silence is judged anew: no verdict, the fallback window.
    events = pushes(e, [False] * 30)
    (end,) = ended(events)
    assert (end.turn, end.at_ms - end.speech_end_ms) == ("fallback", 720)


def test_no_verdict_is_the_fixed_window_and_a_judge_not_ready_is_exactly_no_taker() -> None:
    pattern = [False] * 3 + [True] * 10 + [False] * 30
    plain = pushes(ep.Endpointer(ep.EndpointConfig(frame_ms=30, silence_ms=700)), pattern)
    not_ready = with_taker()
    not_ready.judge_ready = False
    assert pushes(not_ready, pattern) == plain
    unanswered = ended(pushes(with_taker(), pattern))
    assert [(u.turn, u.at_ms - u.speech_end_ms) for u in unanswered] == [("fallback", 720)]


def test_an_unfinished_transcript_keeps_the_turn_open_whatever_the_judge() -> None:
    e = with_taker()
    pushes(e, [True] * 10 + [False] * 4)
    e.transcript("What is the capital of")
    e.verdict(1, TurnVerdict.of(0.99))
    assert not ended(pushes(e, [False] * 60))
    (end,) = ended(pushes(e, [False] * 10))
    assert (end.turn, end.at_ms - end.speech_end_ms) == ("patience", 2010)


def test_a_failed_judge_falls_back_and_a_stale_verdict_is_ignored() -> None:
    e = with_taker()
    pushes(e, [True] * 10 + [False] * 4)
    e.verdict(1, None)
    (end,) = ended(pushes(e, [False] * 30))
    assert end.turn == "fallback"
    pushes(e, [True] * 10 + [False] * 4)  # ticket 2
    e.verdict(1, TurnVerdict.of(0.9))  # the earlier silence's: stale
    (end,) = ended(pushes(e, [False] * 30))
    assert end.turn == "fallback"


# -- the session: the end of a turn ---------------------------------------------------


def judged(judge: ScriptedTurnJudge | None, **engines: object) -> Engines:
    return dataclasses.replace(make_engines(**engines), turn=judge)  # type: ignore[arg-type]


async def final_delay(
    nursery: trio.Nursery, judge: ScriptedTurnJudge | None, config: Config
) -> float:
    """Seconds from the end of the speech to the final transcript's send."""
    h = await open_session(nursery, config, judged(judge))
    h.peer.send_json(START)
    t0 = trio.current_time()
    await h.stream(speech(1200) + quiet(2500))
    await h.peer.wait_for("final_transcript")
    return h.peer.time_of("final_transcript") - (t0 + 1.2)


async def test_a_complete_turn_is_final_sooner_with_the_judge(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config
) -> None:
    plain = await final_delay(nursery, None, config)
    complete = await final_delay(nursery, ScriptedTurnJudge(rule=lambda _: 0.9), config)
    not_ready = await final_delay(nursery, ScriptedTurnJudge(ready=False), config)
    failing = await final_delay(nursery, ScriptedTurnJudge([None]), config)
    # The audio comes in 100 ms frames, so the frame that closes the window
    # (720 ms of silence; 270 ms with the judge) arrives at the start of its
    # 100 ms: the final (decoded speculatively meanwhile) goes then.
    assert plain == pytest.approx(0.7)
    assert complete == pytest.approx(0.2)
    assert not_ready == pytest.approx(plain) and failing == pytest.approx(plain)


async def test_a_thinking_pause_does_not_split_the_question(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config
) -> None:
    async def finals(judge: ScriptedTurnJudge | None) -> list[str]:
        h = await open_session(nursery, config, judged(judge))
        h.peer.send_json(START)
        await h.stream(speech(900) + quiet(1500) + speech(900, 700.0) + quiet(2500))
        await h.peer.wait_for("metrics")
        await trio.testing.wait_all_tasks_blocked()
        return [f["text"] for f in h.peer.of_type("final_transcript")]

    assert len(await finals(None)) == 2
    (whole,) = await finals(ScriptedTurnJudge(rule=lambda _: 0.1))
    assert len(whole.split()) == 6


async def test_the_held_reply_is_dropped_on_resumed_speech_and_released_at_the_end(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config
) -> None:
    llm = FakeLlm(first_token_s=0.125, token_s=0.03125)
    h = await open_session(nursery, config, judged(ScriptedTurnJudge([0.1, 0.9]), llm=llm))
    h.peer.send_json(START)
    await h.stream(speech(900) + quiet(1500) + speech(900, 700.0) + quiet(2500))
    await h.peer.wait_for("metrics")
    await trio.testing.wait_all_tasks_blocked()
    # One reply was started speculatively in each silence; the first was
    # dropped unheard, the second released as the one answer.
    assert llm.opened == 2
    assert len(h.peer.of_type("final_transcript")) == 1
    assert len(h.peer.of_type("metrics")) == 1
    tokens = "".join(t["text"] for t in h.peer.of_type("llm_token"))
    assert h.peer.of_type("final_transcript")[0]["text"] in tokens


# -- barge-in ---------------------------------------------------------------------


def talking(config: Config, *, token_s: float = 0.25) -> Engines:
    """Engines whose speech round-trips, with a 12-word reply written slowly."""
    llm = FakeLlm(first_token_s=0.125, token_s=token_s, reply=lambda _: vocabulary_reply(12))
    return Engines(
        name="echo",
        vad=make_engines().vad,
        asr=WordAsr(delay_s=0.0625),
        llm=llm,
        tts=WordTts(delay_s=0.015625),
    )


def barge_ins(h: Harness) -> list[float]:
    return [t for t, e in h.peer.event_times() if e["type"] == "info" and e["event"] == "barge_in"]


def reply_chunks(h: Harness) -> list[bytes]:
    return [f for f in h.peer.frames if isinstance(f, bytes)]


async def ask(h: Harness) -> None:
    """A question, and the reply's first audio sent."""
    h.peer.send_json({**START, "audio_format": "pcm16"})
    await h.stream(speak("forest bridge") + quiet(1000))
    await h.peer.wait_for("tts_chunk")


async def over_the_reply(
    nursery: trio.Nursery, config: Config, said: bytes
) -> tuple[Harness, float]:
    """Says ``said`` while the reply plays; the time its speech ended."""
    h = await open_session(nursery, config, talking(config))
    await ask(h)
    await trio.sleep(0.3)
    t0 = trio.current_time()
    await h.stream(said + quiet(1500))
    return h, t0 + len(said.rstrip(b"\0")) / 32000


@pytest.mark.parametrize(
    "said",
    [
        speak("yeah"),
        speak("okay yeah"),
        bytes(np.random.default_rng(7).integers(-6000, 6000, 3200, dtype="<i2")),
    ],
    ids=["yeah", "okay-yeah", "cough"],
)
async def test_backchannels_and_a_cough_do_not_cancel_and_are_not_answered(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config, said: bytes
) -> None:
    h, _ = await over_the_reply(nursery, config, said)
    await h.peer.wait_for("tts_complete")
    await trio.sleep(3)
    await trio.testing.wait_all_tasks_blocked()
    assert barge_ins(h) == []
    assert len(h.peer.of_type("metrics")) == 1
    assert len(h.peer.of_type("llm_token")) == 13  # one reply, whole (12 words, done)


async def test_stop_cancels_within_a_third_of_a_second_of_its_end(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config
) -> None:
    h, said_end = await over_the_reply(nursery, config, speak("stop"))
    await h.peer.wait_for("info", event="barge_in")
    (at,) = barge_ins(h)
    assert at - said_end <= 0.3


async def test_two_words_over_the_reply_cancel_it_and_are_answered(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config
) -> None:
    h, _ = await over_the_reply(nursery, config, speak("candle meadow harbor"))
    await h.peer.wait_for("info", event="barge_in")
    await h.peer.wait_for("metrics")
    finals = [f["text"] for f in h.peer.of_type("final_transcript")]
    assert finals[-1] == "candle meadow harbor"


async def loudspeaker(
    h: Harness, gain: float, user: bytes = b"", user_at_ms: int = 0, tail_ms: int = 1500
) -> None:
    """Plays the reply's audio into the microphone as it comes, back to back
    (a loudspeaker beside an open microphone, ``gain`` of it picked up), with
    ``user`` speaking from ``user_at_ms`` of playback on; then ``tail_ms`` of quiet."""
    step = 3200  # 100 ms frames, sent at real-time pace
    echo = bytearray()
    taken = 0
    start = trio.current_time()
    k = 0
    while True:
        if not (h.peer.of_type("tts_complete") or barge_ins(h)):
            chunks = reply_chunks(h)
            for chunk in chunks[taken:]:
                samples = np.frombuffer(chunk, "<i2").astype(np.float64) * gain
                echo += samples.astype("<i2").tobytes()
            taken = len(chunks)
        elif taken and not h.peer.of_type("tts_complete"):
            echo.clear()  # barged in on: the client stops playing it
            taken = 0
        offset = k * step - user_at_ms * 32
        voice = user[max(0, offset) : max(0, offset + step)] if offset + step > 0 else b""
        over = h.peer.of_type("tts_complete") or barge_ins(h)
        if over and not echo[:step] and not voice and offset >= len(user):
            break
        mixed = np.zeros(step // 2, np.int32)
        part = np.frombuffer(bytes(echo[:step]), "<i2")
        mixed[: len(part)] += part
        del echo[:step]
        if offset + step > 0:
            lead = max(0, -offset) // 2
            heard = np.frombuffer(voice, "<i2")
            mixed[lead : lead + len(heard)] += heard
        await trio.sleep_until(start + k * 0.1)
        h.peer.send_bytes(np.clip(mixed, -32768, 32767).astype("<i2").tobytes())
        k += 1
    await h.stream(quiet(tail_ms))


async def test_the_reply_heard_back_through_an_open_microphone_does_not_cancel_it(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config
) -> None:
    h = await open_session(nursery, config, talking(config))
    await ask(h)
    await loudspeaker(h, gain=0.2)
    await h.peer.wait_for("tts_complete")
    await trio.testing.wait_all_tasks_blocked()
    finals = [f["text"] for f in h.peer.of_type("final_transcript")]
    # The microphone heard the reply (as its words), and that was no turn.
    assert len(finals) == 2 and finals[1].split()[:4] == ["apple", "river", "garden", "yellow"]
    assert barge_ins(h) == []
    assert len(h.peer.of_type("metrics")) == 1
    assert len(h.peer.of_type("llm_token")) == 13


async def test_a_real_interruption_over_the_echo_still_cancels(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config
) -> None:
    h = await open_session(nursery, config, talking(config))
    await ask(h)
    await loudspeaker(h, gain=0.2, user=speak("candle meadow harbor"), user_at_ms=1000)
    await h.peer.wait_for("info", event="barge_in")
    await h.peer.wait_for("metrics")
    assert len(h.peer.of_type("llm_token")) < 24  # the first reply was cut short
    assert "candle meadow harbor" in " ".join(f["text"] for f in h.peer.of_type("final_transcript"))


def test_the_word_engines_round_trip() -> None:
    reply = vocabulary_reply(8)
    assert hear(speak(reply)) == reply.lower().replace(".", "")
