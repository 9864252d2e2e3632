"""The client and ``voicetrio client`` against scripted peers, no real server.

Most tests run the client over an in-memory stream pair with a scripted
WebSocket peer on the other end, under ``autojump_clock``, so that pacing and
arrival times are exact numbers. One round trip goes over a real socket on
port 0 through the command's own entry point.
"""

from __future__ import annotations

import argparse
import io
import json
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)

from voicetrio.client.cli import (
    RunOptions,
    TurnTracker,
    WavError,
    add_arguments,
    converse,
    format_event,
    format_event_json,
    load_wav,
    main_async,
)
from voicetrio.client.connection import (
    ClientClosed,
    ConnectFailed,
    ReceivedEvent,
    ServerProtocolError,
    StartRejected,
    VoiceClient,
    connect,
    frame_samples,
    split_frames,
    stream_pcm,
)
from voicetrio.wire import v1 as protocol
from voicetrio.wire.v1 import ErrorCode

Script = Callable[[WebSocketConnection], Awaitable[None]]


# --------------------------------------------------------------------------
# Peers


@asynccontextmanager
async def memory_session(script: Script) -> AsyncIterator[VoiceClient]:
    """A VoiceClient whose server is ``script``, over an in-memory stream."""
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def serve() -> None:
        request = await wrap_server_stream(nursery, server_stream)
        ws = await request.accept()
        with suppress(ConnectionClosed):  # the client may close first
            await script(ws)

    # The safety net: with the autojump clock a hang becomes TooSlowError.
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            ws = await wrap_client_stream(nursery, cast(Any, client_stream), "test", "/ws")
            try:
                yield VoiceClient(ws)
            finally:
                await ws.aclose()
                nursery.cancel_scope.cancel()


async def send(ws: WebSocketConnection, event: dict[str, Any]) -> None:
    await ws.send_message(protocol.encode(event))


async def expect_start(ws: WebSocketConnection) -> dict[str, Any]:
    message = await ws.get_message()
    assert isinstance(message, str)
    start: dict[str, Any] = json.loads(message)
    assert start["type"] == "start"
    return start


class FakeServer:
    """A scripted server for one utterance; records when each audio frame arrived."""

    def __init__(
        self,
        *,
        send_metrics: bool = True,
        heard: bool = True,
        fatal: bool = False,
        tts_ms: float = 0.0,
    ) -> None:
        self.send_metrics = send_metrics
        self.heard = heard
        self.fatal = fatal
        self.tts_s = tts_ms / 1000
        self.frames: list[tuple[float, int]] = []
        self.start: dict[str, Any] = {}

    async def __call__(self, ws: WebSocketConnection) -> None:
        self.start = await expect_start(ws)
        pcm16 = self.start.get("audio_format") == "pcm16"
        await send(ws, protocol.protocol_hello("s1", mode="full"))
        t0 = trio.current_time()
        while True:
            message = await ws.get_message()
            if isinstance(message, bytes):
                self.frames.append((trio.current_time() - t0, len(message)))
                if self.fatal:
                    await send(ws, protocol.error(ErrorCode.INTERNAL, "engine crashed"))
                    await ws.aclose(1011)
                    return
                continue
            if json.loads(message)["type"] == "stop":
                break
        if not self.heard:
            await send(ws, protocol.info("no speech captured", event="no_speech"))
            await ws.get_message()  # until the client closes
            return
        await send(ws, protocol.partial_transcript("hello"))
        await send(ws, protocol.final_transcript("hello world", "u1"))
        await send(ws, protocol.llm_token("Hi"))
        await send(ws, protocol.llm_token(" there."))
        await trio.sleep(self.tts_s)
        if pcm16:
            await send(ws, protocol.tts_chunk_pcm16(0, 16000, 8))
            await ws.send_message(bytes(8))
        else:
            await send(ws, protocol.tts_chunk_b64(0, "UklGRiQAAABXQVZF"))
        await send(ws, protocol.tts_phrase_done(0))
        await send(ws, protocol.llm_done())
        await send(ws, protocol.tts_complete())
        if self.send_metrics:
            await send(ws, protocol.metrics({"id": "u1", "t0_ms": 0, "rtf": 0.25}))
        await ws.get_message()  # until the client closes


