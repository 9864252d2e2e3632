"""End of speech to first audio: the Realtime API against the v1 protocol.

Starts ``voicetrio serve`` with the default engines (Whisper tiny.en, the
embedded SmolLM2, pyttsx3) in its own process and streams the same spoken
questions (espeak-ng, :func:`bench.voice_to_voice.corpus`) at real-time pace
in 40 ms frames, alternately over ``/ws`` (the v1 protocol) and over
``/v1/realtime`` (the GA shape, pcm16 at 24 kHz in base64, server VAD with
the server's silence window), one session per question. For each it
reports end of speech to the first audio the client receives: the first
``tts_chunk`` on /ws, the first ``response.output_audio.delta`` on
/v1/realtime; then the medians, maxima and the median of the paired
differences. The second adapter should add next to nothing (the goal: within
50 ms). Usage::

    .venv/bin/python -m bench.realtime_latency [--rounds 2]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
from functools import partial

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from bench.common import Clip, server_process
from bench.voice_to_voice import corpus
from bench.voice_to_voice import one as one_v1
from voicetrio.client.connection import stream_pcm
from voicetrio.core.resample import resample

RATE = 24000


class RealtimeSink:
    """Feeds :func:`stream_pcm`: each frame one ``input_audio_buffer.append``."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws

    async def send_audio(self, pcm: bytes) -> None:
        event = {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
        await self.ws.send_message(json.dumps(event))


async def one_realtime(port: int, item: Clip) -> float | None:
    """Milliseconds from the end of speech to the first audio delta (None if none came)."""
    pcm = resample(item.pcm, 16000, RATE)
    url = f"ws://127.0.0.1:{port}/v1/realtime?model=voicetrio"
    async with open_websocket_url(url, message_queue_size=1024) as ws:
        first = json.loads(await ws.get_message())
        assert first["type"] == "session.created", first
        first_audio: float | None = None
        async with trio.open_nursery() as nursery:
            t0 = trio.current_time()
            nursery.start_soon(partial(stream_pcm, RealtimeSink(ws), pcm, RATE, frame_ms=40))
            with trio.move_on_after(len(item.pcm) / 32000 + 20):
                while True:
                    event = json.loads(await ws.get_message())
                    if event["type"] == "response.output_audio.delta" and first_audio is None:
                        first_audio = trio.current_time() - t0
                    if event["type"] == "response.done":
                        break
            nursery.cancel_scope.cancel()
    return None if first_audio is None else (first_audio - item.speech_end_s) * 1000


def stats(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"median {statistics.median(values):6.0f} ms  max {max(values):6.0f} ms  (n={len(values)})"
    )


async def main(rounds: int) -> None:
    clips = corpus()
    v1: list[float] = []
    rt: list[float] = []
    pairs: list[float] = []
    async with server_process([]) as port:
        ws_url = f"ws://127.0.0.1:{port}/ws"
        await one_v1(ws_url, clips[0])  # warm-up, both paths
        await one_realtime(port, clips[0])
        for _ in range(rounds):
            for item in clips:
                a = (await one_v1(ws_url, item)).speech_end_to_audio_ms
                b = await one_realtime(port, item)
                print(f"{item.name:<14} /ws {a or 0:6.0f} ms   /v1/realtime {b or 0:6.0f} ms")
                if a is not None:
                    v1.append(a)
                if b is not None:
                    rt.append(b)
                if a is not None and b is not None:
                    pairs.append(b - a)
    print("end of speech -> first audio, /ws:          ", stats(v1))
    print("end of speech -> first audio, /v1/realtime: ", stats(rt))
    print("paired difference (realtime - ws):          ", stats(pairs))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    trio.run(main, parser.parse_args().rounds)
