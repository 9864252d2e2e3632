"""Scale: N simulated clients talking at once, at real-time pace.

Starts ``voicetrio serve`` in its own process and runs N clients in this one
(Trio) process, each doing several turns: speech, then silence, streamed at
real-time pace in ``--frame-ms`` frames, every event read.

*Added delay* (deterministic engines, every engine delay zero): the final of
a turn is due the moment the client has sent the frame that completes the
silence window (1.2 s of speech + 0.7 s window + one 30 ms VAD frame of
rounding = the frame holding audio at 1.92 s); what the client sees after
that is delay the server (and the shared CPU) added. First audio is measured
from the same moment: with zero-delay engines it should come right behind.
With the real engines (``--engines real``) the clients speak an espeak
sentence and the report gives first partial after speech onset and first
audio after the end of speech. CPU and RSS are the server process's, from
/proc. Usage::

    .venv/bin/python -m bench.load --sessions 500 [--frame-ms 100] [--turns 3]
    .venv/bin/python -m bench.load --engines real --sessions 4
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from dataclasses import dataclass, field
from functools import partial

import trio

from bench.common import clip, server_process, trim
from bench.rawws import Closed, RawClient
from bench.soak import rss_kib, server_pids
from voicetrio.client.connection import ClientError, connect
from voicetrio.core.audio import silence, tone

SPEECH_MS = 1200
WINDOW_MS = 700
VAD_FRAME_MS = 30


@dataclass
class Results:
    final_delay: list[float] = field(default_factory=list)
    audio_delay: list[float] = field(default_factory=list)
    first_partial: list[float] = field(default_factory=list)
    turns: int = 0
    errors: list[str] = field(default_factory=list)
    held: int = 0


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_total_kib(pids: list[int]) -> int:
    return sum(rss_kib(pid) for pid in pids)


async def fake_client(
    url: str, index: int, turns: int, frame_ms: int, listen: bool, out: Results
) -> None:
    """One user: a microphone that streams without pause, a tone as speech.

    A turn is 1.2 s of speech, then silence until the reply is over: with
    ``listen`` until its audio has played (as long as the tts_chunks say),
    as a user who waits for the answer; without, the next turn starts as
    soon as ``metrics`` arrives, talking over the reply's playback.
    """
    frame_bytes = 32 * frame_ms
    speech = tone(SPEECH_MS, freq_hz=300.0 + 40 * (index % 15))
    speech_frames = [speech[i : i + frame_bytes] for i in range(0, len(speech), frame_bytes)]
    quiet = silence(frame_ms)
    # The frame that carries the end of the silence window, counted from
    # the turn's first frame.
    due_frame = (SPEECH_MS + WINDOW_MS + VAD_FRAME_MS - 1) // frame_ms
    try:
        client = await RawClient.connect(url)
    except (OSError, ConnectionError, Closed) as exc:
        out.errors.append(type(exc).__name__)
        return
    try:
        await client.send_json({"type": "start", "sample_rate": 16000})
        hello = await client.receive()
        if not isinstance(hello, dict) or hello.get("type") != "protocol":
            out.errors.append(str(hello.get("code") if isinstance(hello, dict) else "binary"))
            return
        out.held += 1
        turn_start = 0  # frame index at which the current turn's speech begins
        sent: dict[int, float] = {}
        mic_done = trio.Event()

        async def microphone(t0: float) -> None:
            k = 0
            while not mic_done.is_set():
                await trio.sleep_until(t0 + k * frame_ms / 1000)
                offset = k - turn_start
                frame = speech_frames[offset] if 0 <= offset < len(speech_frames) else quiet
                await client.send_audio(frame)
                sent[k] = trio.current_time()
                k += 1

        async with trio.open_nursery() as nursery:
            t0 = trio.current_time()
            nursery.start_soon(microphone, t0)
            for _ in range(turns):
                final_at = audio_at = None
                reply_s = 0.0
                while True:
                    event = await client.receive()
                    if isinstance(event, bytes):
                        continue
                    now = trio.current_time()
                    kind = event["type"]
                    if kind == "final_transcript":
                        final_at = now
                    elif kind == "tts_chunk":
                        audio_at = now if audio_at is None else audio_at
                        # base64 WAV: 4 characters for 3 bytes, a 44-byte header
                        reply_s += (len(event["audio_b64"]) * 3 / 4 - 44) / 32000
                    elif kind == "error":
                        out.errors.append(event["code"])
                    elif kind == "metrics":
                        break
                due = sent.get(turn_start + due_frame)
                if final_at is not None and due is not None:
                    out.final_delay.append(final_at - due)
                    if audio_at is not None:
                        out.audio_delay.append(audio_at - due)
                out.turns += 1
                if listen and audio_at is not None:
                    await trio.sleep_until(audio_at + reply_s)
                # The next turn starts with the microphone's next frame.
                turn_start = int((trio.current_time() - t0) * 1000 // frame_ms) + 1
            mic_done.set()
    except* Closed as group:
        out.errors += [f"closed {e.code}" for e in group.exceptions if isinstance(e, Closed)]
    except* trio.BrokenResourceError:
        out.errors.append("connection broken")
    finally:
        await client.close()


async def real_client(url: str, index: int, turns: int, frame_ms: int, out: Results) -> None:
    from tests.speech import SENTENCES, say

    frame_bytes = 32 * frame_ms
    text = SENTENCES[index % len(SENTENCES)]
    item = clip(text, text, trim(say(text)), lead_ms=300, trail_ms=1500)
    try:
        async with connect(url) as client:
            await client.start(16000)
            out.held += 1
            for _ in range(turns):
                t0 = trio.current_time()

                async def send(t0: float = t0) -> None:
                    for k, offset in enumerate(range(0, len(item.pcm), frame_bytes)):
                        await trio.sleep_until(t0 + k * frame_ms / 1000)
                        await client.send_audio(item.pcm[offset : offset + frame_bytes])

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send)
                    partial_at = audio_at = None
                    while True:
                        event = (await client.next_event()).event
                        at = trio.current_time() - t0
                        if event["type"] == "partial_transcript" and partial_at is None:
                            partial_at = at
                        elif event["type"] == "tts_chunk" and audio_at is None:
                            audio_at = at
                        elif event["type"] == "error":
                            out.errors.append(event["code"])
                        elif event["type"] == "metrics" and at > item.speech_end_s:
                            break
                if partial_at is not None:
                    out.first_partial.append(partial_at - item.speech_start_s)
                if audio_at is not None:
                    out.audio_delay.append(audio_at - item.speech_end_s)
                out.turns += 1
    except ClientError as exc:
        out.errors.append(type(exc).__name__)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def main(
    engines: str,
    sessions: int,
    frame_ms: int,
    turns: int,
    listen: bool,
    workers: int,
    ramp_s: float,
) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    env = {
        "STREAM_MAX_SESSIONS": str(sessions + 10),
        "STREAM_LOG_LEVEL": "WARNING",
        "STREAM_FAKE_ASR_MS": "0",
        "STREAM_FAKE_LLM_FIRST_TOKEN_MS": "0",
        "STREAM_FAKE_LLM_TOKEN_MS": "0",
        "STREAM_FAKE_TTS_MS": "0",
    }
    async with server_process(["--engines", engines, "--workers", str(workers)], env=env) as port:
        # A supervisor and its workers, or the one server process; each
        # worker has the whole set of engines of its own.
        pids = server_pids(port)
        url = f"ws://127.0.0.1:{port}/ws"
        rss_idle = rss_total_kib(pids)
        out = Results()
        cpu0 = [cpu_seconds([pid]) for pid in pids]
        wall0 = time.monotonic()
        own0 = resource.getrusage(resource.RUSAGE_SELF)
        peak_rss = rss_idle
        async with trio.open_nursery() as nursery:
            for i in range(sessions):
                if engines == "fake":
                    nursery.start_soon(partial(fake_client, url, i, turns, frame_ms, listen, out))
                else:
                    nursery.start_soon(partial(real_client, url, i, turns, frame_ms, out))
                # Users arrive spread over a few seconds, not all in one frame.
                await trio.sleep(ramp_s / sessions)
            while len(nursery.child_tasks) > 0:
                peak_rss = max(peak_rss, rss_total_kib(pids))
                await trio.sleep(1)
        per_process = [cpu_seconds([pid]) - c0 for pid, c0 in zip(pids, cpu0, strict=True)]
        cpu = sum(per_process)
        wall = time.monotonic() - wall0
        own1 = resource.getrusage(resource.RUSAGE_SELF)
        own = own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime
    print(
        f"{engines} engines, {sessions} sessions x {turns} turns, {frame_ms} ms frames: "
        f"held {out.held}/{sessions}, turns {out.turns}, errors {len(out.errors)} "
        f"{sorted(set(out.errors))}"
    )
    if out.final_delay:
        print(
            f"  added delay, final: p50 {pct(out.final_delay, 0.5):.1f} ms, "
            f"p99 {pct(out.final_delay, 0.99):.1f} ms, max {pct(out.final_delay, 1):.1f} ms"
        )
    if out.first_partial:
        print(
            f"  first partial after onset: median {statistics.median(out.first_partial) * 1000:.0f} ms, "
            f"max {max(out.first_partial) * 1000:.0f} ms"
        )
    if out.audio_delay:
        label = "after the final was due" if engines == "fake" else "after the end of speech"
        print(
            f"  first audio {label}: p50 {pct(out.audio_delay, 0.5):.1f} ms, "
            f"p99 {pct(out.audio_delay, 0.99):.1f} ms"
        )
    print(
        f"  server CPU {cpu / wall * 100:.0f} % of a core ({cpu / wall / sessions * 1000:.2f} "
        f"ms/s per session); RSS {rss_idle / 1024:.0f} MiB idle, peak {peak_rss / 1024:.0f} MiB "
        f"({(peak_rss - rss_idle) / sessions:.0f} KiB per session); load generator CPU "
        f"{own / wall * 100:.0f} % of a core"
    )
    if len(pids) > 1:
        shares = ", ".join(f"{c / wall * 100:.0f} %" for c in per_process)
        print(f"  CPU by process (supervisor and workers): {shares}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", choices=("fake", "real"), default="fake")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--frame-ms", type=int, default=100)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument(
        "--back-to-back",
        action="store_true",
        help="start the next turn at once instead of listening to the reply first",
    )
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--ramp-s", type=float, default=3.0, help="spread the arrivals over this")
    args = parser.parse_args()
    trio.run(
        main,
        args.engines,
        args.sessions,
        args.frame_ms,
        args.turns,
        not args.back_to_back,
        args.workers,
        args.ramp_s,
    )
