"""Soak: N sessions talking for a long time; does the server's memory hold?

Starts ``voicetrio serve --engines fake`` in its own process; N clients each
loop forever over turns (1.2 s of speech, then silence, at real-time pace in
100 ms frames, reading every event), reconnecting every few turns so that
sessions open and close too. The server's RSS is sampled every 10 s from
/proc; the report gives its growth from minute 5 (warm) to the end, and the
turns and errors seen. Usage::

    .venv/bin/python -m bench.soak [--sessions 50] [--minutes 30]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import trio

from bench.common import server_process
from voicetrio.client.connection import ClientError, connect
from voicetrio.core.audio import silence, tone

FRAME = 3200  # 100 ms at 16 kHz


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def server_pids(port: int) -> list[int]:
    """The pids that hold the socket listening on ``port`` (found through
    /proc/net/tcp inodes): the server, or a supervisor and its workers."""
    import os

    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in list(f)[1:]:
            parts = line.split()
            if int(parts[1].split(":")[1], 16) == port and parts[3] == "0A":
                inodes.add(parts[9])
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    pids.append(int(pid))
                    break
        except OSError:
            continue
    if not pids:
        raise RuntimeError(f"no process listens on {port}")
    return pids


def server_pid(port: int) -> int:
    """The one pid listening on ``port``."""
    (pid,) = server_pids(port)
    return pid


async def talker(url: str, index: int, stats: dict[str, int], stop: trio.Event) -> None:
    pcm = tone(1200, freq_hz=300.0 + 40 * (index % 15)) + silence(1000)
    start = trio.current_time() + (index % 50) * 0.05  # spread the sessions out
    await trio.sleep_until(start)
    while not stop.is_set():
        try:
            async with connect(url) as client:
                await client.start(16000)
                for _ in range(5):
                    if stop.is_set():
                        return
                    t0 = trio.current_time()
                    for k, offset in enumerate(range(0, len(pcm), FRAME)):
                        await trio.sleep_until(t0 + k * 0.1)
                        await client.send_audio(pcm[offset : offset + FRAME])
                    while True:
                        event = (await client.next_event()).event
                        if event["type"] == "error":
                            stats["errors"] += 1
                        if event["type"] == "metrics":
                            stats["turns"] += 1
                            break
        except ClientError:
            stats["errors"] += 1


async def main(sessions: int, minutes: float) -> None:
    env = {"STREAM_MAX_SESSIONS": str(sessions * 2), "STREAM_LOG_LEVEL": "WARNING"}
    async with server_process(["--engines", "fake"], env=env) as port:
        pid = server_pid(port)
        url = f"ws://127.0.0.1:{port}/ws"
        stats = {"turns": 0, "errors": 0}
        stop = trio.Event()
        samples: list[tuple[float, int]] = []
        began = time.monotonic()
        async with trio.open_nursery() as nursery:
            for i in range(sessions):
                nursery.start_soon(partial(talker, url, i, stats, stop))
            while time.monotonic() - began < minutes * 60:
                samples.append((time.monotonic() - began, rss_kib(pid)))
                elapsed = samples[-1][0]
                print(
                    f"{elapsed / 60:6.2f} min  rss {samples[-1][1] / 1024:7.1f} MiB  "
                    f"turns {stats['turns']}  errors {stats['errors']}",
                    flush=True,
                )
                await trio.sleep(10)
            stop.set()
            nursery.cancel_scope.cancel()
    warm = [rss for t, rss in samples if t >= min(300, minutes * 60 / 6)]
    growth = (warm[-1] - warm[0]) / warm[0] * 100 if len(warm) >= 2 else float("nan")
    print(
        f"soak: {sessions} sessions, {minutes:g} min, {stats['turns']} turns, "
        f"{stats['errors']} errors; server RSS {warm[0] / 1024:.1f} -> {warm[-1] / 1024:.1f} MiB "
        f"from minute {min(5, minutes / 6):g} to the end: {growth:+.2f} % (target < 5 %)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=30)
    args = parser.parse_args()
    trio.run(main, args.sessions, args.minutes)
