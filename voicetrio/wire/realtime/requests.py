"""What a client's item and response requests ask for, checked.

``conversation.item.create`` carries a message: user text, a recorded user
utterance (``input_audio`` with base64 audio in the session's input
format), assistant text (or the transcript of assistant audio), or system
text. Function calls and images are refused: voicetrio's language models
are text-only and have no tools. ``response.create`` may override the
instructions and the output modality for one response, and carry metadata
that comes back on the response; the rest of its fields are accepted and
ignored (``docs/realtime.md``).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from voicetrio.core.inputs import Role
from voicetrio.wire.realtime.errors import NOT_SUPPORTED
from voicetrio.wire.realtime.fields import Fields, JsonDict
from voicetrio.wire.realtime.formats import AudioFormat
from voicetrio.wire.realtime.session_config import Shape

_TEXT_PARTS = ("input_text", "text", "output_text")
_AUDIO_PARTS = ("input_audio", "audio", "output_audio")


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    #: The words, or None for a recorded utterance (``pcm``).
    text: str | None
    #: A recorded user utterance: 16-bit PCM at the input format's rate.
    pcm: bytes | None = None


@dataclass(frozen=True, slots=True)
class ResponseOptions:
    instructions: str | None
    speak: bool | None
    metadata: JsonDict | None
    #: The client event that asked, for an error about it.
    event_id: str | None


def decode_audio(f: Fields, key: str, fmt: AudioFormat) -> bytes:
    """The base64 audio ``key`` in format ``fmt``, as 16-bit PCM."""
    try:
        data = base64.b64decode(f.need_text(key), validate=True)
    except (binascii.Error, ValueError):
        raise f.refuse(key, f"Invalid '{f.param(key)}': expected base64-encoded audio.") from None
    try:
        return fmt.decode(data)
    except ValueError as exc:
        raise f.refuse(key, f"Invalid '{f.param(key)}' for {fmt.name}: {exc}.") from None


def message(item: Fields, fmt: AudioFormat) -> Message:
    kind = item.text("type") or "message"
    if kind != "message":
        raise item.refuse(
            "type",
            f"Items of type '{kind[:40]}' are not supported: voicetrio's models have no "
            "tools; only message items (text, or user audio) can be created.",
            NOT_SUPPORTED,
        )
    role: Role
    named = item.choice("role", ("user", "assistant", "system")) or item.need_text("role")
    if named == "user":
        role = "user"
    elif named == "assistant":
        role = "assistant"
    else:
        role = "system"
    texts: list[str] = []
    pcm: bytes | None = None
    parts = item.objects("content")
    if not parts:
        raise item.refuse("content", "A message needs at least one content part.")
    for part in parts:
        ptype = part.need_text("type")
        if ptype in _TEXT_PARTS:
            texts.append(part.need_text("text"))
        elif ptype in _AUDIO_PARTS and "audio" in part and role == "user":
            if pcm is not None or len(parts) > 1:
                raise part.refuse("type", "A user audio message has exactly one input_audio part.")
            pcm = decode_audio(part, "audio", fmt)
        elif ptype in _AUDIO_PARTS and isinstance(part.value.get("transcript"), str):
            # Audio the client has as words only (a past reply's transcript).
            texts.append(part.need_text("transcript"))
        else:
            raise part.refuse(
                "type",
                f"Content of type '{ptype[:40]}' is not supported in a {role} message.",
                NOT_SUPPORTED,
            )
    if pcm is not None:
        return Message(role, None, pcm)
    return Message(role, " ".join(t for t in texts if t))


def response_options(
    response: Fields | None, shape: Shape, event_id: str | None
) -> ResponseOptions:
    if response is None:
        return ResponseOptions(None, None, None, event_id)
    key = "output_modalities" if shape == "ga" else "modalities"
    modalities = response.strings(key)
    speak: bool | None = None
    if modalities is not None:
        if not modalities or any(m not in ("audio", "text") for m in modalities):
            raise response.refuse(key, f"'{response.param(key)}' must list 'audio' and/or 'text'.")
        speak = "audio" in modalities
    if response.text("conversation") not in (None, "auto", "none"):
        raise response.refuse(
            "conversation",
            "Only the default conversation ('auto' or 'none') exists.",
            NOT_SUPPORTED,
        )
    metadata = response.obj("metadata")
    return ResponseOptions(
        instructions=response.text("instructions", nullable=True),
        speak=speak,
        metadata=None if metadata is None else metadata.value,
        event_id=event_id,
    )


__all__ = ["Message", "ResponseOptions", "decode_audio", "message", "response_options"]
