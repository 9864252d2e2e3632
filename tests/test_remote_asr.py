"""Speech recognition as a remote service (issue 14, item 2).

The client side of the Realtime transcription session is sans-IO
(:mod:`voicetrio.core.remote_transcription`) and tested with exact frames.
The engine (:mod:`voicetrio.engines.asr.realtime_remote`) is tested over real
sockets: a front voicetrio whose ASR is another voicetrio on port 0 (the
deterministic engines; one test with Whisper tiny.en on the remote side),
and, for the faults a voicetrio remote will not commit on demand (a stall,
an ``error`` event, a failed transcription), a scripted Realtime server on
trio-websocket. Everything runs on the real clock and waits for events; the
one wait on time is the stall, which is the timeout under test.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from tests.conftest import FAST_FAKE, quiet, speech
from voicetrio.client.connection import VoiceClient, connect
from voicetrio.config import Config, ConfigError
from voicetrio.core import remote_transcription as rt
from voicetrio.core.audio import wav_bytes
from voicetrio.core.resample import resample
from voicetrio.engines.asr.realtime_remote import RealtimeAsr
from voicetrio.engines.base import AsrEngine
from voicetrio.engines.fake import FakeAsr, words_for
from voicetrio.server.app import Running, serve

# mypy checks the engine against the Protocol the ASR stage uses.
ENGINE: type[AsrEngine] = RealtimeAsr

# -- sans-IO: the URL, the frames, the answers -----------------------------------------


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://h:8000/v1", "ws://h:8000/v1/realtime?intent=transcription&model=m"),
        ("https://h/v1/", "wss://h/v1/realtime?intent=transcription&model=m"),
        ("ws://h:1/v1/realtime", "ws://h:1/v1/realtime?intent=transcription&model=m"),
        (
            "wss://h/v1/realtime?model=x&intent=chat",
            "wss://h/v1/realtime?model=x&intent=transcription",
        ),
    ],
)
def test_the_url_of_the_transcription_session(base: str, url: str) -> None:
    assert rt.realtime_url(base, "m") == url


@pytest.mark.parametrize("bad", ["ftp://h/v1", "h:8000/v1", "http:///v1", ""])
def test_a_url_that_is_not_a_server_is_refused_by_the_config(bad: str) -> None:
    with pytest.raises(ValueError):
        rt.realtime_url(bad)
    if bad:
        with pytest.raises(ConfigError, match="STREAM_ASR_URL"):
            Config().replace(asr_url=bad)


def test_the_session_asks_for_manual_turns_in_pcm16_at_24_khz() -> None:
    update = json.loads(rt.session_update("whisper-1", "en"))
    assert update["type"] == "session.update"
    audio_input = update["session"]["audio"]["input"]
    assert update["session"]["type"] == "transcription"
    assert audio_input["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_input["turn_detection"] is None
    assert audio_input["transcription"] == {"model": "whisper-1", "language": "en"}


def test_a_decode_is_clear_appends_and_commit() -> None:
    pcm = bytes(range(256)) * (rt.APPEND_BYTES // 128 + 3)  # two full appends and a bit
    frames = [json.loads(f) for f in rt.request_frames(pcm, 7)]
    kinds = [f["type"] for f in frames]
    assert kinds == [
        "input_audio_buffer.clear",
        "input_audio_buffer.append",
        "input_audio_buffer.append",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
    ]
    sent = b"".join(base64.b64decode(f["audio"]) for f in frames[1:-1])
    assert sent == pcm
    assert all(len(base64.b64decode(f["audio"])) <= rt.APPEND_BYTES for f in frames[1:-1])
    assert frames[-1]["event_id"] == "evt_vt_7_commit"


def _event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


def test_the_answer_is_the_first_completed_transcript() -> None:
    exchange = rt.Exchange()
    for skipped in (
        _event("input_audio_buffer.cleared"),
        _event("input_audio_buffer.committed", item_id="item_1"),
        _event("conversation.item.added", item={}),
        _event("conversation.item.input_audio_transcription.delta", delta="Hel"),
    ):
        assert exchange.feed(skipped) is None
    assert exchange.feed(_event(rt.COMPLETED, item_id="item_1", transcript="Hello.")) == "Hello."
    with pytest.raises(RuntimeError):
        exchange.feed(_event(rt.COMPLETED, transcript="again"))


def test_a_commit_of_no_speech_is_no_words() -> None:
    error = {"type": "invalid_request_error", "code": rt.COMMIT_EMPTY, "message": "empty"}
    assert rt.Exchange().feed(_event("error", error=error)) == ""


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (_event(rt.FAILED, error={"code": "asr_fail", "message": "decoder died"}), "asr_fail"),
        (
            _event("error", error={"type": "server_error", "code": "server_busy", "message": ""}),
            "server_busy",
        ),
        (_event("error", error={"type": "server_error", "message": "x"}), "server_error"),
        (_event("error"), "unknown"),
    ],
)
def test_an_error_or_a_failed_transcription_is_refused(frame: str, code: str) -> None:
    with pytest.raises(rt.RemoteRefused) as refused:
        rt.Exchange().feed(frame)
    assert refused.value.code == code


@pytest.mark.parametrize("frame", ["not json", "[1]", '{"no":"type"}', _event(rt.COMPLETED)])
def test_a_frame_that_is_not_the_apis_is_unreadable(frame: str) -> None:
    with pytest.raises(rt.RemoteUnreadable):
        rt.Exchange().feed(frame)


def test_the_session_is_configured_by_session_updated() -> None:
    assert not rt.configured(_event("session.created", session={}))
    assert rt.configured(_event("session.updated", session={}))
    assert rt.configured(_event("transcription_session.updated", session={}))
    with pytest.raises(rt.RemoteRefused, match="server_busy"):
        rt.configured(_event("error", error={"code": "server_busy", "message": "full"}))


# -- over real sockets: a front and its remote ----------------------------------------------

TIMEOUT_S = 20.0


def remote_of(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1"


async def start(nursery: trio.Nursery, config: Config) -> Running:
    running: Running = await nursery.start(partial(serve, config))
    with trio.fail_after(TIMEOUT_S):
        await running.hub.host.loaded.wait()
    return running


@asynccontextmanager
async def server(config: Config) -> AsyncIterator[Running]:
    """A server for the block only: stopped (its sessions closed) on leaving it."""
    async with trio.open_nursery() as nursery:
        running = await start(nursery, config)
        try:
            yield running
        finally:
            running.shutdown.set()


async def turn(client: VoiceClient, pcm: bytes) -> list[dict[str, Any]]:
    """Say ``pcm`` (then a second of silence) and read until the turn's
    final transcript, or its ASR error."""
    audio = pcm + quiet(1000)
    for offset in range(0, len(audio), 3200):
        await client.send_audio(audio[offset : offset + 3200])
    events: list[dict[str, Any]] = []
    with trio.fail_after(TIMEOUT_S):
        while True:
            event = (await client.next_event()).event
            events.append(event)
            if event["type"] == "final_transcript" or (
                event["type"] == "error" and event["code"] == "ASR_FAIL"
            ):
                return events


def hears(text: str, tone: bytes) -> bool:
    """Whether ``text`` is the fake ASR's hearing of ``tone`` (with pre-roll).

    The fake ASR hears a word per 300 ms chunk from the utterance's start,
    which a remote cuts again (its own pre-roll, after resampling to 24 kHz
    and back): a chunk at an edge may differ, the tone's word may not.
    """
    word = words_for(tone).lower().split()[0]
    return text.lower().split().count(word) >= 2


def final_of(events: list[dict[str, Any]]) -> str:
    finals = [e["text"] for e in events if e["type"] == "final_transcript"]
    assert finals, f"no final transcript in {[e['type'] for e in events]}"
    return str(finals[0])


def asr_error(events: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [e for e in events if e["type"] == "error"]
    assert errors and errors[-1]["code"] == "ASR_FAIL", events
    return errors[-1]


async def test_a_front_with_remote_asr_hears_what_a_local_one_hears(nursery: trio.Nursery) -> None:
    remote = await start(nursery, FAST_FAKE)
    front = await start(nursery, FAST_FAKE.replace(asr_url=remote_of(remote.port)))
    local = await start(nursery, FAST_FAKE)
    engine = front.hub.engines.asr
    assert isinstance(engine, RealtimeAsr) and front.hub.engines.files is None
    utterances = [speech(1200, 440.0), speech(900, 700.0)]
    heard: dict[str, list[str]] = {"front": [], "local": []}
    for name, running in (("front", front), ("local", local)):
        async with connect(running.url) as client:
            await client.start(16000)
            for pcm in utterances:
                events = await turn(client, pcm)
                heard[name].append(final_of(events))
                # The session goes on to the reply, as with local Whisper.
                with trio.fail_after(TIMEOUT_S):
                    while (await client.next_event()).type != "metrics":
                        pass
    for name in ("front", "local"):
        for pcm, text in zip(utterances, heard[name], strict=True):
            assert hears(text, pcm), (name, text)
    assert engine.ready and engine.decodes >= 2
    # Every decode was a transcription session's commit on the remote: the
    # pool reuses connections (a partial made moot at the utterance's end
    # costs its connection, so at most one per decode).
    assert 1 <= engine.connects <= engine.decodes + 1
    assert remote.hub.sessions_total == engine.connects


async def test_a_remote_that_is_down_fails_the_turn_and_the_next_one_works(
    nursery: trio.Nursery,
) -> None:
    async with server(FAST_FAKE) as remote:
        port = remote.port
        front = await start(nursery, FAST_FAKE.replace(asr_url=remote_of(port)))
        async with connect(front.url) as client:
            await client.start(16000)
            assert final_of(await turn(client, speech(900)))
    # The remote is gone (its sessions closed, its port refusing).
    async with connect(front.url) as client:
        await client.start(16000)
        error = asr_error(await turn(client, speech(900)))
        assert "cannot connect to the remote ASR" in error["message"]
        assert not front.hub.ready  # /health says 503: a balancer stops sending sessions
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://127.0.0.1:{front.port}/health")
        assert health.status_code == 503
        assert health.json()["engines"]["ready"]["asr"] is False
        # The same port again: the session goes on, and its next turn is heard.
        async with server(FAST_FAKE.replace(port=port)):
            pcm = speech(900, 700.0)
            assert hears(final_of(await turn(client, pcm)), pcm)
            assert front.hub.ready


async def test_a_remote_that_wants_a_key_refuses_without_it(nursery: trio.Nursery) -> None:
    remote = await start(nursery, FAST_FAKE.replace(auth_tokens="s3cret"))
    keyless = await start(nursery, FAST_FAKE.replace(asr_url=remote_of(remote.port)))
    keyed = await start(
        nursery, FAST_FAKE.replace(asr_url=remote_of(remote.port), asr_api_key="s3cret")
    )
    async with connect(keyless.url) as client:
        await client.start(16000)
        assert "HTTP 401" in asr_error(await turn(client, speech(900)))["message"]
    async with connect(keyed.url) as client:
        await client.start(16000)
        assert final_of(await turn(client, speech(900)))


# -- faults a voicetrio remote does not make on demand: a scripted remote -------------------


class ScriptedRemote:
    """A Realtime transcription server that answers every commit as ``mode``
    says: ``ok`` (the fake ASR's words), ``stall`` (never), ``error`` (an
    ``error`` event), ``failed`` (a failed transcription), ``close`` (the
    connection closed)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.commits = 0

    async def session(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        audio = bytearray()
        try:
            await ws.send_message(_event("session.created", session={}))
            while True:
                event = json.loads(await ws.get_message())
                kind = event["type"]
                if kind == "session.update":
                    await ws.send_message(_event("session.updated", session=event["session"]))
                elif kind == "input_audio_buffer.clear":
                    audio.clear()
                elif kind == "input_audio_buffer.append":
                    audio += base64.b64decode(event["audio"])
                elif kind == "input_audio_buffer.commit":
                    self.commits += 1
                    await self._answer(ws, bytes(audio))
        except ConnectionClosed:
            pass

    async def _answer(self, ws: Any, pcm24k: bytes) -> None:
        mode = self.mode
        if mode == "stall":
            await trio.sleep_forever()
        elif mode == "error":
            error = {"type": "server_error", "code": "internal", "message": "scripted failure"}
            await ws.send_message(_event("error", error=error))
        elif mode == "failed":
            error = {"type": "transcription_error", "code": "asr_fail", "message": "no decoder"}
            await ws.send_message(_event(rt.FAILED, item_id="item_1", error=error))
        elif mode == "close":
            await ws.aclose(1011, "scripted close")
        else:
            text = words_for(resample(pcm24k, 24000, 16000))
            await ws.send_message(_event("input_audio_buffer.committed", item_id="item_1"))
            await ws.send_message(_event(rt.COMPLETED, item_id="item_1", transcript=text))


async def scripted(nursery: trio.Nursery) -> tuple[ScriptedRemote, int]:
    remote = ScriptedRemote()
    listening = await nursery.start(
        partial(serve_websocket, remote.session, "127.0.0.1", 0, None, max_message_size=4 << 20)
    )
    return remote, listening.port


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("stall", "did not answer within 0.5 s (STREAM_ASR_TIMEOUT_S)"),
        ("error", "the remote ASR failed: internal: scripted failure"),
        ("failed", "the remote ASR failed: asr_fail: no decoder"),
        ("close", "the remote ASR closed the connection: code 1011 (scripted close)"),
    ],
)
async def test_a_remote_fault_is_asr_fail_and_the_session_goes_on(
    nursery: trio.Nursery, mode: str, message: str
) -> None:
    remote, port = await scripted(nursery)
    front = await start(nursery, FAST_FAKE.replace(asr_url=remote_of(port), asr_timeout_s=0.5))
    async with connect(front.url) as client:
        await client.start(16000)
        remote.mode = mode
        error = asr_error(await turn(client, speech(900)))
        assert message in error["message"]
        assert remote.commits >= 1
        remote.mode = "ok"
        pcm = speech(900, 700.0)
        assert hears(final_of(await turn(client, pcm)), pcm)


