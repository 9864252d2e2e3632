"""Smart Turn v3.2 on spoken questions: complete ones against the same ones cut mid-thought.

One process, no server. Each sentence is spoken (espeak-ng through
tests/speech.py ``say()``, and Piper's neural voice with its sampling noise
off, so both are the same audio on every run), trimmed of the synthesizer's
own silence, and judged as the turn policy asks (after 100 ms of silence)
and as if it asked later: followed by 100, 200 and 600 ms of silence. Three
incomplete forms of each sentence, cut at a word boundary ("What is the
capital of"):

* ``cut``: the full sentence's own audio cut at the end of that word (the
  boundary from Whisper's word timings, moved to the quietest 10 ms near
  it), so the voice is mid-flow, as in a pause to think;
* ``said``: the words up to the cut spoken as a sentence of their own (the
  synthesizer's falling, final intonation: the hard case);
* ``paused``: the full sentence with 600 ms of silence inserted at the cut,
  judged 100 ms after its end (expected complete: a pause earlier in the
  window).

Accuracy is complete judged complete plus incomplete judged incomplete: by
the judge alone (p >= 0.5), by the judge vetoed by the transcript heuristic
(``core.turn_policy.unfinished`` on what Whisper ``tiny.en`` heard of the
speech), and by the heuristic alone (no judge). Then the time of one run on
8 s of speech, one thread, median of ``--runs``.

    .venv/bin/python -m bench.turn_judge [--voice espeak|piper|both] [--runs 20] [--verbose]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import trio

from bench.common import trim
from tests.speech import SENTENCES, say
from voicetrio.core.audio import silence
from voicetrio.core.resample import resample
from voicetrio.core.turn_policy import unfinished
from voicetrio.engines.turn.smart_turn import WINDOW_SAMPLES, SmartTurnJudge

#: Full sentences and how many of their words the cut keeps. Some cuts end in
#: a word the heuristic knows ("of", "the", "and"), some do not ("in", "I",
#: "how", "should"): the heuristic is measured on both.
PAIRS: tuple[tuple[str, int], ...] = (
    ("What is the capital of France?", 5),
    ("I would like to book a table for two.", 4),
    ("Can you tell me the weather for tomorrow?", 5),
    ("Please turn off the lights in the kitchen.", 7),
    ("Set a timer for ten minutes.", 4),
    ("What time is it in Tokyo right now?", 5),
    ("Remind me to call my mother tonight.", 5),
    ("How far is the moon from the earth?", 6),
    ("Tell me a joke about cats.", 5),
    ("Can you tell me how to make pancakes?", 5),
    ("I think we should leave before the rain starts.", 4),
    ("I want to go to Paris because it is warm there.", 7),
    (SENTENCES[1], 9),  # What is the weather going to be like in
    (SENTENCES[3], 10),  # Can you remind me to call my mother at the
    (SENTENCES[4], 7),  # Set a timer for ten minutes and
    (SENTENCES[5], 7),  # Please play some quiet music while I
)
TAILS_MS = (100, 200, 600)
#: The silence the policy asks the judge at (TurnSettings.judge_after_ms).
ASKED_MS = 100
PAUSE_MS = 600
RATE = 16000
KINDS = ("complete", "cut", "said", "paused")


@dataclass(frozen=True)
class Case:
    voice: str
    sentence: int
    kind: str
    tail_ms: int
    #: The speech (no tail): what Whisper transcribes.
    speech: bytes

    @property
    def complete(self) -> bool:
        return self.kind in ("complete", "paused")

    @property
    def pcm(self) -> bytes:
        return self.speech + silence(self.tail_ms)


@dataclass(frozen=True)
class Judged:
    case: Case
    probability: float
    transcript: str

    @property
    def judge(self) -> bool:
        return self.probability >= 0.5

    @property
    def judge_hints(self) -> bool:
        return self.judge and not unfinished(self.transcript)

    @property
    def hints(self) -> bool:
        return not unfinished(self.transcript)


def head(text: str, words: int) -> str:
    return " ".join(text.split()[:words]).rstrip(",")


def speak(voice: str, texts: list[str]) -> list[bytes]:
    """16 kHz speech for each text, trimmed of the synthesizer's silence."""
    if voice == "espeak":
        return [trim(say(text)) for text in texts]
    from voicetrio.engines.tts.piper import PiperTts

    # No sampling noise: the voice's default varies the audio on every call.
    piper = PiperTts(noise_scale=0.0, noise_w=0.0)

    async def synthesize() -> list[bytes]:
        async with trio.open_nursery() as nursery:
            await nursery.start(piper.run)
            spoken = [await piper.synthesize(text) for text in texts]
            nursery.cancel_scope.cancel()
        return [trim(resample(s.pcm, s.sample_rate, RATE)) for s in spoken]

    return trio.run(synthesize)


