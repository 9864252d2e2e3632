"""Turn-taking on spoken audio (issue 13): when a turn ends, and what barges in.

Starts ``voicetrio serve`` (the default engines: Whisper tiny.en, the embedded
LLM, pyttsx3; ``--env NAME=VALUE`` passes settings, e.g. ``STREAM_TURN_JUDGE=none``
against ``smart``) and streams spoken audio (espeak-ng) at real-time pace in
40 ms frames, one session per case, silence between, as a microphone would:

* **complete**: finished questions;
* **pause**: questions with 0.3, 0.6, 1.0 and 1.5 s of silence inserted at a
  word boundary (the two halves are spoken apart and joined);
* **mid-thought**: a sentence that stops mid-phrase ("... tell me about the"),
  then goes on after 1.0 s;
* **during a reply**: a question, then 0.8 s into the reply's first audio a
  backchannel ("uh-huh", "yeah", "mm-hmm"), a cough-like noise burst, or
  "stop" (the client plays nothing back: no echo here).

It reports end of speech to the final and to the first audio (median, p90;
the first final of each question), the share of questions split into more
than one final, the share of replies cancelled by a backchannel or a cough,
and for "stop" the time from the end of the word to the ``barge_in`` notice.
Usage::

    .venv/bin/python -m bench.turns [--env STREAM_TURN_JUDGE=none] [--rounds 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import trio

from bench.common import RATE, server_process, speech_bounds, trim
from tests.speech import say
from voicetrio.client.connection import connect
from voicetrio.core.audio import silence

FRAME_MS = 40
FRAME_BYTES = RATE * 2 * FRAME_MS // 1000

COMPLETE = (
    "What is the capital of France?",
    "How far away is the moon?",
    "Why is the sky blue?",
    "What should I cook for dinner tonight?",
)
#: Two halves of one question, joined by a pause at that word boundary.
HALVES = (
    ("What is the weather going to be like", "in London tomorrow morning?"),
    ("Can you tell me", "how many days there are in a leap year?"),
)
PAUSES_S = (0.3, 0.6, 1.0, 1.5)
MID_THOUGHT = (
    ("I was wondering if you could tell me about the", "history of ancient Rome."),
    ("My favourite colour is blue and", "I also like green."),
)
BACKCHANNELS = ("uh-huh", "yeah", "mm-hmm")
#: Into the reply's first audio when the interjection starts.
INTERJECT_AFTER_S = 0.8


def cough(ms: int = 250, seed: int = 3) -> bytes:
    """A cough-like burst: noise shaped by a fast attack and a decay."""
    n = RATE * ms // 1000
    rng = np.random.default_rng(seed)
    envelope = np.minimum(1.0, np.arange(n) / (0.01 * RATE)) * np.exp(-np.arange(n) / (0.08 * RATE))
    noise = rng.normal(0, 9000, n) * envelope
    # Low-passed a little (a cough is breath, not hiss).
    smooth = np.convolve(noise, np.ones(4) / 4, mode="same")
    return np.clip(smooth, -32768, 32767).astype("<i2").tobytes()


@dataclass
class Case:
    kind: str
    name: str
    speech: bytes
    #: Audio said this long into the reply's first audio (None: nothing).
    interject: bytes | None = None
    tail_s: float = 3.5


@dataclass
class Outcome:
    case: Case
    speech_end_s: float
    finals: list[tuple[float, str]] = field(default_factory=list)
    first_audio_s: float | None = None
    #: Every reply's first audio (client seconds).
    reply_audio_s: list[float] = field(default_factory=list)
    barge_in_s: float | None = None
    interject_end_s: float | None = None
    replies_done: int = 0
    replies: int = 0


def cases(rounds: int) -> list[Case]:
    out: list[Case] = []
    for _ in range(rounds):
        for i, text in enumerate(COMPLETE):
            out.append(Case("complete", f"q{i + 1}", trim(say(text))))
        for i, (first, second) in enumerate(HALVES):
            for pause in PAUSES_S:
                speech = trim(say(first)) + silence(int(pause * 1000)) + trim(say(second))
                out.append(Case("pause", f"p{i + 1}-{pause:.1f}s", speech))
        for i, (first, second) in enumerate(MID_THOUGHT):
            speech = trim(say(first)) + silence(1000) + trim(say(second))
            out.append(Case("mid-thought", f"m{i + 1}", speech))
        question = trim(say(COMPLETE[0]))
        for word in BACKCHANNELS:
            out.append(Case("backchannel", word, question, trim(say(word)), tail_s=8))
        out.append(Case("cough", "cough", question, cough(), tail_s=8))
        out.append(Case("stop", "stop", question, trim(say("stop")), tail_s=6))
    return out


async def run_case(url: str, case: Case) -> Outcome:
    lead = silence(500)
    audio: deque[bytes] = deque()
    pcm = lead + case.speech
    for k in range(0, len(pcm), FRAME_BYTES):
        audio.append(pcm[k : k + FRAME_BYTES].ljust(FRAME_BYTES, b"\0"))
    _, end = speech_bounds(pcm)
    outcome = Outcome(case, speech_end_s=end)
    first_audio = trio.Event()
    async with connect(url) as client:
        await client.start(RATE)
        t0 = trio.current_time()

        async def microphone() -> None:
            k = 0
            interjected = case.interject is None
            deadline = None
            while deadline is None or trio.current_time() < deadline:
                if not interjected and first_audio.is_set():
                    assert outcome.first_audio_s is not None and case.interject is not None
                    start = t0 + outcome.first_audio_s + INTERJECT_AFTER_S
                    if trio.current_time() >= start:
                        interjected = True
                        said = case.interject
                        _, said_end = speech_bounds(said)
                        outcome.interject_end_s = k * FRAME_MS / 1000 + said_end
                        audio.clear()
                        for j in range(0, len(said), FRAME_BYTES):
                            audio.append(said[j : j + FRAME_BYTES].ljust(FRAME_BYTES, b"\0"))
                frame = audio.popleft() if audio else silence(FRAME_MS)
                await trio.sleep_until(t0 + k * FRAME_MS / 1000)
                await client.send_audio(frame)
                k += 1
                if deadline is None and not audio and interjected:
                    deadline = trio.current_time() + case.tail_s

        async with trio.open_nursery() as nursery:
            nursery.start_soon(microphone)
            while True:
                with trio.move_on_after(1.0):
                    event = await client.next_event()
                    at = trio.current_time() - t0
                    kind = event.type
                    if kind == "final_transcript":
                        outcome.finals.append((at, event.event["text"]))
                    elif kind == "tts_chunk":
                        if event.event.get("seq") == 1:
                            outcome.reply_audio_s.append(at)
                        if outcome.first_audio_s is None:
                            outcome.first_audio_s = at
                            first_audio.set()
                    elif kind == "llm_token" and event.event.get("done"):
                        outcome.replies_done += 1
                    elif kind == "info" and event.event.get("event") == "barge_in":
                        outcome.barge_in_s = at
                    continue
                if not nursery.child_tasks:
                    break
                # The microphone ended: what is still coming is read above.
            nursery.cancel_scope.cancel()
    return outcome


def to_final(o: Outcome) -> float:
    """End of the question's speech to the final that covers it (the last of a
    split question: the first answered half a question); NaN without one."""
    after = [at for at, _ in o.finals if at > o.speech_end_s]
    return after[0] - o.speech_end_s if after else float("nan")


def to_audio(o: Outcome) -> float:
    """End of the question's speech to the first audio of a reply begun after it."""
    after = [at for at in o.reply_audio_s if at > o.speech_end_s]
    return after[0] - o.speech_end_s if after else float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<34} n/a"
    return (
        f"{label:<34} median {statistics.median(values) * 1000:5.0f} ms  "
        f"p90 {pct(values, 0.9) * 1000:5.0f} ms  (n={len(values)})"
    )


