"""The Realtime adapter alone (sans-IO): client events in, session inputs
out; domain events in, server events out, in both shapes.

Every server event rendered here is validated against the ``openai`` SDK's
own models of the API (GA and beta), so a field a strict client requires is
never missing; the names and the order are asserted exactly.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from openai.types.beta.realtime import realtime_server_event as beta_events
from openai.types.realtime import realtime_server_event as ga_events
from pydantic import TypeAdapter

from voicetrio.core import events as ev
from voicetrio.core.audio import SpeechAudio
from voicetrio.core.codes import ErrorCode
from voicetrio.core.conversation import utterance_key
from voicetrio.core.inputs import (
    Acknowledge,
    AddAudio,
    AddText,
    Audio,
    Cancel,
    ClearAudio,
    Commit,
    Configure,
    Forget,
    ProtocolError,
    Respond,
    Start,
    Truncate,
    TurnTaking,
)
from voicetrio.core.metrics import TurnMetrics
from voicetrio.wire.realtime import handshake
from voicetrio.wire.realtime.adapter import RealtimeAdapter
from voicetrio.wire.realtime.session_config import Shape

GA_EVENT = TypeAdapter(ga_events.RealtimeServerEvent)
BETA_EVENT = TypeAdapter(beta_events.RealtimeServerEvent)
#: Sent by the API (and by us) though the beta models do not list it.
UNLISTED = {"transcription_session.created"}


def make(shape: Shape = "ga", query: dict[str, str] | None = None, **kw: Any) -> RealtimeAdapter:
    headers = {"OpenAI-Beta": "realtime=v1"} if shape == "beta" else {}
    hello = handshake.read(headers, {"model": "gpt-realtime", **(query or {})})
    return RealtimeAdapter(
        hello, token="t", silence_ms=700, instructions="Be brief.", asr_model="tiny.en", **kw
    )


def out(adapter: RealtimeAdapter, event: ev.Event) -> list[dict[str, Any]]:
    """The server events ``event`` renders as, each checked against the SDK's model."""
    rendered = []
    for frame in adapter.render(event):
        assert isinstance(frame, str)
        body = json.loads(frame)
        assert body["event_id"].startswith("event_t")
        if body["type"] not in UNLISTED:
            (GA_EVENT if adapter.shape == "ga" else BETA_EVENT).validate_python(body)
        rendered.append(body)
    return rendered


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def send(adapter: RealtimeAdapter, **event: Any) -> object:
    return adapter.parse(json.dumps(event))


def refused(adapter: RealtimeAdapter, frame: str | bytes) -> dict[str, Any]:
    """The error event the session sends for a refused frame."""
    with pytest.raises(ProtocolError) as caught:
        adapter.parse(frame)
    exc = caught.value
    assert exc.code is ErrorCode.BAD_MESSAGE and not exc.fatal
    (error,) = out(adapter, ev.Error(exc.code, exc.message, reason=exc.reason, details=exc.details))
    return error


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- the session's settings ----------------------------------------------------------


def test_the_session_is_live_from_the_connection_on() -> None:
    ga, beta = make("ga"), make("beta")
    assert ga.opening() == (Start(24000),)
    created = out(ga, ev.Listening("s1", "full"))
    assert types(created) == ["session.created"]
    session = created[0]["session"]
    assert session["type"] == "realtime" and session["model"] == "gpt-realtime"
    assert session["instructions"] == "Be brief." and session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 700
    assert session["audio"]["input"]["transcription"]["model"] == "tiny.en"
    assert types(out(beta, ev.Listening("s1", "full"))) == [
        "session.created",
        "conversation.created",
    ]


