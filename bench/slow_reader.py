"""A client that reads nothing for 30 s, next to clients that do.

The heavy variant of ``tests/reliability/test_slow_reader.py``, at real pace
against ``voicetrio serve --engines fake`` in its own process. One *slow*
client talks all the time (1.2 s utterances, real-time 100 ms frames) and
reads nothing for ``--seconds``; barge-in is off, so its replies pile up
instead of cancelling each other. ``--others`` clients take turns next to it
and read everything. Reported: the server's RSS every second (from /proc),
when the slow client was dropped (its sends fail, or the close it reads at
the end), the hub's session count at the end (a dropped client must be gone),
and the others' first audio after the final was due (the frame that closes
the silence window), before the slow client's backlog built up and after.
Usage::

    .venv/bin/python -m bench.slow_reader [--seconds 30] [--others 10]
        [--hard-bytes 2097152]

The hard limit defaults to 2 MiB here rather than the server's 8 MiB, which
30 s of replies to a client that reads nothing would not reach.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field

import httpx
import trio

from bench.common import server_process
from voicetrio.client.connection import ClientClosed, ClientError, connect
from voicetrio.core.audio import silence, tone

FRAME_MS = 100
FRAME = 32 * FRAME_MS
SPEECH_MS = 1200
#: The window closes on the 24th 30 ms silence frame (720 ms after speech):
#: the client frame holding audio up to there is when the final is due.
DUE_FRAME = (SPEECH_MS + 720 - 1) // FRAME_MS


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def child_pid(marker: str) -> int:
    """The one child process of ours whose command line contains ``marker``."""
    me = str(os.getpid())
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if ppid == me and marker in cmdline:
            found.append(int(pid))
    if len(found) != 1:
        raise RuntimeError(f"expected one child running {marker!r}, found {found}")
    return found[0]


@dataclass
class Report:
    rss: list[tuple[float, float]] = field(default_factory=list)
    dropped_at: float | None = None
    blocked_at: float | None = None
    slow_close: int | None = None
    slow_events_read: int = 0
    slow_utterances: int = 0
    sessions_then: int | None = None
    first_audio: list[tuple[float, float]] = field(default_factory=list)  # (at, delay)
    errors: list[str] = field(default_factory=list)


async def slow_client(url: str, seconds: float, began: float, report: Report) -> None:
    pcm = tone(SPEECH_MS, freq_hz=700.0) + silence(1000)
    async with connect(url) as client:
        await client.start(16000)
        t0 = trio.current_time()
        k = 0
        try:
            while trio.current_time() - t0 < seconds:
                offset = (k * FRAME) % len(pcm)
                if offset == 0:
                    report.slow_utterances += 1
                await trio.sleep_until(t0 + k * FRAME_MS / 1000)
                # A server that stopped reading us without closing leaves the
                # send hanging once the socket buffers are full.
                with trio.move_on_after(5) as stuck:
                    await client.send_audio(pcm[offset : offset + FRAME])
                if stuck.cancelled_caught:
                    report.blocked_at = time.monotonic() - began - 5
                    break
                k += 1
        except ClientClosed:
            report.dropped_at = time.monotonic() - began
        async with httpx.AsyncClient() as http:
            health = (await http.get(url.replace("ws://", "http://").replace("/ws", "/health")))
            report.sessions_then = int(health.json()["sessions"])
        # Now read what the server still sent us, then (if dropped) the
        # close; a live session's backlog is over when 3 s pass in silence.
        try:
            while True:
                with trio.move_on_after(3) as idle:
                    await client.next_event()
                    report.slow_events_read += 1
                if idle.cancelled_caught:
                    break
        except ClientClosed as closed:
            report.slow_close = closed.code


async def other_client(url: str, index: int, stop: trio.Event, began: float, report: Report) -> None:
    pcm = tone(SPEECH_MS, freq_hz=300.0 + 40 * index) + silence(1300)
    try:
        async with connect(url) as client:
            await client.start(16000)
            while not stop.is_set():
                t0 = trio.current_time()
                due: list[float] = []

                async def send(t0: float = t0, due: list[float] = due) -> None:
                    for k, offset in enumerate(range(0, len(pcm), FRAME)):
                        await trio.sleep_until(t0 + k * FRAME_MS / 1000)
                        await client.send_audio(pcm[offset : offset + FRAME])
                        if k == DUE_FRAME:
                            due.append(trio.current_time())

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send)
                    audio_at = None
                    while True:
                        event = (await client.next_event()).event
                        if event["type"] == "tts_chunk" and audio_at is None:
                            audio_at = trio.current_time()
                        elif event["type"] == "error":
                            report.errors.append(str(event["code"]))
                        elif event["type"] == "metrics":
                            break
                if audio_at is not None and due:
                    report.first_audio.append((time.monotonic() - began, audio_at - due[0]))
    except ClientError as exc:
        report.errors.append(type(exc).__name__)


async def main(seconds: float, others: int, hard_bytes: int) -> None:
    env = {
        "STREAM_BARGE_IN": "false",
        "STREAM_BACKPRESSURE_HARD_BYTES": str(hard_bytes),
        "STREAM_LOG_LEVEL": "WARNING",
    }
    report = Report()
    async with server_process(["--engines", "fake"], env=env) as port:
        pid = child_pid("voicetrio serve")
        url = f"ws://127.0.0.1:{port}/ws"
        began = time.monotonic()
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for i in range(others):
                nursery.start_soon(other_client, url, i, stop, began, report)

            async def sample() -> None:
                while not stop.is_set():
                    report.rss.append((time.monotonic() - began, rss_mib(pid)))
                    await trio.sleep(1)

            nursery.start_soon(sample)
            await slow_client(url, seconds, began, report)
            stop.set()
    rss = [r for _, r in report.rss]
    early = [d for at, d in report.first_audio if at < 5]
    late = [d for at, d in report.first_audio if at >= seconds / 2]
    print(
        f"slow reader: {seconds:g} s without reading ({report.slow_utterances} utterances), "
        f"{others} other sessions, hard limit {hard_bytes} bytes"
    )
    print(
        f"  server RSS: start {rss[0]:.1f} MiB, max {max(rss):.1f} MiB, end {rss[-1]:.1f} MiB; "
        f"sessions open when the {seconds:g} s were up: {report.sessions_then} "
        f"(the others: {others})"
    )
    dropped = "never" if report.dropped_at is None else f"at {report.dropped_at:.1f} s"
    blocked = "never" if report.blocked_at is None else f"from {report.blocked_at:.1f} s"
    print(
        f"  slow client: sends failed {dropped}, blocked {blocked}; then read "
        f"{report.slow_events_read} events and close {report.slow_close}"
    )
    for name, values in (("first 5 s", early), (f"after {seconds / 2:g} s", late)):
        if values:
            print(
                f"  others' first audio after the final was due, {name}: median "
                f"{statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms "
                f"(n={len(values)})"
            )
    print(f"  errors: {len(report.errors)} {sorted(set(report.errors))}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--others", type=int, default=10)
    parser.add_argument("--hard-bytes", type=int, default=2 * 1024 * 1024)
    args = parser.parse_args()
    trio.run(main, args.seconds, args.others, args.hard_bytes)
