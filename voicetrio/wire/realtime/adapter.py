"""The OpenAI Realtime API as a session adapter: client events in, the
session's domain events out as Realtime server events (GA or beta shape).

Parsing turns each client event into one session input
(:mod:`voicetrio.core.inputs`), after checking it against what this adapter
knows (the items it announced, the responses live); rendering turns each
domain event (:mod:`voicetrio.core.events`) into the server events the API
documents, in its order. The session is live from the connection on: the
adapter's opening input starts it, and its ``Listening`` is
``session.created``.

Answers that come back from the session core (a commit with no speech, a
reply asked for while one runs, an item added or deleted) are matched to the
client's requests in order, so an error quotes the client event that caused
it. The adapter keeps no state that assumes a rendered frame was delivered:
a cancelled reply's queued deltas are dropped by the session after
rendering, and the adapter closes what it opened when the reply ends.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from dataclasses import dataclass
from typing import Final, assert_never

from voicetrio.core import events as ev
from voicetrio.core.codes import ErrorCode
from voicetrio.core.conversation import reply_key, utterance_key
from voicetrio.core.inputs import (
    Acknowledge,
    AddAudio,
    AddText,
    Audio,
    Cancel,
    ClearAudio,
    ClientMessage,
    Commit,
    Forget,
    Frame,
    Respond,
    Start,
    Truncate,
)
from voicetrio.wire.realtime import client_events as ce
from voicetrio.wire.realtime import errors
from voicetrio.wire.realtime import server_events as se
from voicetrio.wire.realtime.errors import Refusal
from voicetrio.wire.realtime.fields import Fields, JsonDict
from voicetrio.wire.realtime.handshake import Handshake
from voicetrio.wire.realtime.ids import Ids
from voicetrio.wire.realtime.items import Entry, Items
from voicetrio.wire.realtime.requests import (
    ResponseOptions,
    decode_audio,
    message,
    response_options,
)
from voicetrio.wire.realtime.session_config import SessionConfig

#: The longest audio delta: a client with a 1 MiB frame limit (the
#: ``websockets`` default) must take a whole phrase of speech.
MAX_DELTA_MS: Final = 1000
#: Errors of the core that a response or a transcription event reports.
_SHOWN_ELSEWHERE: Final = frozenset({ErrorCode.CANCELLED, ErrorCode.ASR_FAIL})
_REPLY_FAILURES: Final = frozenset({ErrorCode.LLM_FAIL, ErrorCode.LLM_TIMEOUT})


@dataclass(slots=True)
class _Heard:
    """An utterance of the stream, from its start to its transcript."""

    item_id: str
    start_ms: int
    end_ms: int | None = None
    #: The transcript so far, as sent in deltas.
    sent: str = ""


@dataclass(slots=True)
class _Adding:
    """An item the client created, until the session has it."""

    item: se.Item
    seconds: float = 0.0
    failed: str | None = None


class RealtimeAdapter:
    """One connection's Realtime API (see :class:`voicetrio.wire.adapter.WireAdapter`)."""

    #: Transcription deltas are increments: every one must arrive.
    coalesce_partials = False

    def __init__(
        self,
        handshake: Handshake,
        *,
        token: str,
        silence_ms: int,
        instructions: str,
        asr_model: str,
        voice: str = "default",
        max_event_bytes: int = ce.MAX_EVENT_BYTES,
    ) -> None:
        self.shape = handshake.shape
        self.ids = Ids(token)
        self.max_event_bytes = max_event_bytes
        self.config = SessionConfig.initial(
            handshake.kind,
            handshake.model,
            silence_ms=silence_ms,
            instructions=instructions,
            asr_model=asr_model,
            voice=voice,
        )
        self.items = Items()
        self._heard: dict[int, _Heard] = {}
        self._responses: dict[int, se.Response] = {}
        self._adding: dict[str, _Adding] = {}
        self._commits: deque[str | None] = deque()
        self._asks: deque[ResponseOptions] = deque()
        self._forgets: dict[str, str] = {}
        self._truncates: deque[tuple[str, int]] = deque()
        self._cancel_event: str | None = None
        self._failure: tuple[str, str] | None = None

    @property
    def transcription_only(self) -> bool:
        return self.config.kind == "transcription"

    def opening(self) -> tuple[ClientMessage, ...]:
        # The session is live from the connection on, at the input format's rate.
        return (Start(self.config.input_format.sample_rate),)

    # -- parse ---------------------------------------------------------------------

    def parse(self, frame: Frame) -> ClientMessage:
        event = ce.parse(frame, self.max_event_bytes)
        request, eid = event.request, event.event_id
        if isinstance(request, ce.AudioAppend):
            # The most frequent event first.
            fields = Fields({"audio": request.audio}, "", eid)
            return Audio(decode_audio(fields, "audio", self.config.input_format))
        if isinstance(request, ce.SessionUpdate):
            if request.transcription and not self.transcription_only:
                raise Refusal(
                    errors.NOT_SUPPORTED,
                    "transcription_session.update is for transcription sessions "
                    "(connect with intent=transcription); use session.update.",
                    param="type",
                    event_id=eid,
                )
            self.config = self.config.update(request.session, self.shape)
            return self.config.configure()
        if isinstance(request, ce.AudioCommit):
            self._commits.append(eid)
            return Commit()
        if isinstance(request, ce.AudioClear):
            return ClearAudio()
        if isinstance(request, ce.ResponseCancel):
            if request.response_id is not None and not any(
                r.id == request.response_id for r in self._responses.values()
            ):
                raise Refusal(
                    errors.CANCEL_NOT_ACTIVE,
                    f"Response {request.response_id[:60]!r} is not in progress.",
                    param="response_id",
                    event_id=eid,
                )
            self._cancel_event = eid
            return Cancel()
        if isinstance(request, ce.OutputAudioClear):
            raise Refusal(
                errors.NOT_SUPPORTED,
                "output_audio_buffer.clear is for WebRTC and SIP connections; over a "
                "WebSocket, stop playing and send conversation.item.truncate.",
                param="type",
                event_id=eid,
            )
        if self.transcription_only:
            raise Refusal(
                errors.NOT_SUPPORTED,
                "A transcription session has no conversation and no responses.",
                param="type",
                event_id=eid,
            )
        return self._conversation(request, eid)

    def _conversation(self, request: ce.Request, eid: str | None) -> ClientMessage:
        if isinstance(request, ce.ResponseCreate):
            options = response_options(request.response, self.shape, eid)
            self._asks.append(options)
            return Respond(options.instructions, options.speak)
        if isinstance(request, ce.ItemCreate):
            return self._create(request, eid)
        if isinstance(request, ce.ItemDelete):
            entry = self._known(request.item_id, "delete", eid)
            self._forgets[entry.key] = entry.item.id
            return Forget(entry.key)
        if isinstance(request, ce.ItemTruncate):
            return self._truncate(request, eid)
        if isinstance(request, ce.ItemRetrieve):
            self._known(request.item_id, "retrieve", eid)
            return Acknowledge(("retrieve", request.item_id, eid))
        raise AssertionError(f"unexpected request {request!r}")

    def _known(self, item_id: str, verb: str, eid: str | None) -> Entry:
        entry = self.items.get(item_id)
        if entry is None:
            raise Refusal(
                errors.INVALID_ITEM.format(verb),
                f"Item {item_id[:60]!r} is not in the conversation.",
                param="item_id",
                event_id=eid,
            )
        return entry

    def _create(self, request: ce.ItemCreate, eid: str | None) -> ClientMessage:
        item = request.item
        msg = message(item, self.config.input_format)
        item_id = item.text("id") or self.ids.new("item")
        if item_id in self.items or item_id in self._adding:
            raise item.refuse("id", f"Item {item_id[:60]!r} already exists.")
        content = "audio" if msg.pcm is not None else "text"
        self._adding[item_id] = _Adding(se.Item(item_id, msg.role, content))
        if msg.pcm is not None:
            rate = self.config.input_format.sample_rate
            self._adding[item_id].seconds = len(msg.pcm) / 2 / rate
            return AddAudio(item_id, msg.pcm, rate)
        return AddText(item_id, msg.role, msg.text or "")

    def _truncate(self, request: ce.ItemTruncate, eid: str | None) -> ClientMessage:
        entry = self._known(request.item_id, "truncate", eid)
        if entry.turn is None or entry.item.content != "audio":
            raise Refusal(
                errors.INVALID_VALUE,
                "Only the audio of an assistant message can be truncated.",
                param="item_id",
                event_id=eid,
            )
        if request.content_index != 0:
            raise Refusal(
                errors.INVALID_VALUE,
                "The message has one content part: content_index must be 0.",
                param="content_index",
                event_id=eid,
            )
        sent_ms = int(-(-entry.audio_ms // 1))
        if request.audio_end_ms > sent_ms:
            raise Refusal(
                errors.INVALID_VALUE,
                f"audio_end_ms {request.audio_end_ms} is past the end of the audio ({sent_ms} ms).",
                param="audio_end_ms",
                event_id=eid,
            )
        self._truncates.append((entry.item.id, request.audio_end_ms))
        return Truncate(entry.turn, request.audio_end_ms)

    # -- render --------------------------------------------------------------------

    def render(self, event: ev.Event) -> tuple[Frame, ...]:
        return tuple(self._encode(body) for body in self._events(event))

    def _encode(self, body: JsonDict) -> str:
        stamped = {"type": body["type"], "event_id": self.ids.new("event"), **body}
        return json.dumps(stamped, separators=(",", ":"), ensure_ascii=False)

    def _events(self, event: ev.Event) -> list[JsonDict]:
        match event:
            case ev.Listening():
                return self._created()
            case ev.Configured():
                updated = "session.updated"
                if self.shape == "beta" and self.transcription_only:
                    updated = "transcription_session.updated"
                return [{"type": updated, "session": self._session()}]
            case ev.UtteranceStarted():
                return self._speech_started(event)
            case ev.UtteranceEnded():
                return self._speech_stopped(event)
            case ev.PartialTranscript():
                return self._partial(event)
            case ev.FinalTranscript(text=text, utterance=u):
                return self._transcribed(u, text)
            case ev.NoTranscript():
                return self._untranscribed(event)
            case ev.AudioCleared():
                self._heard = {u: h for u, h in self._heard.items() if h.end_ms is not None}
                return [{"type": "input_audio_buffer.cleared"}]
            case ev.EntryAdded():
                return self._added(event)
            case ev.EntryRemoved(key=key):
                return self._removed(key)
            case ev.ReplyTruncated(heard_ms=heard_ms):
                item_id, _ = self._truncates.popleft() if self._truncates else ("", 0)
                return [
                    {
                        "type": "conversation.item.truncated",
                        "item_id": item_id,
                        "content_index": 0,
                        "audio_end_ms": heard_ms,
                    }
                ]
            case ev.Acknowledged(payload=payload):
                return self._retrieved(payload)
            case ev.ReplyStarted():
                return self._response_started(event)
            case ev.ReplyDelta(turn=turn, text=text):
                r = self._responses.get(turn)
                if r is None:
                    return []
                r.item.text = (r.item.text or "") + text
                r.deltas += 1
                return [se.response_delta(r, text, self.shape)]
            case ev.ReplyTextDone(turn=turn, text=text):
                r = self._responses.get(turn)
                if r is not None:
                    r.item.text = text
                return []
            case ev.SpeechChunk():
                return self._speech(event)
            case ev.PhraseSpoken() | ev.Metrics():
                return []
            case ev.ReplyEnded():
                return self._response_ended(event)
            case ev.Info():
                return self._info(event)
            case ev.Error():
                return self._error(event)
            case _:
                assert_never(event)

    # -- session -------------------------------------------------------------------

    def _session(self) -> JsonDict:
        return self.config.shown(self.shape, self.ids.session)

    def _created(self) -> list[JsonDict]:
        if self.shape == "beta" and self.transcription_only:
            return [{"type": "transcription_session.created", "session": self._session()}]
        created: list[JsonDict] = [{"type": "session.created", "session": self._session()}]
        if self.shape == "beta":
            conversation = {"id": self.ids.conversation, "object": "realtime.conversation"}
            created.append({"type": "conversation.created", "conversation": conversation})
        return created

    # -- what the user said --------------------------------------------------------

    def _speech_started(self, event: ev.UtteranceStarted) -> list[JsonDict]:
        heard = _Heard(self.ids.new("item"), event.audio_ms)
        self._heard[event.utterance] = heard
        if not self.config.vad:
            return []
        return [
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": event.audio_ms,
                "item_id": heard.item_id,
            }
        ]

    def _speech_stopped(self, event: ev.UtteranceEnded) -> list[JsonDict]:
        heard = self._heard.get(event.utterance)
        if heard is None:
            return []
        heard.end_ms = event.audio_ms
        out: list[JsonDict] = []
        if event.reason == "commit":
            if self._commits:
                self._commits.popleft()
        elif self.config.vad:
            out.append(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": event.audio_ms,
                    "item_id": heard.item_id,
                }
            )
        item = se.Item(heard.item_id, "user", "audio")
        previous = self.items.add(Entry(item, utterance_key(event.utterance)))
        out.append(
            {
                "type": "input_audio_buffer.committed",
                "previous_item_id": previous,
                "item_id": heard.item_id,
            }
        )
        out.extend(se.item_added(item, previous, self.shape))
        return out

    def _partial(self, event: ev.PartialTranscript) -> list[JsonDict]:
        heard = self._heard.get(event.utterance)
        if heard is None or self.config.transcription is None:
            return []
        # Deltas add to what was sent; a partial that rewrote earlier words
        # sends nothing (the completed transcript is the whole truth).
        if not event.text.startswith(heard.sent) or event.text == heard.sent:
            return []
        delta, heard.sent = event.text[len(heard.sent) :], event.text
        return [
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": heard.item_id,
                "content_index": 0,
                "delta": delta,
            }
        ]

    def _transcribed(self, utterance: int, text: str) -> list[JsonDict]:
        heard = self._heard.pop(utterance, None)
        if heard is None:
            return []
        entry = self.items.get(heard.item_id)
        if entry is not None:
            entry.item.text = text
        if self.config.transcription is None:
            return []
        seconds = ((heard.end_ms or heard.start_ms) - heard.start_ms) / 1000
        return [self._completed(heard.item_id, text, seconds)]

    def _completed(self, item_id: str, text: str, seconds: float) -> JsonDict:
        return {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item_id,
            "content_index": 0,
            "transcript": text,
            "usage": se.usage_seconds(seconds),
        }

    def _failed(self, item_id: str, message: str) -> JsonDict:
        return {
            "type": "conversation.item.input_audio_transcription.failed",
            "item_id": item_id,
            "content_index": 0,
            "error": {
                "type": "transcription_error",
                "code": "asr_fail",
                "message": message,
                "param": None,
            },
        }

    def _untranscribed(self, event: ev.NoTranscript) -> list[JsonDict]:
        if event.key is not None:
            # A clip: its item is announced when the session adds it.
            adding = self._adding.get(event.key)
            if adding is not None:
                adding.failed = event.message
            return []
        if event.failed:
            heard = self._heard.pop(event.utterance, None)
            if heard is None or self.config.transcription is None:
                return []
            return [self._failed(heard.item_id, event.message)]
        return self._transcribed(event.utterance, "")

    # -- items the client made -----------------------------------------------------

    def _added(self, event: ev.EntryAdded) -> list[JsonDict]:
        adding = self._adding.pop(event.key, None)
        if adding is None:
            return []
        item = adding.item
        item.text = event.text if item.content == "text" else event.text or None
        previous = self.items.add(Entry(item, event.key))
        out = se.item_added(item, previous, self.shape)
        if item.content == "audio" and self.config.transcription is not None:
            if adding.failed is not None:
                out.append(self._failed(item.id, adding.failed))
            else:
                out.append(self._completed(item.id, event.text, adding.seconds))
        return out

    def _removed(self, key: str) -> list[JsonDict]:
        item_id = self._forgets.pop(key, None)
        if item_id is None:
            entry = self.items.by_key(key)
            item_id = None if entry is None else entry.item.id
        if item_id is None:
            return []
        self.items.remove(item_id)
        return [{"type": "conversation.item.deleted", "item_id": item_id}]

    def _retrieved(self, payload: object) -> list[JsonDict]:
        if not (isinstance(payload, tuple) and len(payload) == 3 and payload[0] == "retrieve"):
            return []
        _, item_id, eid = payload
        entry = self.items.get(item_id)
        if entry is None:
            return [
                se.error(
                    errors.INVALID_ITEM.format("retrieve"),
                    f"Item {str(item_id)[:60]!r} is not in the conversation.",
                    param="item_id",
                    client_event_id=eid,
                )
            ]
        return [{"type": "conversation.item.retrieved", "item": entry.item.shown(self.shape)}]

    # -- responses -----------------------------------------------------------------

    def _response_started(self, event: ev.ReplyStarted) -> list[JsonDict]:
        options = ResponseOptions(None, None, None, None)
        if event.transcript_id == "" and self._asks:
            # A reply the client asked for: its options, in the order asked.
            options = self._asks.popleft()
        content = "audio" if event.speak else "text"
        item = se.Item(self.ids.new("item"), "assistant", content, "", status="in_progress")
        fmt = self.config.output_format
        r = se.Response(
            id=self.ids.new("resp"),
            turn=event.turn,
            item=item,
            speak=event.speak,
            conversation_id=self.ids.conversation,
            modalities=self.config.modalities(self.shape, event.speak),
            output_format=fmt.ga() if self.shape == "ga" else fmt.name,
            voice=self.config.voice,
            metadata=options.metadata,
        )
        self._responses[event.turn] = r
        previous = self.items.add(Entry(item, reply_key(event.turn), turn=event.turn))
        return se.response_started(r, previous, self.shape)

    def _speech(self, chunk: ev.SpeechChunk) -> list[JsonDict]:
        r = self._responses.get(chunk.turn)
        if r is None:
            return []
        fmt = self.config.output_format
        data = fmt.encode(chunk.audio.pcm, chunk.audio.sample_rate)
        step = fmt.sample_rate * fmt.width * MAX_DELTA_MS // 1000
        out = []
        for offset in range(0, len(data), step):
            piece = data[offset : offset + step]
            out.append(se.audio_delta(r, base64.b64encode(piece).decode("ascii"), self.shape))
        r.audio_ms += fmt.duration_ms(len(data))
        entry = self.items.get(r.item.id)
        if entry is not None:
            entry.audio_ms = r.audio_ms
        return out

    def _response_ended(self, event: ev.ReplyEnded) -> list[JsonDict]:
        r = self._responses.pop(event.turn, None)
        if r is None:
            return []
        details: JsonDict | None = None
        if event.outcome is ev.Outcome.DONE:
            status, r.item.status = "completed", "completed"
        elif event.outcome is ev.Outcome.CANCELLED:
            status, r.item.status = "cancelled", "incomplete"
            reason = {"speech": "turn_detected", "client": "client_cancelled"}.get(event.cause)
            details = {"type": "cancelled", "reason": reason}
        else:
            status, r.item.status = "failed", "incomplete"
            code, message = self._failure or (event.outcome.value, "the reply failed")
            details = {
                "type": "failed",
                "error": {"type": "server_error", "code": code, "message": message},
            }
        self._failure = None
        previous = self.items.previous(r.item.id)
        return se.response_ended(r, status, details, previous, self.shape)

    # -- notices and errors --------------------------------------------------------

    def _info(self, info: ev.Info) -> list[JsonDict]:
        if info.kind == ev.NOTHING_TO_CANCEL.kind:
            eid, self._cancel_event = self._cancel_event, None
            return [
                se.error(
                    errors.CANCEL_NOT_ACTIVE,
                    "There is no response in progress to cancel.",
                    client_event_id=eid,
                )
            ]
        if info.kind == ev.REPLY_IN_PROGRESS.kind:
            ask = self._asks.popleft() if self._asks else None
            return [
                se.error(
                    errors.RESPONSE_ACTIVE,
                    "The conversation already has a response in progress; cancel it or "
                    "wait for its response.done.",
                    client_event_id=None if ask is None else ask.event_id,
                )
            ]
        if info.kind == ev.NOTHING_TO_COMMIT.kind:
            eid = self._commits.popleft() if self._commits else None
            return [
                se.error(
                    errors.COMMIT_EMPTY,
                    "The input audio buffer has no speech since the last commit.",
                    client_event_id=eid,
                )
            ]
        return []  # the rest (slow reader, slow recognizer, throttling...) the API has no event for

    def _error(self, error: ev.Error) -> list[JsonDict]:
        details = dict(error.details)
        if error.code is ErrorCode.BAD_MESSAGE and error.reason is not None:
            return [
                se.error(
                    error.reason,
                    error.message,
                    param=details.get("param"),
                    client_event_id=details.get("event_id"),
                )
            ]
        if error.code in _SHOWN_ELSEWHERE:
            return []
        if error.code in _REPLY_FAILURES:
            self._failure = (error.code.lower(), error.message)
            return []
        extra = "".join(f"; {k}={v}" for k, v in error.details)
        return [
            se.error(
                error.code.lower(),
                error.message + extra,
                kind="server_error",
            )
        ]


__all__ = ["MAX_DELTA_MS", "RealtimeAdapter"]
