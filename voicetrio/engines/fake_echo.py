"""Deterministic engines whose speech round-trips: words out, the same words in.

:class:`~voicetrio.engines.fake.FakeTts` speaks a whole phrase as one tone,
and :class:`~voicetrio.engines.fake.FakeAsr` hears fixed 300 ms chunks, so the
reply's own audio played back into the microphone is heard as words unrelated
to the reply. Echo tests need the opposite: a loudspeaker beside an open
microphone must be heard saying what the assistant says. Here
:class:`WordTts` speaks each word of a vocabulary as a tone of its own pitch
(then a short gap), and :class:`WordAsr` reads each run of one pitch back as
its word, wherever the runs fall in the audio, so:

* the reply's audio fed back is heard as the reply's words, in order;
* two voices at once are heard as the louder one (a sum of sines crosses
  zero as its dominant term does), so a user speaking over a quieter echo
  is heard saying their own words.

Words outside the vocabulary are not spoken (the TTS leaves them out), so a
fake LLM should answer in vocabulary words (:func:`vocabulary_reply`).
Kept apart from :mod:`voicetrio.engines.fake` so the deterministic set the
tests and load tests use is unchanged.
"""

from __future__ import annotations

import re
from typing import Final

import numpy as np
import trio

from voicetrio.core import audio
from voicetrio.core.work_queue import Lane
from voicetrio.engines.base import ENGINE_SAMPLE_RATE, SpeechAudio
from voicetrio.engines.fake import ASR_WORDS
from voicetrio.engines.scheduler import Scheduler, Slot

#: The words spoken and heard: the fake ASR's, a few stop words and backchannels.
WORDS: Final = (*ASR_WORDS, "stop", "wait", "yeah", "okay")
#: Each word is a tone this long, then this much silence.
WORD_MS: Final = 240
GAP_MS: Final = 60
#: Word k's pitch; 80 Hz apart is 4.8 zero crossings per 30 ms window.
BASE_HZ: Final = 400
STEP_HZ: Final = 80
#: What the ASR measures: windows of this length; a word is at least
#: ``MIN_WINDOWS`` windows of one pitch in a row (a window that straddles
#: a tone's edge, or two voices' changes, is not).
WINDOW_MS: Final = 30
MIN_WINDOWS: Final = 3
#: Quieter windows (int16 RMS) are silence.
SILENCE_RMS: Final = 500

_WORD: Final = re.compile(r"[a-z]+")
_INDEX: Final = {word: k for k, word in enumerate(WORDS)}


def pitch(word: str) -> int:
    return BASE_HZ + STEP_HZ * _INDEX[word]


def speak(text: str, *, amplitude: float = 0.3, sample_rate: int = ENGINE_SAMPLE_RATE) -> bytes:
    """The audio of the vocabulary words of ``text``, one tone and gap per word."""
    out = bytearray()
    for word in _WORD.findall(text.lower()):
        if word in _INDEX:
            out += audio.tone(WORD_MS, pitch(word), sample_rate, amplitude)
            out += audio.silence(GAP_MS, sample_rate)
    return bytes(out)


def hear(pcm: bytes) -> str:
    """The words in 16 kHz ``pcm``: see the module docstring."""
    window = ENGINE_SAMPLE_RATE * WINDOW_MS // 1000
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], "<i2")
    labels: list[int | None] = []
    for start in range(0, len(samples) - window + 1, window):
        chunk = samples[start : start + window]
        if float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2))) < SILENCE_RMS:
            labels.append(None)
            continue
        negative = chunk < 0
        crossings = int(np.count_nonzero(negative[1:] != negative[:-1]))
        hz = crossings / 2 / (WINDOW_MS / 1000)
        labels.append(round((hz - BASE_HZ) / STEP_HZ))
    heard: list[str] = []
    previous: int | None = None
    run_label: int | None = None
    run = 0
    for label in [*labels, None]:
        if label is not None and label == run_label:
            run += 1
            continue
        if run_label is not None and run >= MIN_WINDOWS and 0 <= run_label < len(WORDS):
            # A word goes on across a short run of another pitch (a straddling
            # window): the same word again needs silence between.
            if run_label != previous:
                heard.append(WORDS[run_label])
            previous = run_label
        if label is None:
            previous = None
        run_label, run = label, 1
    return " ".join(heard)


class WordTts:
    """Speaks the vocabulary words of each phrase (:func:`speak`)."""

    ready = True

    def __init__(self, *, delay_s: float = 0.01, amplitude: float = 0.3) -> None:
        self.delay_s = delay_s
        self.amplitude = amplitude
        self.calls = 0

    async def synthesize(self, text: str) -> SpeechAudio:
        self.calls += 1
        await trio.sleep(self.delay_s)
        pcm = speak(text, amplitude=self.amplitude) or audio.silence(100, ENGINE_SAMPLE_RATE)
        return SpeechAudio(pcm, ENGINE_SAMPLE_RATE)


class WordAsr:
    """Hears the words :class:`WordTts` speaks (:func:`hear`)."""

    ready = True

    def __init__(self, *, delay_s: float = 0.02, scheduler: Scheduler | None = None) -> None:
        self.delay_s = delay_s
        self.scheduler = scheduler
        self.calls = 0

    async def transcribe(self, pcm: bytes, *, final: bool, slot: Slot | None = None) -> str:
        self.calls += 1
        if slot is None and self.scheduler is not None:
            slot = self.scheduler.slot(Lane.URGENT if final else Lane.TENTATIVE)
        if slot is None:
            await trio.sleep(self.delay_s)
        else:
            async with slot:
                await trio.sleep(self.delay_s)
        return hear(pcm)


def vocabulary_reply(words: int = 12, first: int = 0) -> str:
    """A reply of ``words`` vocabulary words from word ``first`` on, as sentences of four."""
    chosen = [ASR_WORDS[(first + k) % len(ASR_WORDS)] for k in range(words)]
    sentences = [" ".join(chosen[k : k + 4]) for k in range(0, len(chosen), 4)]
    return " ".join(sentence.capitalize() + "." for sentence in sentences)


__all__ = [
    "GAP_MS",
    "WORDS",
    "WORD_MS",
    "WordAsr",
    "WordTts",
    "hear",
    "pitch",
    "speak",
    "vocabulary_reply",
]