def test_a_ga_session_update_is_one_snapshot_for_the_core() -> None:
    adapter = make("ga")
    settings = send(
        adapter,
        type="session.update",
        event_id="c1",
        session={
            "type": "realtime",
            "instructions": "Answer in French.",
            "output_modalities": ["text"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "turn_detection": {
                        "type": "server_vad",
                        "silence_duration_ms": 400,
                        "prefix_padding_ms": 200,
                        "threshold": 0.7,
                        "create_response": False,
                        "interrupt_response": False,
                    },
                    "transcription": None,
                },
                "output": {"format": {"type": "audio/pcma"}, "voice": "marin"},
            },
            "tools": [],
            "tracing": "auto",
        },
    )
    assert settings == Configure(
        sample_rate=8000,
        turns=TurnTaking(silence_ms=400, preroll_ms=200, reply=False, interrupt=False),
        instructions="Answer in French.",
        speak=False,
    )
    (updated,) = out(adapter, ev.Configured())
    session = updated["session"]
    assert (
        session["output_modalities"] == ["text"] and session["instructions"] == "Answer in French."
    )
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"] == {
        "format": {"type": "audio/pcma"},
        "voice": "marin",
        "speed": 1.0,
    }
    assert session["audio"]["input"]["transcription"] is None
    assert session["audio"]["input"]["turn_detection"]["threshold"] == 0.7


def test_manual_turns_in_the_beta_shape() -> None:
    adapter = make("beta")
    settings = send(
        adapter,
        type="session.update",
        session={
            "modalities": ["text", "audio"],
            "turn_detection": None,
            "input_audio_format": "g711_alaw",
            "output_audio_format": "g711_ulaw",
            "input_audio_transcription": {"model": "whisper-1"},
            "temperature": 0.6,
        },
    )
    assert settings == Configure(
        sample_rate=8000, turns=TurnTaking(detect=False, reply=False, interrupt=False)
    )
    (updated,) = out(adapter, ev.Configured())
    session = updated["session"]
    assert session["turn_detection"] is None and session["modalities"] == ["audio", "text"]
    assert (
        session["input_audio_format"] == "g711_alaw"
        and session["output_audio_format"] == "g711_ulaw"
    )
    assert session["input_audio_transcription"]["model"] == "whisper-1"
    assert session["temperature"] == 0.6


def test_a_transcription_session() -> None:
    for shape, created, updated in [
        ("ga", "session.created", "session.updated"),
        ("beta", "transcription_session.created", "transcription_session.updated"),
    ]:
        adapter = make(shape, {"intent": "transcription"})  # type: ignore[arg-type]
        (first,) = out(adapter, ev.Listening("s1", "lean"))
        assert first["type"] == created
        update = "session.update" if shape == "ga" else "transcription_session.update"
        session: dict[str, Any] = {"input_audio_transcription": {"model": "x", "language": "en"}}
        if shape == "ga":
            session = {
                "type": "transcription",
                "audio": {"input": {"transcription": {"model": "x"}}},
            }
        assert isinstance(send(adapter, type=update, session=session), Configure)
        (second,) = out(adapter, ev.Configured())
        assert second["type"] == updated
        for event in ("response.create", "conversation.item.delete"):
            error = refused(adapter, json.dumps({"type": event, "item_id": "x"}))
            assert error["error"]["code"] == "not_supported"


# -- what the user said --------------------------------------------------------------


