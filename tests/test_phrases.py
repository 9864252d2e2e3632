"""PhraseAggregator: the three cut rules, exact phrases, and a randomised
no-text-lost property (hypothesis is not a dependency; a seeded loop is)."""

from __future__ import annotations

import random

import pytest

from voicetrio.core.phrases import PhraseAggregator


def test_sentences_split_at_terminator_and_whitespace() -> None:
    agg = PhraseAggregator()
    assert agg.push("Hello there. How", 0) == ["Hello there."]
    assert agg.pending == "How"
    assert agg.push(" are you? Fine", 10) == ["How are you?"]
    assert agg.flush() == ["Fine"]
    assert agg.pending == ""


def test_every_terminator_and_any_whitespace() -> None:
    agg = PhraseAggregator()
    assert agg.push("a; b: c! d? e.\nf", 0) == ["a;", "b:", "c!", "d?", "e."]
    assert agg.pending == "f"


def test_terminator_at_the_end_waits_for_the_next_delta() -> None:
    agg = PhraseAggregator()
    assert agg.push("Hello.", 0) == []
    assert agg.pending == "Hello."
    assert agg.push(" Bye", 5) == ["Hello."]
    assert agg.pending == "Bye"


def test_terminator_glued_to_text_does_not_split() -> None:
    agg = PhraseAggregator()
    assert agg.push("It costs 3.5 dollars, e.g.x works at 12:30. Ok", 0) == [
        "It costs 3.5 dollars, e.g.x works at 12:30."
    ]
    assert agg.push("?!", 1) == []
    assert agg.push(" yes", 2) == ["Ok?!"]


def test_runs_of_terminators_stay_together() -> None:
    agg = PhraseAggregator()
    assert agg.push("Wait... what?! No", 0) == ["Wait...", "what?!"]


def test_length_cut_at_the_last_word_boundary() -> None:
    agg = PhraseAggregator(max_length=20)
    assert agg.push("the quick brown fox jumps over the lazy dog", 0) == [
        "the quick brown fox",
        "jumps over the lazy",
    ]
    assert agg.pending == "dog"


def test_boundary_exactly_at_max_length() -> None:
    agg = PhraseAggregator(max_length=5)
    assert agg.push("abcde fgh", 0) == ["abcde"]
    assert agg.pending == "fgh"


def test_max_length_text_waits_to_see_the_next_character() -> None:
    agg = PhraseAggregator(max_length=5)
    assert agg.push("abcde", 0) == []
    assert agg.push("f", 1) == ["abcde"]  # one word longer than the limit: hard cut
    assert agg.pending == "f"


def test_hard_cut_of_a_long_word() -> None:
    agg = PhraseAggregator(max_length=10)
    assert agg.push("supercalifragilistic ok", 0) == ["supercalif", "ragilistic"]
    assert agg.pending == "ok"


def test_terminator_beyond_max_length_loses_to_the_length_rule() -> None:
    agg = PhraseAggregator(max_length=10)
    assert agg.push("aaaa bbbbbb. c", 0) == ["aaaa", "bbbbbb."]
    assert agg.pending == "c"


def test_terminator_ending_exactly_at_max_length() -> None:
    agg = PhraseAggregator(max_length=7)
    assert agg.push("bbbbbb. c", 0) == ["bbbbbb."]


def test_phrases_are_stripped() -> None:
    agg = PhraseAggregator()
    assert agg.push("  Hi!  There ", 0) == ["Hi!"]
    assert agg.pending == "There "
    assert agg.flush() == ["There"]


def test_gap_deadline_and_tick() -> None:
    agg = PhraseAggregator(gap_ms=700)
    assert agg.deadline_ms() is None
    assert agg.push("Hello there", 1000) == []
    assert agg.deadline_ms() == 1700
    assert agg.tick(1699.9) == []
    assert agg.tick(1700) == ["Hello there"]
    assert agg.deadline_ms() is None
    assert agg.pending == ""
    assert agg.tick(5000) == []


def test_each_delta_moves_the_deadline() -> None:
    agg = PhraseAggregator(gap_ms=700)
    agg.push("a", 0)
    agg.push("b", 500)
    assert agg.deadline_ms() == 1200
    assert agg.tick(700) == []
    assert agg.tick(1200) == ["ab"]


