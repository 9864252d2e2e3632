"""Voice in, voice out, over a real socket with the default engines: Whisper
tiny.en, the embedded SmolLM2 (its own process) and pyttsx3 over espeak-ng.
Replies are checked for structure, never for wording."""

from __future__ import annotations

import base64
import io
import wave
from functools import partial
from typing import Any

import pytest
import trio

from tests.speech import say, wer
from voicetrio.client.connection import ReceivedEvent, VoiceClient, connect, stream_pcm
from voicetrio.config import Config
from voicetrio.core.audio import rms, silence
from voicetrio.server.app import Running, serve

QUESTION = "Can you tell me a short story about a cat?"


async def converse(client: VoiceClient, pcm: bytes) -> list[ReceivedEvent]:
    events: list[ReceivedEvent] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(stream_pcm, client, pcm, 16000, frame_ms=40, realtime=False))
        with trio.fail_after(60):
            while not events or events[-1].type != "metrics":
                events.append(await client.next_event())
    return events


def check_turn(events: list[ReceivedEvent]) -> list[dict[str, Any]]:
    kinds = [e.type for e in events]
    final = kinds.index("final_transcript")
    assert wer(QUESTION, events[final].event["text"]) <= 0.25
    tokens = [e.event for e in events if e.type == "llm_token"]
    assert len(tokens) >= 6  # at least five token events and the closing one
    assert [t["done"] for t in tokens].count(True) == 1 and tokens[-1]["done"] is True
    done = next(i for i, e in enumerate(events) if e.type == "llm_token" and e.event["done"])
    chunks = [i for i, e in enumerate(events) if e.type == "tts_chunk"]
    # a multi-phrase reply: its first phrase is spoken before the reply is done
    assert len(chunks) >= 2 and final < chunks[0] < done
    assert kinds[-2:] == ["tts_complete", "metrics"]
    return [e.event for e in events]


def wav_pcm(chunk: dict[str, Any]) -> tuple[bytes, int]:
    with wave.open(io.BytesIO(base64.b64decode(chunk["audio_b64"]))) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        return w.readframes(w.getnframes()), w.getframerate()


@pytest.mark.parametrize("speculative", [True, False])
async def test_a_spoken_question_gets_a_spoken_answer(
    nursery: trio.Nursery, speculative: bool
) -> None:
    config = Config(
        port=0,
        openai_max_tokens=48,
        tts_max_phrase_length=24,
        speculative_reply=speculative,
        shutdown_grace_s=1,
    )
    server: Running = await nursery.start(partial(serve, config))
    with trio.fail_after(60):
        await server.hub.host.loaded.wait()
    assert server.hub.host.failure is None
    assert server.hub.engines.readiness() == {"asr": True, "llm": True, "tts": True}
    async with connect(server.url) as client:
        await client.start(16000)
        events = check_turn(await converse(client, say(QUESTION) + silence(1200)))
    for chunk in (e for e in events if e["type"] == "tts_chunk"):
        pcm, rate = wav_pcm(chunk)
        assert rate == 22050 and len(pcm) > 0.2 * rate * 2 and rms(pcm) > 300
    metrics = events[-1]
    assert metrics["t2_final_ms"] <= metrics["t3_first_token_ms"] <= metrics["t4_first_audio_ms"]


async def test_pcm16_mode_with_real_speech(nursery: trio.Nursery) -> None:
    config = Config(port=0, openai_max_tokens=32, tts_max_phrase_length=24, shutdown_grace_s=1)
    server: Running = await nursery.start(partial(serve, config))
    with trio.fail_after(60):
        await server.hub.host.loaded.wait()
    async with connect(server.url) as client:
        await client.start(16000, audio_format="pcm16")
        events = await converse(client, say(QUESTION) + silence(1200))
    chunks = [e for e in events if e.type == "tts_chunk"]
    assert chunks
    for chunk in chunks:
        assert chunk.audio is not None and len(chunk.audio) == chunk.event["bytes"]
        assert chunk.event["sample_rate"] == 22050 and rms(chunk.audio) > 300
