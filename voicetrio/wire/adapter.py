"""What a session needs from a wire protocol: the adapter interface.

One adapter per connection, sans-IO: it turns the client's frames into the
session's inputs (:data:`~voicetrio.wire.v1.ClientMessage`) and the
session's domain events (:mod:`voicetrio.core.events`) into frames. The session
owns the socket, the outbox and the order of everything; the adapter only
translates, so a new protocol is a new adapter and no stage changes
(``docs/architecture.md``, "Wire adapters").
"""

from __future__ import annotations

from typing import Protocol

from voicetrio.core.events import Event
from voicetrio.core.inputs import ClientMessage, Frame


class WireAdapter(Protocol):
    #: Whether a newer partial transcript may replace one still queued for a
    #: slow client: true when each shows the whole text so far, false when a
    #: protocol sends increments (every one must arrive).
    coalesce_partials: bool

    def opening(self) -> tuple[ClientMessage, ...]:
        """Inputs the session takes as if the client had sent them first: a
        protocol whose session is live from the connection on (no ``start``
        message) starts it here."""
        ...

    def parse(self, frame: Frame) -> ClientMessage:
        """The input one client frame carries, in order; raises
        :class:`~voicetrio.wire.v1.ProtocolError` for a frame it refuses."""
        ...

    def render(self, event: Event) -> tuple[Frame, ...]:
        """The frames that carry ``event``, sent back to back; ``()`` when
        this protocol does not show it. Called when the event is queued (for
        :class:`~voicetrio.core.events.Metrics`, when it is written), in the order
        the session produced the events."""
        ...


__all__ = ["WireAdapter"]
