"""The Realtime API with a client nobody here wrote: the unmodified ``openai``
SDK (``openai[realtime]`` on ``websockets``) against a real server on port 0.

The server runs in its own thread (``trio.run`` of :func:`voicetrio.server.app.serve`
on the deterministic engines); each test is a plain function that runs the
SDK under asyncio, as its users do. Nothing sleeps to wait: every step
waits for the server event that says it happened (with a timeout that
fails the test rather than hanging it).
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest
import trio
import websockets
from openai import AsyncOpenAI

from tests.conftest import FAST_FAKE, quiet, speech
from voicetrio.config import Config
from voicetrio.core.resample import resample
from voicetrio.engines.fake import words_for
from voicetrio.server.app import Running, serve

#: Replies take about a second to write: long enough to talk over one.
CONFIG = FAST_FAKE.replace(fake_llm_first_token_ms=50, fake_llm_token_ms=50)
TIMEOUT_S = 15.0


class ServerThread:
    """A voicetrio server in a thread of its own, for an asyncio client."""

    def __init__(self, config: Config, *, loaded: bool = False) -> None:
        self.config = config
        #: Wait for the engines to load before saying the server is up.
        self.loaded = loaded
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.running: Running | None = None

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported by start()
            self._failed = exc
            self._ready.set()

    async def _main(self) -> None:
        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            running: Running = await nursery.start(partial(serve, self.config, shutdown=self._stop))
            if self.loaded:
                with trio.fail_after(60):
                    await running.hub.host.loaded.wait()
            self.running = running
            self._ready.set()

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(90)
        if self._failed is not None or self.running is None:
            raise RuntimeError("the server did not start") from self._failed
        return self

    def stop(self) -> None:
        self._token.run_sync_soon(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive()

    @property
    def port(self) -> int:
        assert self.running is not None
        return self.running.port


@contextmanager
def server_thread(config: Config, *, loaded: bool = False) -> Iterator[ServerThread]:
    server = ServerThread(config, loaded=loaded).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with server_thread(CONFIG) as running:
        yield running


def client(port: int, key: str = "sk-anything") -> AsyncOpenAI:
    # The beta client builds wss:// from base_url: websocket_base_url says ws://.
    return AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1",
        websocket_base_url=f"ws://127.0.0.1:{port}/v1",
        api_key=key,
    )


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT_S))


def b64_24k(pcm16k: bytes) -> str:
    return base64.b64encode(resample(pcm16k, 16000, 24000)).decode()


async def append(conn: Any, pcm16k: bytes) -> None:
    pcm = resample(pcm16k, 16000, 24000)
    for offset in range(0, len(pcm), 9600):  # 200 ms per event
        chunk = pcm[offset : offset + 9600]
        await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())


async def until(conn: Any, kind: str, seen: list[Any]) -> Any:
    """Read events into ``seen`` until one of type ``kind``; return it."""
    async for event in conn:
        seen.append(event)
        if event.type == kind:
            return event
    raise AssertionError(f"connection closed before {kind}")


def kinds(events: list[Any]) -> list[str]:
    return [e.type for e in events]


# -- GA --------------------------------------------------------------------------------


def test_ga_client_holds_a_spoken_conversation_with_barge_in_cancel_and_truncate(
    server: ServerThread,
) -> None:
    async def scenario() -> None:
        async with client(server.port).realtime.connect(model="gpt-realtime") as conn:
            seen: list[Any] = []
            created = await until(conn, "session.created", seen)
            assert created.session.type == "realtime"
            await conn.session.update(
                session={
                    "type": "realtime",
                    "instructions": "You are a test.",
                    "audio": {
                        "input": {
                            "transcription": {"model": "whisper-1"},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                        }
                    },
                }
            )
            updated = await until(conn, "session.updated", seen)
            assert updated.session.audio.input.turn_detection.silence_duration_ms == 500

            # 1. A spoken question, answered in speech.
            await append(conn, speech(1200) + quiet(800))
            first = await until(conn, "response.done", seen)
            assert first.response.status == "completed"
            transcript = next(
                e for e in seen if e.type == "conversation.item.input_audio_transcription.completed"
            ).transcript
            assert transcript == words_for(speech(1200))
            audio = [e for e in seen if e.type == "response.output_audio.delta"]
            assert audio and all(e.response_id == first.response.id for e in audio)
            said = "".join(
                e.delta for e in seen if e.type == "response.output_audio_transcript.delta"
            )
            assert said.startswith(f"You said: {transcript}.")

            # 2. Talking over the next reply: it is cancelled, the new words answered.
            seen.clear()
            await append(conn, speech(900, 700.0) + quiet(800))
            await until(conn, "response.output_audio.delta", seen)
            await append(conn, speech(900, 900.0) + quiet(800))
            interrupted = await until(conn, "response.done", seen)
            assert interrupted.response.status == "cancelled"
            assert interrupted.response.status_details.reason == "turn_detected"
            assert "input_audio_buffer.speech_started" in kinds(seen[-20:])
            # The client played 200 ms of it: the conversation keeps those words.
            cut = interrupted.response.output[0].id
            await conn.conversation.item.truncate(item_id=cut, content_index=0, audio_end_ms=200)
            truncated = await until(conn, "conversation.item.truncated", seen)
            assert (truncated.item_id, truncated.audio_end_ms) == (cut, 200)
            answered = await until(conn, "response.done", seen)
            assert answered.response.status == "completed"

            # 3. A reply asked for, then cancelled by the client.
            seen.clear()
            await conn.response.create(response={"output_modalities": ["text"]})
            await until(conn, "response.output_text.delta", seen)
            await conn.response.cancel()
            cancelled = await until(conn, "response.done", seen)
            assert cancelled.response.status == "cancelled"
            assert cancelled.response.status_details.reason == "client_cancelled"
            assert "response.output_audio.delta" not in kinds(seen)

    run(scenario)


def test_ga_manual_turns_and_items(server: ServerThread) -> None:
    async def scenario() -> None:
        async with client(server.port).realtime.connect(model="m") as conn:
            seen: list[Any] = []
            await until(conn, "session.created", seen)
            await conn.session.update(
                session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
            )
            await until(conn, "session.updated", seen)
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "system",
                    "content": [{"type": "input_text", "text": "Speak plainly."}],
                }
            )
            added = await until(conn, "conversation.item.added", seen)
            assert added.item.role == "system"
            await append(conn, speech(900) + quiet(1500))
            await conn.input_audio_buffer.commit()
            await conn.response.create()
            done = await until(conn, "response.done", seen)
            assert done.response.status == "completed"
            assert "input_audio_buffer.speech_stopped" not in kinds(seen)
            committed = next(e for e in seen if e.type == "input_audio_buffer.committed")
            assert committed.previous_item_id == added.item.id
            await conn.conversation.item.delete(item_id=committed.item_id)
            deleted = await until(conn, "conversation.item.deleted", seen)
            assert deleted.item_id == committed.item_id

    run(scenario)


def test_bad_events_get_errors_and_the_session_goes_on(server: ServerThread) -> None:
    async def scenario() -> None:
        async with client(server.port).realtime.connect(model="m") as conn:
            seen: list[Any] = []
            await until(conn, "session.created", seen)
            await conn.send_raw("not json")
            await conn.send_raw(
                '{"type": "input_audio_buffer.append", "audio": "@@@", "event_id": "e1"}'
            )
            await conn.input_audio_buffer.append(audio=base64.b64encode(b"\x00" * 3).decode())
            # A format the API does not have (sent raw: the SDK's types forbid it).
            await conn.send_raw(
                '{"type": "session.update", "session": {"type": "realtime", '
                '"audio": {"input": {"format": {"type": "audio/wav"}}}}}'
            )
            await conn.response.cancel()
            await conn.input_audio_buffer.commit()
            await conn.send_raw(
                '{"type": "input_audio_buffer.append", "audio": "'
                + "A" * (16 * 1024 * 1024 - 100)
                + '"}'
            )
            errors: list[Any] = []
            while len(errors) < 7:
                errors.append(await until(conn, "error", seen))
            assert [e.error.code for e in errors] == [
                "invalid_json",
                "invalid_value",
                "invalid_value",
                "invalid_value",
                "response_cancel_not_active",
                "input_audio_buffer_commit_empty",
                "event_too_large",
            ]
            assert errors[1].error.event_id == "e1" and errors[1].error.param == "audio"
            assert {e.error.type for e in errors} == {"invalid_request_error"}
            # Still serving.
            await append(conn, speech(900) + quiet(800))
            done = await until(conn, "response.done", seen)
            assert done.response.status == "completed"

    run(scenario)


# -- beta ------------------------------------------------------------------------------


def test_beta_client_holds_a_spoken_turn_in_g711(server: ServerThread) -> None:
    async def scenario() -> None:
        async with client(server.port).beta.realtime.connect(
            model="gpt-4o-realtime-preview"
        ) as conn:
            seen: list[Any] = []
            await until(conn, "session.created", seen)
            await until(conn, "conversation.created", seen)
            await conn.session.update(
                session={"input_audio_format": "pcm16", "output_audio_format": "g711_ulaw"}
            )
            updated = await until(conn, "session.updated", seen)
            assert updated.session.output_audio_format == "g711_ulaw"
            await append(conn, speech(1200) + quiet(800))
            done = await until(conn, "response.done", seen)
            assert done.response.status == "completed"
            assert "conversation.item.created" in kinds(seen)
            audio = b"".join(
                base64.b64decode(e.delta) for e in seen if e.type == "response.audio.delta"
            )
            said = next(e for e in seen if e.type == "response.audio_transcript.done").transcript
            assert said.startswith("You said:") and len(audio) > 8000  # over a second at 8 kHz
            await conn.response.create(response={"modalities": ["text"], "instructions": "Shout."})
            text_done = await until(conn, "response.done", seen)
            assert text_done.response.modalities == ["text"]
            assert "response.text.done" in kinds(seen)

    run(scenario)


# -- transcription, access, admission --------------------------------------------------


def test_a_transcription_session_serves_speech_recognition(server: ServerThread) -> None:
    async def scenario() -> None:
        connect = client(server.port).realtime.connect(extra_query={"intent": "transcription"})
        async with connect as conn:
            seen: list[Any] = []
            created = await until(conn, "session.created", seen)
            assert created.session.type == "transcription"
            await append(conn, speech(900) + quiet(800) + speech(900, 700.0) + quiet(800))
            first = await until(conn, "conversation.item.input_audio_transcription.completed", seen)
            second = await until(
                conn, "conversation.item.input_audio_transcription.completed", seen
            )
            # Each utterance on its own (the second's words depend on where its
            # audio starts, pre-roll included).
            assert first.transcript == words_for(speech(900))
            assert len(second.transcript.split()) == 3 and second.item_id != first.item_id
            assert not any(k.startswith("response.") for k in kinds(seen))

    run(scenario)


def test_tokens_origins_and_the_browser_subprotocol() -> None:
    with server_thread(
        CONFIG.replace(auth_tokens="s3cret", allowed_origins="https://app.example")
    ) as s:

        async def scenario() -> None:
            async with client(s.port, key="s3cret").realtime.connect(model="m") as conn:
                assert (await conn.recv()).type == "session.created"
            with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                async with client(s.port, key="wrong").realtime.connect(model="m") as conn:
                    await conn.recv()
            assert refused.value.response.status_code == 401
            url = f"ws://127.0.0.1:{s.port}/v1/realtime?model=m"
            protocols: Any = ["realtime", "openai-insecure-api-key.s3cret"]
            async with websockets.connect(
                url, subprotocols=protocols, origin=websockets.Origin("https://app.example")
            ) as browser:
                assert browser.subprotocol == "realtime"
                assert '"session.created"' in str(await browser.recv())
            with pytest.raises(websockets.exceptions.InvalidStatus) as foreign:
                async with websockets.connect(
                    url, subprotocols=protocols, origin=websockets.Origin("https://evil.example")
                ):
                    pass
            assert foreign.value.response.status_code == 403

        run(scenario)


def test_a_full_server_refuses_with_server_busy() -> None:
    with server_thread(CONFIG.replace(max_sessions=1)) as s:

        async def scenario() -> None:
            async with client(s.port).realtime.connect(model="m") as first:
                assert (await first.recv()).type == "session.created"
                url = f"ws://127.0.0.1:{s.port}/v1/realtime?model=m"
                async with websockets.connect(url) as second:
                    error = str(await second.recv())
                    assert '"server_busy"' in error and '"server_error"' in error
                    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                        await second.recv()
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013

        run(scenario)
