"""The OpenAI audio API's requests and answers, sans-IO.

Parses what a client sends to ``/v1/audio/transcriptions``,
``/v1/audio/translations`` (form fields) and ``/v1/audio/speech`` (a JSON
object) into typed requests, refusing with an :class:`ApiError` what the
API does not define (``BAD_REQUEST``) or what this server does not serve
(``UNSUPPORTED_FORMAT``, ``INPUT_TOO_LONG``, ``STREAMING_NOT_SUPPORTED``),
and renders a :class:`FileTranscript` in the ``response_format`` asked for,
shaped as the API shapes it (the ``openai`` SDK's ``TranscriptionVerbose``,
``TranscriptionSegment`` and ``TranscriptionWord``).

What is accepted and not used, as the OpenAI API defines it: ``model`` (the
server's loaded models serve every request), ``temperature`` (decoding is
greedy at 0, for repeatable results), ``voice`` and ``instructions`` on
speech (the server's TTS voice speaks), ``include[]`` and
``chunking_strategy``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from voicetrio.core.languages import LANGUAGES, language_name
from voicetrio.core.openai_errors import ApiError, bad_request
from voicetrio.core.subtitles import srt, vtt
from voicetrio.core.transcript import FileRequest, FileTranscript, Segment, Word

#: Every ``response_format`` of a transcription or translation served here.
TRANSCRIPT_FORMATS: Final = ("json", "text", "srt", "verbose_json", "vtt")
#: In the API, not served: speaker labels need a diarizing model.
UNSERVED_TRANSCRIPT_FORMATS: Final = ("diarized_json",)
GRANULARITIES: Final = ("segment", "word")
#: The formats that show segment times (json and text are the text alone).
TIMED_FORMATS: Final = ("srt", "verbose_json", "vtt")

#: The speech formats of the API; which of them are served depends on the
#: encoders at hand (the caller says, see :func:`parse_speech`).
SPEECH_FORMATS: Final = ("mp3", "opus", "aac", "flac", "wav", "pcm")
#: The API's default speech format.
DEFAULT_SPEECH_FORMAT: Final = "mp3"
#: The API's limit on the text of one speech request, in characters.
MAX_SPEECH_INPUT: Final = 4096
MIN_SPEED: Final = 0.25
MAX_SPEED: Final = 4.0

Fields = Mapping[str, Sequence[str]]


@dataclass(frozen=True, slots=True)
class TranscriptAsk:
    """A transcription or translation request: what to decode and how to answer."""

    response_format: str
    file: FileRequest
    #: verbose_json: whether to list segments (the default) and words.
    segments: bool = True


@dataclass(frozen=True, slots=True)
class SpeechAsk:
    input: str
    response_format: str
    speed: float = 1.0
    #: The voice named (an OpenAI voice name or a custom voice's id); not used.
    voice: str | None = None


def parse_transcript_ask(fields: Fields, *, translate: bool = False) -> TranscriptAsk:
    """A transcription (or, with ``translate``, a translation) request from its form fields."""
    response_format = _field(fields, "response_format") or "json"
    if response_format in UNSERVED_TRANSCRIPT_FORMATS:
        raise ApiError(
            400,
            "UNSUPPORTED_FORMAT",
            f"response_format {response_format!r} needs a diarizing model, which this server "
            f"does not have; use one of {', '.join(TRANSCRIPT_FORMATS)}",
            "response_format",
        )
    if response_format not in TRANSCRIPT_FORMATS:
        raise bad_request(
            f"response_format {response_format!r} is not supported; "
            f"use one of {', '.join(TRANSCRIPT_FORMATS)}",
            "response_format",
        )
    if _field(fields, "stream") in ("true", "True", "1"):
        raise ApiError(
            400,
            "STREAMING_NOT_SUPPORTED",
            "streamed transcription is not supported (as with OpenAI's whisper-1); "
            "leave stream unset",
            "stream",
        )
    _temperature(fields)
    granularities = _granularities(fields)
    if granularities and response_format != "verbose_json":
        raise bad_request(
            "timestamp_granularities needs response_format verbose_json",
            "timestamp_granularities",
        )
    # A translation's language is always English: the field is not the API's there.
    language = None if translate else _language(fields)
    request = FileRequest(
        task="translate" if translate else "transcribe",
        language=language,
        prompt=_field(fields, "prompt") or None,
        words="word" in granularities,
        timings=response_format in TIMED_FORMATS,
    )
    segments = not granularities or "segment" in granularities
    return TranscriptAsk(response_format, request, segments=segments)


def render_transcript(transcript: FileTranscript, ask: TranscriptAsk) -> tuple[str, str]:
    """(body, content type) of ``transcript`` in the format asked for."""
    fmt = ask.response_format
    if fmt == "text":
        return transcript.text, "text/plain; charset=utf-8"
    if fmt == "srt":
        return srt(transcript.segments), "text/plain; charset=utf-8"
    if fmt == "vtt":
        return vtt(transcript.segments), "text/vtt; charset=utf-8"
    body: dict[str, Any]
    if fmt == "json":
        body = {"text": transcript.text, "usage": _usage(transcript)}
    else:
        body = verbose_body(transcript, ask)
    return json.dumps(body, ensure_ascii=False), "application/json"


def verbose_body(transcript: FileTranscript, ask: TranscriptAsk) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": ask.file.task,
        "language": language_name(transcript.language),
        "duration": round(transcript.duration_s, 3),
        "text": transcript.text,
    }
    if ask.segments:
        body["segments"] = [segment_body(s) for s in transcript.segments]
    if ask.file.words:
        body["words"] = [word_body(w) for w in transcript.words]
    # A translation's answer has no usage in the API.
    if ask.file.task == "transcribe":
        body["usage"] = _usage(transcript)
    return body


def segment_body(segment: Segment) -> dict[str, Any]:
    return {
        "id": segment.id,
        "seek": segment.seek,
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "tokens": list(segment.tokens),
        "temperature": segment.temperature,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": segment.compression_ratio,
        "no_speech_prob": segment.no_speech_prob,
    }


def word_body(word: Word) -> dict[str, Any]:
    return {"word": word.word, "start": word.start, "end": word.end}


def _usage(transcript: FileTranscript) -> dict[str, Any]:
    return {"type": "duration", "seconds": round(transcript.duration_s, 3)}


def parse_speech(body: object, *, served: Collection[str]) -> SpeechAsk:
    """A speech request from its JSON body; ``served`` are the formats this
    server can encode now (a subset of :data:`SPEECH_FORMATS`)."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object with input, model and voice")
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise bad_request("input must be the text to speak, a non-empty string", "input")
    if len(text) > MAX_SPEECH_INPUT:
        raise ApiError(
            400,
            "INPUT_TOO_LONG",
            f"input is {len(text)} characters; the limit is {MAX_SPEECH_INPUT}",
            "input",
        )
    response_format = body.get("response_format", DEFAULT_SPEECH_FORMAT)
    if response_format not in SPEECH_FORMATS:
        raise bad_request(
            f"response_format {response_format!r} is not a speech format; "
            f"use one of {', '.join(SPEECH_FORMATS)}",
            "response_format",
        )
    if response_format not in served:
        raise ApiError(
            400,
            "UNSUPPORTED_FORMAT",
            f"response_format {response_format!r} is not served here; "
            f"use one of {', '.join(f for f in SPEECH_FORMATS if f in served)}",
            "response_format",
        )
    stream_format = body.get("stream_format", "audio")
    if stream_format != "audio":
        raise ApiError(
            400,
            "UNSUPPORTED_FORMAT",
            f"stream_format {stream_format!r} is not served here; use audio (the default)",
            "stream_format",
        )
    return SpeechAsk(text, response_format, speed=_speed(body), voice=_voice(body))


