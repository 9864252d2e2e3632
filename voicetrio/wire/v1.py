"""The wire protocol, sans-IO: client messages in, server events out.

This module never touches a socket, a clock or Trio. The session's v1
adapter (:mod:`voicetrio.wire.v1_adapter`) feeds it every frame the client sent and
gets back either a validated message or a :class:`ProtocolError` that already
knows its code, its reason and whether the connection survives it. The v1
server events are plain JSON-able dicts built here, so that the wire format
lives in exactly one place: the adapter renders the session's domain events
(:mod:`voicetrio.core.events`) with these builders, and the client parses them.

Client state machine (one per connection)::

    IDLE --start--> STREAMING --stop--> IDLE
      |                 |
      +-- audio: BAD_MESSAGE (audio_before_start)
                        +-- start: BAD_MESSAGE (already_started)

``cancel`` is legal in both states. A client that sends nothing but bad input
for ``max_consecutive_errors`` frames is closed with ``PROTOCOL_VIOLATION``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from typing import Any, Final, TypeVar

# The codes and the client messages belong to the session core; they keep
# their names here.
from voicetrio.core.codes import FATAL_CODES as FATAL_CODES
from voicetrio.core.codes import CloseCode as CloseCode
from voicetrio.core.codes import ErrorCode as ErrorCode
from voicetrio.core.codes import is_fatal as is_fatal
from voicetrio.core.inputs import AUDIO_FORMATS as AUDIO_FORMATS
from voicetrio.core.inputs import Audio as Audio
from voicetrio.core.inputs import AudioFormat as AudioFormat
from voicetrio.core.inputs import Cancel as Cancel
from voicetrio.core.inputs import ClientMessage as ClientMessage
from voicetrio.core.inputs import Limits as Limits
from voicetrio.core.inputs import ProtocolError as _InputError
from voicetrio.core.inputs import Start as Start
from voicetrio.core.inputs import Stop as Stop

PROTOCOL_VERSION: Final = 1

JsonDict = dict[str, Any]
_T = TypeVar("_T")


class ProtocolError(_InputError):
    """The core's :class:`~voicetrio.core.inputs.ProtocolError`, answerable in v1."""

    def to_event(self) -> JsonDict:
        return error(self.code, self.message, reason=self.reason)


class ClientState(enum.Enum):
    IDLE = "idle"
    STREAMING = "streaming"


