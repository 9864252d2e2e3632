"""The turn policy: when silence, a judge's verdict and the words end a turn (exact ms)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicetrio.core.turn_policy import (
    EndTurn,
    Step,
    TurnSettings,
    TurnTaker,
    TurnVerdict,
    Wait,
    decide,
    unfinished,
)

S = TurnSettings()  # 250 complete, 2000 incomplete, 700 fallback; asked once, at 100
#: Asked at once when silence begins, and again every 400 ms.
REASK = TurnSettings(judge_after_ms=0, judge_interval_ms=400)
COMPLETE = TurnVerdict(0.9, True)
INCOMPLETE = TurnVerdict(0.1, False)

# ------------------------------------------------------------------ verdicts


def test_a_verdict_is_complete_at_or_above_its_threshold() -> None:
    assert TurnVerdict.of(0.5) == TurnVerdict(0.5, True)
    assert TurnVerdict.of(0.49) == TurnVerdict(0.49, False)
    assert TurnVerdict.of(0.7, 0.8) == TurnVerdict(0.7, False)
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match="probability"):
            TurnVerdict.of(bad)


def test_settings_have_units_that_make_sense() -> None:
    assert (S.complete_silence_ms, S.incomplete_silence_ms, S.fallback_silence_ms) == (
        250,
        2000,
        700,
    )
    assert (S.judge_after_ms, S.judge_interval_ms, S.transcript_hints) == (100, 0, True)
    with pytest.raises(ValueError, match="fallback_silence_ms must be positive"):
        TurnSettings(fallback_silence_ms=0)
    with pytest.raises(ValueError, match="judge_interval_ms must not be negative"):
        TurnSettings(judge_interval_ms=-1)
    # A judge never makes a finished turn slower than no judge, and nothing
    # waits beyond the patience limit.
    with pytest.raises(ValueError, match="complete_silence_ms <= fallback_silence_ms"):
        TurnSettings(complete_silence_ms=800)
    with pytest.raises(ValueError, match="<= incomplete_silence_ms"):
        TurnSettings(incomplete_silence_ms=600)
    TurnSettings(complete_silence_ms=700, fallback_silence_ms=700, incomplete_silence_ms=700)


# ------------------------------------------------------------- the words so far


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital of",
        "What is the capital of.",  # Whisper's period on a cut sentence
        "I would like to",
        "I would like to.",
        "Book a table for two and",
        "Tell me about the",
        "Is it cheaper than",
        "Turn on the lights in my",
        "I was thinking,",
        "Let me see...",
        "Let me see\u2026",
        "Well -",
        "Could you check um",
        '"Take me to the"',
        "Play something by the",
        "Coffee or",
        "I'll go if",
    ],
)
def test_a_transcript_that_stops_mid_phrase_is_unfinished(text: str) -> None:
    assert unfinished(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "What is the capital of France?",
        "I would like to book a table.",
        "Turn the lights on.",  # "on" ends real requests: not in the list
        "Log me in.",
        "I think so.",
        "Stop",
        "Thanks!",
        "?!",
    ],
)
def test_a_transcript_that_ends_a_phrase_is_not_unfinished(text: str) -> None:
    assert not unfinished(text)


def test_an_ellipsis_trails_off_even_without_words() -> None:
    assert unfinished("...")


def test_a_question_mark_does_not_finish_a_preposition() -> None:
    # Whisper writes "?" on cut questions ("What is the capital of?"), so the
    # few questions that do end in a preposition wait the patience limit.
    assert unfinished("What is the capital of?")
    assert unfinished("How far is the moon from?")
    assert unfinished("Where are you from?")


# ------------------------------------------------------------------ the rule


def test_no_verdict_is_the_fixed_window() -> None:
    assert decide(S, 0, None) == Wait(700)
    assert decide(S, 690, None) == Wait(700)
    assert decide(S, 700, None) == EndTurn("fallback", 700)
    assert decide(S, 5000, None, "Hello there.") == EndTurn("fallback", 5000)


def test_a_complete_verdict_ends_after_a_short_silence() -> None:
    assert decide(S, 30, COMPLETE) == Wait(250)
    assert decide(S, 240, COMPLETE) == Wait(250)
    assert decide(S, 250, COMPLETE) == EndTurn("complete", 250)
    # A slow verdict ends the turn the moment it lands.
    assert decide(S, 610, COMPLETE) == EndTurn("complete", 610)


def test_an_incomplete_verdict_waits_up_to_the_patience_limit() -> None:
    assert decide(S, 30, INCOMPLETE) == Wait(2000)
    assert decide(S, 1500, INCOMPLETE) == Wait(2000)
    assert decide(S, 1999, INCOMPLETE) == Wait(2000)
    assert decide(S, 2000, INCOMPLETE) == EndTurn("patience", 2000)


def test_unfinished_words_veto_a_complete_verdict_and_the_fallback() -> None:
    assert decide(S, 300, COMPLETE, "What is the capital of") == Wait(2000)
    assert decide(S, 800, None, "I would like to") == Wait(2000)
    assert decide(S, 2000, COMPLETE, "and the") == EndTurn("patience", 2000)
    # Finished words add nothing: the verdict decides.
    assert decide(S, 250, COMPLETE, "What is the capital of France?") == EndTurn("complete", 250)
    assert decide(S, 250, INCOMPLETE, "What is the capital of France?") == Wait(2000)


def test_without_hints_the_words_are_not_read() -> None:
    plain = TurnSettings(transcript_hints=False)
    assert decide(plain, 250, COMPLETE, "What is the capital of") == EndTurn("complete", 250)
    assert decide(plain, 700, None, "I would like to") == EndTurn("fallback", 700)


def test_negative_silence_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="negative"):
        decide(S, -1, None)


# Fixed examples, no example database: the same cases on every run.
exact = settings(derandomize=True, database=None, max_examples=300)

verdicts = st.one_of(
    st.none(),
    st.builds(TurnVerdict.of, st.floats(0.0, 1.0)),
)
transcripts = st.one_of(
    st.none(),
    st.sampled_from(
        ["", "Hello.", "What is the capital of", "and the", "Is it on?", "I was,", "Stop"]
    ),
    st.text(max_size=30),
)


@st.composite
def turn_settings(draw: st.DrawFn) -> TurnSettings:
    short, middle, long = sorted(draw(st.lists(st.integers(1, 5000), min_size=3, max_size=3)))
    return TurnSettings(
        complete_silence_ms=short,
        fallback_silence_ms=middle,
        incomplete_silence_ms=long,
        judge_after_ms=draw(st.integers(0, 1000)),
        judge_interval_ms=draw(st.integers(0, 2000)),
        transcript_hints=draw(st.booleans()),
    )


@exact
@given(turn_settings(), st.integers(0, 6000), verdicts, transcripts)
def test_the_rule_is_a_deadline_that_only_new_news_moves(
    s: TurnSettings, silence: int, verdict: TurnVerdict | None, transcript: str | None
) -> None:
    decision = decide(s, silence, verdict, transcript)
    if isinstance(decision, Wait):
        # Waiting names a deadline in the future, and at it the turn ends.
        assert decision.until_ms > silence
        assert isinstance(decide(s, decision.until_ms, verdict, transcript), EndTurn)
        assert decision.ask_at_ms is None
    else:
        assert decision.silence_ms == silence
        # Once over, over: more silence with the same news ends it too.
        assert decide(s, silence + 1, verdict, transcript) == EndTurn(
            decision.reason, silence + 1
        )
    # Never before the shortest window, never after the longest.
    if silence < s.complete_silence_ms:
        assert isinstance(decision, Wait)
    if silence >= s.incomplete_silence_ms:
        assert isinstance(decision, EndTurn)
    # Unfinished words keep the turn open to the limit, whatever the judge said.
    if s.transcript_hints and transcript and unfinished(transcript):
        limit = s.incomplete_silence_ms
        expected = EndTurn("patience", silence) if silence >= limit else Wait(limit)
        assert decision == expected


@exact
@given(turn_settings(), st.integers(0, 6000), transcripts)
def test_a_judge_can_only_speed_up_a_finished_turn_or_delay_a_doubtful_one(
    s: TurnSettings, silence: int, transcript: str | None
) -> None:
    without = decide(s, silence, None, transcript)
    complete = decide(s, silence, COMPLETE, transcript)
    incomplete = decide(s, silence, INCOMPLETE, transcript)
    # Ends without a judge -> ends with a complete verdict; an incomplete one
    # ending means the fixed window would have ended it too.
    if isinstance(without, EndTurn):
        assert isinstance(complete, EndTurn)
    if isinstance(incomplete, EndTurn):
        assert isinstance(without, EndTurn)


# ----------------------------------------------------------- the state machine


def run(taker: TurnTaker, silences: range, transcript: str | None = None) -> list[tuple[int, Step]]:
    """Step through ``silences`` (ms) and keep the steps that ask or end."""
    out: list[tuple[int, Step]] = []
    for ms in silences:
        step = taker.step(ms, transcript)
        if step.ask is not None or isinstance(step.decision, EndTurn):
            out.append((ms, step))
        if isinstance(step.decision, EndTurn):
            break
    return out


FRAMES = range(30, 3000, 30)  # 30 ms frames of silence, as the endpointer counts


def test_the_judge_is_asked_once_at_100_ms_and_a_complete_turn_ends_at_250() -> None:
    taker = TurnTaker(S)
    taker.begin(judge=True)
    assert taker.step(30) == Step(Wait(700, 100))  # no verdict yet: the fixed window holds
    assert taker.step(90) == Step(Wait(700, 100))
    assert taker.step(120) == Step(Wait(700), ask=1)
    assert taker.waiting_for_judge
    assert taker.step(150) == Step(Wait(700))  # in flight
    taker.answer(1, COMPLETE)  # lands 60 ms after the ask
    assert taker.verdict == COMPLETE
    assert taker.step(180) == Step(Wait(250))  # asked once: no next ask
    assert taker.step(240) == Step(Wait(250))
    assert taker.step(270) == Step(EndTurn("complete", 270))
    assert not taker.active


def test_an_incomplete_turn_waits_the_patience_limit_without_asking_again() -> None:
    taker = TurnTaker(S)
    taker.begin(judge=True)
    asks: list[int] = []
    end: EndTurn | None = None
    for ms in FRAMES:
        step = taker.step(ms)
        if step.ask is not None:
            asks.append(ms)
            taker.answer(step.ask, INCOMPLETE)  # an instant judge
        if isinstance(step.decision, EndTurn):
            end = step.decision
            break
    assert asks == [120]
    assert end == EndTurn("patience", 2010)


def test_with_an_interval_an_incomplete_turn_is_asked_again_until_the_limit() -> None:
    taker = TurnTaker(REASK)
    taker.begin(judge=True)
    asks: list[int] = []
    end: EndTurn | None = None
    for ms in FRAMES:
        step = taker.step(ms)
        if step.ask is not None:
            asks.append(ms)
            taker.answer(step.ask, INCOMPLETE)
        if isinstance(step.decision, EndTurn):
            end = step.decision
            break
    # Asked at 30, then on the first frame 400 ms after each ask.
    assert asks == [30, 450, 870, 1290, 1710]
    assert end == EndTurn("patience", 2010)


def test_between_asks_the_wait_says_when_the_next_is_due() -> None:
    taker = TurnTaker(REASK)
    taker.begin(judge=True)
    ask = taker.step(30).ask
    assert ask is not None
    taker.answer(ask, INCOMPLETE)
    assert taker.step(60) == Step(Wait(2000, 430))


def test_a_verdict_that_turns_complete_ends_the_pause_then() -> None:
    taker = TurnTaker(REASK)
    taker.begin(judge=True)
    answers = iter([INCOMPLETE, INCOMPLETE, COMPLETE])
    steps = []
    for ms in FRAMES:
        step = taker.step(ms)
        if step.ask is not None:
            taker.answer(step.ask, next(answers))
        steps.append((ms, step))
        if isinstance(step.decision, EndTurn):
            break
    # The third ask (870 ms) says complete, past 250: the next frame ends it.
    assert [ms for ms, step in steps if step.ask is not None] == [30, 450, 870]
    assert steps[-1] == (900, Step(EndTurn("complete", 900)))


def test_a_slow_judge_delays_the_next_ask_and_the_fallback_window_holds_meanwhile() -> None:
    taker = TurnTaker(REASK)
    taker.begin(judge=True)
    assert taker.step(30).ask == 1
    for ms in range(60, 700, 30):
        assert taker.step(ms) == Step(Wait(700))  # never a second run in flight
    assert taker.step(720) == Step(EndTurn("fallback", 720))
    taker.answer(1, INCOMPLETE)  # too late: the turn is over
    assert not taker.active


def test_a_late_answer_asks_again_at_once_if_the_interval_has_passed() -> None:
    taker = TurnTaker(REASK)
    taker.begin(judge=True)
    assert taker.step(30).ask == 1
    taker.step(450)
    taker.answer(1, INCOMPLETE)
    assert taker.step(480) == Step(Wait(2000), ask=2)


def test_a_failed_run_stops_the_asking_and_the_fallback_window_applies() -> None:
    taker = TurnTaker(REASK)
    taker.begin(judge=True)
    assert run(taker, FRAMES[:1]) == [(30, Step(Wait(700), ask=1))]
    taker.answer(1, None)
    assert run(taker, FRAMES[1:]) == [(720, Step(EndTurn("fallback", 720)))]


def test_a_failure_after_a_verdict_keeps_the_verdict() -> None:
    taker = TurnTaker(REASK)
    taker.begin(judge=True)
    taker.answer(taker.step(30).ask or 0, INCOMPLETE)
    taker.answer(taker.step(450).ask or 0, None)
    assert taker.verdict == INCOMPLETE
    assert run(taker, range(480, 3000, 30)) == [(2010, Step(EndTurn("patience", 2010)))]


def test_without_a_judge_nothing_is_asked() -> None:
    taker = TurnTaker(S)
    taker.begin(judge=False)
    assert run(taker, FRAMES) == [(720, Step(EndTurn("fallback", 720)))]
    taker.begin(judge=False)
    assert run(taker, FRAMES, "Take me to the") == [(2010, Step(EndTurn("patience", 2010)))]


def test_unfinished_words_save_the_judge_a_run_until_they_change() -> None:
    taker = TurnTaker(S)
    taker.begin(judge=True)
    # The last partial says "... of": the judge could not end the turn, so it
    # is not asked. The speculative final then says "... of France?".
    assert taker.step(120, "What is the capital of") == Step(Wait(2000))
    assert taker.step(150, "What is the capital of") == Step(Wait(2000))
    assert taker.step(180, "What is the capital of France?") == Step(Wait(700), ask=1)
    taker.answer(1, COMPLETE)
    assert taker.step(210, "What is the capital of France?") == Step(Wait(250))
    assert taker.step(270, "What is the capital of France?") == Step(EndTurn("complete", 270))


def test_speech_resuming_makes_the_pending_answer_stale() -> None:
    taker = TurnTaker(S)
    taker.begin(judge=True)
    assert taker.step(120).ask == 1
    taker.resume()
    assert not taker.active
    taker.answer(1, COMPLETE)  # from the earlier silence
    taker.begin(judge=True)
    assert taker.verdict is None
    assert taker.step(120) == Step(Wait(700), ask=2)
    taker.answer(1, COMPLETE)  # still stale
    assert taker.verdict is None and taker.waiting_for_judge
    taker.answer(2, INCOMPLETE)
    assert taker.verdict == INCOMPLETE


def test_misuse_is_loud() -> None:
    taker = TurnTaker(S)
    with pytest.raises(RuntimeError, match="begin"):
        taker.step(30)
    taker.begin(judge=False)
    taker.step(90)
    with pytest.raises(ValueError, match="went back"):
        taker.step(60)
    taker.answer(7, COMPLETE)  # an answer for no ask: ignored
    assert taker.verdict is None


@exact
@given(
    st.sampled_from([S, REASK]),
    st.lists(st.one_of(st.none(), st.floats(0.0, 1.0)), max_size=12),
    st.integers(1, 200),
    st.booleans(),
)
def test_the_machine_never_runs_two_asks_and_ends_within_the_limits(
    s: TurnSettings, answers: list[float | None], lag_frames: int, hints_unfinished: bool
) -> None:
    """Whatever the judge answers and however slowly (``lag_frames`` frames
    per run), at most one run is in flight, the first ask waits for
    ``judge_after_ms``, later ones are the interval apart (none without
    one), and the turn ends between the shortest and the longest window."""
    taker = TurnTaker(s)
    taker.begin(judge=True)
    transcript = "Take me to the" if hints_unfinished else "Take me home."
    queue = list(answers)
    in_flight: tuple[int, int] | None = None
    asked: list[int] = []
    end: EndTurn | None = None
    for frame in range(1, 200):
        ms = frame * 30
        if in_flight is not None and frame >= in_flight[1]:
            answer = queue.pop(0) if queue else 0.2
            taker.answer(in_flight[0], None if answer is None else TurnVerdict.of(answer))
            in_flight = None
        step = taker.step(ms, transcript)
        if step.ask is not None:
            assert in_flight is None
            in_flight = (step.ask, frame + lag_frames)
            asked.append(ms)
        if isinstance(step.decision, EndTurn):
            end = step.decision
            break
    assert end is not None
    assert s.complete_silence_ms <= end.silence_ms < s.incomplete_silence_ms + 30
    assert all(ms >= s.judge_after_ms for ms in asked)
    if s.judge_interval_ms:
        assert all(b - a >= s.judge_interval_ms for a, b in itertools.pairwise(asked))
    else:
        assert len(asked) <= 1
    if hints_unfinished:
        assert asked == [] and end == EndTurn("patience", 2010)
