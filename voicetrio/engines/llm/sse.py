"""Server-sent events, sans-IO: bytes in, OpenAI chat stream chunks out.

:class:`SseParser` follows the WHATWG event-stream rules that matter for an
OpenAI-style stream: lines end in ``\\r\\n``, ``\\n`` or ``\\r``; ``data:``
lines of one event are joined with ``\\n``; a blank line dispatches; comments
(``:`` lines, which servers send as keep-alive pings) and the ``event``,
``id`` and ``retry`` fields are ignored. Bytes may be split anywhere, even
inside a line ending or a UTF-8 character, so feeding a stream byte by byte
gives exactly what feeding it whole gives.

:func:`parse_chat_chunk` reads one ``data:`` payload of a chat completion
stream. Nothing here does I/O, so both are tested exhaustively without a
server, and the HTTP client stays a thin loop around them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

#: The payload OpenAI sends as the last event of a complete stream.
DONE_SENTINEL: Final = "[DONE]"
#: A line or event larger than this is an error, not a reason to buffer forever.
DEFAULT_MAX_EVENT_BYTES: Final = 1 << 20

_BOM: Final = b"\xef\xbb\xbf"


class StreamErrorEvent(ValueError):
    """The server reported an error inside the stream (an ``error`` object)."""


class SseParser:
    """Incremental event-stream parser; feed it bytes as they arrive."""

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        if max_event_bytes <= 0:
            raise ValueError(f"max_event_bytes must be > 0, got {max_event_bytes}")
        self.max_event_bytes = max_event_bytes
        self._buffer = bytearray()
        # Bytes of _buffer already known to hold no line ending, so that a
        # long line fed in small pieces is scanned once, not once per piece.
        self._scanned = 0
        self._data: list[str] = []
        self._data_bytes = 0
        self._started = False

    def feed(self, data: bytes) -> list[str]:
        """The ``data`` payloads of the events completed by ``data``, in order.

        Raises ValueError when one line or event exceeds ``max_event_bytes``.
        """
        self._buffer += data
        if not self._started:
            # The byte-order mark is only stripped at the very start, and it
            # may itself arrive split.
            if len(self._buffer) < len(_BOM) and _BOM.startswith(self._buffer):
                return []
            self._started = True
            if self._buffer.startswith(_BOM):
                del self._buffer[: len(_BOM)]
        events: list[str] = []
        buf = self._buffer
        end = len(buf)
        start = 0
        # Next \n and \r at or after the scan position (-1: none); each is
        # searched for again only once passed, so a chunk is scanned in linear time.
        nl = buf.find(b"\n", self._scanned)
        cr = buf.find(b"\r", self._scanned)
        while nl != -1 or cr != -1:
            if cr == -1 or (nl != -1 and nl < cr):
                eol, after = nl, nl + 1
            elif cr + 1 == end:
                break  # a final \r may be the first half of a split \r\n: wait
            else:
                eol, after = cr, cr + 2 if buf[cr + 1] == 0x0A else cr + 1
            event = self._line(bytes(buf[start:eol]))
            if event is not None:
                events.append(event)
            start = after
            if nl != -1 and nl < start:
                nl = buf.find(b"\n", start)
            if cr != -1 and cr < start:
                cr = buf.find(b"\r", start)
        # What is left is one incomplete line, possibly ending in a lone \r.
        pos = cr if cr != -1 else end
        del buf[:start]
        self._scanned = pos - start
        if len(buf) > self.max_event_bytes:
            raise ValueError(f"an event-stream line is longer than {self.max_event_bytes} bytes")
        return events

    def _line(self, raw: bytes) -> str | None:
        if not raw:
            return self._dispatch()
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data_bytes += len(raw) + 1
            if self._data_bytes > self.max_event_bytes:
                raise ValueError(
                    f"an event-stream event is larger than {self.max_event_bytes} bytes"
                )
            self._data.append(value)
        return None

    def _dispatch(self) -> str | None:
        if not self._data:
            return None  # a blank line with no data dispatches nothing
        payload = "\n".join(self._data)
        self._data.clear()
        self._data_bytes = 0
        return payload


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call: the first piece of call ``index``
    carries its id and name, later ones more of its JSON arguments."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ChatChunk:
    """One event of a chat completion stream (first choice only)."""

    done: bool = False
    delta: str = ""
    finish_reason: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()


_DONE: Final = ChatChunk(done=True)


def parse_chat_chunk(payload: str) -> ChatChunk:
    """Read one ``data:`` payload of an OpenAI chat completion stream.

    ``delta`` is ``""`` for role-only, null-content and choice-less chunks
    (usage reports, keep-alives). Raises ValueError for malformed JSON, a
    shape that is not a chat chunk; for an ``error`` object it raises the
    ValueError subclass :class:`StreamErrorEvent` with the server's message.
    """
    text = payload.strip()
    if text == DONE_SENTINEL:
        return _DONE
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON in stream chunk: {exc.msg} at char {exc.pos}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"stream chunk is a JSON {type(obj).__name__}, not an object")
    if obj.get("error") is not None:
        raise StreamErrorEvent(error_message(obj["error"]))
    choices = obj.get("choices")
    if choices is None or choices == []:
        return ChatChunk()
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise ValueError("stream chunk has malformed 'choices'")
    choice: dict[str, Any] = choices[0]
    finish = choice.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise ValueError("stream chunk has a non-string 'finish_reason'")
    delta = choice.get("delta")
    if delta is None:
        return ChatChunk(finish_reason=finish)
    if not isinstance(delta, dict):
        raise ValueError("stream chunk has a malformed 'delta'")
    content = delta.get("content")
    if content is not None and not isinstance(content, str):
        raise ValueError("stream chunk has non-string 'content'")
    calls = delta.get("tool_calls")
    tool_calls = () if calls is None else _tool_call_deltas(calls)
    return ChatChunk(delta=content or "", finish_reason=finish, tool_calls=tool_calls)


def _tool_call_deltas(calls: object) -> tuple[ToolCallDelta, ...]:
    if not isinstance(calls, list):
        raise ValueError("stream chunk has malformed 'tool_calls'")
    out = []
    for position, call in enumerate(calls):
        if not isinstance(call, dict):
            raise ValueError("stream chunk has a malformed tool call")
        # Some servers leave out the index of a lone call.
        index = call.get("index", position)
        function = call.get("function") or {}
        if not isinstance(index, int) or isinstance(index, bool) or not isinstance(function, dict):
            raise ValueError("stream chunk has a malformed tool call")
        fields = (call.get("id") or "", function.get("name") or "", function.get("arguments") or "")
        if not all(isinstance(f, str) for f in fields):
            raise ValueError("stream chunk has a tool call with non-string fields")
        out.append(ToolCallDelta(index, *fields))
    return tuple(out)


def error_message(error: object) -> str:
    """The human part of an OpenAI-style ``error`` value (object or string)."""
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str) and message:
            return message
        for key in ("type", "code"):
            if isinstance(error.get(key), str | int):
                return f"error {error[key]}"
        return "unspecified error"
    if isinstance(error, str) and error:
        return error
    return "unspecified error"


__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "DONE_SENTINEL",
    "ChatChunk",
    "SseParser",
    "StreamErrorEvent",
    "ToolCallDelta",
    "error_message",
    "parse_chat_chunk",
]
