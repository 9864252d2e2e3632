"""What a session tells its client, before any wire protocol: domain events.

The stages emit these into the session's outbox; the connection's adapter
(:mod:`voicetrio.wire.v1_adapter` for the v1 protocol) renders each one into the
frames its protocol sends, and may render an event as nothing at all (v1
has no frame for :class:`ReplyStarted`). So the stages never build JSON,
and a second protocol is a second adapter, not a change to a stage.

Events that belong to an assistant turn carry its number (``turn``), which a
protocol with response ids (the OpenAI Realtime API) maps to its own ids;
transcripts and the figures carry the transcript id, which names the user's
side of the turn. Audio is PCM with its rate (:class:`SpeechAudio`): the
encoding the client asked for (WAV, raw PCM, another rate) is the adapter's.

Utterances are numbered from 1 in the session: the events of one utterance
(its start, partials, end, final or lack of one) carry its number, so a
protocol that names the user's items (the Realtime API) can tell them apart
even when one utterance's final comes after the next one began. Times of
speech (``audio_ms``) count the client's audio since the session began.
The answers to a client's conversation requests (:mod:`voicetrio.core.inputs`)
are events too (:class:`EntryAdded`, :class:`ReplyTruncated`, ...), which
the v1 protocol, never asking, renders as nothing.

Sans-IO: no Trio, no engines, no wire format.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final, Literal

from voicetrio.core.audio import SpeechAudio
from voicetrio.core.codes import ErrorCode
from voicetrio.core.inputs import Role
from voicetrio.core.metrics import TurnMetrics

#: A session with the reply stage, or a lean one that only transcribes.
Mode = Literal["full", "lean"]
Scalar = str | int | float | bool | None
#: Named extra figures of a notice, in the order a protocol shows them.
Details = tuple[tuple[str, Scalar], ...]


class Outcome(enum.Enum):
    """How an assistant turn ended (``RUNNING`` until it does)."""

    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    LLM_TIMEOUT = "llm_timeout"
    LLM_FAIL = "llm_fail"


@dataclass(frozen=True, slots=True)
class Listening:
    """The session accepted the client's start and listens."""

    session_id: str
    mode: Mode


@dataclass(frozen=True, slots=True)
class UtteranceStarted:
    """The user began to speak (utterance ``utterance``), ``audio_ms`` into the audio."""

    utterance: int
    audio_ms: int


@dataclass(frozen=True, slots=True)
class UtteranceEnded:
    """The user's turn ended: after silence, on the client's commit or stop,
    or at the length limit (``reason``). Its final, or a
    :class:`NoTranscript`, follows."""

    utterance: int
    audio_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class PartialTranscript:
    """What the user has said so far. Only the newest one matters: the
    outbox lets a newer one replace one still queued for a slow client
    (unless the protocol sends them as increments)."""

    text: str
    utterance: int = 0


@dataclass(frozen=True, slots=True)
class FinalTranscript:
    """The user's utterance, ended; ``transcript_id`` is unique in the session."""

    transcript_id: str
    text: str
    utterance: int = 0


@dataclass(frozen=True, slots=True)
class NoTranscript:
    """An ended utterance (or, with ``key``, a recorded clip) has no words:
    none were recognized, or recognition ``failed``."""

    utterance: int
    failed: bool
    message: str
    key: str | None = None


@dataclass(frozen=True, slots=True)
class AudioCleared:
    """The audio not finalized yet was dropped, as the client asked."""


@dataclass(frozen=True, slots=True)
class Configured:
    """The client's new settings apply from now on."""


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """A request only the protocol answers, handed back in order."""

    payload: object


@dataclass(frozen=True, slots=True)
class EntryAdded:
    """The conversation took text under ``key`` (what the client added, or
    the words of a clip it sent)."""

    key: str
    role: Role
    text: str


@dataclass(frozen=True, slots=True)
class EntryRemoved:
    """The conversation no longer has the entry ``key``."""

    key: str


@dataclass(frozen=True, slots=True)
class ReplyTruncated:
    """Reply ``turn`` is remembered only as far as its first ``heard_ms`` of speech."""

    turn: int
    heard_ms: int


