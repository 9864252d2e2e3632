"""The two commands as a user runs them: ``voicetrio serve`` in its own
process, ``voicetrio client FILE.wav`` against it, then SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio

from tests.conftest import RATE, quiet, speech
from voicetrio.audio import write_wav

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
