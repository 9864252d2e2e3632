"""Capacity in talkers and admission by live load (sans-IO), and the probe turn."""

from __future__ import annotations

import os

import pytest
import trio

from voicetrio.core.capacity import (
    MAX_DECODE_WAIT_S,
    MAX_LLM_WAIT_S,
    CapacityModel,
    Load,
    TurnCost,
    load,
    refusal,
)
from voicetrio.engines.fake import FakeAsr, FakeLlm, FakeTts
from voicetrio.engines.probe import PROBE_QUESTIONS, cpu_meter, probe_turn, process_cpu_s


def test_talkers_from_the_cpu_a_second_of_talk_costs() -> None:
    model = CapacityModel(cores=2, utilization=0.5, pause_s=1.5)
    # 2.5 CPU s for a 3.5 s question, a 5 s answer and the pause: 0.25 CPU a second.
    turn = TurnCost(cpu_s=2.5, question_s=3.5, answer_s=5.0)
    assert turn.cpu_per_second(1.5) == 0.25
    assert model.talkers(turn) == 4  # 2 cores x 0.5 / 0.25
    assert model.talkers(TurnCost(2.4, 3.5, 5.0)) == 4  # 4.17, rounded down
    # An answer twice as long, for about twice the CPU: the same.
    assert model.talkers(TurnCost(4.5, 3.5, 13.0)) == 4
    assert model.talkers(TurnCost(50.0, 3.5, 5.0)) == 1  # never fewer than one
    with pytest.raises(ValueError):
        model.talkers(TurnCost(0.0, 3.5, 5.0))
    with pytest.raises(ValueError):
        CapacityModel(cores=2, utilization=1.5)


@pytest.mark.parametrize(
    ("figures", "reason"),
    [
        (Load(5, 6, 0.1, 0.2), None),
        (Load(6, 6, 0.0, 0.0), "at capacity (6 talkers)"),
        (Load(1, 6, MAX_DECODE_WAIT_S + 0.1, 0.0), "speech recognition is behind"),
        (Load(1, 6, 0.0, MAX_LLM_WAIT_S + 0.1), "language model is behind"),
    ],
)
def test_refusal(figures: Load, reason: str | None) -> None:
    said = refusal(figures)
    if reason is None:
        assert said is None
    else:
        assert said is not None and reason in said


def test_load_is_the_fullest_figure() -> None:
    assert load(Load(3, 6, 0.0, 0.0)) == 0.5
    assert load(Load(3, 6, MAX_DECODE_WAIT_S, 0.0)) == 1.0
    assert load(Load(0, 6, 0.0, MAX_LLM_WAIT_S * 2)) == 2.0


def test_process_cpu_of_this_process_and_of_none() -> None:
    assert process_cpu_s(os.getpid()) >= 0.0
    assert process_cpu_s(2**22 + 12345) == 0.0  # no such process


async def test_probe_turn_drives_every_engine_through_each_question(
    autojump_clock: trio.testing.MockClock,
) -> None:
    asr, llm, tts = FakeAsr(delay_s=0), FakeLlm(first_token_s=0, token_s=0), FakeTts(delay_s=0)
    ticks = iter(float(n) for n in range(100))
    cost = await probe_turn(asr, llm, tts, system_prompt="Be brief.", cpu=lambda: next(ticks))
    questions = len(PROBE_QUESTIONS)
    # The meter is read once before and once after; the cost is per question.
    assert cost.cpu_s == 1.0 / questions
    assert cost.question_s > 0 and cost.answer_s > cost.question_s
    assert asr.final_calls == questions and asr.calls > 2 * questions  # partials, then finals
    assert llm.opened == questions
    assert tts.calls > 2 * questions  # each question, then its answer's phrases


async def test_probe_turn_in_lean_mode_has_no_reply() -> None:
    asr, tts = FakeAsr(delay_s=0), FakeTts(delay_s=0)
    meter = cpu_meter(lambda: [])
    cost = await probe_turn(asr, None, tts, system_prompt="", cpu=meter)
    assert cost.cpu_s > 0 and cost.answer_s == 0
    assert tts.calls == len(PROBE_QUESTIONS)
