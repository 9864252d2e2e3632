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

Sans-IO: no Trio, no engines, no wire format.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal

from voicetrio.core.audio import SpeechAudio
from voicetrio.core.codes import ErrorCode
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
class PartialTranscript:
    """What the user has said so far. Only the newest one matters: the
    outbox lets a newer one replace one still queued for a slow client."""

    text: str


@dataclass(frozen=True, slots=True)
class FinalTranscript:
    """The user's utterance, ended; ``transcript_id`` is unique in the session."""

    transcript_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ReplyStarted:
    """Turn ``turn`` answers transcript ``transcript_id`` (a held reply says
    so when it is released, as if it had started then). Exactly one
    :class:`ReplyEnded` follows; a held reply dropped unheard says neither."""

    turn: int
    transcript_id: str


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


@dataclass(frozen=True, slots=True)
class ReplyEnded:
    """The turn ended: done, failed (after its :class:`Error`), or cancelled
    (said by the reply stage, after the turn's unsent events were dropped)."""

    turn: int
    outcome: Outcome


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
    | PartialTranscript
    | FinalTranscript
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

__all__ = [
    "NOTHING_TO_CANCEL",
    "Details",
    "Error",
    "Event",
    "FinalTranscript",
    "Info",
    "Listening",
    "Metrics",
    "Mode",
    "Outcome",
    "PartialTranscript",
    "PhraseSpoken",
    "ReplyDelta",
    "ReplyEnded",
    "ReplyStarted",
    "ReplyTextDone",
    "Scalar",
    "SpeechChunk",
]