def test_a_spoken_turn_with_server_vad() -> None:
    adapter = make("ga")
    started = out(adapter, ev.UtteranceStarted(1, 1230))
    assert types(started) == ["input_audio_buffer.speech_started"]
    item_id = started[0]["item_id"]
    assert started[0]["audio_start_ms"] == 1230
    deltas = [
        out(adapter, ev.PartialTranscript(text, 1)) for text in ("Hello", "Hello there", "Hello")
    ]
    assert [d[0]["delta"] for d in deltas if d] == ["Hello", " there"]
    ended = out(adapter, ev.UtteranceEnded(1, 2460, "silence"))
    assert types(ended) == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert {e.get("item_id", e.get("item", {}).get("id")) for e in ended} == {item_id}
    assert ended[0]["audio_end_ms"] == 2460 and ended[1]["previous_item_id"] is None
    assert ended[2]["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    (completed,) = out(adapter, ev.FinalTranscript("s1-1", "Hello there.", 1))
    assert completed == {
        "type": "conversation.item.input_audio_transcription.completed",
        "event_id": completed["event_id"],
        "item_id": item_id,
        "content_index": 0,
        "transcript": "Hello there.",
        "usage": {"type": "duration", "seconds": 1.23},
    }


def test_a_turn_without_words_or_with_failed_recognition() -> None:
    adapter = make("beta")
    for utterance, failed in ((1, False), (2, True)):
        out(adapter, ev.UtteranceStarted(utterance, 0))
        assert types(out(adapter, ev.UtteranceEnded(utterance, 900, "silence")))[-1] == (
            "conversation.item.created"
        )
        (event,) = out(adapter, ev.NoTranscript(utterance, failed, "recognition failed"))
        if failed:
            assert event["type"] == "conversation.item.input_audio_transcription.failed"
            assert event["error"]["message"] == "recognition failed"
        else:
            assert event["transcript"] == ""
    # The failure's error event is the transcription event's: nothing more.
    assert out(adapter, ev.Error(ErrorCode.ASR_FAIL, "recognition failed")) == []


def test_commits_and_clears() -> None:
    adapter = make("ga")
    assert send(adapter, type="input_audio_buffer.commit", event_id="c1") == Commit()
    (error,) = out(adapter, ev.NOTHING_TO_COMMIT)
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"
    assert error["error"]["event_id"] == "c1"
    assert send(adapter, type="input_audio_buffer.commit", event_id="c2") == Commit()
    out(adapter, ev.UtteranceStarted(1, 0))
    # A commit ends the turn without the VAD: no speech_stopped.
    assert types(out(adapter, ev.UtteranceEnded(1, 800, "commit")))[:2] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
    ]
    assert send(adapter, type="input_audio_buffer.clear") == ClearAudio()
    assert types(out(adapter, ev.AudioCleared())) == ["input_audio_buffer.cleared"]


def test_appended_audio_is_pcm_at_the_format_rate() -> None:
    adapter = make("ga")
    pcm = np.array([0, 1000, -1000], "<i2").tobytes()
    assert send(adapter, type="input_audio_buffer.append", audio=b64(pcm)) == Audio(pcm)
    send(
        adapter,
        type="session.update",
        session={"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}},
    )
    assert send(adapter, type="input_audio_buffer.append", audio=b64(b"\xff\x80")) == Audio(
        np.array([0, 32124], "<i2").tobytes()
    )


# -- the conversation ----------------------------------------------------------------


def test_items_the_client_creates_deletes_and_retrieves() -> None:
    adapter = make("ga")
    text = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    assert send(adapter, type="conversation.item.create", item={**text, "id": "mine"}) == AddText(
        "mine", "user", "Hi"
    )
    added = out(adapter, ev.EntryAdded("mine", "user", "Hi"))
    assert types(added) == ["conversation.item.added", "conversation.item.done"]
    assert added[0]["item"]["content"] == [{"type": "input_text", "text": "Hi"}]
    system = {
        "type": "message",
        "role": "system",
        "content": [{"type": "input_text", "text": "Be kind."}],
    }
    created = send(adapter, type="conversation.item.create", item=system)
    assert isinstance(created, AddText) and created.role == "system"
    assert (
        out(adapter, ev.EntryAdded(created.key, "system", "Be kind."))[0]["previous_item_id"]
        == "mine"
    )
    # A recorded utterance: transcribed, then announced with its transcript.
    pcm = np.zeros(2400, "<i2").tobytes()
    audio = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_audio", "audio": b64(pcm)}],
    }
    clip = send(adapter, type="conversation.item.create", item=audio)
    assert isinstance(clip, AddAudio) and clip.pcm == pcm and clip.sample_rate == 24000
    clip_events = out(adapter, ev.EntryAdded(clip.key, "user", "hello"))
    assert types(clip_events)[-1] == "conversation.item.input_audio_transcription.completed"
    assert clip_events[-1]["usage"]["seconds"] == 0.1
    assert send(adapter, type="conversation.item.retrieve", item_id="mine") == Acknowledge(
        ("retrieve", "mine", None)
    )
    (retrieved,) = out(adapter, ev.Acknowledged(("retrieve", "mine", None)))
    assert retrieved["item"]["id"] == "mine"
    assert send(adapter, type="conversation.item.delete", item_id="mine") == Forget("mine")
    assert out(adapter, ev.EntryRemoved("mine"))[0]["item_id"] == "mine"
    error = refused(adapter, json.dumps({"type": "conversation.item.delete", "item_id": "mine"}))
    assert error["error"]["code"] == "item_delete_invalid_item_id"


