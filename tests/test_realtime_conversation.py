"""The keyed conversation and the heard part of a cut reply (sans-IO, core).

The conversation generalizes the v1 protocol's memory: fed exchanges only,
it must keep exactly what ConversationMemory keeps (the v1 prompts are
unchanged); keyed entries add what a Realtime client asks for.
"""

from __future__ import annotations

import pytest

from tests.reference_memory import ConversationMemory
from voicetrio.core.conversation import Conversation, reply_key, utterance_key
from voicetrio.core.heard import heard_text


@pytest.mark.parametrize(
    ("max_turns", "max_chars"), [(8, 4000), (2, 4000), (8, 10), (0, 4000), (3, 0), (1, 1)]
)
def test_exchanges_alone_are_remembered_as_the_v1_memory_remembers(
    max_turns: int, max_chars: int
) -> None:
    old = ConversationMemory(max_turns, max_chars)
    new = Conversation(max_turns, max_chars)
    for n in range(1, 7):
        user, reply = f"question {n}" * n, f"answer {n}"
        old.add_turn(user, reply)
        new.add_exchange(utterance_key(n), user, reply_key(n), reply)
        assert new.messages("sys", "next") == old.messages("sys", "next")
        assert new.total_chars == old.total_chars and new.exchanges == len(old)


def test_words_waiting_for_a_reply_are_never_dropped_before_it() -> None:
    conversation = Conversation(max_turns=0, max_chars=0)
    conversation.add("u1", "user", "first")
    conversation.add("u2", "user", "second")
    assert conversation.messages("sys") == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
    ]
    # The reply applies the bounds: with none allowed, nothing stays.
    conversation.add(reply_key(1), "assistant", "both answered")
    assert conversation.entries == ()


def test_entries_with_their_roles_in_order() -> None:
    conversation = Conversation(max_turns=8, max_chars=4000)
    conversation.add("s", "system", "Speak French.")
    conversation.add("t1", "user", "hello")
    conversation.add(reply_key(1), "assistant", "bonjour")
    assert [(e.key, e.role) for e in conversation.entries] == [
        ("s", "system"),
        ("t1", "user"),
        (reply_key(1), "assistant"),
    ]
    assert conversation.messages("sys", "again")[1:] == [
        {"role": "system", "content": "Speak French."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "bonjour"},
        {"role": "user", "content": "again"},
    ]
    assert conversation.exchanges == 2  # what came before the first user entry is one


def test_the_oldest_whole_exchange_goes_first() -> None:
    conversation = Conversation(max_turns=2, max_chars=4000)
    for n in range(1, 4):
        conversation.add(f"u{n}", "user", f"q{n}")
        conversation.add(f"u{n}b", "user", f"more {n}")
        conversation.add(reply_key(n), "assistant", f"a{n}")
    assert [e.key for e in conversation.entries] == [
        "u2",
        "u2b",
        reply_key(2),
        "u3",
        "u3b",
        reply_key(3),
    ]


def test_forget_removes_and_keeps_out() -> None:
    conversation = Conversation(max_turns=8, max_chars=4000)
    conversation.add("t", "user", "hello")
    assert conversation.forget("t") and "t" not in conversation
    assert not conversation.forget("t")  # gone already
    # A reply that commits its exchange later does not bring the words back.
    conversation.forget(utterance_key(2))
    conversation.add_exchange(utterance_key(2), "deleted words", reply_key(2), "reply")
    assert [e.key for e in conversation.entries] == [reply_key(2)]
    assert not conversation.add(utterance_key(2), "user", "again")


def test_rewrite_and_empty_entries_are_not_shown() -> None:
    conversation = Conversation(max_turns=8, max_chars=4000)
    conversation.add_exchange(utterance_key(1), "tell me a story", reply_key(1), "Once upon a time")
    assert conversation.rewrite(reply_key(1), "Once")
    assert conversation.messages("sys")[-1] == {"role": "assistant", "content": "Once"}
    assert conversation.rewrite(reply_key(1), "")
    assert conversation.messages("sys")[-1] == {"role": "user", "content": "tell me a story"}
    assert not conversation.rewrite("nope", "x")
    conversation.add("same", "user", "one")
    conversation.add("same", "user", "two")  # a key given again takes the new text
    assert [e.text for e in conversation.entries if e.key == "same"] == ["two"]


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        Conversation(-1, 10)
    with pytest.raises(ValueError):
        Conversation(1, -10)


SPOKEN = [("Once upon a time", 1.0), ("there was a cat", 0.5), ("who sang.", 0.5)]


@pytest.mark.parametrize(
    ("heard_ms", "text"),
    [
        (0, ""),
        (499, "Once"),  # 4 words in 1000 ms: one word per 250 ms heard in full
        (500, "Once upon"),
        (1000, "Once upon a time"),
        (1250, "Once upon a time there was"),
        (1500, "Once upon a time there was a cat"),
        (5000, "Once upon a time there was a cat who sang."),
    ],
)
def test_heard_text_is_the_words_of_the_audio_played(heard_ms: int, text: str) -> None:
    assert heard_text(SPOKEN, heard_ms) == text


def test_nothing_spoken_nothing_heard() -> None:
    assert heard_text([], 1000) == ""
