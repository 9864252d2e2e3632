"""Streaming recognition latency and accuracy against a running server.

Starts ``voicetrio serve --lean`` with the chosen model in its own process,
streams spoken clips (espeak-ng) at real-time pace in 40 ms frames, one
session per clip, and reports per clip and as medians: first partial after
speech onset, final after speech end, partial count, number of finals (a
clip is one sentence: more than one final means it was split) and WER. Then
the same clips are decoded offline, whole, with the same model, as the
accuracy floor, and the time of those decodes (and of a partial on each
clip's first 1.5 s) is reported. Usage::

    .venv/bin/python -m bench.asr_latency [--model tiny.en] [--frame-ms 40]
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from functools import partial

import trio

from bench.common import Clip, clip, fmt_ms, median, server_process, trim
from tests.speech import SENTENCES, say, wer
from voicetrio.client.connection import connect, stream_pcm
from voicetrio.core.audio import silence

#: Sentences spoken with a pause inside them, shorter than the silence window.
PAUSED = (
    ("What is the weather going to be like,", "in London tomorrow morning?", 300),
    ("Can you remind me,", "to call my mother at the end of the day?", 280),
    ("Please play some quiet music", "while I read my book tonight.", 450),
)


def corpus() -> list[Clip]:
    clips = [clip(f"s{i + 1}", text, say(text)) for i, text in enumerate(SENTENCES)]
    for i, (first, second, pause_ms) in enumerate(PAUSED):
        # espeak pads its output with silence: trimmed, the pause is exactly pause_ms.
        speech = trim(say(first)) + silence(pause_ms) + trim(say(second))
        clips.append(clip(f"pause{i + 1}-{pause_ms}ms", f"{first} {second}", speech))
    return clips


@dataclass(frozen=True)
class Result:
    first_partial_s: float | None
    final_s: float | None
    partials: int
    finals: int
    wer: float
    text: str


async def stream_clip(url: str, item: Clip, frame_ms: int) -> Result:
    async with connect(url) as client:
        await client.start(16000)
        t0 = trio.current_time()
        partials: list[float] = []
        finals: list[tuple[float, str]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(stream_pcm, client, item.pcm, 16000, frame_ms=frame_ms))
            with trio.move_on_after(len(item.pcm) / 32000 + 5):
                while True:
                    event = await client.next_event()
                    at = trio.current_time() - t0
                    if event.type == "partial_transcript":
                        partials.append(at)
                    elif event.type == "final_transcript":
                        finals.append((at, event.event["text"]))
                    elif event.type == "metrics" and at > item.speech_end_s:
                        break
            nursery.cancel_scope.cancel()
    text = " ".join(t for _, t in finals)
    return Result(
        first_partial_s=partials[0] - item.speech_start_s if partials else None,
        final_s=finals[-1][0] - item.speech_end_s if finals else None,
        partials=len(partials),
        finals=len(finals),
        wer=wer(item.text, text),
        text=text,
    )


@dataclass(frozen=True)
class Offline:
    wers: list[float]
    #: Seconds of one whole-clip final decode, and of one partial on its first 1.5 s.
    final_decode_s: list[float]
    partial_decode_s: list[float]


async def offline(model: str, clips: list[Clip]) -> Offline:
    from voicetrio.engines.asr.whisper import WhisperAsr
    from voicetrio.engines.models import resolve_model

    asr = WhisperAsr(resolve_model(model))
    await asr.load()
    await asr.transcribe(clips[0].pcm, final=True)  # warm-up
    result = Offline([], [], [])
    for c in clips:
        result.wers.append(wer(c.text, await asr.transcribe(c.pcm, final=True)))
        result.final_decode_s.append(asr.last_decode_s)
        await asr.transcribe(c.pcm[: 2 * 24_000], final=False)
        result.partial_decode_s.append(asr.last_decode_s)
    return result


async def main(model: str, frame_ms: int) -> None:
    clips = corpus()
    rows = []
    env = {"STREAM_MODEL_WHISPER": model}
    async with server_process(["--lean", "--engines", "real"], env=env) as port:
        url = f"ws://127.0.0.1:{port}/ws"
        await stream_clip(url, clips[0], frame_ms)  # warm-up
        for item in clips:
            rows.append(await stream_clip(url, item, frame_ms))
    whole = await offline(model, clips)
    floor = whole.wers
    print(f"model {model}, {frame_ms} ms frames at real-time pace, vad_silence_ms "
          f"{os.environ.get('STREAM_VAD_SILENCE_MS', '700')}")
    print(f"{'clip':<16} {'1st partial':>11} {'final':>8} {'partials':>8} {'finals':>6} "
          f"{'WER':>6} {'offline':>7}  text")
    for item, row, off in zip(clips, rows, floor, strict=True):
        print(
            f"{item.name:<16} {fmt_ms(row.first_partial_s):>8} ms {fmt_ms(row.final_s):>5} ms "
            f"{row.partials:>8} {row.finals:>6} {row.wer:6.3f} {off:7.3f}  {row.text}"
        )
    firsts = [r.first_partial_s for r in rows if r.first_partial_s is not None]
    ends = [r.final_s for r in rows if r.final_s is not None]
    wers = [r.wer for r in rows]
    split = sum(1 for r in rows if r.finals != 1)
    print(
        f"median: first partial {median(firsts) * 1000:.0f} ms after onset "
        f"(max {max(firsts) * 1000:.0f}), final {median(ends) * 1000:.0f} ms after speech end "
        f"(max {max(ends) * 1000:.0f}), partials {median([float(r.partials) for r in rows]):.0f}, "
        f"WER streaming {sum(wers) / len(wers):.3f} vs offline {sum(floor) / len(floor):.3f} "
        f"(mean), split clips {split}/{len(rows)}"
    )
    finals, partials = whole.final_decode_s, whole.partial_decode_s
    print(
        f"decode (in process, one at a time): final {median(finals) * 1000:.0f} ms median "
        f"(max {max(finals) * 1000:.0f}), partial of 1.5 s {median(partials) * 1000:.0f} ms "
        f"median (max {max(partials) * 1000:.0f})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--frame-ms", type=int, default=40)
    args = parser.parse_args()
    trio.run(main, args.model, args.frame_ms)