def tone(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


def write_wav(path: Path, pcm: bytes, rate: int = 16000, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


# --------------------------------------------------------------------------
# Frames and pacing


def test_frame_size_follows_rate_and_length() -> None:
    assert frame_samples(16000, 100) == 1600
    assert frame_samples(22050, 10) == 220
    assert frame_samples(8000, 1) == 8
    with pytest.raises(ValueError, match="frame_ms"):
        frame_samples(16000, 0)


def test_split_frames_keeps_a_short_last_frame() -> None:
    pcm = bytes(2 * 3500)
    frames = split_frames(pcm, 16000, 100)
    assert [len(f) for f in frames] == [3200, 3200, 600]
    assert b"".join(frames) == pcm
    assert split_frames(b"", 16000, 100) == []
    with pytest.raises(ValueError, match="16-bit"):
        split_frames(b"\x00\x01\x02", 16000, 100)


class RecordingSink:
    def __init__(self, delays: dict[int, float] | None = None) -> None:
        self.sent: list[tuple[float, int]] = []
        self.delays = delays or {}

    async def send_audio(self, pcm: bytes) -> None:
        self.sent.append((trio.current_time(), len(pcm)))
        await trio.sleep(self.delays.get(len(self.sent) - 1, 0))


async def test_stream_pcm_sends_frame_k_at_k_frame_lengths(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = RecordingSink()
    start = trio.current_time()
    await stream_pcm(sink, bytes(2 * 16000 // 2), 16000, frame_ms=100)
    assert [round(t - start, 9) for t, _ in sink.sent] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert {n for _, n in sink.sent} == {3200}


async def test_stream_pcm_catches_up_after_a_slow_send(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Frame 0 takes 250 ms to send: frames 1 and 2 are late and go at once,
    # frame 3 is back on the original schedule. No drift accumulates.
    sink = RecordingSink(delays={0: 0.25})
    start = trio.current_time()
    await stream_pcm(sink, bytes(2 * 1600 * 4), 16000, frame_ms=100)
    assert [round(t - start, 9) for t, _ in sink.sent] == [0.0, 0.25, 0.25, 0.3]


async def test_stream_pcm_without_realtime_sends_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = RecordingSink()
    start = trio.current_time()
    await stream_pcm(sink, bytes(2 * 1000), 16000, frame_ms=20, realtime=False)
    assert [n for _, n in sink.sent] == [640, 640, 640, 80]
    assert all(t == start for t, _ in sink.sent)


# --------------------------------------------------------------------------
# WAV loading


def test_load_wav_mono_is_returned_as_is(tmp_path: Path) -> None:
    pcm = tone(0.25)
    assert load_wav(write_wav(tmp_path / "a.wav", pcm)) == (pcm, 16000)


def test_load_wav_averages_stereo_to_mono(tmp_path: Path) -> None:
    stereo = np.array([[100, 300], [-32768, -32768], [32767, 32767], [1, 2]], dtype="<i2")
    path = write_wav(tmp_path / "s.wav", stereo.tobytes(), rate=44100, channels=2)
    pcm, rate = load_wav(path)
    assert rate == 44100
    assert np.frombuffer(pcm, dtype="<i2").tolist() == [200, -32768, 32767, 2]


def test_load_wav_file_into_frames(tmp_path: Path) -> None:
    pcm, rate = load_wav(write_wav(tmp_path / "a.wav", tone(1.05)))
    frames = split_frames(pcm, rate, 100)
    assert len(frames) == 11
    assert len(frames[-1]) == 2 * 800


def test_load_wav_refuses_what_it_cannot_stream(tmp_path: Path) -> None:
    with pytest.raises(WavError, match="only 16-bit"):
        load_wav(write_wav(tmp_path / "8bit.wav", bytes(100), width=1))
    with pytest.raises(WavError, match="no such file"):
        load_wav(tmp_path / "missing.wav")
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(WavError, match="not a PCM WAV"):
        load_wav(tmp_path / "text.wav")


# --------------------------------------------------------------------------
# Printing


@pytest.mark.parametrize(
    ("event", "audio", "line"),
    [
        (
            protocol.final_transcript("hello world", "u1"),
            None,
            '  0.532s  final_transcript  "hello world" (id=u1)',
        ),
        (protocol.partial_transcript("hel"), None, '  0.532s  partial_transcript  "hel"'),
        (protocol.llm_token(" there"), None, '  0.532s  llm_token  " there"'),
        (protocol.llm_done(), None, "  0.532s  llm_token  done"),
        (
            protocol.tts_chunk_b64(3, "UklGRiQAAABXQVZF"),
            None,
            "  0.532s  tts_chunk  seq=3 12 bytes audio/wav",
        ),
        (
            protocol.tts_chunk_pcm16(4, 22050, 6),
            bytes(6),
            "  0.532s  tts_chunk  seq=4 6 bytes pcm16 22050 Hz",
        ),
        (protocol.tts_phrase_done(3), None, "  0.532s  tts_phrase_done  seq=3"),
        (protocol.tts_complete(), None, "  0.532s  tts_complete"),
        (
            protocol.error(
                ErrorCode.BAD_MESSAGE, "text frame is not valid JSON", reason="invalid_json"
            ),
            None,
            "  0.532s  error  BAD_MESSAGE: text frame is not valid JSON (reason=invalid_json)",
        ),
        (
            protocol.error(ErrorCode.INTERNAL, "boom"),
            None,
            "  0.532s  error  INTERNAL: boom [fatal]",
        ),
        (
            protocol.info("barge-in", event="barge_in"),
            None,
            "  0.532s  info  barge-in (event=barge_in)",
        ),
        (
            protocol.metrics({"id": "u1", "t3_first_token_ms": 81.25, "t4_first_audio_ms": None}),
            None,
            "  0.532s  metrics  id=u1 t3_first_token_ms=81.25 t4_first_audio_ms=-",
        ),
        (
            protocol.protocol_hello("abc", mode="full"),
            None,
            "  0.532s  protocol  v1 session=abc mode=full",
        ),
    ],
)
def test_format_event_is_one_compact_line(
    event: dict[str, Any], audio: bytes | None, line: str
) -> None:
    assert format_event(ReceivedEvent(0.532, event, audio)) == line


def test_format_event_never_prints_base64() -> None:
    b64 = "QUFB" * 1000
    line = format_event(ReceivedEvent(12.5, protocol.tts_chunk_b64(0, b64)))
    assert b64[:8] not in line
    assert line == " 12.500s  tts_chunk  seq=0 3000 bytes audio/wav"


def test_format_event_json_puts_time_first() -> None:
    line = format_event_json(ReceivedEvent(0.53249, protocol.final_transcript("hi", "u1")))
    assert line == '{"t":0.532,"type":"final_transcript","text":"hi","id":"u1"}'


# --------------------------------------------------------------------------
# When is the conversation over


def test_tracker_waits_for_the_metrics_of_a_turn_in_flight() -> None:
    tracker = TurnTracker()
    tracker.observe(protocol.final_transcript("hi", "u1"))
    tracker.sent_stop()
    tracker.observe(protocol.info("no speech", event="no_speech"))
    assert not tracker.done
    tracker.observe(protocol.metrics({"id": "u1"}))
    assert tracker.done
    assert tracker.completed == 1


def test_tracker_waits_for_the_answer_to_stop() -> None:
    tracker = TurnTracker()
    tracker.observe(protocol.final_transcript("hi", "u1"))
    tracker.observe(protocol.metrics({"id": "u1"}))
    tracker.sent_stop()
    # The server may still be finalizing a second utterance.
    assert not tracker.done
    tracker.observe(protocol.final_transcript("and more", "u2"))
    assert not tracker.done
    tracker.observe(protocol.metrics({"id": "u2"}))
    assert tracker.done
    assert tracker.completed == 2


def test_tracker_stops_at_a_fatal_error() -> None:
    tracker = TurnTracker()
    tracker.observe(protocol.error(ErrorCode.BAD_MESSAGE, "bad"))
    assert not tracker.done
    tracker.observe(protocol.error(ErrorCode.MODEL_LOAD_FAIL, "no model"))
    assert tracker.done
    assert tracker.fatal is not None


def test_tracker_counts_an_error_after_stop_as_its_answer() -> None:
    tracker = TurnTracker()
    tracker.sent_stop()
    tracker.observe(protocol.error(ErrorCode.ASR_FAIL, "decode failed"))
    assert tracker.done
    assert tracker.completed == 0


# --------------------------------------------------------------------------
# VoiceClient against a scripted peer


async def test_start_returns_the_hello_and_events_carry_arrival_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def script(ws: WebSocketConnection) -> None:
        await expect_start(ws)
        await trio.sleep(0.25)
        await send(ws, protocol.protocol_hello("s1", mode="full"))
        await trio.sleep(0.5)
        await send(ws, protocol.partial_transcript("he"))
        await send(ws, protocol.final_transcript("hello", "u1"))
        await ws.aclose(1001)

    async with memory_session(script) as client:
        hello = await client.start()
        assert hello == {"type": "protocol", "version": 1, "session_id": "s1", "mode": "full"}
        first = await client.next_event()
        assert first == ReceivedEvent(0.75, protocol.partial_transcript("he"))
        assert [e.type async for e in client.events()] == ["final_transcript"]
        assert client.closed_code == 1001
        with pytest.raises(ClientClosed) as caught:
            await client.next_event()
        assert caught.value.code == 1001


async def test_start_sends_rate_and_format(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[dict[str, Any]] = []

    async def script(ws: WebSocketConnection) -> None:
        seen.append(await expect_start(ws))
        await send(ws, protocol.protocol_hello("s1", mode="full"))
        await ws.get_message()

    async with memory_session(script) as client:
        await client.start(16000, "pcm16")
    assert seen == [{"type": "start", "sample_rate": 16000, "audio_format": "pcm16"}]


async def test_start_keeps_earlier_events_for_next_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def script(ws: WebSocketConnection) -> None:
        await expect_start(ws)
        await send(ws, protocol.llm_token("late"))
        await send(ws, protocol.protocol_hello("s1", mode="full"))
        await send(ws, protocol.partial_transcript("new"))
        await ws.get_message()

    async with memory_session(script) as client:
        await client.start()
        assert (await client.next_event()).event == protocol.llm_token("late")
        assert (await client.next_event()).event == protocol.partial_transcript("new")


async def test_start_rejected_carries_the_error(autojump_clock: trio.testing.MockClock) -> None:
    refusal = protocol.ProtocolError(
        ErrorCode.UNSUPPORTED_SAMPLE_RATE, "unsupported_sample_rate", "sample_rate 8000 ..."
    ).to_event()

    async def script(ws: WebSocketConnection) -> None:
        await expect_start(ws)
        await send(ws, refusal)
        await ws.get_message()

    async with memory_session(script) as client:
        with pytest.raises(StartRejected) as caught:
            await client.start(8000)
    assert caught.value.code == "UNSUPPORTED_SAMPLE_RATE"
    assert caught.value.reason == "unsupported_sample_rate"
    assert caught.value.event == refusal


async def test_a_refusal_sent_before_the_start_arrived_is_a_start_rejected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    busy = {
        "type": "error", "code": "SERVER_BUSY", "message": "server draining",
        "recoverable": False, "retry_after_s": 0,
    }  # fmt: skip
    closed = trio.Event()

    async def script(ws: WebSocketConnection) -> None:
        # A draining server refuses a newcomer at once and closes.
        await send(ws, busy)
        await ws.aclose(1013, "server draining")
        closed.set()

    async with memory_session(script) as client:
        await closed.wait()
        with pytest.raises(StartRejected) as caught:
            await client.start(16000)
    assert caught.value.code == "SERVER_BUSY" and caught.value.event["retry_after_s"] == 0


async def test_pcm16_chunk_is_joined_to_its_binary_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    audio = bytes(range(10))

    async def script(ws: WebSocketConnection) -> None:
        await send(ws, protocol.tts_chunk_pcm16(0, 16000, len(audio)))
        await trio.sleep(0.1)
        await ws.send_message(audio)
        await send(ws, protocol.tts_phrase_done(0))
        await ws.get_message()

    async with memory_session(script) as client:
        chunk = await client.next_event()
        assert chunk.audio == audio
        assert chunk.at_s == 0.0  # the announcement's arrival
        assert chunk.event["bytes"] == 10
        assert (await client.next_event()).audio is None


@pytest.mark.parametrize(
    ("follow_up", "problem"),
    [
        (bytes(9), "announced 10 bytes, but the binary frame has 9"),
        (protocol.encode(protocol.tts_phrase_done(0)), "the next frame is text"),
    ],
)
async def test_pcm16_announcement_must_match_the_next_frame(
    autojump_clock: trio.testing.MockClock, follow_up: str | bytes, problem: str
) -> None:
    async def script(ws: WebSocketConnection) -> None:
        await send(ws, protocol.tts_chunk_pcm16(0, 16000, 10))
        await ws.send_message(follow_up)
        await ws.get_message()

    async with memory_session(script) as client:
        with pytest.raises(ServerProtocolError, match=problem):
            await client.next_event()


async def test_frames_that_are_not_events_are_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def script(ws: WebSocketConnection) -> None:
        await ws.send_message(b"\x00\x00")
        await ws.send_message('{"type":"surprise"}')
        await ws.get_message()

    async with memory_session(script) as client:
        with pytest.raises(ServerProtocolError, match="unannounced binary"):
            await client.next_event()
        with pytest.raises(ServerProtocolError, match="not a voicetrio server event"):
            await client.next_event()


async def test_sending_after_close_raises_client_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def script(ws: WebSocketConnection) -> None:
        await ws.get_message()

    async with memory_session(script) as client:
        await client.close(1000)
        assert client.closed_code == 1000
        with pytest.raises(ClientClosed):
            await client.send_audio(bytes(2))
        with pytest.raises(ClientClosed):
            await client.cancel()


# --------------------------------------------------------------------------
# The command's conversation


def options(**changes: Any) -> RunOptions:
    base = {"frame_ms": 100, "trailing_silence_ms": 1500, "timeout_s": 30.0}
    return RunOptions(**{**base, **changes})


async def run_converse(
    server: FakeServer, pcm: bytes, opts: RunOptions
) -> tuple[int, list[str], str]:
    out, err = io.StringIO(), io.StringIO()
    async with memory_session(server) as client:
        code = await converse(client, pcm, 16000, opts, out=out, err=err)
    return code, out.getvalue().splitlines(), err.getvalue()


async def test_converse_streams_in_real_time_and_prints_the_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer(tts_ms=120)
    code, lines, err = await run_converse(server, tone(0.5), options())
    assert code == 0, err
    # 0.5 s of speech and 1.5 s of silence: 20 frames, one every 100 ms.
    assert [round(t, 9) for t, _ in server.frames] == [k / 10 for k in range(20)]
    assert {n for _, n in server.frames} == {3200}
    assert lines == [
        "  0.000s  protocol  v1 session=s1 mode=full",
        '  1.900s  partial_transcript  "hello"',
        '  1.900s  final_transcript  "hello world" (id=u1)',
        '  1.900s  llm_token  "Hi"',
        '  1.900s  llm_token  " there."',
        "  2.020s  tts_chunk  seq=0 12 bytes audio/wav",
        "  2.020s  tts_phrase_done  seq=0",
        "  2.020s  llm_token  done",
        "  2.020s  tts_complete",
        "  2.020s  metrics  id=u1 t0_ms=0 rtf=0.25",
    ]
    assert server.start == {"type": "start", "sample_rate": 16000, "audio_format": "wav"}


async def test_converse_json_lines_with_pcm16(autojump_clock: trio.testing.MockClock) -> None:
    server = FakeServer()
    code, lines, _ = await run_converse(
        server, tone(0.2), options(json=True, audio_format="pcm16", realtime=False)
    )
    assert code == 0
    events = [json.loads(line) for line in lines]
    assert all(e["t"] == 0 for e in events)
    chunk = next(e for e in events if e["type"] == "tts_chunk")
    assert chunk == {
        "t": 0,
        "type": "tts_chunk",
        "seq": 0,
        "format": "pcm16",
        "sample_rate": 16000,
        "bytes": 8,
    }
    assert events[-1]["type"] == "metrics"


async def test_converse_times_out_when_the_turn_never_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    code, lines, err = await run_converse(
        FakeServer(send_metrics=False), tone(0.2), options(timeout_s=5.0, realtime=False)
    )
    assert code == 1
    assert "timed out: the turn did not finish within 5s" in err
    assert lines[-1].endswith("tts_complete")
    assert trio.current_time() - start == pytest.approx(5.0)


async def test_converse_without_speech_fails(autojump_clock: trio.testing.MockClock) -> None:
    code, lines, err = await run_converse(
        FakeServer(heard=False), bytes(3200), options(realtime=False)
    )
    assert code == 1
    assert lines[-1] == "  0.000s  info  no speech captured (event=no_speech)"
    assert "no turn completed" in err


async def test_converse_exits_2_on_a_fatal_error(autojump_clock: trio.testing.MockClock) -> None:
    code, lines, _ = await run_converse(FakeServer(fatal=True), tone(1.0), options())
    assert code == 2
    assert lines[-1] == "  0.000s  error  INTERNAL: engine crashed [fatal]"


async def test_converse_exits_2_when_start_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def script(ws: WebSocketConnection) -> None:
        await expect_start(ws)
        await send(ws, protocol.error(ErrorCode.UNSUPPORTED_SAMPLE_RATE, "use 16000 Hz"))
        await ws.get_message()

    out, err = io.StringIO(), io.StringIO()
    async with memory_session(script) as client:
        code = await converse(client, tone(0.1), 16000, options(), out=out, err=err)
    assert code == 2
    assert out.getvalue() == "  0.000s  error  UNSUPPORTED_SAMPLE_RATE: use 16000 Hz\n"


async def test_converse_reports_a_close_mid_turn(autojump_clock: trio.testing.MockClock) -> None:
    async def script(ws: WebSocketConnection) -> None:
        await expect_start(ws)
        await send(ws, protocol.protocol_hello("s1", mode="full"))
        await ws.get_message()
        await send(ws, protocol.info("server shutting down", event="shutdown"))
        await ws.aclose(1001, "shutdown")

    out, err = io.StringIO(), io.StringIO()
    async with memory_session(script) as client:
        code = await converse(client, tone(1.0), 16000, options(), out=out, err=err)
    assert code == 1
    assert err.getvalue() == "connection closed before the turn finished: code 1001 (shutdown)\n"


# --------------------------------------------------------------------------
# The command over a real socket


def parse_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_arguments_defaults_and_bounds() -> None:
    args = parse_args("x.wav")
    assert (args.file, args.url, args.json, args.frame_ms) == (
        "x.wav",
        "ws://127.0.0.1:8000/ws",
        False,
        100,
    )
    assert (args.trailing_silence_ms, args.audio_format, args.no_realtime, args.timeout_s) == (
        1500,
        "wav",
        False,
        30.0,
    )
    for bad in (["--frame-ms", "5"], ["--frame-ms", "1001"], ["--audio-format", "mp3"]):
        with pytest.raises(SystemExit):
            parse_args("x.wav", *bad)


async def test_cli_round_trip_over_a_real_socket(tmp_path: Path) -> None:
    server = FakeServer(send_metrics=True)
    paths: list[str | None] = []

    async def handler(request: WebSocketRequest) -> None:
        paths.append(request.path)
        ws = await request.accept()
        with suppress(ConnectionClosed):
            await server(ws)

    wav = write_wav(tmp_path / "hello.wav", tone(0.3))
    out, err = io.StringIO(), io.StringIO()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            ws_server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
            url = f"ws://127.0.0.1:{ws_server.port}/ws"
            args = parse_args(
                str(wav), "--url", url, "--json", "--no-realtime", "--audio-format", "pcm16"
            )
            code = await main_async(args, out=out, err=err)
            nursery.cancel_scope.cancel()
    assert code == 0, err.getvalue()
    assert paths == ["/ws"]
    types = [json.loads(line)["type"] for line in out.getvalue().splitlines()]
    assert types[0] == "protocol"
    assert types[-1] == "metrics"
    assert "tts_chunk" in types
    # 0.3 s of tone and 1.5 s of silence in 100 ms frames.
    assert len(server.frames) == 18


async def test_connect_refused_is_one_clear_line() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()
    url = f"ws://127.0.0.1:{port}/ws"
    with pytest.raises(ConnectFailed) as caught:
        async with connect(url):
            pass
    assert str(caught.value) == f"cannot connect to {url}: connection refused"


async def test_cli_connection_failure_exits_1(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "a.wav", tone(0.1))
    out, err = io.StringIO(), io.StringIO()
    code = await main_async(parse_args(str(wav), "--url", "http://x/ws"), out=out, err=err)
    assert code == 1
    assert err.getvalue().startswith("cannot connect to http://x/ws: ")
    assert out.getvalue() == ""


async def test_cli_bad_file_exits_1(tmp_path: Path) -> None:
    err = io.StringIO()
    code = await main_async(parse_args(str(tmp_path / "none.wav")), out=io.StringIO(), err=err)
    assert code == 1
    assert "no such file" in err.getvalue()
