"""The scoring of bench/answers.py: lenient on form, strict on content, and
the spoken-style rule (no lists, no markdown, at most two sentences)."""

from __future__ import annotations

import datetime as dt

import pytest

from bench.answer_scoring import (
    Turn,
    correct,
    count_sentences,
    load_items,
    select,
    spoken_style,
)

# A Wednesday.
NOW = dt.datetime(2026, 12, 2, 16, 50)


def by_id(item_id: str) -> Turn:
    item = next(i for i in load_items() if i.id == item_id)
    return next(t for t in item.turns if t.scored)


def test_the_question_set_is_large_and_varied() -> None:
    items = load_items()
    assert len(items) >= 40
    categories = {i.category for i in items}
    assert {"fact", "arithmetic", "advice", "small talk", "follow-up", "tool"} <= categories
    assert sum(len(i.turns) > 1 for i in items) >= 5
    tools = {tool for i in items for tool in i.tools}
    assert tools == {"clock", "timer", "calculator"}


@pytest.mark.parametrize(
    ("item_id", "answer", "right"),
    [
        ("fact-spider", "A spider has eight legs.", True),
        ("fact-spider", "Spiders have 8 legs.", True),
        ("fact-spider", "A spider has six legs, or eight.", False),  # rejected
        ("fact-spider", "Spiders are arachnids.", False),
        ("math-minutes", "There are 120 minutes in two hours.", True),
        ("math-minutes", "One hundred and twenty minutes.", True),
        ("math-minutes", "Two hours is 240 minutes, or 120.", False),
        ("fact-romeo", "William Shakespeare wrote it.", True),
        ("fact-romeo", "Benvolkke, a Dutch playwright.", False),
        ("calc-add", "1234 plus 5678 is 6,912.", True),
        ("calc-add", "It is 6812.", False),
        ("fact-gold", "Its symbol is Au.", True),
        ("fact-gold", "Gold is a precious metal, often found in Australia.", False),
    ],
)
def test_accept_and_reject(item_id: str, answer: str, right: bool) -> None:
    assert correct(by_id(item_id), answer, NOW) is right


@pytest.mark.parametrize(
    ("answer", "right"),
    [
        ("It's 4:50 in the afternoon.", True),
        ("It is 16:51.", True),
        ("It's 4:48 pm.", True),
        ("It's 4:50 am.", False),
        ("It's 4:45.", False),
        ("It is about 5 o'clock.", False),
        ("I don't have access to the time, but it might be 12:00.", False),
        ("It is 4 pm.", False),  # 16:00, fifty minutes off
    ],
)
def test_clock_time_is_compared_with_the_moment_of_asking(answer: str, right: bool) -> None:
    assert correct(by_id("tool-time"), answer, NOW) is right


def test_weekday_and_date() -> None:
    assert correct(by_id("tool-weekday"), "Today is Wednesday.", NOW)
    assert not correct(by_id("tool-weekday"), "It's Monday or Wednesday.", NOW)
    assert not correct(by_id("tool-weekday"), "Today is Thursday.", NOW)
    assert correct(by_id("tool-date"), "It's December 2nd, 2026.", NOW)
    assert correct(by_id("tool-date"), "Today is the second of December.", NOW)
    assert not correct(by_id("tool-date"), "It's December 12th.", NOW)
    assert not correct(by_id("tool-date"), "It's November 2nd.", NOW)


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("The capital of France is Paris.", 1),
        ("Paris. It is lovely in spring!", 2),
        ("Dr. Smith lives on Elm St. in town.", 1),
        ("J. K. Rowling wrote it. She is British.", 2),
        ("Pi is about 3.14, and e is 2.72.", 1),
        ("No stop at the end", 1),
        ("One. Two? Three!", 3),
        ('Is it? "Yes." Fine.', 3),
        ("", 0),
    ],
)
def test_count_sentences(text: str, sentences: int) -> None:
    assert count_sentences(text) == sentences


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("Try these:\n- rest\n- water", "list"),
        ("1. Rest 2. Drink water.", "list"),
        ("Choose:\n(1) tea\n(2) soup", "list"),
        ("It is **Paris**.", "markdown"),
        ("# Answer\nParis.", "markdown"),
        ("Use `print`.", "markdown"),
        ("Paris! 🇫🇷", "emoji"),
        ("One. Two. Three.", "3 sentences"),
        ("", "empty"),
    ],
)
def test_spoken_style_problems(answer: str, problem: str) -> None:
    style = spoken_style(answer)
    assert not style.ok
    assert problem in style.problems


def test_spoken_style_accepts_a_short_plain_answer() -> None:
    assert spoken_style("The capital of France is Paris. It has about 2 million people.").ok
    assert spoken_style("Sure! Drink water and rest, 8 hours if you can.").ok
    cut = spoken_style("A long answer that went on", cut_off=True)
    assert not cut.ok
    assert cut.problems == ("cut off at the token cap",)


def test_select_by_id_category_and_tools() -> None:
    items = load_items()
    assert [i.id for i in select(items, "fact-romeo,multi-name")] == ["fact-romeo", "multi-name"]
    assert {i.category for i in select(items, "advice")} == {"advice"}
    assert all(i.tools for i in select(items, "tools"))
    assert len(select(items, "")) == len(items)
    with pytest.raises(ValueError, match="nope"):
        select(items, "fact-romeo,nope")


def test_a_timer_is_right_only_if_the_session_holds_it() -> None:
    turn = by_id("tool-timer")
    said = "Your five minute timer is set."
    assert correct(turn, said, NOW, timers_set_s=[300.0])
    assert not correct(turn, said, NOW)  # said, not done
    assert not correct(turn, said, NOW, timers_set_s=[30.0])
    assert not correct(
        turn, "I can't set timers, but five minutes is short.", NOW, timers_set_s=[300.0]
    )
