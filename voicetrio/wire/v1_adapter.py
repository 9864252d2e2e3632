"""The v1 wire protocol as a session adapter: frames in, domain events out.

Parsing is the sans-IO :class:`~voicetrio.wire.v1.ProtocolMachine`;
rendering maps each domain event (:mod:`voicetrio.core.events`) onto the v1
event builders of :mod:`voicetrio.wire.v1`, so the bytes on the wire are
exactly those ``docs/protocol.md`` describes. The one piece of state is the
reply audio format the client asked for in its last accepted ``start``
(WAV in base64, or a JSON header and a binary frame of raw PCM): speech is
rendered in the format asked when it is queued.
"""

from __future__ import annotations

import base64
from typing import assert_never

from voicetrio.core import events as ev
from voicetrio.core.inputs import Frame
from voicetrio.wire import v1 as protocol
from voicetrio.wire.v1 import AudioFormat, ClientMessage, JsonDict, Limits, ProtocolMachine


class V1Adapter:
    """One connection's v1 protocol (see :class:`voicetrio.wire.adapter.WireAdapter`)."""

    #: Each partial_transcript is the whole text so far: the newest is enough.
    coalesce_partials = True

    def __init__(self, limits: Limits) -> None:
        self.machine = ProtocolMachine(limits)

    def opening(self) -> tuple[ClientMessage, ...]:
        return ()  # the client's start opens the stream

    def parse(self, frame: Frame) -> ClientMessage:
        if isinstance(frame, str):
            return self.machine.receive_text(frame)
        return self.machine.receive_bytes(frame)

    def render(self, event: ev.Event) -> tuple[Frame, ...]:
        return render(event, self.machine.audio_format)


def render(event: ev.Event, audio_format: AudioFormat = "wav") -> tuple[Frame, ...]:
    """The v1 frames of ``event``, speech in ``audio_format``."""
    if isinstance(event, ev.SpeechChunk):
        return _speech(event, audio_format)
    body = to_json(event)
    return () if body is None else (protocol.encode(body),)


def to_json(event: ev.Event) -> JsonDict | None:
    """The v1 event object for ``event`` (speech aside); None if v1 has none."""
    match event:
        case ev.Listening(session_id=sid, mode=mode):
            return protocol.protocol_hello(sid, mode=mode)
        case ev.PartialTranscript(text=text):
            return protocol.partial_transcript(text)
        case ev.FinalTranscript(transcript_id=tid, text=text):
            return protocol.final_transcript(text, tid)
        case ev.ReplyStarted():
            return None  # v1 has no such event: the first token says it
        case (
            ev.UtteranceStarted()
            | ev.UtteranceEnded()
            | ev.NoTranscript()
            | ev.AudioCleared()
            | ev.Configured()
            | ev.Acknowledged()
            | ev.EntryAdded()
            | ev.EntryRemoved()
            | ev.ReplyTruncated()
        ):
            # v1 has no frame for these: its client never asks for the
            # answers, and speech boundaries show as transcripts.
            return None
        case ev.ReplyDelta(text=text):
            return protocol.llm_token(text)
        case ev.ReplyTextDone():
            return protocol.llm_done()
        case ev.PhraseSpoken(seq=seq):
            return protocol.tts_phrase_done(seq)
        case ev.ReplyEnded(outcome=outcome):
            # A failed turn has said so with its error event already.
            return protocol.tts_complete() if outcome is ev.Outcome.DONE else None
        case ev.Metrics(transcript_id=tid, marks=marks):
            return protocol.metrics({"id": tid, **marks.fields()})
        case ev.Info(kind=kind, message=message, code=code, details=details):
            extra: JsonDict = {} if code is None else {"code": str(code)}
            return protocol.info(message, event=kind, **extra, **dict(details))
        case ev.Error(code=code, message=message, reason=reason, details=details):
            return {**protocol.error(code, message, reason=reason), **dict(details)}
        case ev.SpeechChunk():
            raise ValueError("speech is rendered with its audio format: use render()")
        case _:
            assert_never(event)


def _speech(chunk: ev.SpeechChunk, audio_format: AudioFormat) -> tuple[Frame, ...]:
    audio = chunk.audio
    if audio_format == "pcm16":
        # The header announces the binary frame that must follow it at once.
        header = protocol.tts_chunk_pcm16(chunk.seq, audio.sample_rate, len(audio.pcm))
        return (protocol.encode(header), audio.pcm)
    b64 = base64.b64encode(audio.wav()).decode("ascii")
    return (protocol.encode(protocol.tts_chunk_b64(chunk.seq, b64)),)


__all__ = ["V1Adapter", "render", "to_json"]
