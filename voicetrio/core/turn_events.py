"""What the ASR stage tells the stage after it, on its one out channel.

The ASR stage only reports what it heard; the reply stage decides what that
means for a turn (it is the only one that starts, releases or cancels one):

    SpeechStarted  an utterance opened       (a reply still playing is barged in on)
    Tentative      the speculative final     (a reply may start, its output held)
    Retracted      speech resumed after it   (the held reply is dropped unheard)
    Final          the utterance's final     (the held reply is released, or one starts)
    HeardWords     the words so far, and how long the speech has lasted
                   (each partial, the tentative, and the end of every
                   utterance, with or without words): what barge-in judges

Each event names its utterance (numbered from 1 in the session), so a
``Retracted`` or a ``Final`` never applies to another utterance's held
reply. For one utterance a ``Tentative`` is always followed by a
``Retracted`` or by its ``Final``, with the same text. The transcripts
themselves go to the client straight from the ASR stage, as domain events
(:mod:`voicetrio.core.events`); these are for the pipeline only.
"""

from __future__ import annotations

from dataclasses import dataclass

from voicetrio.core.metrics import TurnMetrics


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    utterance: int
    #: When the ASR stage heard it (trio time): a reply whose audio the
    #: client still plays at that moment is barged in on.
    at: float


@dataclass(frozen=True, slots=True)
class Tentative:
    utterance: int
    text: str
    metrics: TurnMetrics


@dataclass(frozen=True, slots=True)
class Retracted:
    utterance: int


@dataclass(frozen=True, slots=True)
class Final:
    utterance: int
    transcript_id: str
    text: str
    metrics: TurnMetrics


@dataclass(frozen=True, slots=True)
class HeardWords:
    """What an utterance has said so far. ``ended``: the utterance is over
    and ``text`` is its final ("" when no words were recognized, or the
    decode failed); it comes before that utterance's ``Final``, if any."""

    utterance: int
    text: str
    #: Speech from its onset to the end of its last speech frame (ms of audio).
    speech_ms: int
    ended: bool = False


TurnEvent = SpeechStarted | Tentative | Retracted | Final | HeardWords

__all__ = ["Final", "HeardWords", "Retracted", "SpeechStarted", "Tentative", "TurnEvent"]
