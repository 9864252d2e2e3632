"""Voice to voice: from the end of a spoken question to the first sound back.

Starts ``voicetrio serve`` with the default engines (Whisper tiny.en, the
embedded SmolLM2, pyttsx3) in its own process and streams spoken questions
(espeak-ng) at real-time pace in 40 ms frames, one session per question, then
reports, median and max: final transcript to first token (t3 - t2) and to
first audio (t4 - t2) from the server's metrics, and end of speech to first
audio at the client. Questions with a pause inside them (shorter than the
silence window) check that half a question is never answered: exactly one
final and one reply each. Usage::

    .venv/bin/python -m bench.voice_to_voice [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from functools import partial

import trio

from bench.common import Clip, clip, server_process, trim
from tests.speech import say
from voicetrio.client.connection import connect, stream_pcm
from voicetrio.core.audio import silence

QUESTIONS = (
    "What is the capital of France?",
    "How far away is the moon?",
    "Can you tell me a short story about a cat?",
    "What should I cook for dinner tonight?",
    "Why is the sky blue?",
    "Give me three tips for sleeping better.",
)
PAUSED = (
    ("What is the weather going to be like,", "in London tomorrow morning?", 300),
    ("Can you remind me,", "how many days there are in a leap year?", 450),
)


@dataclass(frozen=True)
class Turn:
    t3_t2_ms: float | None
    t4_t2_ms: float | None
    speech_end_to_audio_ms: float | None
    finals: int
    replies: int
    text: str
    reply: str


def corpus() -> list[Clip]:
    # A microphone goes on sending after the question: the trailing silence
    # outlasts the turn judge's longest wait (STREAM_TURN_INCOMPLETE_SILENCE_MS),
    # so a turn it keeps open still ends, as it would for a user.
    trail = {"trail_ms": 2500}
    clips = [clip(f"q{i + 1}", text, trim(say(text)), **trail) for i, text in enumerate(QUESTIONS)]
    for i, (first, second, pause_ms) in enumerate(PAUSED):
        speech = trim(say(first)) + silence(pause_ms) + trim(say(second))
        clips.append(clip(f"pause{i + 1}-{pause_ms}ms", f"{first} {second}", speech, **trail))
    return clips


async def one(url: str, item: Clip) -> Turn:
    async with connect(url) as client:
        await client.start(16000)
        t0 = trio.current_time()
        finals, replies, first_audio = [], 0, None
        metrics: dict[str, float | None] = {}
        reply = ""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(stream_pcm, client, item.pcm, 16000, frame_ms=40))
            with trio.move_on_after(len(item.pcm) / 32000 + 20):
                while True:
                    event = await client.next_event()
                    at = trio.current_time() - t0
                    kind = event.type
                    if kind == "final_transcript":
                        finals.append(event.event["text"])
                    elif kind == "llm_token":
                        reply += event.event["text"]
                        replies += bool(event.event["done"])
                    elif kind == "tts_chunk" and first_audio is None:
                        first_audio = at
                    elif kind == "metrics":
                        metrics = event.event
                        if at > item.speech_end_s:
                            break
            nursery.cancel_scope.cancel()

    def delta(a: str, b: str) -> float | None:
        x, y = metrics.get(a), metrics.get(b)
        return None if x is None or y is None else float(y) - float(x)

    return Turn(
        t3_t2_ms=delta("t2_final_ms", "t3_first_token_ms"),
        t4_t2_ms=delta("t2_final_ms", "t4_first_audio_ms"),
        speech_end_to_audio_ms=None
        if first_audio is None
        else (first_audio - item.speech_end_s) * 1000,
        finals=len(finals),
        replies=replies,
        text=" | ".join(finals),
        reply=reply.strip(),
    )


def stats(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "n/a"
    return f"median {statistics.median(present):6.0f} ms  max {max(present):6.0f} ms  (n={len(present)})"


async def main(rounds: int) -> None:
    clips = corpus()
    results: list[tuple[Clip, Turn]] = []
    async with server_process([]) as port:
        url = f"ws://127.0.0.1:{port}/ws"
        await one(url, clips[0])  # warm-up
        for _ in range(rounds):
            for item in clips:
                results.append((item, await one(url, item)))
    for item, turn in results:
        print(
            f"{item.name:<14} t3-t2 {turn.t3_t2_ms or 0:5.0f}  t4-t2 {turn.t4_t2_ms or 0:5.0f}  "
            f"end->audio {turn.speech_end_to_audio_ms or 0:5.0f} ms  finals {turn.finals} "
            f"replies {turn.replies}  {turn.text!r} -> {turn.reply[:60]!r}"
        )
    turns = [t for _, t in results]
    print("final -> first token (t3-t2):   ", stats([t.t3_t2_ms for t in turns]))
    print("final -> first audio (t4-t2):   ", stats([t.t4_t2_ms for t in turns]))
    print("end of speech -> first audio:    ", stats([t.speech_end_to_audio_ms for t in turns]))
    halves = sum(
        1 for (c, t) in results if c.name.startswith("pause") and (t.finals, t.replies) != (1, 1)
    )
    print(f"questions with a pause answered in halves: {halves}/{rounds * len(PAUSED)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    trio.run(main, parser.parse_args().rounds)
