"""The OpenAI Realtime API (GA and beta shapes) as a second wire adapter.

Sans-IO, like every adapter: :class:`~voicetrio.wire.realtime.adapter.RealtimeAdapter`
parses client events into the session's inputs and renders its domain events
as Realtime server events; :mod:`.handshake` reads the opening request (shape,
session kind, browser token). ``docs/realtime.md`` lists what is supported.
"""

from voicetrio.wire.realtime.adapter import RealtimeAdapter
from voicetrio.wire.realtime.handshake import Handshake, read

__all__ = ["Handshake", "RealtimeAdapter", "read"]