def test_a_users_audio_item_is_deleted_by_its_utterance_key() -> None:
    adapter = make("ga")
    item_id = out(adapter, ev.UtteranceStarted(3, 0))[0]["item_id"]
    out(adapter, ev.UtteranceEnded(3, 500, "silence"))
    assert send(adapter, type="conversation.item.delete", item_id=item_id) == Forget(
        utterance_key(3)
    )


# -- responses -----------------------------------------------------------------------


def reply(adapter: RealtimeAdapter, turn: int, *, speak: bool = True, tid: str = "s1-1") -> str:
    """A reply that said two words and one phrase of speech; its item id."""
    started = out(adapter, ev.ReplyStarted(turn, tid, speak))
    assert types(started) == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added" if adapter.shape == "ga" else "conversation.item.created",
        "response.content_part.added",
    ]
    assert started[0]["response"]["status"] == "in_progress"
    out(adapter, ev.ReplyDelta(turn, "Hi"))
    out(adapter, ev.ReplyDelta(turn, " there."))
    assert out(adapter, ev.ReplyTextDone(turn, "Hi there.")) == []
    item_id: str = started[1]["item"]["id"]
    return item_id


def test_a_spoken_response_in_both_shapes() -> None:
    for shape in ("ga", "beta"):
        adapter = make(shape)
        started = out(adapter, ev.ReplyStarted(1, "s1-1"))
        delta = out(adapter, ev.ReplyDelta(1, "Hi"))[0]
        assert delta["type"] == (
            "response.output_audio_transcript.delta"
            if shape == "ga"
            else "response.audio_transcript.delta"
        )
        assert delta["response_id"] == started[0]["response"]["id"] and delta["delta"] == "Hi"
        # 1.5 s of speech at 16 kHz: two deltas (1 s at most each), 24 kHz pcm16.
        speech = SpeechAudio(np.zeros(24000, "<i2").tobytes(), 16000)
        audio = out(adapter, ev.SpeechChunk(1, 1, speech))
        assert [len(base64.b64decode(a["delta"])) for a in audio] == [48000, 24000]
        assert audio[0]["type"] == (
            "response.output_audio.delta" if shape == "ga" else "response.audio.delta"
        )
        ended = out(adapter, ev.ReplyEnded(1, ev.Outcome.DONE))
        names = types(ended)
        assert names[-1] == "response.done" and names[-2] == (
            "conversation.item.done" if shape == "ga" else "response.output_item.done"
        )
        done = ended[-1]["response"]
        assert done["status"] == "completed" and done["status_details"] is None
        assert done["output"][0]["content"][0]["transcript"] == "Hi"
        assert done["output"][0]["status"] == "completed"
        assert done["usage"]["output_tokens"] == 1


def test_a_text_only_response() -> None:
    adapter = make("ga")
    reply(adapter, 1, speak=False)
    ended = out(adapter, ev.ReplyEnded(1, ev.Outcome.DONE))
    assert types(ended)[0] == "response.output_text.done" and ended[0]["text"] == "Hi there."
    assert ended[-1]["response"]["output_modalities"] == ["text"]
    assert ended[-1]["response"]["output"][0]["content"] == [
        {"type": "output_text", "text": "Hi there."}
    ]


