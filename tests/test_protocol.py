"""The sans-IO protocol alone: parsing, the client state machine, events."""

from __future__ import annotations

import json

import pytest

from voicetrio.wire import v1 as protocol
from voicetrio.wire.v1 import (
    Audio,
    Cancel,
    ClientState,
    ErrorCode,
    Limits,
    ProtocolError,
    ProtocolMachine,
    Start,
    Stop,
)


def machine(**limits: int) -> ProtocolMachine:
    return ProtocolMachine(Limits(**limits))


def refuse(m: ProtocolMachine, frame: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        if isinstance(frame, str):
            m.receive_text(frame)
        else:
            m.receive_bytes(frame)
    return info.value


def state(m: ProtocolMachine) -> ClientState:
    return m.state


def test_happy_path_states() -> None:
    m = machine()
    assert state(m) is ClientState.IDLE
    assert m.receive_text('{"type":"start","sample_rate":16000}') == Start(16000, "wav")
    assert state(m) is ClientState.STREAMING and m.sample_rate == 16000
    assert m.receive_bytes(b"\x01\x00\x02\x00") == Audio(b"\x01\x00\x02\x00")
    assert m.receive_text('{"type":"cancel"}') == Cancel()
    assert state(m) is ClientState.STREAMING
    assert m.receive_text('{"type":"stop"}') == Stop()
    assert state(m) is ClientState.IDLE
    assert m.receive_text('{"type":"cancel"}') == Cancel()
    assert m.receive_text('{"type":"start","sample_rate":16000,"audio_format":"pcm16"}') == Start(
        16000, "pcm16"
    )
    assert m.audio_format == "pcm16"


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        ("{", ErrorCode.BAD_MESSAGE, "invalid_json"),
        ("", ErrorCode.BAD_MESSAGE, "invalid_json"),
        ("[]", ErrorCode.BAD_MESSAGE, "not_an_object"),
        ('"start"', ErrorCode.BAD_MESSAGE, "not_an_object"),
        ("null", ErrorCode.BAD_MESSAGE, "not_an_object"),
        ("{}", ErrorCode.BAD_MESSAGE, "missing_type"),
        ('{"type": 3}', ErrorCode.BAD_MESSAGE, "missing_type"),
        ('{"type": "pause"}', ErrorCode.BAD_MESSAGE, "unknown_type"),
        ('{"type": "start"}', ErrorCode.BAD_MESSAGE, "bad_field"),
        ('{"type": "start", "sample_rate": 16000.0}', ErrorCode.BAD_MESSAGE, "bad_field"),
        ('{"type": "start", "sample_rate": true}', ErrorCode.BAD_MESSAGE, "bad_field"),
        ('{"type": "start", "sample_rate": 16000, "audio_format": "mp3"}', ErrorCode.BAD_MESSAGE, "bad_field"),
        ('{"type": "start", "sample_rate": 8000}', ErrorCode.UNSUPPORTED_SAMPLE_RATE, "unsupported_sample_rate"),
        ('{"type": "stop"}', ErrorCode.BAD_MESSAGE, "not_started"),
        (b"\x00\x00", ErrorCode.BAD_MESSAGE, "audio_before_start"),
    ],
)
def test_refusals_when_idle(frame: str | bytes, code: ErrorCode, reason: str) -> None:
    m = machine()
    err = refuse(m, frame)
    assert (err.code, err.reason, err.fatal) == (code, reason, False)
    assert m.state is ClientState.IDLE
    event = err.to_event()
    assert event == {
        "type": "error",
        "code": str(code),
        "message": err.message,
        "recoverable": True,
        "reason": reason,
    }


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x00" * 3, "odd_length"),
        (b"\x00" * 1002, "frame_too_large"),
        ('{"type":"start","sample_rate":16000}', "already_started"),
        ("x" * 300, "text_too_large"),
    ],
)
def test_refusals_when_streaming_keep_the_state(frame: str | bytes, reason: str) -> None:
    m = machine(max_frame_bytes=1000, max_text_bytes=256)
    m.receive_text('{"type":"start","sample_rate":16000}')
    assert refuse(m, frame).reason == reason
    assert m.state is ClientState.STREAMING and m.sample_rate == 16000
    assert m.receive_bytes(b"\x00" * 1000) == Audio(b"\x00" * 1000)


def test_text_limit_counts_utf8_bytes() -> None:
    m = machine(max_text_bytes=256)
    text = '{"type":"cancel","pad":"' + "é" * 120 + '"}'
    assert len(text) < 256 < len(text.encode())
    assert refuse(m, text).reason == "text_too_large"


def test_twenty_bad_frames_in_a_row_are_fatal_and_a_good_one_resets() -> None:
    m = machine(max_consecutive_errors=20)
    for _ in range(19):
        assert not refuse(m, "nope").fatal
    m.receive_text('{"type":"cancel"}')
    for _ in range(19):
        refuse(m, "nope")
    err = refuse(m, "nope")
    assert (err.code, err.reason, err.fatal) == (ErrorCode.PROTOCOL_VIOLATION, "too_many_errors", True)
    assert err.to_event()["recoverable"] is False


def test_sample_rate_range() -> None:
    m = machine(min_sample_rate=8000, max_sample_rate=48000)
    assert refuse(m, '{"type":"start","sample_rate":7999}').message.endswith("8000 to 48000 Hz")
    assert m.receive_text('{"type":"start","sample_rate":48000}') == Start(48000)


def test_fatal_codes() -> None:
    assert {
        ErrorCode.PROTOCOL_VIOLATION,
        ErrorCode.INTERNAL,
        ErrorCode.MODEL_LOAD_FAIL,
        ErrorCode.SERVER_BUSY,
    } == protocol.FATAL_CODES
    for code in ErrorCode:
        assert protocol.error(code, "m")["recoverable"] is (code not in protocol.FATAL_CODES)


def test_events_encode_compactly_and_parse_back() -> None:
    events = [
        protocol.protocol_hello("abc", mode="full"),
        protocol.partial_transcript("hel"),
        protocol.final_transcript("hello", "abc-1"),
        protocol.llm_token(" Hi"),
        protocol.llm_done(),
        protocol.tts_chunk_b64(1, "UklGRg=="),
        protocol.tts_chunk_pcm16(2, 22050, 4410),
        protocol.tts_phrase_done(1),
        protocol.tts_complete(),
        protocol.metrics({"t0_ms": 0.0}),
        protocol.error(ErrorCode.CANCELLED, "x"),
        protocol.info("m", event="shutdown"),
    ]
    for event in events:
        text = protocol.encode(event)
        assert ", " not in text and ": " not in text
        assert protocol.parse_event(text) == event
    assert events[0] == {"type": "protocol", "version": 1, "session_id": "abc", "mode": "full"}
    assert events[4] == {"type": "llm_token", "text": "", "done": True}
    assert events[5]["mime"] == "audio/wav"
    assert json.loads(protocol.encode(protocol.info("é")))["message"] == "é"


def test_parse_event_rejects_non_events() -> None:
    for text in ('{"type":"nope"}', "[]", '"x"'):
        with pytest.raises(ValueError):
            protocol.parse_event(text)
