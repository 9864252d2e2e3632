"""A whole file's transcript with its timings: what a file transcription asks
for and what it gives back, before any engine or API shape.

The streaming path needs only text; a file (``/v1/audio/transcriptions``,
``/v1/audio/translations``) also wants where each segment and word falls,
for ``verbose_json`` and subtitles. These are plain frozen records so that
the engines fill them, the subtitle formatter and the OpenAI shapes read
them, and tests compare them exactly. Times are seconds from the start of
the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Task = Literal["transcribe", "translate"]


@dataclass(frozen=True, slots=True)
class FileRequest:
    """How to transcribe a file.

    ``task`` "translate" gives English text whatever the spoken language (a
    multilingual model only); ``language`` is an ISO-639-1 code or None to
    detect it; ``prompt`` is text that steers spelling and style (Whisper's
    initial prompt); ``words`` asks for word timings as well as segments.
    ``timings`` False says only the text will be used: an engine may then
    take a faster path that gives no segments.
    """

    task: Task = "transcribe"
    language: str | None = None
    prompt: str | None = None
    words: bool = False
    timings: bool = True


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Segment:
    """One stretch of speech, with Whisper's confidence figures for it."""

    id: int
    start: float
    end: float
    text: str
    seek: int = 0
    tokens: tuple[int, ...] = ()
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 1.0
    no_speech_prob: float = 0.0


@dataclass(frozen=True, slots=True)
class FileTranscript:
    """The text of a file, its segments, and its words when they were asked for.

    ``language`` is the ISO-639-1 code of the text's language ("en" after a
    translation); ``duration_s`` is the length of the audio.
    """

    text: str
    language: str
    duration_s: float
    segments: tuple[Segment, ...] = ()
    words: tuple[Word, ...] = ()


__all__ = ["FileRequest", "FileTranscript", "Segment", "Task", "Word"]
