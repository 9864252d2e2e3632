"""Pipecat's ``OpenAIRealtimeLLMService`` holds a spoken turn with voicetrio.

Pipecat parses every Realtime API event into a strict pydantic model: an
event it rejects stops its receive loop, and every ``error`` event but two
codes is fatal. This checks, with Pipecat as its users run it, that
voicetrio's ``/v1/realtime`` passes: the session is established, a spoken
question is transcribed, the reply's audio streams and the response
completes, and a barge-in cancels a reply (the steps:
``bench/pipecat_interop_driver.py``). Each step is reported PASS or FAIL,
with any event Pipecat rejected and the pydantic error verbatim, and the
timings.

Pipecat is heavy and stays out of the project's environment: this makes a
virtualenv of its own (``~/.cache/voicetrio/pipecat-venv-VERSION``, reused
when present; the pinned uv of ``.uv/`` when there is one, else ``python3
-m venv`` and pip) with ``pipecat-ai[openai]==VERSION``, starts ``voicetrio
serve --port 0`` (the deterministic engines unless ``--engines real``; the
fake LLM writes a token every 100 ms there, so a reply is still being
written when the barge-in lands), speaks the questions and the barge-in
with espeak-ng, and runs the driver in Pipecat's venv. Usage::

    .venv/bin/python -m bench.pipecat_interop [--engines fake|real] [--url ws://HOST:PORT/v1/realtime]
        [--pipecat 1.14.0] [--turn-detection semantic_vad|server_vad|default]
        [--no-barge-in] [--report out.json] [--verbose]

Exit status 0 when every step passed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from bench.common import server_process, trim
from tests.speech import say
from voicetrio.core.audio import write_wav

#: The version tested (the one uv.lock holds for the Smart Turn model).
PIPECAT_VERSION = "1.14.0"
ROOT = Path(__file__).resolve().parent.parent
DRIVER = Path(__file__).with_name("pipecat_interop_driver.py")
SERVICE_MODULE = "pipecat.services.openai.realtime.llm"
QUESTION = "What is the capital of France?"
#: Asked before the barge-in: its reply is still being written when the barge-in lands.
LONG_QUESTION = "Can you tell me a short story about a cat?"
#: Over the reply: a stop word (the real engines' barge-in takes it at once)
#: and enough speech for the deterministic engines' two words.
BARGE_IN = "Wait, tell me about Germany instead, please."
#: On the deterministic engines: the reply is written for about 3 s.
FAKE_ENV = {"STREAM_FAKE_LLM_TOKEN_MS": "100"}


def pipecat_python(version: str, venv: Path | None = None) -> Path:
    """The Python of a virtualenv with ``pipecat-ai[openai]==version``, made if missing."""
    default = Path.home() / ".cache" / "voicetrio" / f"pipecat-venv-{version}"
    venv = venv or default
    python = venv / "bin" / "python"
    requirement = f"pipecat-ai[openai]=={version}"
    marker = venv / ".voicetrio-requirement"
    if python.exists() and marker.exists() and marker.read_text().strip() == requirement:
        return python
    if venv.exists() and venv != default and not marker.exists():
        # It is remade from scratch: never a folder this script did not make.
        raise SystemExit(f"{venv} exists and was not made by this script: name another --venv")
    print(f"pipecat venv: installing {requirement} into {venv}", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    uv = ROOT / ".uv" / "bin" / "uv"
    if uv.exists():
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
        env.pop("VIRTUAL_ENV", None)
        # --no-config: our pyproject's [tool.uv] (pipecat-ai locked without
        # its dependencies, for the model file only) is not for this venv.
        uv_run = [str(uv), "--no-config"]
        subprocess.run([*uv_run, "venv", "--python", "python3", str(venv)], check=True, env=env)
        subprocess.run(
            [*uv_run, "pip", "install", "--python", str(python), requirement], check=True, env=env
        )
    else:
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement],
            check=True,
        )
    # Only a venv where the service imports counts as made.
    subprocess.run([str(python), "-c", f"import {SERVICE_MODULE}"], check=True)
    marker.write_text(requirement + "\n")
    return python


def write_clips(folder: Path) -> Path:
    """The utterances, spoken (16 kHz WAV), and the clips.json naming them."""
    names: dict[str, str] = {}
    clips = (("question", QUESTION), ("long_question", LONG_QUESTION), ("barge_in", BARGE_IN))
    for name, text in clips:
        path = folder / f"{name}.wav"
        write_wav(path, trim(say(text)), 16000)
        names[name] = str(path)
    manifest = folder / "clips.json"
    manifest.write_text(json.dumps(names) + "\n")
    return manifest


async def drive(python: Path, url: str, clips: Path, extra: list[str]) -> int:
    command = [str(python), str(DRIVER), "--url", url, "--clips", str(clips), *extra]
    # The driver's output goes straight to ours.
    proc = await trio.run_process(command, check=False)
    return proc.returncode


async def main(args: argparse.Namespace, python: Path, clips: Path) -> int:
    extra = ["--turn-detection", args.turn_detection, "--timeout", str(args.timeout)]
    extra += ["--no-barge-in"] * args.no_barge_in + ["--verbose"] * args.verbose
    if args.report:
        extra += ["--report", args.report]
    if args.url:
        return await drive(python, args.url, clips, extra)
    engines = ["--engines", args.engines]
    env = FAKE_ENV if args.engines == "fake" else {}
    async with server_process(engines, env=env) as port:
        print(f"voicetrio serve --engines {args.engines} on port {port}", flush=True)
        return await drive(python, f"ws://127.0.0.1:{port}/v1/realtime", clips, extra)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--engines", choices=("fake", "real"), default="fake")
    parser.add_argument("--url", help="a running server's /v1/realtime (no server is started)")
    parser.add_argument("--pipecat", default=PIPECAT_VERSION, help="the pipecat-ai version")
    parser.add_argument("--venv", type=Path, help="Pipecat's virtualenv (default ~/.cache/...)")
    parser.add_argument(
        "--turn-detection",
        choices=("semantic_vad", "server_vad", "default"),
        default="semantic_vad",
        help="as Pipecat's realtime-openai example (semantic_vad), or server_vad, or unset",
    )
    parser.add_argument("--no-barge-in", action="store_true")
    parser.add_argument("--timeout", type=float, help="per step, s (default 30; 120 real)")
    parser.add_argument("--report", help="write the steps, timings and events as JSON here")
    parser.add_argument("--verbose", action="store_true", help="Pipecat's DEBUG log")
    arguments = parser.parse_args()
    if arguments.timeout is None:
        arguments.timeout = 120.0 if arguments.engines == "real" else 30.0
    if arguments.report:
        arguments.report = str(Path(arguments.report).resolve())
    interpreter = pipecat_python(arguments.pipecat, arguments.venv)
    with tempfile.TemporaryDirectory(prefix="pipecat-interop-") as tmp:
        manifest = write_clips(Path(tmp))
        sys.exit(trio.run(main, arguments, interpreter, manifest))
