"""The stage after the ASR stage in a lean session: transcripts, no replies.

A lean session is a session built with this stage in place of the reply
stage (:mod:`voicetrio.session.reply`), not a mode the stages test for. It answers
each final with its figures (the ASR marks; no reply marks), and a cancel
with "nothing to cancel": there is never a reply to cancel. Requests about a
conversation never reach it (a protocol refuses them in a transcription
session) and would be ignored; settings change nothing here.
"""

from __future__ import annotations

import trio

from voicetrio.core.events import NOTHING_TO_CANCEL, Metrics
from voicetrio.core.inputs import Configure
from voicetrio.core.turn_events import Final
from voicetrio.session.stage import Downstream, StageContext
from voicetrio.session.turn import Turn


class TranscriptsOnly:
    #: No reply, ever (the session's view of the stage after the ASR stage).
    turn: Turn | None = None
    turns_started = 0

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx

    async def run(self, events: trio.MemoryReceiveChannel[Downstream]) -> None:
        async with events:
            async for event in events:
                if isinstance(event, Final):
                    self.ctx.sink.emit(Metrics(event.transcript_id, event.metrics))

    def configure(self, settings: Configure) -> None:
        """Nothing to configure: there are no replies."""

    def cancel(self) -> None:
        self.ctx.sink.emit(NOTHING_TO_CANCEL)

    async def drain(self, deadline: float) -> None:
        """Nothing to let finish at shutdown."""


__all__ = ["TranscriptsOnly"]
