"""What every stage of a session is given: a leaf the stages and the session share.

The stages (:mod:`voicetrio.session.asr_stage`, :mod:`voicetrio.session.reply`,
:mod:`voicetrio.session.transcripts_only`) import this module and the event modules,
never the session or each other's internals, so the session composes them
without an import circle. A stage sends what the client should hear to
:class:`EventSink` as domain events; the session is the sink, and renders
them with its wire adapter into the outbox.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from voicetrio.config import Config
from voicetrio.core.events import Event
from voicetrio.core.inputs import ConversationRequest
from voicetrio.core.turn_events import TurnEvent
from voicetrio.engines.base import Engines
from voicetrio.prom import Observer

#: Called with the time (trio clock) the event was written to the socket.
OnSent = Callable[[float], None]
#: What the ASR stage hands the stage after it, on its one channel: what it
#: heard, and the client's requests about the conversation, in the order the
#: client made them relative to the audio (a reply asked for after a commit
#: answers the words of that commit).
Downstream = TurnEvent | ConversationRequest


class EventSink(Protocol):
    """The client's side of a session, as the stages see it."""

    def emit(self, event: Event, *, turn: int | None = None, on_sent: OnSent | None = None) -> None:
        """Queue ``event`` for the client, never blocking. ``turn`` tags it as
        that turn's, so :meth:`discard` can take it back; ``on_sent`` runs
        once it is written (a latency mark)."""
        ...

    def discard(self, turn: int) -> int:
        """Drop what turn ``turn`` queued and was not written; how many."""
        ...


@dataclass(frozen=True, slots=True)
class StageContext:
    """Settings, engines and the sink, the same for every stage of a session."""

    sid: str
    config: Config
    engines: Engines
    sink: EventSink
    observer: Observer = field(default_factory=Observer)


__all__ = ["Downstream", "EventSink", "OnSent", "StageContext"]
