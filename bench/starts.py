"""Start the server again and again: does every start come up, or say why not?

Runs ``voicetrio serve --port 0`` (the default real engines: Whisper
tiny.en, the embedded SmolLM2, pyttsx3 over espeak-ng) ``--runs`` times,
one after another. Each start is watched until ``/health`` says ``ok``,
the process exits, or ``--timeout`` passes; then it gets SIGTERM and is
waited for. Every start must end up in one of two places: serving, or
exited non-zero with one clear line on stderr (the JSON log lines aside).
Anything else (hung, a traceback, an exit without a line) is counted as
such. Reported: the counts, starts that needed an engine load retried, the
start times (spawn to ``ok``), and the exit codes after SIGTERM. Usage::

    .venv/bin/python -m bench.starts [--runs 50] [--timeout 120] [-- serve flags]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

SERVING = re.compile(r"voicetrio serving on http://127\.0\.0\.1:(\d+)/")
POLL_S = 0.1
STOP_TIMEOUT_S = 30.0


@dataclass
class Start:
    """One start: how it ended, and what it said on the way."""

    outcome: str = "hung"  # ok | exited, one line | exited, unclear | hung
    start_s: float | None = None
    exit_code: int | None = None
    stop_code: int | None = None  # after SIGTERM, for a start that came up
    stop_s: float | None = None  # SIGTERM to exit
    retries: int = 0  # failed engine load attempts the log reported
    line: str = ""  # the clear line, or the tail of what was said instead
    records: list[dict[str, Any]] = field(default_factory=list)
    other: list[str] = field(default_factory=list)


def classify_exit(code: int, other: list[str]) -> tuple[str, str]:
    """An exit before ``ok``: (outcome, the line that says why or a tail)."""
    said = [line for line in other if line.strip() and not SERVING.search(line)]
    if code != 0 and len(said) == 1 and said[0].startswith("voicetrio"):
        return "exited, one line", said[0]
    return "exited, unclear", " / ".join(said[-5:]) or "(nothing)"


async def _collect(
    stream: trio.abc.ReceiveStream, start: Start, port: list[int], done: trio.Event
) -> None:
    """Sort stderr into log records and other lines until it ends; note the port."""
    buffer = b""
    try:
        async for chunk in stream:
            *lines, buffer = (buffer + chunk).split(b"\n")
            for raw in lines:
                _take(raw.decode("utf-8", errors="replace"), start, port)
        if buffer:
            _take(buffer.decode("utf-8", errors="replace"), start, port)
    finally:
        done.set()


def _take(text: str, start: Start, port: list[int]) -> None:
    if text.startswith("{"):
        try:
            record = json.loads(text)
        except ValueError:
            start.other.append(text)
            return
        start.records.append(record)
        if record.get("event") == "engine_load_attempt_fail":
            start.retries += 1
        return
    start.other.append(text)
    if (match := SERVING.search(text)) and not port:
        port.append(int(match.group(1)))


async def one_start(serve_args: list[str], timeout_s: float) -> Start:
    """Start a server, watch it come up or go, stop it."""
    start = Start()
    command = [sys.executable, "-m", "voicetrio", "serve", "--port", "0", *serve_args]
    t0 = trio.current_time()
    process = await trio.lowlevel.open_process(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=dict(os.environ)
    )
    port: list[int] = []
    said_all = trio.Event()
    async with trio.open_nursery() as nursery:
        assert process.stderr is not None
        nursery.start_soon(_collect, process.stderr, start, port, said_all)
        async with httpx.AsyncClient(trust_env=False) as http:
            with trio.move_on_after(timeout_s):
                # Another process: nothing to wait on but its answers.
                while process.returncode is None:
                    if port:
                        try:
                            response = await http.get(
                                f"http://127.0.0.1:{port[0]}/health", timeout=5
                            )
                            if response.json().get("status") == "ok":
                                start.outcome = "ok"
                                start.start_s = trio.current_time() - t0
                                break
                        except (httpx.HTTPError, ValueError):
                            pass
                    await trio.sleep(POLL_S)
        if start.outcome == "ok" or process.returncode is None:
            stopping = trio.current_time()
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(STOP_TIMEOUT_S):
                await process.wait()
            if process.returncode is None:
                process.kill()
            code = await process.wait()
            if start.outcome == "ok":
                start.stop_code = code
                start.stop_s = trio.current_time() - stopping
            else:
                start.line = " / ".join(start.other[-5:])
        else:
            start.exit_code = await process.wait()
            # What it said last may still be in the pipe.
            with trio.move_on_after(5):
                await said_all.wait()
            start.outcome, start.line = classify_exit(start.exit_code, start.other)
        nursery.cancel_scope.cancel()
    return start


def describe(k: int, start: Start) -> str:
    if start.outcome == "ok":
        assert start.start_s is not None
        failed = [r for r in start.records if r.get("event") == "engine_load_attempt_fail"]
        retried = "".join(
            f"; {r.get('engine')} attempt {r.get('attempt')} failed: {r.get('error')}" for r in failed
        )
        return (
            f"run {k:3d}: ok in {start.start_s:5.1f} s, SIGTERM -> exit {start.stop_code} "
            f"in {start.stop_s:.1f} s{retried}"
        )
    if start.outcome == "hung":
        return f"run {k:3d}: hung (no ok, no exit); last said: {start.line}"
    return f"run {k:3d}: {start.outcome}, exit {start.exit_code}: {start.line}"


def summary(starts: list[Start], timeout_s: float) -> str:
    counts = Counter(s.outcome for s in starts)
    times = sorted(s.start_s for s in starts if s.start_s is not None)
    lines = [
        f"{len(starts)} starts: {counts['ok']} ok, "
        f"{counts['exited, one line']} exited non-zero with one line, "
        f"{counts['exited, unclear']} exited otherwise, "
        f"{counts['hung']} hung (> {timeout_s:g} s)",
        f"starts that retried an engine load: {sum(1 for s in starts if s.retries)} "
        f"({sum(s.retries for s in starts)} failed attempts in all)",
        "exit codes after SIGTERM: "
        + ", ".join(
            f"{code}: {n}"
            for code, n in sorted(Counter(s.stop_code for s in starts if s.outcome == "ok").items())
        ),
    ]
    stops = sorted(s.stop_s for s in starts if s.stop_s is not None)
    if stops:
        lines.append(
            f"SIGTERM to exit (s): median {statistics.median(stops):.1f}, max {stops[-1]:.1f}"
        )
    if times:
        deciles = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else times * 9
        lines.append(
            f"start to ok (s): min {times[0]:.1f}, median {statistics.median(times):.1f}, "
            f"p90 {deciles[8]:.1f}, max {times[-1]:.1f}"
        )
    return "\n".join(lines)


async def main(runs: int, timeout_s: float, serve_args: list[str]) -> None:
    starts: list[Start] = []
    for k in range(1, runs + 1):
        start = await one_start(serve_args, timeout_s)
        starts.append(start)
        print(describe(k, start), flush=True)
    print(summary(starts, timeout_s), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to come up")
    parser.add_argument("serve_args", nargs="*", help="after --: flags for voicetrio serve")
    args = parser.parse_args()
    trio.run(main, args.runs, args.timeout, args.serve_args)
