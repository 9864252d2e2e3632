"""What the server itself adds to each event, measured on the deterministic
engines with every engine delay at zero.

Starts a server in-process on a free loopback port, then runs turns through
real sockets with the project's client and reports, from the client's clock:
speech end to final transcript (minus the silence window, which is policy,
not overhead), final to first token, first token to first audio, and the
whole turn. Usage::

    .venv/bin/python -m bench.event_latency [--turns 50] [--sessions 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import trio

from tests.conftest import FAST_FAKE
from voicetrio.client.connection import VoiceClient, connect
from voicetrio.core.audio import tone
from voicetrio.server.app import Running, serve

RATE = 16000
FRAME_BYTES = RATE * 2 // 10  # 100 ms


def summary(name: str, values_ms: list[float]) -> str:
    values = sorted(values_ms)
    p50 = statistics.median(values)
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    return f"{name:<34} n={len(values):<4} p50={p50:8.2f} ms  p99={p99:8.2f} ms  max={values[-1]:8.2f} ms"


async def one_turn(client: VoiceClient, freq: float) -> dict[str, float]:
    pcm = tone(1200, freq_hz=freq, sample_rate=RATE)
    for offset in range(0, len(pcm), FRAME_BYTES):
        await client.send_audio(pcm[offset : offset + FRAME_BYTES])
    # Stop instead of trailing silence: the final is then due at once, so the
    # time to it is pure server work.
    t_stop = time.perf_counter()
    await client.stop()
    marks: dict[str, float] = {}
    while True:
        received = await client.next_event()
        now = time.perf_counter()
        kind = received.type
        if kind == "final_transcript":
            marks["final"] = now
        elif kind == "llm_token" and "token" not in marks:
            marks["token"] = now
        elif kind == "tts_chunk" and "audio" not in marks:
            marks["audio"] = now
        elif kind == "metrics":
            marks["metrics"] = now
            break
    return {
        "stop -> final": (marks["final"] - t_stop) * 1000,
        "final -> first token": (marks["token"] - marks["final"]) * 1000,
        "first token -> first audio": (marks["audio"] - marks["token"]) * 1000,
        "stop -> metrics (whole turn)": (marks["metrics"] - t_stop) * 1000,
    }


async def run_sessions(url: str, turns: int, sessions: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}

    async def session(index: int) -> None:
        async with connect(url) as client:
            for turn in range(turns):
                await client.start(RATE)
                for name, value in (await one_turn(client, 300.0 + 50 * ((index + turn) % 10))).items():
                    results.setdefault(name, []).append(value)

    async with trio.open_nursery() as nursery:
        for i in range(sessions):
            nursery.start_soon(session, i)
    return results


async def main(turns: int, sessions: int) -> None:
    config = FAST_FAKE
    async with trio.open_nursery() as nursery:
        running: Running = await nursery.start(partial(serve, config))
        # warm-up turn: imports, first allocations
        await run_sessions(running.url, 1, 1)
        results = await run_sessions(running.url, turns, sessions)
        print(f"event latency added by the server: {sessions} session(s) x {turns} turns, fake engines, zero delays")
        for name, values in results.items():
            print(summary(name, values))
        running.shutdown.set()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--sessions", type=int, default=1)
    args = parser.parse_args()
    trio.run(main, args.turns, args.sessions)
