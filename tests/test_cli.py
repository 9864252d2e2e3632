"""The two commands as a user runs them: ``voicetrio serve`` in its own
process, ``voicetrio client FILE.wav`` against it, then SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import RATE, quiet, speech
from voicetrio.config import Config, share_of
from voicetrio.core.audio import write_wav

PYTHON = sys.executable


async def read_port(proc: trio.Process) -> tuple[int, list[str]]:
    """Read the server's stderr until it says where it serves."""
    assert proc.stderr is not None
    seen: list[str] = []
    buffer = b""
    with trio.fail_after(30):
        while True:
            chunk = await proc.stderr.receive_some()
            assert chunk, f"server exited early: {seen}"
            buffer += chunk
            *lines, rest = buffer.split(b"\n")
            buffer = rest
            for line in lines:
                text = line.decode()
                seen.append(text)
                match = re.search(r"voicetrio serving on http://127\.0\.0\.1:(\d+)/", text)
                if match:
                    return int(match.group(1)), seen


async def test_serve_client_then_sigterm(tmp_path: Path) -> None:
    wav = tmp_path / "hello.wav"
    write_wav(wav, speech(1500) + quiet(300), RATE)
    env = {**os.environ, "STREAM_SHUTDOWN_GRACE_S": "1"}
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [PYTHON, "-m", "voicetrio", "serve", "--port", "0", "--engines", "fake"],
                stderr=subprocess.PIPE,
                check=False,
                env=env,
            )
        )
        port, _ = await read_port(proc)
        url = f"ws://127.0.0.1:{port}/ws"
        result = await trio.run_process(
            [PYTHON, "-m", "voicetrio", "client", str(wav), "--json", "--url", url],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode()
        events = [json.loads(line) for line in result.stdout.decode().splitlines()]
        kinds = [e["type"] for e in events]
        order = ["protocol", "partial_transcript", "final_transcript", "llm_token", "tts_chunk"]
        positions = [kinds.index(k) for k in order]
        assert positions == sorted(positions)
        assert kinds.index("tts_complete") < kinds.index("metrics")
        assert all(isinstance(e["t"], float) for e in events)
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            await proc.wait()
        assert proc.returncode == 0


async def test_client_reports_a_refused_connection(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    write_wav(wav, speech(300), RATE)
    result = await trio.run_process(
        [PYTHON, "-m", "voicetrio", "client", str(wav), "--url", "ws://127.0.0.1:9/ws"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 1
    assert "connection refused" in result.stderr.decode()


async def test_workers_share_the_port_restart_and_stop_together(tmp_path: Path) -> None:
    """``--workers 2``: one port, two worker processes under a supervisor; a
    worker killed is started again; SIGTERM stops them all, exit 0."""
    wav = tmp_path / "hello.wav"
    write_wav(wav, speech(1500) + quiet(300), RATE)
    env = {**os.environ, "STREAM_SHUTDOWN_GRACE_S": "1", "STREAM_LOG_LEVEL": "INFO"}
    command = [PYTHON, "-m", "voicetrio", "serve", "--port", "0", "--engines", "fake", "--workers", "2"]
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, command, stderr=subprocess.PIPE, check=False, env=env)
        )
        log = LogLines(proc)
        port = await log.port()
        started = [await log.event("worker_started") for _ in range(2)]
        assert sorted(e["worker"] for e in started) == [0, 1]
        for e in started:
            await log.event("listening", worker=e["worker"])
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"http://127.0.0.1:{port}/health")).json()
        assert health["workers"] == 2 and health["worker"] in (0, 1)
        assert health["max_sessions"] == share_of(Config(engines="fake").effective_max_sessions, 2)

        result = await trio.run_process(
            [PYTHON, "-m", "voicetrio", "client", str(wav), "--json", "--url", f"ws://127.0.0.1:{port}/ws"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode()
        kinds = [json.loads(line)["type"] for line in result.stdout.decode().splitlines()]
        assert "final_transcript" in kinds and "metrics" in kinds

        victim = started[0]
        os.kill(victim["pid"], signal.SIGKILL)
        died = await log.event("worker_died", worker=victim["worker"])
        assert died["code"] == -signal.SIGKILL
        again = await log.event("worker_started", worker=victim["worker"])
        assert again["pid"] != victim["pid"]
        await log.event("listening", worker=victim["worker"])

        proc.send_signal(signal.SIGTERM)
        stopped = [await log.event("worker_stopped") for _ in range(2)]
        assert all(e["code"] == 0 for e in stopped)
        with trio.fail_after(15):
            await proc.wait()
        assert proc.returncode == 0
    # The supervisor waited for each of them: none is left, not even a zombie.
    assert not any(_exists(e["pid"]) for e in (started[1], again))


async def test_no_worker_outlives_a_killed_supervisor() -> None:
    env = {**os.environ, "STREAM_LOG_LEVEL": "INFO"}
    command = [PYTHON, "-m", "voicetrio", "serve", "--port", "0", "--engines", "fake", "--workers", "2"]
    async with trio.open_nursery() as nursery:
        proc, log, _started = await start_workers(nursery, command, env)
        proc.send_signal(signal.SIGKILL)
        gone = [await log.event("supervisor_gone") for _ in range(2)]
        assert sorted(e["worker"] for e in gone) == [0, 1]
        # Their stderr is the pipe we read: it ends when the last of them has exited.
        await log.until_closed()
        await proc.wait()


async def start_workers(
    nursery: trio.Nursery,
    command: list[str],
    env: dict[str, str],
    ready: str = "listening",
    workers: int = 2,
) -> tuple[trio.Process, LogLines, list[dict[str, Any]]]:
    """Start ``command`` (a supervisor of ``workers`` workers) in ``nursery``
    and wait until each worker logged ``ready``: the process, its log and the
    workers' ``worker_started`` records."""
    proc: trio.Process = await nursery.start(
        partial(trio.run_process, command, stderr=subprocess.PIPE, check=False, env=env)
    )
    log = LogLines(proc)
    await log.port()
    started = [await log.event("worker_started") for _ in range(workers)]
    for e in started:
        await log.event(ready, worker=e["worker"])
    return proc, log, started


def _exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


class LogLines:
    """The server's stderr, line by line: its JSON log events and the serving line.

    :meth:`event` takes the first record not taken yet that matches, in
    whatever order the processes wrote them."""

    def __init__(self, proc: trio.Process) -> None:
        assert proc.stderr is not None
        self._stream = proc.stderr
        self._buffer = b""
        self._seen: list[str] = []
        self._records: list[dict[str, Any]] = []
        self._taken: set[int] = set()

    async def _line(self) -> str:
        with trio.fail_after(30):
            while b"\n" not in self._buffer:
                chunk = await self._stream.receive_some()
                assert chunk, f"server exited early: {self._seen[-20:]}"
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        text = line.decode()
        self._seen.append(text)
        if text.startswith("{"):
            self._records.append(json.loads(text))
        return text

    async def until_closed(self) -> None:
        with trio.fail_after(30):
            while await self._stream.receive_some():
                pass

    async def port(self) -> int:
        while True:
            match = re.search(r"voicetrio serving on http://127\.0\.0\.1:(\d+)/", await self._line())
            if match:
                return int(match.group(1))

    async def event(self, name: str, **fields: Any) -> dict[str, Any]:
        checked = 0
        while True:
            for i in range(checked, len(self._records)):
                record = self._records[i]
                if (
                    i not in self._taken
                    and record.get("event") == name
                    and all(record.get(k) == v for k, v in fields.items())
                ):
                    self._taken.add(i)
                    return record
            checked = len(self._records)
            await self._line()


async def test_a_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for extra in ([], ["--workers", "2"]):
            result = await trio.run_process(
                [PYTHON, "-m", "voicetrio", "serve", "--engines", "fake", "--port", str(port), *extra],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            lines = result.stderr.decode().strip().splitlines()
            assert result.returncode == 1
            assert lines == [f"voicetrio: cannot listen on 127.0.0.1:{port}: Address already in use"]
