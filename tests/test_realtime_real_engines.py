"""The Realtime API on the default engines (Whisper tiny.en, the embedded
SmolLM2, pyttsx3 over espeak-ng), with the unmodified ``openai`` SDK: a
spoken question gets its transcript and a spoken answer. Replies are
checked for structure, never for wording."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np

from tests.speech import say, wer
from tests.test_realtime_sdk import append, client, server_thread, until
from voicetrio.config import Config
from voicetrio.core.audio import rms, silence

QUESTION = "Can you tell me a short story about a cat?"


def test_a_spoken_question_over_the_realtime_api() -> None:
    config = Config(port=0, openai_max_tokens=32, tts_max_phrase_length=24, shutdown_grace_s=1)
    question = say(QUESTION) + silence(1200)
    with server_thread(config, loaded=True) as server:

        async def scenario() -> None:
            async with client(server.port).realtime.connect(model="gpt-realtime") as conn:
                seen: list[Any] = []
                await until(conn, "session.created", seen)
                await append(conn, question)
                done = await until(conn, "response.done", seen)
                heard = next(
                    e
                    for e in seen
                    if e.type == "conversation.item.input_audio_transcription.completed"
                )
                assert wer(QUESTION, heard.transcript) <= 0.25
                assert done.response.status == "completed"
                said = next(e for e in seen if e.type == "response.output_audio_transcript.done")
                assert said.transcript.strip()
                audio = b"".join(
                    base64.b64decode(e.delta)
                    for e in seen
                    if e.type == "response.output_audio.delta"
                )
                # pcm16 at 24 kHz, resampled from the TTS's rate: real speech, not silence.
                assert len(audio) > 0.3 * 24000 * 2 and rms(audio) > 300
                assert np.frombuffer(audio, "<i2").size == len(audio) // 2

        asyncio.run(asyncio.wait_for(scenario(), 60))