class ProtocolMachine:
    """Validates client frames in order and tracks the client's state.

    Every method either returns a message the session may act on or raises
    :class:`ProtocolError`; after a recoverable error the state is exactly as
    it was before the bad frame.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.state = ClientState.IDLE
        self.sample_rate: int | None = None
        self.audio_format: AudioFormat = "wav"
        self._errors_in_a_row = 0

    def receive_text(self, text: str) -> Start | Stop | Cancel:
        return self._guard(lambda: self._text(text))

    def receive_bytes(self, data: bytes) -> Audio:
        return self._guard(lambda: self._bytes(data))

    def _guard(self, step: Callable[[], _T]) -> _T:
        try:
            result = step()
        except ProtocolError as exc:
            self._errors_in_a_row += 1
            if not exc.fatal and self._errors_in_a_row >= self.limits.max_consecutive_errors:
                raise ProtocolError(
                    ErrorCode.PROTOCOL_VIOLATION,
                    "too_many_errors",
                    f"{self._errors_in_a_row} bad frames in a row; closing",
                ) from exc
            raise
        self._errors_in_a_row = 0
        return result

    def _text(self, text: str) -> Start | Stop | Cancel:
        size = len(text.encode("utf-8", errors="surrogatepass"))
        if size > self.limits.max_text_bytes:
            raise ProtocolError(
                ErrorCode.BAD_MESSAGE,
                "text_too_large",
                f"text frame of {size} bytes exceeds the limit of {self.limits.max_text_bytes}",
            )
        message = parse_text(text)
        if isinstance(message, Start):
            self._check_start(message)
            self.state = ClientState.STREAMING
            self.sample_rate = message.sample_rate
            self.audio_format = message.audio_format
        elif isinstance(message, Stop):
            if self.state is not ClientState.STREAMING:
                raise ProtocolError(
                    ErrorCode.BAD_MESSAGE, "not_started", "stop before start: nothing to stop"
                )
            self.state = ClientState.IDLE
        return message

    def _check_start(self, message: Start) -> None:
        if self.state is ClientState.STREAMING:
            raise ProtocolError(
                ErrorCode.BAD_MESSAGE,
                "already_started",
                "start while already streaming; send stop first",
            )
        lo, hi = self.limits.min_sample_rate, self.limits.max_sample_rate
        if not lo <= message.sample_rate <= hi:
            accepted = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_SAMPLE_RATE,
                "unsupported_sample_rate",
                f"sample_rate {message.sample_rate} is not supported; accepted: {accepted} Hz",
            )

    def _bytes(self, data: bytes) -> Audio:
        if self.state is not ClientState.STREAMING:
            raise ProtocolError(
                ErrorCode.BAD_MESSAGE,
                "audio_before_start",
                "binary audio before start; send {\"type\":\"start\",\"sample_rate\":16000} first",
            )
        if len(data) > self.limits.max_frame_bytes:
            raise ProtocolError(
                ErrorCode.BAD_MESSAGE,
                "frame_too_large",
                f"audio frame of {len(data)} bytes exceeds the limit of "
                f"{self.limits.max_frame_bytes}",
            )
        if len(data) % 2:
            raise ProtocolError(
                ErrorCode.BAD_MESSAGE,
                "odd_length",
                f"audio frame of {len(data)} bytes is not whole 16-bit samples",
            )
        return Audio(bytes(data))


def parse_text(text: str) -> Start | Stop | Cancel:
    """Parse one text frame into a client message, state aside."""
    try:
        value = json.loads(text)
    except ValueError:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, "invalid_json", "text frame is not valid JSON"
        ) from None
    if not isinstance(value, dict):
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            "not_an_object",
            f"expected a JSON object, got {type(value).__name__}",
        )
    kind = value.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, "missing_type", 'message needs a string field "type"'
        )
    if kind == "start":
        return _parse_start(value)
    if kind == "stop":
        return Stop()
    if kind == "cancel":
        return Cancel()
    raise ProtocolError(
        ErrorCode.BAD_MESSAGE,
        "unknown_type",
        f"unknown message type {kind[:40]!r}; expected start, stop or cancel",
    )


def _parse_start(value: JsonDict) -> Start:
    rate = value.get("sample_rate")
    # bool is an int subclass; True is not a sample rate.
    if not isinstance(rate, int) or isinstance(rate, bool):
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            "bad_field",
            'start needs an integer "sample_rate" (e.g. 16000)',
        )
    fmt = value.get("audio_format", "wav")
    if fmt not in AUDIO_FORMATS:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            "bad_field",
            f'"audio_format" must be one of {", ".join(AUDIO_FORMATS)}',
        )
    return Start(sample_rate=rate, audio_format=fmt)


# --------------------------------------------------------------------------
# Server events


def encode(event: JsonDict) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def protocol_hello(session_id: str, *, mode: str) -> JsonDict:
    return {"type": "protocol", "version": PROTOCOL_VERSION, "session_id": session_id, "mode": mode}


def partial_transcript(text: str) -> JsonDict:
    return {"type": "partial_transcript", "text": text}


def final_transcript(text: str, transcript_id: str) -> JsonDict:
    return {"type": "final_transcript", "text": text, "id": transcript_id}


def llm_token(text: str) -> JsonDict:
    return {"type": "llm_token", "text": text, "done": False}


def llm_done() -> JsonDict:
    return {"type": "llm_token", "text": "", "done": True}


def tts_chunk_b64(seq: int, audio_b64: str) -> JsonDict:
    return {"type": "tts_chunk", "seq": seq, "audio_b64": audio_b64, "mime": "audio/wav"}


def tts_chunk_pcm16(seq: int, sample_rate: int, nbytes: int) -> JsonDict:
    """Announces a binary frame of exactly ``nbytes`` bytes that comes next."""
    return {
        "type": "tts_chunk",
        "seq": seq,
        "format": "pcm16",
        "sample_rate": sample_rate,
        "bytes": nbytes,
    }


def tts_phrase_done(seq: int) -> JsonDict:
    return {"type": "tts_phrase_done", "seq": seq}


def tts_complete() -> JsonDict:
    return {"type": "tts_complete"}


def metrics(fields: JsonDict) -> JsonDict:
    return {"type": "metrics", **fields}


def error(code: ErrorCode, message: str, *, reason: str | None = None) -> JsonDict:
    event: JsonDict = {
        "type": "error",
        "code": str(code),
        "message": message,
        "recoverable": not is_fatal(code),
    }
    if reason is not None:
        event["reason"] = reason
    return event


def info(message: str, *, event: str | None = None, **extra: Any) -> JsonDict:
    out: JsonDict = {"type": "info", "message": message}
    if event is not None:
        out["event"] = event
    out.update(extra)
    return out


SERVER_EVENT_TYPES: Final = frozenset(
    {
        "protocol",
        "partial_transcript",
        "final_transcript",
        "llm_token",
        "tts_chunk",
        "tts_phrase_done",
        "tts_complete",
        "metrics",
        "error",
        "info",
    }
)


def parse_event(text: str) -> JsonDict:
    """Client side: decode one server text frame, checking it is an event."""
    value = json.loads(text)
    if not isinstance(value, dict) or value.get("type") not in SERVER_EVENT_TYPES:
        raise ValueError(f"not a voicetrio server event: {text[:80]!r}")
    return value