def test_cancelled_and_failed_responses_say_why() -> None:
    adapter = make("ga")
    for turn, cause, reason in ((1, "client", "client_cancelled"), (2, "speech", "turn_detected")):
        reply(adapter, turn)
        ended = out(adapter, ev.ReplyEnded(turn, ev.Outcome.CANCELLED, cause))  # type: ignore[arg-type]
        assert ended[-1]["response"]["status"] == "cancelled"
        assert ended[-1]["response"]["status_details"] == {"type": "cancelled", "reason": reason}
        assert ended[-1]["response"]["output"][0]["status"] == "incomplete"
    assert out(adapter, ev.Error(ErrorCode.CANCELLED, "reply cancelled by the client")) == []
    reply(adapter, 3)
    assert out(adapter, ev.Error(ErrorCode.LLM_TIMEOUT, "no first token within 5 s")) == []
    failed = out(adapter, ev.ReplyEnded(3, ev.Outcome.LLM_TIMEOUT))[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["status_details"]["error"] == {
        "type": "server_error",
        "code": "llm_timeout",
        "message": "no first token within 5 s",
    }


def test_response_create_carries_its_options_to_its_response() -> None:
    adapter = make("beta")
    asked = send(
        adapter,
        type="response.create",
        event_id="r1",
        response={"modalities": ["text"], "instructions": "Shout.", "metadata": {"topic": "x"}},
    )
    assert asked == Respond("Shout.", False)
    created = out(adapter, ev.ReplyStarted(1, "", speak=False))[0]["response"]
    assert created["metadata"] == {"topic": "x"} and created["modalities"] == ["text"]
    # A second one while it runs: refused by the core, answered with the API's code.
    assert send(adapter, type="response.create", event_id="r2") == Respond(None, None)
    (busy,) = out(adapter, ev.REPLY_IN_PROGRESS)
    assert busy["error"]["code"] == "conversation_already_has_active_response"
    assert busy["error"]["event_id"] == "r2"


def test_cancel_with_nothing_to_cancel() -> None:
    adapter = make("ga")
    assert send(adapter, type="response.cancel", event_id="x") == Cancel()
    (error,) = out(adapter, ev.NOTHING_TO_CANCEL)
    assert (
        error["error"]["code"] == "response_cancel_not_active" and error["error"]["event_id"] == "x"
    )
    unknown = refused(adapter, json.dumps({"type": "response.cancel", "response_id": "resp_nope"}))
    assert unknown["error"]["code"] == "response_cancel_not_active"


def test_truncate_is_checked_against_the_audio_sent() -> None:
    adapter = make("ga")
    item_id = reply(adapter, 1)
    out(adapter, ev.SpeechChunk(1, 1, SpeechAudio(np.zeros(16000, "<i2").tobytes(), 16000)))
    too_far = refused(
        adapter,
        json.dumps(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 1001,
            }
        ),
    )
    assert too_far["error"]["param"] == "audio_end_ms"
    cut = {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": 600,
    }
    assert adapter.parse(json.dumps(cut)) == Truncate(1, 600)
    (truncated,) = out(adapter, ev.ReplyTruncated(1, 600))
    assert truncated["item_id"] == item_id and truncated["audio_end_ms"] == 600
    out(adapter, ev.UtteranceStarted(1, 0))
    out(adapter, ev.UtteranceEnded(1, 500, "silence"))
    user_item = adapter.items.last()
    assert user_item is not None
    not_assistant = refused(adapter, json.dumps({**cut, "item_id": user_item}))
    assert not_assistant["error"]["code"] == "invalid_value"


