"""What a client may ask of a session, in any wire protocol: the inputs.

A wire adapter (:mod:`voicetrio.wire`) turns frames into these; the session
acts on them. A frame the adapter refuses is a :class:`ProtocolError` that
knows its code, its reason and whether the connection survives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from voicetrio.core.codes import ErrorCode, is_fatal

#: Bytes of one client or server frame, as a WebSocket carries it.
Frame = str | bytes


class ProtocolError(Exception):
    """A client frame the server refuses, with everything needed to answer it."""

    def __init__(self, code: ErrorCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    @property
    def fatal(self) -> bool:
        return is_fatal(self.code)


# --------------------------------------------------------------------------
# Client messages


AudioFormat = Literal["wav", "pcm16"]
AUDIO_FORMATS: Final[tuple[AudioFormat, ...]] = ("wav", "pcm16")


@dataclass(frozen=True, slots=True)
class Start:
    sample_rate: int
    audio_format: AudioFormat = "wav"


@dataclass(frozen=True, slots=True)
class Stop:
    pass


@dataclass(frozen=True, slots=True)
class Cancel:
    pass


@dataclass(frozen=True, slots=True)
class Audio:
    """Raw 16-bit little-endian mono PCM at the session's sample rate."""

    pcm: bytes


ClientMessage = Start | Stop | Cancel | Audio


@dataclass(frozen=True, slots=True)
class Limits:
    """What the server accepts; built from the config once."""

    max_text_bytes: int = 4096
    max_frame_bytes: int = 192_000
    min_sample_rate: int = 16000
    max_sample_rate: int = 16000
    max_consecutive_errors: int = 20


__all__ = [
    "AUDIO_FORMATS",
    "Audio",
    "AudioFormat",
    "Cancel",
    "ClientMessage",
    "Frame",
    "Limits",
    "ProtocolError",
    "Start",
    "Stop",
]
