"""The text turn judge (issue 13): a language model reads the words so far.

Sans-IO: the prompt and the reading of the model's answer (core/text_turn.py),
the policy's use of it (core/turn_policy.py). The session: the deterministic
engines with the scripted text judge, under MockClock(autojump_threshold=0).
And once, the real judge: SmolLM2-135M on its own llama.cpp worker."""

from __future__ import annotations

import dataclasses
import math

import pytest
import trio
import trio.testing

from tests.conftest import make_engines, open_session, quiet, speech
from voicetrio.config import Config
from voicetrio.core import endpointing as ep
from voicetrio.core import text_turn
from voicetrio.core.turn_policy import (
    EndTurn,
    TurnSettings,
    TurnTaker,
    TurnVerdict,
    Wait,
    decide,
    text_says,
)
from voicetrio.engines.base import TurnJudgeError
from voicetrio.engines.turn.scripted import ScriptedTextJudge, ScriptedTurnJudge, TextRule

START = {"type": "start", "sample_rate": 16000}

# -- the prompt and the answer (sans-IO) ----------------------------------------------


def test_the_words_are_read_without_whispers_punctuation() -> None:
    assert text_turn.normalize(" What is the capital of? ") == "what is the capital of"
    assert text_turn.normalize("It's 10:30, isn't it...") == "it's 10 30 isn't it"
    prompt = text_turn.prompt("Why is the sky blue?")
    assert prompt is not None and prompt.endswith("<|im_start|>user\nwhy is the sky blue")
    assert text_turn.prompt(" ?! ") is None


def test_a_long_transcript_keeps_its_end_in_whole_words() -> None:
    words = text_turn.normalize("word " * 200 + "the end")
    assert len(words) <= text_turn.MAX_CHARS and words.endswith("the end")
    assert words.split()[0] == "word"


def test_the_end_probability_sums_the_closing_tokens() -> None:
    top = [
        {"token": "?", "logprob": math.log(0.5)},
        {"token": " France", "logprob": math.log(0.3)},
        {"token": "<|im_end|>", "logprob": math.log(0.1)},
        {"token": "\n", "logprob": math.log(0.05)},
    ]
    assert text_turn.end_probability(top) == pytest.approx(0.6)
    assert text_turn.end_probability([{"token": " the", "logprob": -0.1}]) == 0.0
    with pytest.raises(ValueError, match="malformed"):
        text_turn.end_probability([{"token": "?"}])


# -- the policy ----------------------------------------------------------------------


def test_the_text_judge_decides_before_the_audio_judge_and_is_unsure_between() -> None:
    s = TurnSettings()
    assert [text_says(s, p) for p in (None, 0.5, 0.1, 0.05, 0.019)] == [
        None, True, True, None, False,
    ]  # fmt: skip
    incomplete_audio = TurnVerdict.of(0.1)
    assert decide(s, 250, incomplete_audio, "why is the sky blue", 0.4) == EndTurn("complete", 250)
    assert decide(s, 1000, TurnVerdict.of(0.9), "what is the", 0.9) == Wait(2000)
    assert decide(s, 300, TurnVerdict.of(0.9), "set a timer", 0.01) == Wait(2000)
    # Unsure: the audio verdict, or without one the fixed window.
    assert decide(s, 250, TurnVerdict.of(0.9), "set a timer", 0.05) == EndTurn("complete", 250)
    assert decide(s, 250, None, "set a timer", 0.05) == Wait(700)
    with pytest.raises(ValueError, match="text_incomplete_p"):
        TurnSettings(text_complete_p=0.1, text_incomplete_p=0.2)


def test_an_answer_counts_only_for_the_words_it_read() -> None:
    taker = TurnTaker(TurnSettings())
    taker.begin(judge=False)
    taker.text_answer("what is the weather", 0.9)
    assert taker.step(120, "what is the weather like").decision == Wait(700)
    assert taker.step(270, "what is the weather").decision == EndTurn("complete", 270)
    taker.begin(judge=False)  # a new silence: the old answer is gone
    assert taker.step(300, "what is the weather").decision == Wait(700)
    with pytest.raises(ValueError, match="end_p"):
        taker.text_answer("x", float("nan"))