# -- the real Whisper on the remote side -------------------------------------------------------


async def test_a_spoken_sentence_through_a_remote_whisper(nursery: trio.Nursery) -> None:
    from tests.speech import SENTENCES, say, wer

    sentence = SENTENCES[2]
    pcm = say(sentence)
    # The remote: Whisper tiny.en, nothing else (lean: no LLM, no TTS).
    remote = await start(nursery, Config(port=0, lean=True, tts_engine="fake"))
    # The front: real VAD, no model at all (lean, remote ASR, no TTS).
    front = await start(
        nursery, Config(port=0, lean=True, tts_engine="fake", asr_url=remote_of(remote.port))
    )
    assert isinstance(front.hub.engines.asr, RealtimeAsr)
    assert front.hub.host.turn_cost is None  # nothing of its own to measure
    async with connect(front.url) as client:
        await client.start(16000)
        text = final_of(await turn(client, pcm))
    assert wer(sentence, text) <= 0.2, text


async def test_an_upload_longer_than_a_turn_is_sent_in_commits(nursery: trio.Nursery) -> None:
    remote = await start(nursery, FAST_FAKE)
    front = await start(nursery, FAST_FAKE.replace(asr_url=remote_of(remote.port)))
    # 40 s of "speech": more than the remote's longest utterance (30 s), so
    # one commit would be answered twice; it goes as 25 s and 15 s.
    pcm = speech(40_000, 440.0)
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
        answer = await http.post(
            f"http://127.0.0.1:{front.port}/v1/audio/transcriptions",
            files={"file": ("long.wav", wav_bytes(pcm, 16000), "audio/wav")},
            data={"model": "whisper-1"},
        )
    assert answer.status_code == 200, answer.text
    words = answer.json()["text"].lower().split()
    tone_word = words_for(pcm).lower().split()[0]
    # A word per 300 ms of each commit (an edge word may differ).
    assert words.count(tone_word) >= 40_000 // 300 - 6
    remote_asr = remote.hub.engines.asr
    assert isinstance(remote_asr, FakeAsr) and remote_asr.final_calls == 2


async def test_a_full_remote_is_shared_not_refused(nursery: trio.Nursery) -> None:
    # The remote admits one session: the front's decodes (partials on their
    # cadence, speculative finals, finals) share the one connection it got.
    # Its decodes take 300 ms and the audio comes faster than real time, so
    # a partial is always in flight when the final is asked for.
    remote = await start(nursery, FAST_FAKE.replace(max_sessions=1, fake_asr_ms=300))
    front = await start(nursery, FAST_FAKE.replace(asr_url=remote_of(remote.port)))
    engine = front.hub.engines.asr
    assert isinstance(engine, RealtimeAsr)
    async with connect(front.url) as client:
        await client.start(16000)
        for freq in (440.0, 700.0, 900.0):
            pcm = speech(1500, freq)
            events = await turn(client, pcm)
            assert hears(final_of(events), pcm)
            assert not [e for e in events if e["type"] == "error"]
    assert engine.connects == 1 and remote.hub.sessions_total == 1
    assert engine.decodes >= 3
    # A second connection was refused (then the front held to one), and the
    # partials made moot at each utterance's end were read out, not closed.
    assert engine.busy_refusals >= 1 and engine.drained >= 1
