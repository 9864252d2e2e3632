"""Real speech for tests: espeak-ng sentences, and word error rate to grade transcripts.

A helper module, not a test module. espeak-ng is deterministic, so a sentence
is the same audio on every run and every machine with the same espeak-ng;
each one is synthesized once per test process and kept in memory.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

import av
import numpy as np
import pytest

from voicetrio.core.audio import read_wav
from voicetrio.core.resample import resample

#: Plain sentences of about 3-4 s each at 160 words per minute.
SENTENCES: Final = (
    "Please turn off the lights in the kitchen before you go to bed.",
    "What is the weather going to be like in London tomorrow morning?",
    "I would like to book a table for two people at seven o'clock.",
    "Can you remind me to call my mother at the end of the day?",
    "Set a timer for ten minutes and tell me when the pasta is ready.",
    "Please play some quiet music while I read my book tonight.",
)

_cache: dict[tuple[str, int, str, int], bytes] = {}


def say(text: str, *, rate_hz: int = 16000, voice: str = "en-us", wpm: int = 160) -> bytes:
    """``text`` spoken by espeak-ng, as 16-bit mono PCM at ``rate_hz``.

    Skips the calling test if espeak-ng is not installed.
    """
    key = (text, rate_hz, voice, wpm)
    if key not in _cache:
        espeak = shutil.which("espeak-ng")
        if espeak is None:
            pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "say.wav"
            subprocess.run(
                [espeak, "-v", voice, "-s", str(wpm), "-w", str(wav), text],
                check=True,
                capture_output=True,
            )
            pcm, rate = read_wav(wav)
        _cache[key] = resample(pcm, rate, rate_hz)
    return _cache[key]


_UNITS: Final = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS: Final = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_NUMBER: Final = {word: n for n, word in enumerate(_UNITS)} | {
    word: 20 + 10 * n for n, word in enumerate(_TENS)
}


def normalize(text: str) -> list[str]:
    """Words of ``text``: lowercase, no punctuation, numbers as digits.

    Hyphens split words and apostrophes vanish ("o'clock" -> "oclock"), on
    both sides alike; "twenty five" and "twenty-five" become "25", like the
    digits a recognizer may write.
    """
    cleaned = re.sub(r"[^\w\s]", "", text.lower().replace("-", " "))
    words: list[str] = []
    for word in cleaned.split():
        value = _NUMBER.get(word)
        if value is not None and 0 < value < 10 and words and words[-1].isdigit():
            tens = int(words[-1])
            if tens >= 20 and tens % 10 == 0:
                words[-1] = str(tens + value)
                continue
        words.append(str(value) if value is not None else word)
    return words


def wer(ref: str, hyp: str) -> float:
    """Word error rate: word edits (substitutions, insertions, deletions) / reference words."""
    r, h = normalize(ref), normalize(hyp)
    if not r:
        return 0.0 if not h else 1.0
    # One row of the Levenshtein table at a time.
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, row[0] = row[0], i
        for j, hw in enumerate(h, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (rw != hw))
    return row[len(h)] / len(r)


def encode_audio(pcm: bytes, rate: int, container_format: str, codec: str) -> bytes:
    """``pcm`` as a compressed file, written with PyAV (which faster-whisper reads with)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(pcm, "<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()
