"""Real speech recognition end to end: espeak-ng speech streamed over a real
socket into a server running Whisper tiny.en and webrtcvad (lean mode, so the
transcript is all there is), and the HTTP transcription endpoints."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio

from tests.speech import SENTENCES, encode_audio, say, wer
from voicetrio.client.connection import ClientClosed, VoiceClient, connect, stream_pcm
from voicetrio.config import Config
from voicetrio.core.audio import silence, wav_bytes
from voicetrio.engines.base import ModelLoadError
from voicetrio.engines.registry import EngineHost, EngineLoadFailed
from voicetrio.server.app import Running, serve

REAL = Config(port=0, engines="real", lean=True, shutdown_grace_s=1.0)


async def start(nursery: trio.Nursery, **changes: Any) -> Running:
    running: Running = await nursery.start(partial(serve, REAL.replace(**changes)))
    return running


async def until_ready(server: Running) -> None:
    with trio.fail_after(60):
        await server.hub.host.loaded.wait()
    assert server.hub.host.failure is None


async def utterance_events(client: VoiceClient, count: int = 1) -> list[dict[str, Any]]:
    """Events until ``count`` metrics (one per final in lean mode)."""
    events: list[dict[str, Any]] = []
    with trio.fail_after(60):
        while sum(e["type"] == "metrics" for e in events) < count:
            events.append((await client.next_event()).event)
    return events


def finals(events: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in events if e["type"] == "final_transcript"]


async def test_six_sentences_streamed(nursery: trio.Nursery) -> None:
    server = await start(nursery)
    await until_ready(server)
    async with connect(server.url) as client:
        await client.start(16000)
        for sentence in SENTENCES:
            await stream_pcm(client, say(sentence) + silence(1000), 16000, realtime=False)
            (text,) = finals(await utterance_events(client))
            assert wer(sentence, text) <= 0.25, (sentence, text)


async def test_four_seconds_at_real_time_gives_partials_before_the_final(
    nursery: trio.Nursery,
) -> None:
    server = await start(nursery)
    await until_ready(server)
    sentence = "Set a timer for ten minutes and tell me when the pasta is ready."
    pcm = say(sentence)
    assert len(pcm) / 32000 >= 3.5
    async with connect(server.url) as client:
        await client.start(16000)
        await stream_pcm(client, pcm + silence(1200), 16000, frame_ms=40, realtime=True)
        events = await utterance_events(client)
    kinds = [e["type"] for e in events]
    assert kinds.count("partial_transcript") >= 2
    assert kinds.index("partial_transcript") < kinds.index("final_transcript")
    assert wer(sentence, finals(events)[0]) <= 0.25


async def test_silence_and_noise_give_no_transcript(nursery: trio.Nursery) -> None:
    server = await start(nursery)
    await until_ready(server)
    rng = np.random.default_rng(7)
    noise = (rng.normal(0, 0.05, 16000 * 4) * 32767).astype("<i2").tobytes()
    async with connect(server.url) as client:
        for pcm in (silence(4000), noise):
            await client.start(16000)
            await stream_pcm(client, pcm, 16000, realtime=False)
            await client.stop()
            with trio.fail_after(30):
                while True:
                    event = (await client.next_event()).event
                    assert event["type"] not in ("partial_transcript", "final_transcript"), event
                    if event["type"] == "info" and event.get("event") == "no_speech":
                        break


async def test_three_utterances_with_pauses_give_three_finals_in_order(
    nursery: trio.Nursery,
) -> None:
    server = await start(nursery)
    await until_ready(server)
    sentences = SENTENCES[:3]
    pcm = b"".join(say(s) + silence(1500) for s in sentences)
    async with connect(server.url) as client:
        await client.start(16000)
        await stream_pcm(client, pcm, 16000, realtime=False)
        texts = finals(await utterance_events(client, 3))
    assert len(texts) == 3
    for sentence, text in zip(sentences, texts, strict=True):
        assert wer(sentence, text) <= 0.25, (sentence, text)


async def test_a_short_pause_inside_a_sentence_does_not_split_it(nursery: trio.Nursery) -> None:
    server = await start(nursery)
    await until_ready(server)
    first, second = "What is the weather going to be like", "in London tomorrow morning?"
    pcm = say(first) + silence(300) + say(second) + silence(1200)
    async with connect(server.url) as client:
        await client.start(16000)
        await stream_pcm(client, pcm, 16000, realtime=False)
        (text,) = finals(await utterance_events(client))
    assert wer(f"{first} {second}", text) <= 0.25


@pytest.mark.parametrize("rate", [8000, 48000])
async def test_other_sample_rates_are_resampled(nursery: trio.Nursery, rate: int) -> None:
    server = await start(nursery)
    await until_ready(server)
    sentence = SENTENCES[1]
    async with connect(server.url) as client:
        await client.start(rate)
        await stream_pcm(client, say(sentence, rate_hz=rate) + silence(1000, rate), rate, realtime=False)
        (text,) = finals(await utterance_events(client))
    assert wer(sentence, text) <= 0.35, text  # 8 kHz telephone audio loses a little


async def test_a_bad_model_is_tried_again_then_the_server_ends_saying_why() -> None:
    config = REAL.replace(
        model_whisper="no-such-model", engine_load_attempts=2, engine_load_backoff_s=0
    )
    with trio.fail_after(30), pytest.raises(EngineLoadFailed) as failed:
        await serve(config)
    assert failed.value.attempts == 2 and failed.value.what == "the ASR engine"
    assert "no-such-model" in str(failed.value)


async def test_a_session_open_while_the_model_fails_is_told(nursery: trio.Nursery) -> None:
    go = trio.Event()
    ended: list[EngineLoadFailed] = []
    served = trio.Event()

    async def slow_failing_load(host: EngineHost) -> None:
        await go.wait()
        raise ModelLoadError("model weights are corrupt")

    config = REAL.replace(engines="fake", engine_load_attempts=1)
    host = EngineHost(config, loader=slow_failing_load)

    async def run_server(task_status: trio.TaskStatus[Running]) -> None:
        try:
            await serve(config, host=host, task_status=task_status)
        except EngineLoadFailed as exc:
            ended.append(exc)
        finally:
            served.set()

    server: Running = await nursery.start(run_server)
    async with connect(server.url) as client:
        await client.start(16000)
        assert not server.hub.host.loaded.is_set()
        go.set()
        events = []
        with pytest.raises(ClientClosed) as closed, trio.fail_after(30):
            while True:
                events.append((await client.next_event()).event)
    assert closed.value.code == 1011
    assert events[-1] == {
        "type": "error",
        "code": "MODEL_LOAD_FAIL",
        "message": "the engine set did not load (1 attempt): model weights are corrupt",
        "recoverable": False,
    }
    # The server does not stay up refusing sessions: it ends, saying why.
    with trio.fail_after(30):
        await served.wait()
    assert [str(e) for e in ended] == [events[-1]["message"]]


# -- HTTP -------------------------------------------------------------------------


def wav_file(pcm: bytes, rate: int = 16000) -> bytes:
    return wav_bytes(pcm, rate)


def mp3_file(pcm: bytes, rate: int = 16000) -> bytes:
    return encode_audio(pcm, rate, "mp3", "mp3")


async def test_http_transcription_endpoints(nursery: trio.Nursery) -> None:
    server = await start(nursery, max_upload_s=20, max_upload_bytes=2 * 1024 * 1024)
    await until_ready(server)
    sentence = SENTENCES[2]
    pcm = say(sentence)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=60) as http:
        r = await http.post("/transcribe", files={"file": ("q.wav", wav_file(pcm), "audio/wav")})
        assert r.status_code == 200, r.text
        assert wer(sentence, r.json()["transcript"]) <= 0.25
        r = await http.post(
            "/v1/audio/transcriptions",
            files={"file": ("q.mp3", mp3_file(pcm), "audio/mpeg")},
            data={"model": "whisper-1", "response_format": "json"},
        )
        assert r.status_code == 200, r.text
        assert wer(sentence, r.json()["text"]) <= 0.25
        r = await http.post(
            "/v1/audio/transcriptions",
            files={"file": ("q.wav", wav_file(pcm), "audio/wav")},
            data={"response_format": "text"},
        )
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert wer(sentence, r.text) <= 0.25

        async def refused(path: str, status: int, code: str, **kwargs: Any) -> None:
            r = await http.post(path, **kwargs)
            assert r.status_code == status, r.text
            assert r.json()["error"]["code"] == code and r.json()["error"]["message"]

        await refused("/transcribe", 415, "NOT_AUDIO", files={"file": ("x.wav", b"hello" * 100)})
        await refused("/transcribe", 400, "EMPTY_UPLOAD", files={"file": ("x.wav", b"")})
        await refused("/transcribe", 400, "BAD_REQUEST", data={"x": "1"})
        await refused(
            "/transcribe", 413, "UPLOAD_TOO_LONG", files={"file": ("x.wav", wav_file(silence(21_000)))}
        )
        # As one bytes body: the server answers before reading it and closes,
        # and httpx would leave its multipart generator half-consumed.
        big = httpx.Request("POST", "/", files={"file": ("x.wav", b"\0" * 3 * 1024 * 1024)})
        await refused("/transcribe", 413, "UPLOAD_TOO_LARGE", content=big.read(), headers=big.headers)
        await refused(
            "/v1/audio/transcriptions",
            400,
            "BAD_REQUEST",
            files={"file": ("q.wav", wav_file(pcm))},
            data={"response_format": "xml"},
        )


async def test_cli_transcribe(tmp_path: Path) -> None:
    import sys

    sentence = SENTENCES[3]
    path = tmp_path / "q.wav"
    path.write_bytes(wav_file(say(sentence)))
    result = await trio.run_process(
        [sys.executable, "-m", "voicetrio", "transcribe", str(path)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert wer(sentence, result.stdout.decode().strip()) <= 0.25
    bad = await trio.run_process(
        [sys.executable, "-m", "voicetrio", "transcribe", str(tmp_path / "nope.wav")],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert bad.returncode == 1 and b"no such file" in bad.stderr
