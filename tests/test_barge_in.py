"""Barge-in: stop words at once, real turns after enough speech and words;
backchannels, coughs and the reply's own echo never."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicetrio.core.barge_in import (
    BargeInDecision,
    BargeInSettings,
    Heard,
    Ignore,
    Interrupt,
    Listen,
    SpokenPhrase,
    counted_words,
    decide,
    echo_mask,
    recent_reply,
    words,
)

S = BargeInSettings()  # 500 ms, 2 words, 1000 ms of echo margin
REPLY = "The capital of France is Paris, a city of about two million people."

# Fixed examples, no example database: the same cases on every run.
exact = settings(derandomize=True, database=None, max_examples=300)
#: Reply words for the echo properties: plain words, stop words, backchannels.
VOCABULARY = (
    "the", "a", "of", "to", "is", "it", "what", "where", "paris", "france", "london",
    "seven", "music", "lights", "kitchen", "timer", "minutes", "tomorrow", "weather",
    "rain", "no", "stop", "yeah", "okay",
)  # fmt: skip


def hear(text: str, ms: int = 1000, reply: str = "", *, ended: bool = False) -> BargeInDecision:
    return decide(S, Heard(ms, text, reply, ended))


# --------------------------------------------------------------------- words


def test_words_are_normalized_alike_on_both_sides() -> None:
    assert words("[MUSIC] Uh-huh, it's 25!") == ["uhhuh", "its", "25"]
    assert words("(coughs)") == []
    assert words("*clears throat* Mm-hmm.") == ["mmhmm"]
    assert words("Seven o'clock") == ["7", "oclock"]
    assert words("twenty five, thirty") == ["25", "30"]
    assert words("One moment") == ["1", "moment"]
    assert words("It\u2019s fine") == ["its", "fine"]


def test_echo_is_the_longest_in_order_match_with_the_reply() -> None:
    reply = words(REPLY)
    assert echo_mask(words("the capital of france"), reply) == [True] * 4
    # A misheard name is still echo ("capitol"), a word the reply lacks is not.
    assert echo_mask(words("the capitol of germany"), reply) == [True, True, True, False]
    # Out of order, only the longest run counts.
    assert echo_mask(words("paris is the capital"), reply) == [False, False, True, True]
    assert echo_mask([], reply) == []
    assert echo_mask(["paris"], []) == [False]


def test_counted_words_leave_out_echo_and_backchannels() -> None:
    novel, counted = counted_words(words("Yeah, the capital, I see, what about Rome"), words(REPLY))
    assert novel == ["yeah", "i", "see", "what", "rome"]  # "about" is in the reply
    assert counted == ["what", "rome"]


# --------------------------------------------------------------- stop words


@pytest.mark.parametrize(
    "text", ["Stop.", "wait", "No!", "Cancel that", "Hold on", "hang on a sec", "Never mind."]
)
def test_a_stop_word_interrupts_at_once(text: str) -> None:
    assert hear(text, ms=120) == Interrupt("stop_word")


def test_a_stop_word_over_the_echo_still_interrupts() -> None:
    assert hear("the capital stop of france", 2000, REPLY) == Interrupt("stop_word")
    # "hold on" with echo words between its halves on the microphone.
    assert hear("hold the capital on", 2000, REPLY) == Interrupt("stop_word")


def test_a_stop_word_the_reply_itself_says_is_echo() -> None:
    reply = "No, the capital of France is Paris."
    assert hear("No, the capital of France", 1800, reply) == Listen()
    assert hear("No, the capital of France", 1800, reply, ended=True) == Ignore("echo")


def test_stop_words_are_settings() -> None:
    mine = BargeInSettings(stop_words=frozenset({"enough"}), stop_phrases=(("one", "moment"),))
    assert decide(mine, Heard(100, "wait")) == Listen()
    assert decide(mine, Heard(100, "Enough.")) == Interrupt("stop_word")
    assert decide(mine, Heard(100, "One moment")) == Interrupt("stop_word")


# ------------------------------------------------------ enough speech and words


def test_two_words_after_half_a_second_interrupt() -> None:
    assert hear("Tell me", 490) == Listen()
    assert hear("Tell me", 500) == Interrupt("words")
    assert hear("Tell", 900) == Listen()


def test_one_word_is_a_reaction_answered_after_the_reply() -> None:
    assert hear("Paris?", 900) == Listen()
    assert hear("Paris?", 900, ended=True) == Ignore("short", ("paris",))
    # Two words that ended too soon are short too.
    assert hear("Tell me", 400, ended=True) == Ignore("short", ("tell", "me"))


@pytest.mark.parametrize(
    "text",
    [
        "Uh-huh.", "Yeah.", "Mm-hmm", "Yeah, yeah, okay.", "Oh, I see.", "Right, got it.",
        # As Whisper tiny.en writes espeak's "uh-huh" and "mm-hmm".
        "Uh-uh.", "Mm-mm",
    ],
)  # fmt: skip
def test_backchannels_never_interrupt_however_long(text: str) -> None:
    assert hear(text, 3000) == Listen()
    assert hear(text, 3000, ended=True) == Ignore("backchannel")


@pytest.mark.parametrize("text", ["", "  ", "(coughs)", "[BLANK_AUDIO]", "..."])
def test_a_cough_or_noise_without_words_never_interrupts(text: str) -> None:
    assert hear(text, 700) == Listen()
    assert hear(text, 700, ended=True) == Ignore("noise")


def test_words_without_a_threshold_interrupt_on_speech_alone() -> None:
    anything = BargeInSettings(min_words=0)
    assert decide(anything, Heard(499, "")) == Listen()
    assert decide(anything, Heard(500, "")) == Interrupt("speech")


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="min_words"):
        BargeInSettings(min_words=-1)
    with pytest.raises(ValueError, match="speech_ms"):
        decide(S, Heard(-1, "stop"))


# ---------------------------------------------------------------------- echo


def test_the_reply_heard_back_is_not_a_barge_in() -> None:
    heard = "The capital of France is Paris, a city of about"
    assert hear(heard, 3500, REPLY) == Listen()
    assert hear(heard, 3500, REPLY, ended=True) == Ignore("echo")
    # Misheard echo ("frants") is not a new turn either: dropped with the echo.
    assert hear("the capital of frants is paris", 2500, REPLY, ended=True) == Ignore(
        "echo", ("frants",)
    )
    # Numbers as words or digits are the same echo.
    assert hear("it is seven oclock", 1500, "It is 7 o'clock.", ended=True) == Ignore("echo")


def test_a_real_interruption_over_the_echo_interrupts() -> None:
    heard = "the capital of France what about Germany"
    assert hear(heard, 2500, REPLY) == Interrupt("words")


def test_without_the_reply_text_the_echo_would_interrupt() -> None:
    # Why the reply text matters: the same words, with nothing to compare.
    assert hear("The capital of France is Paris", 2500) == Interrupt("words")


@exact
@given(
    st.lists(
        st.sampled_from(VOCABULARY),
        min_size=1,
        max_size=25,
    ),
    st.data(),
)
def test_any_run_of_the_reply_heard_back_never_interrupts(
    reply: list[str], data: st.DataObject
) -> None:
    start = data.draw(st.integers(0, len(reply) - 1))
    end = data.draw(st.integers(start + 1, len(reply)))
    heard = " ".join(reply[start:end])
    ms = data.draw(st.integers(0, 10_000))
    for ended in (False, True):
        decision = decide(S, Heard(ms, heard, " ".join(reply), ended))
        assert not isinstance(decision, Interrupt)
    # ... and a stop word the reply does not say, added anywhere, does.
    if "wait" not in reply:
        at = data.draw(st.integers(0, end - start))
        spoken = reply[start:end]
        with_stop = " ".join([*spoken[:at], "wait", *spoken[at:]])
        assert decide(S, Heard(ms, with_stop, " ".join(reply))) == Interrupt("stop_word")


@exact
@given(st.text(max_size=40), st.text(max_size=60), st.integers(0, 5000), st.integers(0, 5000))
def test_more_speech_never_takes_an_interruption_back(
    text: str, reply: str, ms: int, more: int
) -> None:
    if isinstance(decide(S, Heard(ms, text, reply)), Interrupt):
        assert isinstance(decide(S, Heard(ms + more, text, reply)), Interrupt)
        assert isinstance(decide(S, Heard(ms + more, text, reply, ended=True)), Interrupt)


# ----------------------------------------------------------- the reply's text


def test_recent_reply_is_what_played_while_the_user_spoke() -> None:
    phrases = [
        SpokenPhrase("The capital of France is Paris.", 10.0, 12.0),
        SpokenPhrase("It has two million people.", 12.0, 14.0),
        SpokenPhrase("It is on the Seine.", 14.0, 15.5),
    ]
    # The user spoke from 13.0 s; with the 1 s margin the window opens at 12.0.
    assert recent_reply(phrases, 12.0, 13.5) == (
        "The capital of France is Paris. It has two million people."
    )
    assert recent_reply(phrases, 14.5, 16.0) == "It is on the Seine."
    assert recent_reply(phrases, 16.0, 17.0) == ""
    assert recent_reply([], 0.0, 1.0) == ""
