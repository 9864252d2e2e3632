"""A :class:`~voicetrio.engines.base.FileAsrEngine` made of any streaming ASR engine.

An engine set that declares no file engine (``Engines.files`` is None: an
engine of one's own, a test's) still serves the OpenAI upload routes: the
file is one final decode, as ``POST /transcribe`` makes it, and the text is
one segment over the whole file. It has no word timings (``words`` is
empty) and knows English only: translation and other languages are
refused as an English-only model refuses them.
"""

from __future__ import annotations

from voicetrio.engines.base import (
    ENGINE_SAMPLE_RATE,
    AsrEngine,
    FileRequest,
    FileTranscript,
    LanguageUnsupported,
    Segment,
    TranslationUnsupported,
)


class WholeFileAsr:
    def __init__(self, asr: AsrEngine) -> None:
        self.asr = asr

    async def transcribe_file(self, pcm: bytes, request: FileRequest) -> FileTranscript:
        if request.task == "translate":
            raise TranslationUnsupported("this engine transcribes English only; it cannot translate")
        if request.language not in (None, "en"):
            raise LanguageUnsupported(
                f"this engine transcribes English only, not {request.language!r}"
            )
        duration = len(pcm) / 2 / ENGINE_SAMPLE_RATE
        text = (await self.asr.transcribe(pcm, final=True)).strip()
        segments = (Segment(0, 0.0, duration, " " + text),) if text else ()
        return FileTranscript(text, "en", duration, segments)


__all__ = ["WholeFileAsr"]
