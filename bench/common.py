"""Shared by the benchmarks: a voicetrio server in its own process, spoken
test material with known speech boundaries, and small statistics."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
import trio

from voicetrio.core.audio import silence

RATE = 16000


@asynccontextmanager
async def server_process(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 120,
    *,
    raw_command: bool = False,
) -> AsyncIterator[int]:
    """``voicetrio serve ARGS --port 0`` in a child process (or the command
    ``ARGS`` itself, with ``raw_command``, if it says where it serves the
    same way); yields its port once /health says ok. SIGTERM on exit."""
    import httpx

    command = list(args) if raw_command else [sys.executable, "-m", "voicetrio", "serve", "--port", "0", *args]
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                command,
                stderr=subprocess.PIPE,
                check=False,
                env={**os.environ, **(env or {})},
            )
        )
        assert proc.stderr is not None
        port = None
        buffer = b""
        with trio.fail_after(ready_timeout_s):
            while port is None:
                chunk = await proc.stderr.receive_some()
                if not chunk:
                    raise RuntimeError(f"server exited: {buffer.decode()[-2000:]}")
                buffer += chunk
                match = re.search(rb"voicetrio serving on http://127\.0\.0\.1:(\d+)/", buffer)
                if match:
                    port = int(match.group(1))
            nursery.start_soon(_drain, proc.stderr, buffer)
            async with httpx.AsyncClient() as http:
                # Another process: nothing to wait on but its answer.
                while (await http.get(f"http://127.0.0.1:{port}/health")).status_code != 200:  # noqa: ASYNC110
                    await trio.sleep(0.1)
        try:
            yield port
        finally:
            proc.terminate()


async def _drain(stream: trio.abc.ReceiveStream, head: bytes) -> None:
    """Read the server's log to its end; into $BENCH_SERVER_LOG if that is set."""
    path = os.environ.get("BENCH_SERVER_LOG")
    if not path:
        while await stream.receive_some():
            pass
        return
    async with await trio.open_file(path, "ab") as log:
        await log.write(head)
        while chunk := await stream.receive_some():
            await log.write(chunk)


@dataclass(frozen=True)
class Clip:
    """Audio with the reference text and where speech starts and ends (s)."""

    name: str
    text: str
    pcm: bytes
    speech_start_s: float
    speech_end_s: float


def speech_bounds(pcm: bytes, rate: int = RATE, threshold: float = 300.0) -> tuple[float, float]:
    """First and last 10 ms window whose RMS passes ``threshold``."""
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    window = rate // 100
    n = len(samples) // window
    rms = np.sqrt((samples[: n * window].reshape(n, window) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > threshold)
    return float(loud[0] * 0.01), float((loud[-1] + 1) * 0.01)


def trim(pcm: bytes, rate: int = RATE) -> bytes:
    """``pcm`` without the silence a synthesizer puts before and after speech."""
    start, end = speech_bounds(pcm, rate)
    return pcm[int(start * rate) * 2 : int(end * rate) * 2]


def clip(name: str, text: str, speech: bytes, lead_ms: int = 500, trail_ms: int = 1500) -> Clip:
    pcm = silence(lead_ms, RATE) + speech + silence(trail_ms, RATE)
    start, end = speech_bounds(pcm)
    return Clip(name, text, pcm, start, end)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_ms(value: float | None) -> str:
    return "   n/a" if value is None else f"{value * 1000:6.0f}"
