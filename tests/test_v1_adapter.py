"""The v1 adapter alone (sans-IO): each domain event's exact frames."""

from __future__ import annotations

import base64
import json

import pytest

from voicetrio.core.audio import SpeechAudio
from voicetrio.core.codes import ErrorCode
from voicetrio.core.events import (
    NOTHING_TO_CANCEL,
    Error,
    Event,
    FinalTranscript,
    Info,
    Listening,
    Metrics,
    Outcome,
    PartialTranscript,
    PhraseSpoken,
    ReplyDelta,
    ReplyEnded,
    ReplyStarted,
    ReplyTextDone,
    SpeechChunk,
)
from voicetrio.core.metrics import TurnMetrics
from voicetrio.wire.v1 import Audio, Cancel, Limits, ProtocolError, Start
from voicetrio.wire.v1_adapter import V1Adapter, render

AUDIO = SpeechAudio(b"\x01\x00\x02\x00", 22050)


@pytest.mark.parametrize(
    ("event", "frame"),
    [
        (
            Listening("s1", "full"),
            '{"type":"protocol","version":1,"session_id":"s1","mode":"full"}',
        ),
        (PartialTranscript("hel"), '{"type":"partial_transcript","text":"hel"}'),
        (
            FinalTranscript("s1-1", "hello"),
            '{"type":"final_transcript","text":"hello","id":"s1-1"}',
        ),
        (ReplyDelta(1, " Hi"), '{"type":"llm_token","text":" Hi","done":false}'),
        (ReplyTextDone(1, " Hi"), '{"type":"llm_token","text":"","done":true}'),
        (PhraseSpoken(1, 2), '{"type":"tts_phrase_done","seq":2}'),
        (ReplyEnded(1, Outcome.DONE), '{"type":"tts_complete"}'),
        (
            Error(ErrorCode.CANCELLED, "reply cancelled by the client"),
            '{"type":"error","code":"CANCELLED","message":"reply cancelled by the client",'
            '"recoverable":true}',
        ),
        (
            Error(ErrorCode.BAD_MESSAGE, "bad", reason="invalid_json"),
            '{"type":"error","code":"BAD_MESSAGE","message":"bad","recoverable":true,'
            '"reason":"invalid_json"}',
        ),
        (
            Error(ErrorCode.SERVER_BUSY, "full", details=(("retry_after_s", 2.0),)),
            '{"type":"error","code":"SERVER_BUSY","message":"full","recoverable":false,'
            '"retry_after_s":2.0}',
        ),
        (
            NOTHING_TO_CANCEL,
            '{"type":"info","message":"nothing to cancel","event":"nothing_to_cancel"}',
        ),
        (
            Info("tts_fail", "could not speak phrase 3: x", ErrorCode.TTS_FAIL, (("seq", 3),)),
            '{"type":"info","message":"could not speak phrase 3: x","event":"tts_fail",'
            '"code":"TTS_FAIL","seq":3}',
        ),
        (
            Info("asr_slow", "é", details=(("rtf", 2.5),)),
            '{"type":"info","message":"é","event":"asr_slow","rtf":2.5}',
        ),
    ],
)
def test_events_render_as_v1_frames(event: Event, frame: str) -> None:
    assert render(event) == (frame,)


@pytest.mark.parametrize(
    "event",
    [ReplyStarted(1, "s1-1"), ReplyEnded(1, Outcome.LLM_FAIL), ReplyEnded(1, Outcome.CANCELLED)],
)
def test_events_v1_does_not_show_render_as_nothing(event: Event) -> None:
    assert render(event) == ()


def test_metrics_are_read_when_rendered() -> None:
    marks = TurnMetrics(10.0)
    event = Metrics("s1-1", marks)
    marks.mark_first_audio(10.25)  # after the event was made
    (frame,) = render(event)
    assert isinstance(frame, str)
    assert json.loads(frame) == {"type": "metrics", "id": "s1-1", **marks.fields()}
    assert json.loads(frame)["t4_first_audio_ms"] == 250.0


def test_speech_is_rendered_in_the_format_the_client_asked_for() -> None:
    adapter = V1Adapter(Limits())
    chunk = SpeechChunk(1, 4, AUDIO)
    (wav,) = adapter.render(chunk)  # WAV until a start says otherwise
    assert isinstance(wav, str)
    assert json.loads(wav) == {
        "type": "tts_chunk",
        "seq": 4,
        "audio_b64": base64.b64encode(AUDIO.wav()).decode("ascii"),
        "mime": "audio/wav",
    }
    assert adapter.parse('{"type":"start","sample_rate":16000,"audio_format":"pcm16"}') == Start(
        16000, "pcm16"
    )
    header, body = adapter.render(chunk)
    assert header == '{"type":"tts_chunk","seq":4,"format":"pcm16","sample_rate":22050,"bytes":4}'
    assert body == AUDIO.pcm


def test_parse_is_the_protocol_machine() -> None:
    adapter = V1Adapter(Limits())
    assert adapter.parse('{"type":"cancel"}') == Cancel()
    with pytest.raises(ProtocolError) as refused:
        adapter.parse(b"\x00\x00")
    assert refused.value.reason == "audio_before_start"
    adapter.parse('{"type":"start","sample_rate":16000}')
    assert adapter.parse(b"\x00\x00") == Audio(b"\x00\x00")