@dataclass(frozen=True, slots=True)
class ReplyStarted:
    """Turn ``turn`` answers transcript ``transcript_id`` (a held reply says
    so when it is released, as if it had started then; ``""`` when the client
    asked for a reply to the conversation as it stood). Exactly one
    :class:`ReplyEnded` follows; a held reply dropped unheard says neither.
    ``speak``: the reply will be spoken (else it is text only)."""

    turn: int
    transcript_id: str
    speak: bool = True


@dataclass(frozen=True, slots=True)
class ReplyDelta:
    """A piece of the reply's text, as the language model wrote it."""

    turn: int
    text: str


@dataclass(frozen=True, slots=True)
class ReplyTextDone:
    """The reply's text is complete; ``text`` is all of it."""

    turn: int
    text: str


@dataclass(frozen=True, slots=True)
class SpeechChunk:
    """The speech of phrase ``seq`` (numbered from 1 in each turn)."""

    turn: int
    seq: int
    audio: SpeechAudio


@dataclass(frozen=True, slots=True)
class PhraseSpoken:
    """Phrase ``seq`` has been spoken in full."""

    turn: int
    seq: int


#: Who cut a cancelled reply short: the client, the user talking over it,
#: the server shutting down ("" when it was not cancelled).
CancelCause = Literal["", "client", "speech", "shutdown"]


@dataclass(frozen=True, slots=True)
class ReplyEnded:
    """The turn ended: done, failed (after its :class:`Error`), or cancelled
    (said by the reply stage, after the turn's unsent events were dropped;
    ``cause`` says by whom)."""

    turn: int
    outcome: Outcome
    #: A detail for protocols that report it, not part of what the end is:
    #: two ends of one turn with one outcome are the same end.
    cause: CancelCause = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Metrics:
    """The latency figures of the turn named by ``transcript_id``.

    ``marks`` is live: a protocol reads it when the event is written, so
    the first audio actually written (t4) is in it even when that audio was
    still queued as the turn ended.
    """

    transcript_id: str
    marks: TurnMetrics


@dataclass(frozen=True, slots=True)
class Info:
    """A notice the session goes on after: ``kind`` names it, ``code`` is set
    when it reports a condition (slow reader, failed phrase, max duration)."""

    kind: str
    message: str
    code: ErrorCode | None = None
    details: Details = ()


@dataclass(frozen=True, slots=True)
class Error:
    """Something failed; whether the session survives it is the code's
    (:func:`voicetrio.core.codes.is_fatal`). ``reason`` names a refused frame's fault."""

    code: ErrorCode
    message: str
    reason: str | None = None
    details: Details = ()


Event = (
    Listening
    | UtteranceStarted
    | UtteranceEnded
    | PartialTranscript
    | FinalTranscript
    | NoTranscript
    | AudioCleared
    | Configured
    | Acknowledged
    | EntryAdded
    | EntryRemoved
    | ReplyTruncated
    | ReplyStarted
    | ReplyDelta
    | ReplyTextDone
    | SpeechChunk
    | PhraseSpoken
    | ReplyEnded
    | Metrics
    | Info
    | Error
)

#: The answer to a cancel with no reply to cancel (lean sessions always give it).
NOTHING_TO_CANCEL: Final = Info("nothing_to_cancel", "nothing to cancel")
#: The answer to a request for a reply while one is being given.
REPLY_IN_PROGRESS: Final = Info(
    "reply_in_progress", "a reply is in progress; cancel it or wait for its end"
)
#: The answer to a commit with no speech heard since the last turn ended.
NOTHING_TO_COMMIT: Final = Info("nothing_to_commit", "no speech to commit since the last turn")

__all__ = [
    "NOTHING_TO_CANCEL",
    "NOTHING_TO_COMMIT",
    "REPLY_IN_PROGRESS",
    "Acknowledged",
    "AudioCleared",
    "CancelCause",
    "Configured",
    "Details",
    "EntryAdded",
    "EntryRemoved",
    "Error",
    "Event",
    "FinalTranscript",
    "Info",
    "Listening",
    "Metrics",
    "Mode",
    "NoTranscript",
    "Outcome",
    "PartialTranscript",
    "PhraseSpoken",
    "ReplyDelta",
    "ReplyEnded",
    "ReplyStarted",
    "ReplyTextDone",
    "ReplyTruncated",
    "Scalar",
    "SpeechChunk",
    "UtteranceEnded",
    "UtteranceStarted",
]