def cut_at(model: Any, speech: bytes, words: int) -> int:
    """The byte offset in ``speech`` where its word ``words`` ends: Whisper's
    boundary, moved to the quietest 10 ms within 100 ms of it."""
    from voicetrio.engines.asr.whisper import pcm_to_samples

    found, _info = model.transcribe(
        pcm_to_samples(speech), language="en", word_timestamps=True, beam_size=1
    )
    timed = [w for segment in found for w in segment.words]
    if len(timed) <= words:
        raise RuntimeError(f"Whisper heard {len(timed)} words, the cut needs {words + 1}")
    boundary = int((timed[words - 1].end + timed[words].start) / 2 * RATE)
    samples = np.frombuffer(speech, "<i2").astype(np.float64)
    hop = RATE // 100
    starts = range(max(0, boundary - 10 * hop), min(len(samples) - hop, boundary + 10 * hop), hop // 2)
    quietest = min(starts, key=lambda s: float(np.sqrt((samples[s : s + hop] ** 2).mean())))
    return (quietest + hop // 2) * 2


def build(voice: str, model: Any) -> list[Case]:
    texts = [text for text, _ in PAIRS]
    heads = [head(text, words) for text, words in PAIRS]
    full, said = speak(voice, texts), speak(voice, heads)
    out: list[Case] = []
    for i, (_, words) in enumerate(PAIRS):
        at = cut_at(model, full[i], words)
        paused = full[i][:at] + silence(PAUSE_MS) + full[i][at:]
        for tail in TAILS_MS:
            out.append(Case(voice, i, "complete", tail, full[i]))
            out.append(Case(voice, i, "cut", tail, full[i][:at]))
            out.append(Case(voice, i, "said", tail, said[i]))
        out.append(Case(voice, i, "paused", ASKED_MS, paused))
    return out


def transcribe(model: Any, cases: list[Case]) -> list[str]:
    """What Whisper tiny.en hears of each speech (as the speculative final would)."""
    from voicetrio.engines.asr.whisper import clean_text, pcm_to_samples

    heard: dict[bytes, str] = {}
    for case in cases:
        if case.speech not in heard:
            found, _info = model.transcribe(
                pcm_to_samples(case.speech + silence(200)),
                language="en",
                beam_size=1,
                temperature=0.0,
                condition_on_previous_text=False,
                without_timestamps=True,
            )
            heard[case.speech] = clean_text(list(found))
    return [heard[case.speech] for case in cases]


def accuracy(rows: list[Judged], pick: str) -> str:
    complete = [r for r in rows if r.case.complete]
    incomplete = [r for r in rows if not r.case.complete]
    ok_c = sum(getattr(r, pick) for r in complete)
    ok_i = sum(not getattr(r, pick) for r in incomplete)
    total = (ok_c + ok_i) / len(rows)
    return f"{total:6.1%} (complete {ok_c:>2}/{len(complete)}, incomplete {ok_i:>2}/{len(incomplete)})"


def timing(judge: SmartTurnJudge, runs: int) -> tuple[float, float]:
    """Median ms of the features alone and of a whole run, on 8 s of speech."""
    speech = b"".join(trim(say(s)) for s in SENTENCES)[-WINDOW_SAMPLES * 2 :]
    features, whole = [], []
    for _ in range(runs):
        start = time.perf_counter()
        judge.features(speech)
        features.append((time.perf_counter() - start) * 1000)
        judge.judge(speech)
        whole.append(judge.last_judge_s * 1000)
    return statistics.median(features), statistics.median(whole)


def report(voice: str, rows: list[Judged], verbose: bool) -> None:
    print(f"== {voice}: {len(rows)} clips of {len(PAIRS)} sentences; p(complete) after "
          f"{ASKED_MS} ms of silence (x: wrong at 0.5)")
    print(f"{'sentence (cut after the last word shown)':<44} {'complete':>8} {'cut':>6} "
          f"{'said':>6} {'paused':>6}")
    by = {(r.case.sentence, r.case.kind, r.case.tail_ms): r for r in rows}
    for i, (text, words) in enumerate(PAIRS):
        cells = []
        for kind in KINDS:
            r = by[(i, kind, ASKED_MS)]
            mark = "" if r.judge == r.case.complete else "x"
            cells.append(f"{r.probability:5.2f}{mark:1}")
        print(f"{head(text, words)[:43]:<44} {cells[0]:>8} {cells[1]:>6} {cells[2]:>6} {cells[3]:>6}")
    if verbose:
        for r in rows:
            print(f"   {r.case.kind:<8} {r.case.tail_ms:>4} ms  p {r.probability:.3f}  {r.transcript!r}")
    for kind in KINDS:
        for tail in TAILS_MS if kind != "paused" else (ASKED_MS,):
            subset = [r for r in rows if r.case.kind == kind and r.case.tail_ms == tail]
            judged = sum(r.judge for r in subset)
            vetoed = sum(r.judge and not r.judge_hints for r in subset)
            print(f"  {kind:<8} +{tail:>4} ms: judged complete {judged:>2}/{len(subset)}, "
                  f"of which the words veto {vetoed}")
    asked = [r for r in rows if r.case.tail_ms == ASKED_MS]
    print(f"  as the policy asks (after {ASKED_MS} ms):")
    for pick, name in (("judge", "judge alone"), ("judge_hints", "judge + words"),
                       ("hints", "words alone")):
        print(f"    {name:<14} {accuracy(asked, pick)}")


def main(voices: list[str], runs: int, verbose: bool) -> None:
    from voicetrio.engines.asr.whisper import load_model
    from voicetrio.engines.models import resolve_model

    judge = SmartTurnJudge()
    judge.load_sync()
    model = load_model(resolve_model("tiny.en"), cpu_threads=1)
    every: list[Judged] = []
    for voice in voices:
        cases = build(voice, model)
        heard = transcribe(model, cases)
        rows = [Judged(c, judge.judge(c.pcm).probability, t) for c, t in zip(cases, heard, strict=True)]
        every += rows
        report(voice, rows, verbose)
    asked = [r for r in every if r.case.tail_ms == ASKED_MS]
    print(f"== all voices, as the policy asks (after {ASKED_MS} ms)")
    for pick, name in (("judge", "judge alone"), ("judge_hints", "judge + words"),
                       ("hints", "words alone")):
        print(f"  {name:<14} {accuracy(asked, pick)}")
    for threshold in (0.3, 0.5, 0.7, 0.9):
        ok = sum((r.probability >= threshold) == r.case.complete for r in asked)
        print(f"  judge alone at threshold {threshold}: {ok / len(asked):6.1%}")
    features_ms, whole_ms = timing(judge, runs)
    print(
        f"one run on 8 s of audio, 1 thread, median of {runs}: {whole_ms:.0f} ms "
        f"(features {features_ms:.0f} ms, model {whole_ms - features_ms:.0f} ms); "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voice", choices=("espeak", "piper", "both"), default="both")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--verbose", action="store_true", help="every clip with its transcript")
    args = parser.parse_args()
    voices = ["espeak", "piper"] if args.voice == "both" else [args.voice]
    main(voices, args.runs, args.verbose)
