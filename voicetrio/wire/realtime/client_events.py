"""Client events of the Realtime API, parsed: one frame in, one request out.

Parsing checks the frame (size, JSON, an object, a known ``type``) and each
event's own fields; what a field *means* for the session (a format name, an
item's content) is checked where it is applied (:mod:`.session_config`,
:mod:`.adapter`), so that a refusal there still names the parameter. Both
shapes send the same client events, but for ``transcription_session.update``
(beta); the differences are inside ``session``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from voicetrio.wire.realtime.errors import EVENT_TOO_LARGE, INVALID_JSON, Refusal
from voicetrio.wire.realtime.fields import Fields

#: The API's limit on one client event (an append of a long recording).
MAX_EVENT_BYTES: Final = 15 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    session: Fields
    #: Sent as ``transcription_session.update`` (the beta transcription event).
    transcription: bool = False


@dataclass(frozen=True, slots=True)
class AudioAppend:
    audio: str


@dataclass(frozen=True, slots=True)
class AudioCommit:
    pass


@dataclass(frozen=True, slots=True)
class AudioClear:
    pass


@dataclass(frozen=True, slots=True)
class ItemCreate:
    item: Fields
    previous_item_id: str | None


@dataclass(frozen=True, slots=True)
class ItemDelete:
    item_id: str


@dataclass(frozen=True, slots=True)
class ItemTruncate:
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ItemRetrieve:
    item_id: str


@dataclass(frozen=True, slots=True)
class ResponseCreate:
    response: Fields | None


@dataclass(frozen=True, slots=True)
class ResponseCancel:
    response_id: str | None


@dataclass(frozen=True, slots=True)
class OutputAudioClear:
    pass


Request = (
    SessionUpdate
    | AudioAppend
    | AudioCommit
    | AudioClear
    | ItemCreate
    | ItemDelete
    | ItemTruncate
    | ItemRetrieve
    | ResponseCreate
    | ResponseCancel
    | OutputAudioClear
)


@dataclass(frozen=True, slots=True)
class ClientEvent:
    #: The client's own id for the event, quoted back in an error about it.
    event_id: str | None
    request: Request


def parse(frame: str | bytes, max_bytes: int = MAX_EVENT_BYTES) -> ClientEvent:
    """The request one client frame carries; :class:`Refusal` if it carries none."""
    size = len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise Refusal(
            EVENT_TOO_LARGE,
            f"The event is {size} bytes; the limit is {max_bytes} bytes per event. "
            "Send audio in smaller appends.",
        )
    try:
        value = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        raise Refusal(INVALID_JSON, "The event is not valid JSON.") from None
    if not isinstance(value, dict):
        raise Refusal(INVALID_JSON, "The event must be a JSON object.")
    raw_id = value.get("event_id")
    event_id = raw_id if isinstance(raw_id, str) else None
    fields = Fields(value, "", event_id)
    kind = fields.need_text("type")
    builder = _EVENTS.get(kind)
    if builder is None:
        raise fields.refuse(
            "type",
            f"Invalid value: '{kind[:60]}'. Supported values are: "
            + ", ".join(f"'{k}'" for k in _EVENTS)
            + ".",
        )
    return ClientEvent(event_id, builder(fields))


def _session_update(f: Fields) -> Request:
    session = f.obj("session", required=True)
    assert session is not None
    return SessionUpdate(session)


def _transcription_update(f: Fields) -> Request:
    session = f.obj("session", required=True)
    assert session is not None
    return SessionUpdate(session, transcription=True)


def _item_create(f: Fields) -> Request:
    item = f.obj("item", required=True)
    assert item is not None
    return ItemCreate(item, f.text("previous_item_id", nullable=True))


_EVENTS: Final[dict[str, Callable[[Fields], Request]]] = {
    "session.update": _session_update,
    "transcription_session.update": _transcription_update,
    "input_audio_buffer.append": lambda f: AudioAppend(f.need_text("audio")),
    "input_audio_buffer.commit": lambda f: AudioCommit(),
    "input_audio_buffer.clear": lambda f: AudioClear(),
    "conversation.item.create": _item_create,
    "conversation.item.delete": lambda f: ItemDelete(f.need_text("item_id")),
    "conversation.item.truncate": lambda f: ItemTruncate(
        f.need_text("item_id"),
        f.need_integer("content_index", minimum=0),
        f.need_integer("audio_end_ms", minimum=0),
    ),
    "conversation.item.retrieve": lambda f: ItemRetrieve(f.need_text("item_id")),
    "response.create": lambda f: ResponseCreate(f.obj("response")),
    "response.cancel": lambda f: ResponseCancel(f.text("response_id", nullable=True)),
    "output_audio_buffer.clear": lambda f: OutputAudioClear(),
}


__all__ = [
    "MAX_EVENT_BYTES",
    "AudioAppend",
    "AudioClear",
    "AudioCommit",
    "ClientEvent",
    "ItemCreate",
    "ItemDelete",
    "ItemRetrieve",
    "ItemTruncate",
    "OutputAudioClear",
    "Request",
    "ResponseCancel",
    "ResponseCreate",
    "SessionUpdate",
    "parse",
]
