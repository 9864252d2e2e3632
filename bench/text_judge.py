"""The text turn judge on the clips of ``bench/turn_judge.py``: does reading
the words tell a finished turn from a cut one?

Each clip (the 16 sentences whole, cut mid-thought, the cut words said alone,
and whole with a pause inside; espeak by default) is transcribed by Whisper
tiny.en as the speculative final would be, and the text judge
(``engines/turn/text_judge.py``: SmolLM2-135M on its own llama.cpp worker)
gives p(end) for the transcript. The policy's three answers at the given
thresholds: complete (p >= --complete), incomplete (p < --incomplete), unsure
(between: the fixed window decides). Prints each clip, the counts, and the
judge's time per call.

    .venv/bin/python -m bench.text_judge [--voice espeak|piper|both] [--verbose]
"""

from __future__ import annotations

import argparse
import os
import statistics

import trio

from bench.turn_judge import ASKED_MS, build, transcribe
from voicetrio.core.turn_policy import TurnSettings, unfinished
from voicetrio.engines.turn.text_judge import LlmTextJudge


async def judge_all(texts: list[str]) -> tuple[list[float], list[float]]:
    judge = LlmTextJudge(timeout_s=5.0)
    probabilities: list[float] = []
    times: list[float] = []
    async with trio.open_nursery() as services:
        await judge.start(services)
        for text in texts:
            probabilities.append(await judge.end_probability(text))
            times.append(judge.last_s)
        services.cancel_scope.cancel()
    return probabilities, times


def main(voices: list[str], complete_p: float, incomplete_p: float, verbose: bool) -> None:
    from voicetrio.engines.asr.whisper import load_model
    from voicetrio.engines.models import resolve_model

    model = load_model(resolve_model("tiny.en"), cpu_threads=1)
    rows: list[tuple[str, bool, str, float]] = []
    times: list[float] = []
    for voice in voices:
        cases = [c for c in build(voice, model) if c.tail_ms == ASKED_MS]
        heard = transcribe(model, cases)
        probabilities, took = trio.run(judge_all, heard)
        times += took
        rows += [
            (f"{voice} {c.kind}", c.complete, text, p)
            for c, text, p in zip(cases, heard, probabilities, strict=True)
        ]
    counts = {
        (done, answer): 0
        for done in (True, False)
        for answer in ("complete", "unsure", "incomplete")
    }
    words_right = 0
    for label, done, text, p in rows:
        answer = "complete" if p >= complete_p else "incomplete" if p < incomplete_p else "unsure"
        counts[(done, answer)] += 1
        words_right += (not unfinished(text)) == done
        if verbose:
            print(f"{label:<18} {'C' if done else 'I'} p {p:.3f} {answer:<10} {text!r}")
    for done, name in ((True, "complete clips"), (False, "incomplete clips")):
        total = sum(counts[(done, a)] for a in ("complete", "unsure", "incomplete"))
        print(
            f"{name:<17} (n={total}): judged complete {counts[(done, 'complete')]}, "
            f"unsure {counts[(done, 'unsure')]}, incomplete {counts[(done, 'incomplete')]}"
        )
    right = counts[(True, "complete")] + counts[(False, "incomplete")]
    sure = len(rows) - counts[(True, "unsure")] - counts[(False, "unsure")]
    print(
        f"sure answers right: {right}/{sure}; the words rule alone (core.turn_policy."
        f"unfinished) right {words_right}/{len(rows)}"
    )
    print(
        f"judge per call: median {statistics.median(times) * 1000:.0f} ms, max "
        f"{max(times) * 1000:.0f} ms (n={len(times)}); thresholds {complete_p}/{incomplete_p}; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    defaults = TurnSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voice", choices=("espeak", "piper", "both"), default="espeak")
    parser.add_argument("--complete", type=float, default=defaults.text_complete_p)
    parser.add_argument("--incomplete", type=float, default=defaults.text_incomplete_p)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    voices = ["espeak", "piper"] if args.voice == "both" else [args.voice]
    main(voices, args.complete, args.incomplete, args.verbose)
