"""ConversationMemory: both bounds, oldest whole turns first."""

from __future__ import annotations

import pytest

from tests.reference_memory import ConversationMemory


def test_empty_memory_prompt() -> None:
    memory = ConversationMemory(max_turns=8, max_chars=4000)
    assert len(memory) == 0
    assert memory.turns == ()
    assert memory.messages("sys", "hi") == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
    ]


def test_turns_in_order_in_the_prompt() -> None:
    memory = ConversationMemory(max_turns=8, max_chars=4000)
    memory.add_turn("q1", "a1")
    memory.add_turn("q2", "a2")
    assert len(memory) == 2
    assert memory.turns == (("q1", "a1"), ("q2", "a2"))
    assert memory.total_chars == 8
    assert memory.messages("sys", "q3") == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "q3"},
    ]


def test_max_turns_drops_the_oldest() -> None:
    memory = ConversationMemory(max_turns=2, max_chars=4000)
    for n in range(1, 4):
        memory.add_turn(f"q{n}", f"a{n}")
    assert memory.turns == (("q2", "a2"), ("q3", "a3"))


def test_max_chars_drops_the_oldest_whole_turns() -> None:
    memory = ConversationMemory(max_turns=8, max_chars=10)
    memory.add_turn("ab", "cd")
    memory.add_turn("ef", "gh")
    assert memory.total_chars == 8
    memory.add_turn("ij", "kl")  # 12 > 10
    assert memory.turns == (("ef", "gh"), ("ij", "kl"))
    assert memory.total_chars == 8


def test_max_chars_is_inclusive() -> None:
    memory = ConversationMemory(max_turns=8, max_chars=8)
    memory.add_turn("ab", "cd")
    memory.add_turn("ef", "gh")
    assert len(memory) == 2


def test_an_oversized_newest_turn_is_kept_alone() -> None:
    memory = ConversationMemory(max_turns=8, max_chars=5)
    memory.add_turn("ab", "c")
    memory.add_turn("hello", "world")
    assert memory.turns == (("hello", "world"),)
    assert memory.total_chars == 10
    memory.add_turn("a", "b")
    assert memory.turns == (("a", "b"),)
    assert memory.total_chars == 2


def test_zero_chars_keeps_just_the_last_turn() -> None:
    memory = ConversationMemory(max_turns=8, max_chars=0)
    memory.add_turn("q1", "a1")
    memory.add_turn("q2", "a2")
    assert memory.turns == (("q2", "a2"),)


def test_zero_turns_keeps_nothing() -> None:
    memory = ConversationMemory(max_turns=0, max_chars=4000)
    memory.add_turn("q1", "a1")
    assert len(memory) == 0
    assert memory.total_chars == 0
    assert memory.messages("sys", "q2") == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q2"},
    ]


def test_clear() -> None:
    memory = ConversationMemory(max_turns=8, max_chars=4000)
    memory.add_turn("q1", "a1")
    memory.clear()
    assert memory.turns == ()
    assert memory.total_chars == 0


def test_negative_bounds_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_turns"):
        ConversationMemory(max_turns=-1, max_chars=10)
    with pytest.raises(ValueError, match="max_chars"):
        ConversationMemory(max_turns=1, max_chars=-1)
