"""The sans-IO event-stream parser and chat chunk reader."""

from __future__ import annotations

import json
from typing import Any

import pytest

from voicetrio.engines.llm.sse import (
    ChatChunk,
    SseParser,
    StreamErrorEvent,
    error_message,
    parse_chat_chunk,
)


def chunk(content: str | None = None, *, role: str | None = None, finish: str | None = None) -> str:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None or role is None:
        delta["content"] = content
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


# A realistic stream with every feature the parser must handle: a comment
# ping, role chunk, event/id/retry fields, multi-line data, CRLF and lone CR.
STREAM = (
    b": keep-alive\n\n"
    b"id: 1\nevent: message\ndata: " + chunk(role="assistant").encode() + b"\n\n"
    b"data: " + chunk("Hel").encode() + b"\r\n\r\n"
    b"retry: 100\r"
    b"data:" + chunk("lo").encode() + b"\r\r"
    b"data: first line\ndata: second line\n\n"
    b"data: " + chunk("\u00e9t\u00e9 \u2603", finish="stop").encode() + b"\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    chunk(role="assistant"),
    chunk("Hel"),
    chunk("lo"),
    "first line\nsecond line",
    chunk("\u00e9t\u00e9 \u2603", finish="stop"),
    "[DONE]",
]


def feed_all(parser: SseParser, pieces: list[bytes]) -> list[str]:
    out: list[str] = []
    for piece in pieces:
        out.extend(parser.feed(piece))
    return out


def test_one_shot() -> None:
    assert SseParser().feed(STREAM) == EXPECTED


def test_byte_by_byte_equals_one_shot() -> None:
    # Splits inside \r\n, inside multi-byte UTF-8 and inside "data:" itself.
    assert feed_all(SseParser(), [STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


@pytest.mark.parametrize("size", [2, 3, 5, 7, 64])
def test_any_chunking_equals_one_shot(size: int) -> None:
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert feed_all(SseParser(), pieces) == EXPECTED


def test_every_single_split_point() -> None:
    for cut in range(len(STREAM) + 1):
        assert feed_all(SseParser(), [STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


def test_incomplete_event_waits_for_blank_line() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.feed(b"data: b") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\n") == ["a\nb"]


def test_lone_cr_at_end_is_held_until_next_byte() -> None:
    parser = SseParser()
    assert parser.feed(b"data: x\r") == []
    assert parser.feed(b"\n") == []  # \r\n: one line ending, not two
    assert parser.feed(b"\r\n") == ["x"]


def test_comments_and_other_fields_are_ignored() -> None:
    parser = SseParser()
    assert parser.feed(b": ping\n\nevent: x\nid: 7\nretry: 5\n\n:data: no\n\n") == []


def test_field_syntax() -> None:
    parser = SseParser()
    # One leading space is stripped, a second is kept; "data" alone is an
    # empty value; a blank data line still dispatches.
    assert parser.feed(b"data:  two\n\ndata\n\ndata:\n\ndata:x\n\n") == [" two", "", "", "x"]


def test_bom_is_stripped_only_at_the_start() -> None:
    bom = b"\xef\xbb\xbf"
    assert feed_all(SseParser(), [bom[:1], bom[1:] + b"data: a\n\n"]) == ["a"]
    # Later, it is part of the field name, which makes the line unknown.
    assert SseParser().feed(b"data: a\n\n" + bom + b"data: b\n\n") == ["a"]


def test_invalid_utf8_is_replaced() -> None:
    assert SseParser().feed(b"data: \xff\n\n") == ["\ufffd"]


def test_oversized_line_or_event_is_an_error() -> None:
    with pytest.raises(ValueError, match="longer than 16 bytes"):
        SseParser(max_event_bytes=16).feed(b"data: " + b"x" * 20)
    parser = SseParser(max_event_bytes=16)
    with pytest.raises(ValueError, match="larger than 16 bytes"):
        parser.feed(b"data: 12345\ndata: 12345\ndata: 12345\n")


def test_done() -> None:
    assert parse_chat_chunk("[DONE]") == ChatChunk(done=True)
    assert parse_chat_chunk(" [DONE] ").done


def test_content_delta() -> None:
    assert parse_chat_chunk(chunk("Hi")) == ChatChunk(delta="Hi")


def test_null_content_and_role_chunks_give_empty_delta() -> None:
    assert parse_chat_chunk(chunk(role="assistant")) == ChatChunk()
    assert parse_chat_chunk(chunk(None, role="assistant")) == ChatChunk()
    assert parse_chat_chunk(chunk(None)) == ChatChunk()
    assert parse_chat_chunk('{"choices": [{"delta": {}}]}') == ChatChunk()


def test_finish_reason() -> None:
    assert parse_chat_chunk(chunk(None, finish="stop")) == ChatChunk(finish_reason="stop")
    assert parse_chat_chunk(chunk("!", finish="length")) == ChatChunk(
        delta="!", finish_reason="length"
    )
    assert parse_chat_chunk('{"choices": [{"finish_reason": "stop"}]}').finish_reason == "stop"


def test_choiceless_chunks_are_empty() -> None:
    assert parse_chat_chunk('{"choices": [], "usage": {"total_tokens": 3}}') == ChatChunk()
    assert parse_chat_chunk('{"object": "chat.completion.chunk"}') == ChatChunk()


@pytest.mark.parametrize(
    "payload",
    ["", "{", '{"choices": [', "not json", "data: {}", "{'a': 1}"],
)
def test_malformed_json(payload: str) -> None:
    with pytest.raises(ValueError, match="malformed JSON") as info:
        parse_chat_chunk(payload)
    assert not isinstance(info.value, StreamErrorEvent)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ("[1, 2]", "JSON list, not an object"),
        ('"text"', "JSON str, not an object"),
        ('{"choices": {"0": {}}}', "malformed 'choices'"),
        ('{"choices": ["x"]}', "malformed 'choices'"),
        ('{"choices": [{"delta": "x"}]}', "malformed 'delta'"),
        ('{"choices": [{"delta": {"content": 5}}]}', "non-string 'content'"),
        ('{"choices": [{"delta": {}, "finish_reason": 1}]}', "non-string 'finish_reason'"),
    ],
)
def test_wrong_shapes(payload: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_chat_chunk(payload)


def test_error_object_passes_the_message_on() -> None:
    payload = json.dumps({"error": {"message": "context overflow", "type": "server_error"}})
    with pytest.raises(StreamErrorEvent, match=r"^context overflow$"):
        parse_chat_chunk(payload)
    with pytest.raises(StreamErrorEvent, match=r"^model crashed$"):
        parse_chat_chunk('{"error": "model crashed"}')
    # A StreamErrorEvent is a ValueError, as callers of the brief expect.
    with pytest.raises(ValueError, match="error 500"):
        parse_chat_chunk('{"error": {"code": 500}}')


def test_null_error_is_no_error() -> None:
    assert (
        parse_chat_chunk('{"error": null, "choices": [{"delta": {"content": "a"}}]}').delta == "a"
    )


def test_error_message_shapes() -> None:
    assert error_message({"message": "m"}) == "m"
    assert error_message({"type": "invalid_request_error"}) == "error invalid_request_error"
    assert error_message({}) == "unspecified error"
    assert error_message("plain") == "plain"
    assert error_message(None) == "unspecified error"