async def main(rounds: int, env: dict[str, str]) -> None:
    all_cases = cases(rounds)
    results: list[Outcome] = []
    async with server_process([], env=env) as port:
        url = f"ws://127.0.0.1:{port}/ws"
        await run_case(url, Case("warm-up", "warm-up", trim(say(COMPLETE[0]))))
        for case in all_cases:
            outcome = await run_case(url, case)
            results.append(outcome)
            finals = " | ".join(text for _, text in outcome.finals)
            first = to_final(outcome)
            audio = to_audio(outcome)
            barge = (
                f" barge_in {1000 * (outcome.barge_in_s - (outcome.interject_end_s or 0)):5.0f} ms"
                if outcome.barge_in_s is not None and outcome.interject_end_s is not None
                else ""
            )
            print(
                f"{case.kind:<11} {case.name:<10} end->final {first * 1000:6.0f}  "
                f"end->audio {audio * 1000:6.0f} ms  finals {len(outcome.finals)}{barge}  {finals!r}",
                flush=True,
            )
    questions = [o for o in results if o.case.kind in ("complete", "pause", "mid-thought")]
    complete = [o for o in results if o.case.kind == "complete"]
    print(f"settings: {env or 'defaults'}")
    for label, group in (("complete", complete), ("all questions", questions)):
        latencies = [t for t in map(to_final, group) if not math.isnan(t)]
        audios = [t for t in map(to_audio, group) if not math.isnan(t)]
        print(summary(f"{label}: end of speech -> final", latencies))
        print(summary(f"{label}: end of speech -> first audio", audios))
    for kind in ("pause", "mid-thought"):
        group = [o for o in results if o.case.kind == kind]
        split = sum(len(o.finals) > 1 for o in group)
        print(f"{kind}: split into more than one final: {split}/{len(group)}")
        for pause in PAUSES_S if kind == "pause" else ():
            sub = [o for o in group if o.case.name.endswith(f"-{pause:.1f}s")]
            print(f"  pause {pause:.1f} s: split {sum(len(o.finals) > 1 for o in sub)}/{len(sub)}")
    wrong = [o for o in results if o.case.kind in ("backchannel", "cough")]
    cancelled = sum(o.barge_in_s is not None for o in wrong)
    print(f"replies wrongly cancelled (backchannels, cough): {cancelled}/{len(wrong)}")
    answered = sum(len(o.finals) > 1 and o.replies_done > 1 for o in wrong)
    print(f"backchannels/coughs answered as a turn: {answered}/{len(wrong)}")
    stops = [o for o in results if o.case.kind == "stop"]
    latencies = [
        o.barge_in_s - o.interject_end_s
        for o in stops
        if o.barge_in_s is not None and o.interject_end_s is not None
    ]
    print(f"'stop' cancelled: {len(latencies)}/{len(stops)}")
    print(summary("'stop' end of word -> barge_in", latencies))


def parse_env(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        name, _, value = item.partition("=")
        env[name] = value
    return env


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    args = parser.parse_args()
    trio.run(main, args.rounds, parse_env(args.env))
