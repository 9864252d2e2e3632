"""A session speaking the Realtime API, under MockClock(autojump_threshold=0).

The session core with the Realtime adapter and the deterministic engines,
the test as the client on an in-memory transport: the order of the server
events, their times (exact, in audio time), and what the language model is
given (the conversation) are asserted. The same stages serve the v1
protocol; these tests show the new inputs doing what the API's events ask.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

from tests.conftest import MemoryTransport, make_engines, quiet, speech
from voicetrio.config import Config
from voicetrio.core.resample import resample
from voicetrio.engines.base import ChatMessage, Engines
from voicetrio.engines.fake import FakeAsr, FakeLlm, words_for
from voicetrio.session.connection import Session
from voicetrio.wire.realtime import handshake
from voicetrio.wire.realtime.adapter import RealtimeAdapter
from voicetrio.wire.realtime.g711 import ulaw_encode


class RecordingLlm(FakeLlm):
    """The deterministic language model, keeping every prompt it was given."""

    def __init__(self, *, first_token_s: float = 0.125, token_s: float = 0.03125) -> None:
        super().__init__(first_token_s=first_token_s, token_s=token_s)
        self.prompts: list[list[ChatMessage]] = []
        self.opened_at: list[float] = []

    @asynccontextmanager
    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[AsyncIterator[str]]:
        self.prompts.append(list(messages))
        self.opened_at.append(trio.current_time())
        async with super().stream(messages) as deltas:
            yield deltas


@dataclass
class Client:
    """The test as a Realtime client of one session."""

    session: Session
    peer: MemoryTransport
    engines: Engines
    llm: RecordingLlm

    def send(self, **event: Any) -> None:
        self.peer.send_json(event)

    async def speak(self, pcm16k: bytes, *, rate: int = 24000, encode: Any = None) -> None:
        """Append audio at real-time pace (on the test's clock), 100 ms per event."""
        pcm = resample(pcm16k, 16000, rate)
        step = rate * 2 // 10
        start = trio.current_time()
        for k, offset in enumerate(range(0, len(pcm), step)):
            await trio.sleep_until(start + k * 0.1)
            chunk = pcm[offset : offset + step]
            data = chunk if encode is None else encode(chunk)
            self.send(type="input_audio_buffer.append", audio=base64.b64encode(data).decode())
        await trio.sleep_until(start + len(pcm) / 2 / rate)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return self.peer.of_type(kind)

    def kinds(self) -> list[str]:
        return [e["type"] for e in self.peer.events]

    async def wait_for(self, kind: str, count: int = 1, **fields: Any) -> dict[str, Any]:
        return await self.peer.wait_for(kind, count, **fields)

    def time_of(self, kind: str, count: int = 1) -> float:
        return self.peer.time_of(kind, count)


CONFIG = Config(partial_interval_ms=500, vad_silence_ms=700)


async def open_client(
    nursery: trio.Nursery,
    *,
    config: Config = CONFIG,
    query: dict[str, str] | None = None,
    beta: bool = False,
    llm: RecordingLlm | None = None,
    asr: FakeAsr | None = None,
) -> Client:
    llm = llm or RecordingLlm()
    engines = make_engines(llm=llm, asr=asr)
    peer = MemoryTransport.create()
    hello = handshake.read({"OpenAI-Beta": "realtime=v1"} if beta else {}, query or {})
    adapter = RealtimeAdapter(
        hello,
        token="t",
        silence_ms=config.vad_silence_ms,
        instructions="Be brief.",
        asr_model="fake",
    )
    session = Session(
        peer, config, engines, session_id="s1", adapter=adapter, lean=hello.kind == "transcription"
    )
    nursery.start_soon(session.run)
    client = Client(session, peer, engines, llm)
    await client.wait_for(
        "session.created"
        if not (beta and hello.kind == "transcription")
        else "transcription_session.created"
    )
    return client


def user_words(prompt: list[ChatMessage]) -> list[str]:
    return [m["content"] for m in prompt if m["role"] == "user"]


# -- a spoken conversation -------------------------------------------------------------


async def test_a_spoken_turn_in_the_documented_order(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    c = await open_client(nursery)
    t0 = trio.current_time()
    await c.speak(speech(1200) + quiet(1500))
    done = await c.wait_for("response.done")
    kinds = c.kinds()
    user_part = [
        "session.created",
        "input_audio_buffer.speech_started",
        "conversation.item.input_audio_transcription.delta",
    ]
    assert kinds[:3] == user_part
    stopped = kinds.index("input_audio_buffer.speech_stopped")
    assert kinds[stopped : stopped + 5] == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
    ]
    created = kinds.index("response.created")
    assert created > stopped
    assert kinds[created : created + 4] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    body = kinds[created + 4 : kinds.index("response.output_audio.done")]
    # Text and speech interleave: the first phrase is spoken while the model still writes.
    assert set(body) == {"response.output_audio_transcript.delta", "response.output_audio.delta"}
    first_audio = body.index("response.output_audio.delta")
    assert "response.output_audio_transcript.delta" in body[first_audio:]
    assert kinds[-6:] == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    # The turn ends exactly one silence window after the speech, in audio time.
    assert c.time_of("input_audio_buffer.speech_stopped") == pytest.approx(t0 + 1.2 + 0.7)
    assert c.of("input_audio_buffer.speech_stopped")[0]["audio_end_ms"] == 1200
    completed = c.of("conversation.item.input_audio_transcription.completed")[0]
    heard = words_for(speech(1200))
    assert completed["transcript"] == heard
    assert (
        "".join(d["delta"] for d in c.of("conversation.item.input_audio_transcription.delta"))
        in heard
    )
    transcript = c.of("response.output_audio_transcript.done")[0]["transcript"]
    assert transcript.startswith(f"You said: {heard}.")
    assert done["response"]["status"] == "completed"
    assert done["response"]["output"][0]["content"][0]["transcript"] == transcript
    # Every event has its own id; the response's events name its one item.
    ids = [e["event_id"] for e in c.peer.events]
    assert len(set(ids)) == len(ids)
    item_id = done["response"]["output"][0]["id"]
    assert {e["item_id"] for e in c.of("response.output_audio.delta")} == {item_id}


async def test_speech_is_pcm16_at_24_khz_by_default_and_g711_when_asked(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    c = await open_client(nursery)
    c.send(
        type="session.update",
        session={
            "type": "realtime",
            "audio": {
                "input": {"format": {"type": "audio/pcmu"}},
                "output": {"format": {"type": "audio/pcmu"}},
            },
        },
    )
    await c.wait_for("session.updated")
    await c.speak(speech(1200) + quiet(1500), rate=8000, encode=ulaw_encode)
    await c.wait_for("response.done")
    heard = c.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert heard == words_for(speech(1200))  # μ-law in at 8 kHz, heard as the same words
    audio = b"".join(base64.b64decode(d["delta"]) for d in c.of("response.output_audio.delta"))
    spoken_s = sum(a.duration_s for a in spoken_phrases(c))
    assert len(audio) == pytest.approx(8000 * spoken_s, abs=len(spoken_phrases(c)))


def spoken_phrases(c: Client) -> list[Any]:
    turn = c.session.turn
    assert turn is not None
    return [_Seconds(s) for _, s in turn.spoken]


@dataclass
class _Seconds:
    duration_s: float


async def test_manual_turns_commit_then_respond(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    c = await open_client(nursery)
    c.send(
        type="session.update",
        session={"type": "realtime", "audio": {"input": {"turn_detection": None}}},
    )
    await c.wait_for("session.updated")
    # A pause far past the silence window does not end the turn.
    await c.speak(speech(900) + quiet(2000) + speech(600, 600.0) + quiet(300))
    await trio.testing.wait_all_tasks_blocked()
    assert not c.of("input_audio_buffer.speech_started") and not c.of(
        "input_audio_buffer.committed"
    )
    # The commit and the request for a reply, back to back: the reply
    # answers the words of that commit.
    c.send(type="input_audio_buffer.commit", event_id="c1")
    c.send(type="response.create", event_id="r1")
    done = await c.wait_for("response.done")
    kinds = c.kinds()
    assert "input_audio_buffer.speech_stopped" not in kinds
    assert (
        kinds.index("input_audio_buffer.committed")
        < kinds.index("conversation.item.input_audio_transcription.completed")
        < kinds.index("response.created")
    )
    heard = c.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert len(heard.split()) == 5  # both parts, one turn
    assert user_words(c.llm.prompts[-1]) == [heard]
    assert done["response"]["status"] == "completed"
    # A commit with nothing new is the API's error, and the session goes on.
    c.send(type="input_audio_buffer.commit", event_id="c2")
    error = await c.wait_for("error")
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"
    assert error["error"]["event_id"] == "c2"


async def test_create_response_off_waits_for_response_create(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    c = await open_client(nursery)
    c.send(
        type="session.update",
        session={
            "type": "realtime",
            "audio": {
                "input": {"turn_detection": {"type": "server_vad", "create_response": False}}
            },
        },
    )
    await c.speak(speech(900) + quiet(1200) + speech(900, 700.0) + quiet(1200))
    await c.wait_for("conversation.item.input_audio_transcription.completed", 2)
    await trio.testing.wait_all_tasks_blocked()
    assert not c.of("response.created") and c.llm.opened == 0
    c.send(type="response.create")
    await c.wait_for("response.done")
    finals = [
        e["transcript"] for e in c.of("conversation.item.input_audio_transcription.completed")
    ]
    assert user_words(c.llm.prompts[-1]) == finals  # both turns, as one conversation


async def test_a_held_speculative_reply_goes_out_only_after_the_turn_ends(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    c = await open_client(nursery)
    t0 = trio.current_time()
    await c.speak(speech(1200) + quiet(1500))
    await c.wait_for("response.done")
    # The model was asked during the silence window...
    assert c.llm.opened_at[0] < t0 + 1.2 + 0.7
    # ...and nothing of the reply left before the turn was over.
    assert c.time_of("response.created") >= c.time_of("input_audio_buffer.speech_stopped")


# -- cancel, barge-in, truncate ----------------------------------------------------------


async def test_response_cancel_stops_the_reply_and_leaves_no_memory(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    c = await open_client(nursery, llm=RecordingLlm(token_s=0.25))
    await c.speak(speech(900) + quiet(1000))
    await c.wait_for("response.output_audio_transcript.delta", 2)
    c.send(type="response.cancel", event_id="x1")
    done = await c.wait_for("response.done")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert done["response"]["output"][0]["status"] == "incomplete"
    await trio.testing.wait_all_tasks_blocked()
    assert c.kinds()[-1] == "response.done" and not c.of("error")
    c.send(type="response.cancel", event_id="x2")
    error = await c.wait_for("error")
    assert (
        error["error"]["code"] == "response_cancel_not_active"
        and error["error"]["event_id"] == "x2"
    )
    # Nothing of the cancelled exchange is remembered.
    c.send(
        type="conversation.item.create",
        item={
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Again?"}],
        },
    )
    c.send(type="response.create")
    await c.wait_for("response.done", 2)
    assert user_words(c.llm.prompts[-1]) == ["Again?"]


async def test_talking_over_a_reply_cancels_it_and_is_answered(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    c = await open_client(nursery, llm=RecordingLlm(token_s=0.25))
    await c.speak(speech(900) + quiet(1000))
    await c.wait_for("response.output_audio.delta")
    await c.speak(speech(900, 700.0) + quiet(1000))
    second = await c.wait_for("response.done", 2)
    first = c.of("response.done")[0]
    assert first["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    kinds = c.kinds()
    # The API's order: the user's speech is announced, then the reply ends.
    assert kinds.index(
        "input_audio_buffer.speech_started", kinds.index("response.created")
    ) < kinds.index("response.done")
    assert second["response"]["status"] == "completed"
    finals = [
        e["transcript"] for e in c.of("conversation.item.input_audio_transcription.completed")
    ]
    assert user_words(c.llm.prompts[-1]) == [finals[1]]


async def test_interrupt_response_off_keeps_the_reply(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    c = await open_client(nursery, llm=RecordingLlm(token_s=0.25))
    c.send(
        type="session.update",
        session={
            "type": "realtime",
            "audio": {
                "input": {"turn_detection": {"type": "server_vad", "interrupt_response": False}}
            },
        },
    )
    await c.speak(speech(900) + quiet(1000))
    await c.wait_for("response.output_audio.delta")
    await c.speak(speech(900, 700.0) + quiet(1000))
    await c.wait_for("response.done", 2)
    assert [d["response"]["status"] for d in c.of("response.done")] == ["completed", "completed"]


async def test_truncate_keeps_only_the_words_heard(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    c = await open_client(nursery)
    await c.speak(speech(900) + quiet(1000))
    done = await c.wait_for("response.done")
    item_id = done["response"]["output"][0]["id"]
    turn = c.session.turn
    assert turn is not None
    first_phrase, seconds = turn.spoken[0]
    heard_ms = int(seconds * 1000)
    c.send(
        type="conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=heard_ms
    )
    truncated = await c.wait_for("conversation.item.truncated")
    assert truncated["audio_end_ms"] == heard_ms and truncated["item_id"] == item_id
    await c.speak(speech(900, 700.0) + quiet(1000))
    await c.wait_for("response.done", 2)
    replies = [m["content"] for m in c.llm.prompts[-1] if m["role"] == "assistant"]
    assert replies == [" ".join(first_phrase.split())]


async def test_items_instructions_and_text_only_responses(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    c = await open_client(nursery)
    say = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "one"}]}
    c.send(type="conversation.item.create", item={**say, "id": "i1"})
    c.send(
        type="conversation.item.create",
        item={**say, "id": "i2", "content": [{"type": "input_text", "text": "two"}]},
    )
    c.send(type="conversation.item.delete", item_id="i1")
    c.send(
        type="response.create",
        response={"output_modalities": ["text"], "instructions": "Answer in one word."},
    )
    done = await c.wait_for("response.done")
    assert [e["item"]["id"] for e in c.of("conversation.item.added")][:2] == ["i1", "i2"]
    assert c.of("conversation.item.deleted")[0]["item_id"] == "i1"
    prompt = c.llm.prompts[-1]
    assert prompt[0] == {"role": "system", "content": "Answer in one word."}
    assert user_words(prompt) == ["two"]
    assert not c.of("response.output_audio.delta") and c.of("response.output_text.delta")
    assert done["response"]["output"][0]["content"][0]["type"] == "output_text"
    # The session's instructions and modality apply to the next one.
    c.send(type="session.update", session={"type": "realtime", "instructions": "Be formal."})
    c.send(type="response.create")
    await c.wait_for("response.done", 2)
    assert c.llm.prompts[-1][0] == {"role": "system", "content": "Be formal."}
    assert c.of("response.output_audio.delta")


async def test_one_response_at_a_time(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    c = await open_client(nursery)
    c.send(type="response.create", event_id="a")
    c.send(type="response.create", event_id="b")
    error = await c.wait_for("error")
    assert error["error"]["code"] == "conversation_already_has_active_response"
    assert error["error"]["event_id"] == "b"
    await c.wait_for("response.done")
    await trio.testing.wait_all_tasks_blocked()
    assert len(c.of("response.created")) == 1


async def test_a_recorded_clip_is_transcribed_into_the_conversation(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    c = await open_client(nursery)
    clip = resample(speech(900, 500.0), 16000, 24000)
    c.send(
        type="conversation.item.create",
        item={
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "audio": base64.b64encode(clip).decode()}],
        },
    )
    completed = await c.wait_for("conversation.item.input_audio_transcription.completed")
    assert completed["transcript"] == words_for(speech(900, 500.0))
    added = c.of("conversation.item.added")[0]["item"]
    assert added["id"] == completed["item_id"]
    assert added["content"][0] == {"type": "input_audio", "transcript": completed["transcript"]}
    c.send(type="response.create")
    await c.wait_for("response.done")
    assert user_words(c.llm.prompts[-1]) == [completed["transcript"]]


async def test_clear_drops_the_turn_in_progress(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    c = await open_client(nursery)
    await c.speak(speech(600))
    c.send(type="input_audio_buffer.clear")
    await c.wait_for("input_audio_buffer.cleared")
    await c.speak(quiet(1500))
    await trio.testing.wait_all_tasks_blocked()
    assert not c.of("input_audio_buffer.committed") and not c.of("response.created")
    # The stream goes on, its clock too.
    await c.speak(speech(900, 700.0) + quiet(1000))
    await c.wait_for("response.done")
    started = c.of("input_audio_buffer.speech_started")
    assert started[-1]["audio_start_ms"] == 2100


# -- a transcription session, bad input ------------------------------------------------


async def test_a_transcription_session_only_transcribes(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    c = await open_client(nursery, query={"intent": "transcription"})
    assert c.session.mode == "lean"
    await c.speak(speech(900) + quiet(1000) + speech(900, 700.0) + quiet(1000))
    await c.wait_for("conversation.item.input_audio_transcription.completed", 2)
    await trio.testing.wait_all_tasks_blocked()
    assert not any(k.startswith("response.") for k in c.kinds()) and c.llm.opened == 0
    c.send(type="response.create", event_id="r")
    error = await c.wait_for("error")
    assert error["error"]["code"] == "not_supported"


async def test_bad_input_is_answered_and_the_session_goes_on(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    c = await open_client(nursery)
    for frame in (
        "nonsense",
        "[]",
        json.dumps({"type": "input_audio_buffer.append", "audio": "!!"}),
    ):
        c.peer.send_text(frame)
    c.send(type="input_audio_buffer.append", audio=base64.b64encode(b"\x00\x00\x00").decode())
    c.send(type="conversation.item.truncate", item_id="nope", content_index=0, audio_end_ms=0)
    c.peer.send_bytes(b"\xff\xfe")
    for _ in range(30):  # more garbage than v1 tolerates: the Realtime API never closes on it
        c.peer.send_text("{")
    await c.wait_for("error", 36)
    codes = [e["error"]["code"] for e in c.of("error")][:6]
    assert codes == [
        "invalid_json",
        "invalid_json",
        "invalid_value",
        "invalid_value",
        "item_truncate_invalid_item_id",
        "invalid_json",
    ]
    await c.speak(speech(900) + quiet(1000))
    await c.wait_for("response.done")
    assert c.peer.close_code is None


async def test_beta_shape_names(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    c = await open_client(nursery, beta=True)
    await c.speak(speech(900) + quiet(1000))
    await c.wait_for("response.done")
    kinds = c.kinds()
    assert kinds[:2] == ["session.created", "conversation.created"]
    assert "conversation.item.created" in kinds and "conversation.item.added" not in kinds
    assert "response.audio.delta" in kinds and "response.audio_transcript.delta" in kinds
    assert "response.output_audio.delta" not in kinds


def test_ulaw_helper_round_trips() -> None:
    # The test's own μ-law input is what the server decodes (a sanity check of the helper).
    pcm = np.array([0, 1000, -1000], "<i2").tobytes()
    assert len(ulaw_encode(pcm)) == 3