def _speed(body: Mapping[str, object]) -> float:
    speed = body.get("speed", 1.0)
    # bool is an int to Python, not a number to a client.
    if isinstance(speed, bool) or not isinstance(speed, int | float):
        raise bad_request(f"speed must be a number from {MIN_SPEED} to {MAX_SPEED}", "speed")
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise bad_request(f"speed {speed} is outside {MIN_SPEED}..{MAX_SPEED}", "speed")
    return float(speed)


def _voice(body: Mapping[str, object]) -> str | None:
    voice = body.get("voice")
    if voice is None or isinstance(voice, str):
        return voice
    # A custom voice is named by an object: {"id": "voice_1234"}.
    if isinstance(voice, dict) and isinstance(voice.get("id"), str):
        return str(voice["id"])
    raise bad_request('voice must be a voice name or {"id": "..."}', "voice")


def _field(fields: Fields, name: str) -> str | None:
    values = fields.get(name)
    return values[0] if values else None


def _language(fields: Fields) -> str | None:
    language = (_field(fields, "language") or "").strip().lower()
    if not language:
        return None
    if language not in LANGUAGES:
        raise bad_request(
            f"language {language!r} is not an ISO-639-1 code Whisper knows", "language"
        )
    return language


def _temperature(fields: Fields) -> None:
    # Checked as the API checks it, then not used: decoding is greedy at 0.
    value = _field(fields, "temperature")
    if value is None or value == "":
        return
    try:
        temperature = float(value)
    except ValueError:
        temperature = math.nan
    if not 0.0 <= temperature <= 1.0:
        raise bad_request(f"temperature {value!r} is not a number from 0 to 1", "temperature")


def _granularities(fields: Fields) -> tuple[str, ...]:
    # The SDK sends a list as repeated "name[]" fields; curl users may leave off the brackets.
    values = [*fields.get("timestamp_granularities[]", ()), *fields.get("timestamp_granularities", ())]
    for value in values:
        if value not in GRANULARITIES:
            raise bad_request(
                f"timestamp_granularities {value!r} is not one of {', '.join(GRANULARITIES)}",
                "timestamp_granularities",
            )
    return tuple(dict.fromkeys(values))


__all__ = [
    "DEFAULT_SPEECH_FORMAT",
    "GRANULARITIES",
    "MAX_SPEECH_INPUT",
    "MAX_SPEED",
    "MIN_SPEED",
    "SPEECH_FORMATS",
    "TIMED_FORMATS",
    "TRANSCRIPT_FORMATS",
    "UNSERVED_TRANSCRIPT_FORMATS",
    "SpeechAsk",
    "TranscriptAsk",
    "parse_speech",
    "parse_transcript_ask",
    "render_transcript",
    "segment_body",
    "verbose_body",
    "word_body",
]