def test_empty_delta_does_not_move_the_deadline() -> None:
    agg = PhraseAggregator(gap_ms=700)
    agg.push("a", 0)
    assert agg.push("", 500) == []
    assert agg.deadline_ms() == 700


def test_late_delta_flushes_the_text_before_the_gap() -> None:
    agg = PhraseAggregator(gap_ms=700)
    assert agg.push("Hello", 0) == []
    assert agg.push(" world", 800) == ["Hello"]
    assert agg.pending == "world"
    assert agg.deadline_ms() == 1500


def test_blank_text_is_never_pending_or_emitted() -> None:
    agg = PhraseAggregator()
    assert agg.push("   \n", 0) == []
    assert agg.pending == ""
    assert agg.deadline_ms() is None
    assert agg.tick(10_000) == []
    assert agg.flush() == []


def test_flush_returns_the_rest_once() -> None:
    agg = PhraseAggregator()
    assert agg.push("Last words.", 0) == []
    assert agg.flush() == ["Last words."]
    assert agg.flush() == []


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_length"):
        PhraseAggregator(max_length=0)
    with pytest.raises(ValueError, match="gap_ms"):
        PhraseAggregator(gap_ms=-1)


# --------------------------------------------------------------------------
# Property: no text lost or duplicated, whatever the chunking.

_PIECES = [
    "word", "a", "longerwordthanusual", "3.5", "e.g.x", "12:30", "Hi", "ok",
    ".", "?", "!", ";", ":", "...", "?!", " ", " ", " ", "  ", "\n", "\t", "é", "日本",
]  # fmt: skip


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randrange(0, 80)))


def _random_chunks(rng: random.Random, text: str) -> list[str]:
    chunks: list[str] = []
    i = 0
    while i < len(text):
        size = rng.randrange(0, 12)  # zero-length deltas included
        chunks.append(text[i : i + size])
        i += size
    return chunks


def _assert_same_text(phrases: list[str], text: str, max_length: int) -> None:
    """``phrases`` are ``text`` in order, differing only by whitespace at joints."""
    pos = 0
    for phrase in phrases:
        assert phrase
        assert phrase == phrase.strip()
        assert len(phrase) <= max_length
        while text[pos].isspace():
            pos += 1
        assert text.startswith(phrase, pos), (phrase, text[pos:])
        pos += len(phrase)
    assert not text[pos:].strip()


def _run(agg: PhraseAggregator, chunks: list[str]) -> list[str]:
    phrases: list[str] = []
    for chunk in chunks:
        phrases += agg.push(chunk, 0)
    return phrases + agg.flush()


@pytest.mark.parametrize("seed", range(400))
def test_no_text_lost_and_chunking_does_not_matter(seed: int) -> None:
    rng = random.Random(seed)
    text = _random_text(rng)
    max_length = rng.randrange(1, 40)
    whole = _run(PhraseAggregator(max_length=max_length), [text])
    _assert_same_text(whole, text, max_length)
    chunked = _run(PhraseAggregator(max_length=max_length), _random_chunks(rng, text))
    assert chunked == whole


@pytest.mark.parametrize("seed", range(200))
def test_no_text_lost_with_gap_flushes(seed: int) -> None:
    rng = random.Random(seed)
    text = _random_text(rng)
    max_length = rng.randrange(1, 40)
    agg = PhraseAggregator(max_length=max_length, gap_ms=100)
    phrases: list[str] = []
    now = 0.0
    for chunk in _random_chunks(rng, text):
        now += rng.choice([0.0, 10.0, 99.0, 100.0, 250.0])
        if rng.random() < 0.3:
            phrases += agg.tick(now)
        phrases += agg.push(chunk, now)
        deadline = agg.deadline_ms()
        assert (deadline is None) == (agg.pending == "")
    phrases += agg.flush()
    _assert_same_text(phrases, text, max_length)


def test_the_first_phrase_can_be_shorter() -> None:
    agg = PhraseAggregator(max_length=30, first_max_length=12)
    text = "one two three four five six seven eight nine ten eleven twelve thirteen"
    out: list[str] = []
    for i, word in enumerate(text.split()):
        out += agg.push(("" if i == 0 else " ") + word, now_ms=float(i))
    out += agg.flush()
    assert out[0] == "one two"  # cut at the last space within 12 characters
    assert all(len(p) <= 30 for p in out[1:]) and len(out[1]) > 12
    assert " ".join(out) == text