# -- refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code", "param"),
    [
        ("not json", "invalid_json", None),
        ("[1, 2]", "invalid_json", None),
        ("{}", "missing_required_parameter", "type"),
        ('{"type": "response.dance"}', "invalid_value", "type"),
        ('{"type": 7}', "invalid_type", "type"),
        ('{"type": "input_audio_buffer.append"}', "missing_required_parameter", "audio"),
        ('{"type": "input_audio_buffer.append", "audio": "%%%"}', "invalid_value", "audio"),
        ('{"type": "input_audio_buffer.append", "audio": "AAAA"}', "invalid_value", "audio"),
        (
            '{"type": "session.update", "session": {"output_modalities": ["video"]}}',
            "invalid_value",
            "session.output_modalities",
        ),
        (
            '{"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/wav"}}}}}',
            "invalid_value",
            "session.audio.input.format",
        ),
        (
            '{"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"silence_duration_ms": "long"}}}}}',
            "invalid_type",
            "session.audio.input.turn_detection.silence_duration_ms",
        ),
        (
            '{"type": "session.update", "session": {"type": "transcription"}}',
            "invalid_value",
            "session.type",
        ),
        (
            '{"type": "conversation.item.truncate", "item_id": "x", "content_index": 0, "audio_end_ms": true}',
            "invalid_type",
            "audio_end_ms",
        ),
        (
            '{"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "c", "output": "{}"}}',
            "not_supported",
            "item.type",
        ),
        (
            '{"type": "conversation.item.create", "item": {"role": "user", "content": []}}',
            "invalid_value",
            "item.content",
        ),
        ('{"type": "output_audio_buffer.clear"}', "not_supported", "type"),
        ('{"type": "transcription_session.update", "session": {}}', "not_supported", "type"),
    ],
)
def test_bad_events_get_the_apis_error_and_change_nothing(
    frame: str, code: str, param: str | None
) -> None:
    adapter = make("ga")
    before = adapter.config
    try:
        value = json.loads(frame)
    except ValueError:
        value = None
    stamped = isinstance(value, dict) and value != {}
    if stamped:
        frame = json.dumps({**value, "event_id": "evt_9"})
    error = refused(adapter, frame)
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert (error["error"]["code"], error["error"]["param"]) == (code, param)
    assert error["error"]["message"]
    assert error["error"]["event_id"] == ("evt_9" if stamped else None)
    assert adapter.config == before


def test_an_oversized_event_is_refused_before_it_is_parsed() -> None:
    adapter = make("ga", max_event_bytes=1000)
    error = refused(adapter, json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 1000}))
    assert error["error"]["code"] == "event_too_large"


def test_server_side_errors_are_server_errors() -> None:
    adapter = make("ga")
    busy = ev.Error(
        ErrorCode.SERVER_BUSY, "full; try again later", details=(("retry_after_s", 5.0),)
    )
    (error,) = out(adapter, busy)
    assert error["error"]["type"] == "server_error" and error["error"]["code"] == "server_busy"
    assert "retry_after_s=5.0" in error["error"]["message"]
    # Notices the API has no event for render as nothing.
    assert out(adapter, ev.Info("barge_in", "user spoke over the reply")) == []
    assert out(adapter, ev.Metrics("s1-1", TurnMetrics(0.0))) == []


# -- the handshake -------------------------------------------------------------------


def test_handshake_reads_shape_kind_token_and_subprotocol() -> None:
    ga = handshake.read({"Authorization": "Bearer k"}, {"model": "m"})
    assert (ga.shape, ga.kind, ga.model, ga.subprotocol) == ("ga", "realtime", "m", None)
    browser = handshake.read(
        {
            "Sec-Websocket-Protocol": "realtime, openai-insecure-api-key.s3cret, openai-beta.realtime-v1"
        },
        {"intent": "transcription"},
    )
    assert browser.shape == "beta" and browser.kind == "transcription"
    assert browser.headers["Authorization"] == "Bearer s3cret"
    assert browser.subprotocol == "realtime" and browser.model == "voicetrio"
    only_token = handshake.read({"Sec-Websocket-Protocol": "openai-insecure-api-key.k"}, {})
    assert only_token.subprotocol == "openai-insecure-api-key.k"
    header_beta = handshake.read({"Openai-Beta": "realtime=v1"}, {})
    assert header_beta.shape == "beta"
