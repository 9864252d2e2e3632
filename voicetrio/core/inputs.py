"""What a client may ask of a session, in any wire protocol: the inputs.

A wire adapter (:mod:`voicetrio.wire`) turns frames into these; the session
acts on them. A frame the adapter refuses is a :class:`ProtocolError` that
knows its code, its reason and whether the connection survives it.

The first four (start, audio, stop, cancel) are all the v1 protocol asks.
The rest serve a protocol whose client drives the conversation itself (the
OpenAI Realtime API): end the user's turn now, drop the audio not yet
finalized, change how turns are taken, put text or a recorded clip into the
conversation, forget an entry, say how much of a spoken reply was heard, ask
for a reply. They name what the session does, never a wire event, so a
third protocol can use them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from voicetrio.core.codes import ErrorCode, is_fatal

#: Bytes of one client or server frame, as a WebSocket carries it.
Frame = str | bytes
#: Named extra facts of a refusal (the same shape as a notice's details).
RefusalDetails = tuple[tuple[str, str | int | float | bool | None], ...]


class ProtocolError(Exception):
    """A client frame the server refuses, with everything needed to answer it.

    ``details`` are what a protocol needs beyond the code to answer (the
    Realtime API names the offending parameter and the client's event id);
    the session passes them on in the error event.
    """

    def __init__(
        self, code: ErrorCode, reason: str, message: str, details: RefusalDetails = ()
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

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


#: Who said an entry of the conversation.
Role = Literal["user", "assistant", "system"]


@dataclass(frozen=True, slots=True)
class TurnTaking:
    """How the end of the user's turn is found, and what follows it.

    The defaults are the v1 protocol's: the server ends a turn after its
    silence window, answers it, and stops a reply the user talks over.
    """

    #: The server ends a turn after silence; otherwise only a :class:`Commit`
    #: (or the length limit) ends one.
    detect: bool = True
    #: The silence that ends a turn; None: the server's setting.
    silence_ms: int | None = None
    #: Audio kept before the speech onset; None: the server's setting.
    preroll_ms: int | None = None
    #: A turn the server ends is answered at once; otherwise the user's words
    #: join the conversation and wait for a :class:`Respond`.
    reply: bool = True
    #: Speech over a reply stops it (and the server's own setting allows it).
    interrupt: bool = True


@dataclass(frozen=True, slots=True)
class Configure:
    """The session's settings from now on, whole (a snapshot, not a change)."""

    #: The rate of the client's audio from now on.
    sample_rate: int
    turns: TurnTaking = field(default_factory=TurnTaking)
    #: The system prompt of every reply; None: the server's.
    instructions: str | None = None
    #: Replies are spoken; otherwise text only.
    speak: bool = True


@dataclass(frozen=True, slots=True)
class Commit:
    """The user's turn ends now: finalize the audio heard since the last one.
    Unlike :class:`Stop`, the stream goes on."""


@dataclass(frozen=True, slots=True)
class ClearAudio:
    """Forget the audio not finalized yet (an utterance in progress)."""


@dataclass(frozen=True, slots=True)
class AddText:
    """Put text into the conversation under ``key`` (unique in the session)."""

    key: str
    role: Role
    text: str


@dataclass(frozen=True, slots=True)
class AddAudio:
    """A recorded user utterance for the conversation: transcribed whole,
    then added under ``key`` like :class:`AddText`."""

    key: str
    pcm: bytes
    sample_rate: int


@dataclass(frozen=True, slots=True)
class Forget:
    """Take the entry ``key`` out of the conversation (see
    :mod:`voicetrio.core.conversation` for the keys of heard utterances and replies)."""

    key: str


@dataclass(frozen=True, slots=True)
class Truncate:
    """The client heard only the first ``heard_ms`` of reply ``turn``'s speech:
    the conversation keeps only the words heard."""

    turn: int
    heard_ms: int


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer the conversation as it stands now. ``instructions`` and
    ``speak`` override the session's for this reply only."""

    instructions: str | None = None
    speak: bool | None = None


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """A request only the protocol can answer (its own bookkeeping): the
    session hands ``payload`` back in order, as an event, and does nothing else."""

    payload: object


#: What the stage after the ASR stage is asked, in order with what was heard.
ConversationRequest = AddText | Forget | Truncate | Respond

ClientMessage = (
    Start
    | Stop
    | Cancel
    | Audio
    | Configure
    | Commit
    | ClearAudio
    | AddAudio
    | Acknowledge
    | ConversationRequest
)


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
    "Acknowledge",
    "AddAudio",
    "AddText",
    "Audio",
    "AudioFormat",
    "Cancel",
    "ClearAudio",
    "ClientMessage",
    "Commit",
    "Configure",
    "ConversationRequest",
    "Forget",
    "Frame",
    "Limits",
    "ProtocolError",
    "RefusalDetails",
    "Respond",
    "Role",
    "Start",
    "Stop",
    "Truncate",
    "TurnTaking",
]
