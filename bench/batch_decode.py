"""Batching decodes: one CTranslate2 call over several sessions' utterances,
against the same decodes one by one.

Encodes the test sentences (espeak-ng) on the short window voicetrio uses
(silence-padded, 10 s for a sentence) and decodes 1, 2, 4 and 6 of them in
one ``generate`` call and one at a time, greedy, with tiny.en int8; reports
the best of 3 for each. Usage::

    .venv/bin/python -m bench.batch_decode
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from tests.speech import SENTENCES, say
from voicetrio.engines.asr.whisper import load_model, pcm_to_samples
from voicetrio.engines.asr.whisper_short import silence_padded_features, window_frames
from voicetrio.engines.models import resolve_model

Features = npt.NDArray[np.float32]


def one_at_a_time(decode: Callable[[list[Features]], None], features: list[Features]) -> None:
    for one in features:
        decode([one])


def best_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    from faster_whisper.tokenizer import Tokenizer  # type: ignore[import-untyped]
    from faster_whisper.transcribe import get_suppressed_tokens  # type: ignore[import-untyped]

    model: Any = load_model(resolve_model("tiny.en", default_compute_type="int8"))
    tokenizer = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    suppressed = get_suppressed_tokens(tokenizer, (-1,))
    samples = [pcm_to_samples(say(s)) for s in SENTENCES]
    window = max(window_frames(s.size // 160 + 1) for s in samples)
    features = [silence_padded_features(model, s, window) for s in samples]

    def decode(batch: list[Features]) -> None:
        encoded = model.encode(np.stack(batch))
        model.model.generate(
            encoded,
            [prompt] * len(batch),
            beam_size=1,
            max_length=80,
            suppress_blank=True,
            suppress_tokens=suppressed,
        )

    decode(features[:2])  # warm-up
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    for n in (1, 2, 4, 6):
        some = features[:n]
        batch = best_of(3, functools.partial(decode, some))
        one_by_one = best_of(3, functools.partial(one_at_a_time, decode, some))
        print(
            f"{n} utterances: one call {batch * 1000:.0f} ms ({batch / n * 1000:.0f} per utterance), "
            f"one by one {one_by_one * 1000:.0f} ms ({one_by_one / n * 1000:.0f} per utterance)"
        )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
