"""Server events of the Realtime API in either shape: plain JSON-able dicts.

The two shapes share most events and differ in a few names (the GA
``response.output_audio.delta`` is beta's ``response.audio.delta``), in
how an item joining the conversation is announced (GA:
``conversation.item.added`` then ``conversation.item.done``; beta:
``conversation.item.created``), in the content types of the assistant's
items (GA ``output_audio`` / ``output_text``, beta ``audio`` / ``text``)
and in the response object. Every event has every field the SDK's models
require, so strict clients (Pipecat parses each event into a pydantic
model and gives up on a missing field) accept them. The ``event_id`` is
added by the caller, which owns the ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from voicetrio.wire.realtime.fields import JsonDict
from voicetrio.wire.realtime.session_config import Shape

_NAMES: Final[dict[str, tuple[str, str]]] = {
    # concept: (GA, beta)
    "audio.delta": ("response.output_audio.delta", "response.audio.delta"),
    "audio.done": ("response.output_audio.done", "response.audio.done"),
    "transcript.delta": (
        "response.output_audio_transcript.delta",
        "response.audio_transcript.delta",
    ),
    "transcript.done": (
        "response.output_audio_transcript.done",
        "response.audio_transcript.done",
    ),
    "text.delta": ("response.output_text.delta", "response.text.delta"),
    "text.done": ("response.output_text.done", "response.text.done"),
}


def name(concept: str, shape: Shape) -> str:
    ga, beta = _NAMES[concept]
    return ga if shape == "ga" else beta


# -- conversation items ----------------------------------------------------------


@dataclass(slots=True)
class Item:
    """A conversation item as the client sees it."""

    id: str
    role: str
    #: "audio" (a spoken user turn, or a spoken reply) or "text".
    content: str
    text: str | None = None
    status: str = "completed"

    def shown(self, shape: Shape) -> JsonDict:
        return {
            "id": self.id,
            "object": "realtime.item",
            "type": "message",
            "status": self.status,
            "role": self.role,
            "content": [self.part(shape)],
        }

    def part(self, shape: Shape) -> JsonDict:
        if self.role != "assistant":
            if self.content == "audio":
                return {"type": "input_audio", "transcript": self.text}
            return {"type": "input_text", "text": self.text or ""}
        if self.content == "audio":
            return {"type": "output_audio" if shape == "ga" else "audio", "transcript": self.text}
        return {"type": "output_text" if shape == "ga" else "text", "text": self.text or ""}


def item_added(item: Item, previous: str | None, shape: Shape) -> list[JsonDict]:
    """An item joined the conversation: its announcement in this shape."""
    shown = item.shown(shape)
    if shape == "beta":
        return [{"type": "conversation.item.created", "previous_item_id": previous, "item": shown}]
    return [
        {"type": "conversation.item.added", "previous_item_id": previous, "item": shown},
        {"type": "conversation.item.done", "previous_item_id": previous, "item": shown},
    ]


# -- responses --------------------------------------------------------------------


@dataclass(slots=True)
class Response:
    """One response (one assistant turn) and what it has said so far."""

    id: str
    turn: int
    item: Item
    speak: bool
    conversation_id: str
    modalities: list[str]
    output_format: JsonDict | str
    voice: str
    metadata: JsonDict | None = None
    #: Seconds of speech sent, in the client's format.
    audio_ms: float = 0.0
    deltas: int = 0
    error: tuple[str, str] | None = field(default=None)

    def shown(self, shape: Shape, status: str, details: JsonDict | None, *, done: bool) -> JsonDict:
        body: JsonDict = {
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": [self.item.shown(shape)] if done else [],
            "conversation_id": self.conversation_id,
            "usage": self.usage() if done else None,
            "metadata": self.metadata,
        }
        if shape == "ga":
            body["output_modalities"] = self.modalities
            body["max_output_tokens"] = "inf"
            body["audio"] = {"output": {"format": self.output_format, "voice": self.voice}}
        else:
            body["modalities"] = self.modalities
            body["voice"] = self.voice
            body["output_audio_format"] = self.output_format
            body["temperature"] = 0.8
            body["max_output_tokens"] = "inf"
        return body

    def usage(self) -> JsonDict:
        # The language model's deltas stand for its output tokens; the prompt
        # is not counted (the engines do not report it).
        text = self.deltas
        return {
            "total_tokens": text,
            "input_tokens": 0,
            "output_tokens": text,
            "input_token_details": {
                "cached_tokens": 0,
                "text_tokens": 0,
                "audio_tokens": 0,
                "image_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": text, "audio_tokens": 0},
        }

    def part(self) -> JsonDict:
        if self.speak:
            return {"type": "audio", "transcript": self.item.text or ""}
        return {"type": "text", "text": self.item.text or ""}

    def where(self) -> JsonDict:
        """The fields that place an event in this response's one content part."""
        return {
            "response_id": self.id,
            "item_id": self.item.id,
            "output_index": 0,
            "content_index": 0,
        }


def response_started(r: Response, previous: str | None, shape: Shape) -> list[JsonDict]:
    created = {
        "type": "response.created",
        "response": r.shown(shape, "in_progress", None, done=False),
    }
    added = {
        "type": "response.output_item.added",
        "response_id": r.id,
        "output_index": 0,
        "item": r.item.shown(shape),
    }
    part: JsonDict = {"type": "response.content_part.added", **r.where(), "part": r.part()}
    return [created, added, *item_added(r.item, previous, shape)[:1], part]


def response_delta(r: Response, text: str, shape: Shape) -> JsonDict:
    concept = "transcript.delta" if r.speak else "text.delta"
    return {"type": name(concept, shape), **r.where(), "delta": text}


def audio_delta(r: Response, b64: str, shape: Shape) -> JsonDict:
    return {"type": name("audio.delta", shape), **r.where(), "delta": b64}


def response_ended(
    r: Response, status: str, details: JsonDict | None, previous: str | None, shape: Shape
) -> list[JsonDict]:
    where = r.where()
    text = r.item.text or ""
    events: list[JsonDict] = []
    if r.speak:
        events.append({"type": name("audio.done", shape), **where})
        events.append({"type": name("transcript.done", shape), **where, "transcript": text})
    else:
        events.append({"type": name("text.done", shape), **where, "text": text})
    events.append({"type": "response.content_part.done", **where, "part": r.part()})
    events.append(
        {
            "type": "response.output_item.done",
            "response_id": r.id,
            "output_index": 0,
            "item": r.item.shown(shape),
        }
    )
    if shape == "ga":
        events.append(
            {
                "type": "conversation.item.done",
                "previous_item_id": previous,
                "item": r.item.shown(shape),
            }
        )
    events.append({"type": "response.done", "response": r.shown(shape, status, details, done=True)})
    return events


# -- the rest -----------------------------------------------------------------------


def error(
    code: str,
    message: str,
    *,
    kind: str = "invalid_request_error",
    param: Any = None,
    client_event_id: Any = None,
) -> JsonDict:
    return {
        "type": "error",
        "error": {
            "type": kind,
            "code": code,
            "message": message,
            "param": param,
            "event_id": client_event_id,
        },
    }


def usage_seconds(seconds: float) -> JsonDict:
    return {"type": "duration", "seconds": round(seconds, 3)}


__all__ = [
    "Item",
    "Response",
    "audio_delta",
    "error",
    "item_added",
    "name",
    "response_delta",
    "response_ended",
    "response_started",
    "usage_seconds",
]
