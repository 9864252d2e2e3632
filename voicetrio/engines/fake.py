"""The deterministic engine set: offline demos, load tests and exact tests.

No models, no network: every result is a pure function of the input, and every
delay is a configurable ``trio.sleep``. That makes the whole pipeline runnable
anywhere, and under ``trio.testing.MockClock(autojump_threshold=0)`` its timing
is exact to the float, so tests can assert when each event happens, not just
that it happens. Failure modes (ASR error, LLM hang, LLM failure on open or
mid-stream, TTS error per phrase) are switches here, so the session's error
paths can be exercised the same way.

The pieces also fit each other: :class:`FakeTts` speaks tones whose pitch
depends on the text, and :class:`FakeAsr` turns pitch back into words, so
audio played back into the server is "heard" as something stable.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Final, Literal

import numpy as np
import trio

from voicetrio.config import Config
from voicetrio.core import audio
from voicetrio.core.work_queue import Lane
from voicetrio.engines.base import (
    ENGINE_SAMPLE_RATE,
    AsrError,
    ChatMessage,
    Engines,
    FileRequest,
    FileTranscript,
    LanguageUnsupported,
    LlmError,
    Segment,
    SpeechAudio,
    TranslationUnsupported,
    TtsError,
    Word,
)
from voicetrio.engines.scheduler import Scheduler, Slot

FakeLlmMode = Literal["normal", "hang", "fail"]

#: The vocabulary of :class:`FakeAsr`, indexed by quantized zero-crossing rate.
ASR_WORDS: Final = (
    "apple", "river", "garden", "yellow", "window", "paper", "music", "orange",
    "table", "silver", "morning", "pocket", "candle", "forest", "bridge", "pencil",
    "summer", "rabbit", "doctor", "button", "winter", "market", "ladder", "island",
    "basket", "copper", "meadow", "harbor", "violet", "thunder", "planet", "kitten",
)  # fmt: skip
#: Each full chunk of this length that is loud enough becomes one word.
ASR_CHUNK_MS: Final = 300
#: Chunks quieter than this (int16 RMS) are heard as silence.
ASR_WORD_RMS: Final = 500
# 30 zero crossings in 300 ms is a 50 Hz band of pure-tone pitch per word,
# wide enough that a tone is not split between two words by its fades.
_CROSSINGS_PER_WORD: Final = 30


async def _work(delay_s: float, limiter: trio.CapacityLimiter | Slot | None) -> None:
    """Stand in for blocking work on a shared, capacity-limited resource."""
    if limiter is None:
        await trio.sleep(delay_s)
    else:
        async with limiter:
            await trio.sleep(delay_s)


def _check_delay(name: str, value: float) -> None:
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0, got {value}")


class EnergyVad:
    """Speech is any frame whose RMS reaches ``threshold``; keeps no state."""

    #: Each frame is judged alone: no speech is carried past the voice.
    hangover_ms = 0

    def __init__(self, threshold: int = 500) -> None:
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.threshold = threshold

    def is_speech(self, frame: bytes) -> bool:
        return audio.rms(frame) >= self.threshold

    def reset(self) -> None:
        """Nothing to forget: no state is kept between frames."""


class FakeAsr:
    """Hears each loud 300 ms chunk as one word picked by its pitch.

    Chunks are aligned to the start of the utterance and a trailing partial
    chunk is ignored, so the text of an audio prefix is always a word prefix
    of the text of the whole: partial transcripts only ever grow, as they
    would with a good streaming recognizer. ``final`` changes nothing but the
    ``final_calls`` count.
    """

    #: No model to load: ready from the start (the deterministic engines all are).
    ready = True

    def __init__(
        self,
        *,
        delay_s: float = 0.02,
        scheduler: Scheduler | None = None,
        fail: bool = False,
        multilingual: bool = False,
    ) -> None:
        _check_delay("delay_s", delay_s)
        self.delay_s = delay_s
        self.scheduler = scheduler
        self.fail = fail
        self.multilingual = multilingual
        self.calls = 0
        self.final_calls = 0
        self.file_calls = 0

    async def transcribe(self, pcm: bytes, *, final: bool, slot: Slot | None = None) -> str:
        self.calls += 1
        if final:
            self.final_calls += 1
        if slot is None and self.scheduler is not None:
            slot = self.scheduler.slot(Lane.URGENT if final else Lane.TENTATIVE)
        await _work(self.delay_s, slot)
        if self.fail:
            raise AsrError("scripted ASR failure (FakeAsr(fail=True))")
        return words_for(pcm)

    async def transcribe_file(self, pcm: bytes, request: FileRequest) -> FileTranscript:
        if not self.multilingual:
            if request.task == "translate":
                raise TranslationUnsupported(
                    "FakeAsr(multilingual=False) is English-only: it cannot translate"
                )
            if request.language not in (None, "en"):
                raise LanguageUnsupported(
                    f"FakeAsr(multilingual=False) knows English only, not {request.language!r}"
                )
        self.file_calls += 1
        slot = None if self.scheduler is None else self.scheduler.slot(Lane.URGENT)
        await _work(self.delay_s, slot)
        if self.fail:
            raise AsrError("scripted ASR failure (FakeAsr(fail=True))")
        return file_transcript(pcm, words=request.words)


def _heard(pcm: bytes) -> list[tuple[int, str | None]]:
    """(chunk index, word or None for a quiet chunk) of every full chunk of ``pcm``."""
    chunk_bytes = 2 * ENGINE_SAMPLE_RATE * ASR_CHUNK_MS // 1000
    heard: list[tuple[int, str | None]] = []
    for index, start in enumerate(range(0, len(pcm) - chunk_bytes + 1, chunk_bytes)):
        chunk = pcm[start : start + chunk_bytes]
        if audio.rms(chunk) < ASR_WORD_RMS:
            heard.append((index, None))
            continue
        negative = np.frombuffer(chunk, "<i2") < 0
        crossings = int(np.count_nonzero(negative[1:] != negative[:-1]))
        heard.append((index, ASR_WORDS[crossings // _CROSSINGS_PER_WORD % len(ASR_WORDS)]))
    return heard


def words_for(pcm: bytes) -> str:
    """The text :class:`FakeAsr` hears in 16 kHz ``pcm``, without the delay."""
    text = " ".join(word for _, word in _heard(pcm) if word is not None)
    return text[:1].upper() + text[1:]


def file_transcript(pcm: bytes, *, words: bool = False) -> FileTranscript:
    """What :meth:`FakeAsr.transcribe_file` gives for 16 kHz ``pcm``, without the delay.

    Word ``k`` of chunk ``i`` spans ``[i * 0.3, (i + 1) * 0.3]`` s; a segment
    is a run of loud chunks, its text the words with a leading space, as
    Whisper's are; the first word of the file is capitalized, so the text
    is :func:`words_for`'s.
    """
    timed: list[Word] = []
    runs: list[list[Word]] = []
    previous = -2
    for index, word in _heard(pcm):
        if word is None:
            continue
        if not timed:
            word = word.capitalize()
        heard = Word(word, index * ASR_CHUNK_MS / 1000, (index + 1) * ASR_CHUNK_MS / 1000)
        timed.append(heard)
        if index != previous + 1:
            runs.append([])
        runs[-1].append(heard)
        previous = index
    segments = tuple(
        Segment(
            id=n,
            start=run[0].start,
            end=run[-1].end,
            text=" " + " ".join(w.word for w in run),
            # Whisper's seek counts 10 ms frames.
            seek=round(run[0].start * 100),
        )
        for n, run in enumerate(runs)
    )
    duration = len(pcm) / 2 / ENGINE_SAMPLE_RATE
    text = " ".join(w.word for w in timed)
    return FileTranscript(text, "en", duration, segments, tuple(timed) if words else ())


def default_reply(text: str) -> str:
    """The scripted answer to a user utterance."""
    heard = text or "nothing"
    return (
        f"You said: {heard}. This is a scripted reply from the deterministic engine. "
        "It speaks in short phrases, so you can hear it start early."
    )


class FakeLlm:
    """Streams a scripted reply to the last user message, word by word.

    Timing: ``first_token_s`` before the first delta, ``token_s`` before each
    later one; a scripted mid-stream failure arrives when the next delta
    would have. Modes: ``"hang"`` never produces a first delta, ``"fail"``
    raises LlmError on opening. ``opened`` and ``closed`` count streams, so a
    test can check that every stream opened was closed, cancelled or not.
    """

    ready = True

    def __init__(
        self,
        *,
        first_token_s: float = 0.05,
        token_s: float = 0.02,
        mode: FakeLlmMode = "normal",
        reply: Callable[[str], str] | None = None,
        fail_after_tokens: int | None = None,
    ) -> None:
        _check_delay("first_token_s", first_token_s)
        _check_delay("token_s", token_s)
        if fail_after_tokens is not None and fail_after_tokens < 0:
            raise ValueError(f"fail_after_tokens must be >= 0, got {fail_after_tokens}")
        self.first_token_s = first_token_s
        self.token_s = token_s
        self.mode: FakeLlmMode = mode
        self.reply: Callable[[str], str] = reply if reply is not None else default_reply
        self.fail_after_tokens = fail_after_tokens
        self.opened = 0
        self.closed = 0

    @contextlib.asynccontextmanager
    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[AsyncIterator[str]]:
        if self.mode == "fail":
            raise LlmError("scripted LLM failure (FakeLlm mode 'fail')")
        user = [m["content"] for m in messages if m["role"] == "user"]
        words = self.reply(user[-1].strip() if user else "").split()
        self.opened += 1
        deltas = self._deltas(words)
        try:
            yield deltas
        finally:
            self.closed += 1
            # Finalize the generator now rather than whenever it is collected.
            await deltas.aclose()

    async def _deltas(self, words: list[str]) -> AsyncGenerator[str, None]:
        if self.mode == "hang":
            await trio.sleep_forever()
        cut = self.fail_after_tokens
        for i, word in enumerate(words if cut is None else words[:cut]):
            await trio.sleep(self.first_token_s if i == 0 else self.token_s)
            yield word if i == 0 else " " + word
        if cut is None:
            return
        sent = min(cut, len(words))
        # A cut stream: the error arrives when the next delta would have.
        await trio.sleep(self.token_s if sent else self.first_token_s)
        raise LlmError(f"scripted LLM stream cut after {sent} deltas")


class FakeTts:
    """Speaks each phrase as a tone: length from the text, pitch from its characters."""

    ready = True

    def __init__(
        self,
        *,
        delay_s: float = 0.01,
        sample_rate: int = 16000,
        ms_per_char: int = 40,
        fail_on: Callable[[str], bool] | None = None,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        _check_delay("delay_s", delay_s)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
        if ms_per_char < 0:
            raise ValueError(f"ms_per_char must be >= 0, got {ms_per_char}")
        self.delay_s = delay_s
        self.sample_rate = sample_rate
        self.ms_per_char = ms_per_char
        self.fail_on = fail_on
        self.limiter = limiter
        self.calls = 0

    async def synthesize(self, text: str) -> SpeechAudio:
        self.calls += 1
        await _work(self.delay_s, self.limiter)
        if self.fail_on is not None and self.fail_on(text):
            raise TtsError(f"scripted TTS failure for phrase {text[:40]!r}")
        ms = max(100, len(text) * self.ms_per_char)
        pitch = 300 + sum(map(ord, text)) % 400
        return SpeechAudio(_phrase_tone(ms, pitch, self.sample_rate), self.sample_rate)


@functools.lru_cache(maxsize=512)
def _phrase_tone(ms: int, pitch: int, sample_rate: int) -> bytes:
    # A load test speaks the same few phrases thousands of times: making
    # each tone again would cost more CPU than the server's own work.
    return audio.tone(ms, pitch, sample_rate)


def fake_engines(config: Config, decoder: Scheduler) -> Engines:
    """The deterministic set, timed by the ``fake_*`` settings.

    ``decoder`` is the shared decoder's queue (``decode_concurrency`` slots),
    so it goes to the ASR, the stage it stands for.
    """
    asr = FakeAsr(delay_s=config.fake_asr_ms / 1000, scheduler=decoder)
    return Engines(
        name="fake",
        vad=functools.partial(EnergyVad, config.vad_energy_threshold),
        asr=asr,
        llm=FakeLlm(
            first_token_s=config.fake_llm_first_token_ms / 1000,
            token_s=config.fake_llm_token_ms / 1000,
            mode=config.fake_llm_mode,
        ),
        tts=FakeTts(delay_s=config.fake_tts_ms / 1000),
        decoder=decoder,
        files=asr,
    )


__all__ = [
    "ASR_CHUNK_MS",
    "ASR_WORDS",
    "ASR_WORD_RMS",
    "EnergyVad",
    "FakeAsr",
    "FakeLlm",
    "FakeLlmMode",
    "FakeTts",
    "default_reply",
    "fake_engines",
    "file_transcript",
    "words_for",
]