def test_a_sure_text_judge_leaves_the_audio_judge_unasked() -> None:
    e = ep.Endpointer(ep.EndpointConfig(frame_ms=30, silence_ms=700), TurnTaker(TurnSettings()))
    events = [ev for frame in [True] * 10 + [False] for ev in e.push(frame)]
    assert isinstance(events[-1], ep.SilenceStarted)
    e.transcript("tell me a joke about cats")
    e.text_verdict("tell me a joke about cats", 0.01)
    later = [ev for frame in [False] * 20 for ev in e.push(frame)]
    assert not any(isinstance(ev, ep.JudgeDue | ep.UtteranceEnded) for ev in later)


# -- the session ----------------------------------------------------------------------


async def final_delay(
    nursery: trio.Nursery,
    config: Config,
    reader: ScriptedTextJudge | None,
    judge: ScriptedTurnJudge | None = None,
) -> float:
    """Seconds from the end of the speech to the final transcript's send."""
    engines = dataclasses.replace(make_engines(), turn=judge, turn_text=reader)
    h = await open_session(nursery, config, engines)
    h.peer.send_json(START)
    t0 = trio.current_time()
    await h.stream(speech(1200) + quiet(2500))
    await h.peer.wait_for("final_transcript")
    return h.peer.time_of("final_transcript") - (t0 + 1.2)


def scripted(rule: TextRule, **kwargs: float | bool) -> ScriptedTextJudge:
    return ScriptedTextJudge(rule, **kwargs)  # type: ignore[arg-type]


async def test_the_words_end_a_turn_sooner_or_later(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config
) -> None:
    plain = await final_delay(nursery, config, None)
    done = scripted(lambda _: 0.9)
    assert await final_delay(nursery, config, done) == pytest.approx(0.2)
    # It read the speculative final's words, once.
    assert len(done.texts) == 1 and done.texts[0]
    # Not finished: the patience (2 s of silence, audio in 100 ms frames).
    assert await final_delay(nursery, config, scripted(lambda _: 0.0)) == pytest.approx(2.0)
    # Unsure, failing, not ready or too late: exactly the window without it.
    unsure = await final_delay(nursery, config, scripted(lambda _: 0.05))
    failing = await final_delay(nursery, config, scripted(lambda _: None))
    absent = await final_delay(nursery, config, scripted(lambda _: 0.9, ready=False))
    late = await final_delay(nursery, config, scripted(lambda _: 0.0, delay_s=0.8))
    assert plain == pytest.approx(0.7)
    for delay in (unsure, failing, absent, late):
        assert delay == pytest.approx(plain)
    # Unsure words leave the audio judge to decide.
    both = await final_delay(nursery, config, scripted(lambda _: 0.05), ScriptedTurnJudge())
    assert both == pytest.approx(0.2)


async def test_a_thinking_pause_after_unfinished_words_does_not_split(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config
) -> None:
    async def finals(reader: ScriptedTextJudge | None) -> list[str]:
        engines = dataclasses.replace(make_engines(), turn_text=reader)
        h = await open_session(nursery, config, engines)
        h.peer.send_json(START)
        await h.stream(speech(900) + quiet(1500) + speech(900, 700.0) + quiet(2500))
        await h.peer.wait_for("metrics")
        await trio.testing.wait_all_tasks_blocked()
        return [f["text"] for f in h.peer.of_type("final_transcript")]

    assert len(await finals(None)) == 2
    # Three words are a fragment, six a question.
    reader = scripted(lambda text: 0.9 if len(text.split()) >= 6 else 0.0)
    (whole,) = await finals(reader)
    assert len(whole.split()) == 6
    assert [len(t.split()) for t in reader.texts] == [3, 6]


# -- the real judge ----------------------------------------------------------------


async def test_smollm2_tells_a_question_from_its_beginning() -> None:
    from voicetrio.engines.turn.text_judge import LlmTextJudge

    judge = LlmTextJudge(timeout_s=5.0)
    async with trio.open_nursery() as services:
        with trio.fail_after(60):
            await judge.start(services)
        assert judge.ready
        done = await judge.end_probability("What is the capital of France?")
        cut = await judge.end_probability("What is the capital of?")
        assert done >= TurnSettings().text_complete_p > TurnSettings().text_incomplete_p > cut
        assert await judge.end_probability("...") == 0.0
        services.cancel_scope.cancel()
    with pytest.raises(TurnJudgeError, match="not running"):
        await LlmTextJudge().end_probability("hello")
