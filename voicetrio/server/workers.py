"""Several server processes on one port: a supervisor and its workers.

One Python process is one event loop on one core. A worker is an ordinary
``voicetrio serve`` process with its own sessions, engines and admission
limit (its share of ``STREAM_MAX_SESSIONS``); the supervisor binds the
listening socket once and hands it to every worker, whose loops take turns
accepting connections from it (a busy worker reaches ``accept`` later, so
new sessions tend to go to the idle one). Sessions are independent, so
nothing else is shared.

The supervisor runs no engine and serves nothing itself. It restarts a
worker that dies (a crash, an out-of-memory kill) after a pause that grows
while the worker keeps dying, and on SIGINT or SIGTERM it passes SIGTERM on
to each worker, which drains its sessions as a single server does, and exits
0 once all of them have. Each worker watches its stdin, a pipe the
supervisor holds the only writing end of, and shuts down when it closes, so
no worker outlives the supervisor, however that one ends.

Metrics: the supervisor makes a fresh directory for the workers' metric
files (``voicetrio.prom``, prometheus-client's multiprocess mode), tells a
dead worker's gauges out of it before starting the next one, and removes it
when it exits.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import trio

from voicetrio import prom
from voicetrio.config import Config
from voicetrio.logs import log_event
from voicetrio.server.agent import answer_for_workers

#: Pause before restarting a worker that died, doubled on each death that
#: comes soon after the previous start, up to the maximum.
RESTART_PAUSE_S: Final = 0.5
RESTART_PAUSE_MAX_S: Final = 30.0
#: A worker that lived this long is taken as healthy: its pause resets.
HEALTHY_AFTER_S: Final = 60.0
LISTEN_BACKLOG: Final = 1024


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket, inheritable by the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


@dataclass
class _Worker:
    index: int
    process: trio.Process | None = None
    exit_code: int | None = None
    #: Its agent check's socket (loopback), which the supervisor asks.
    agent: socket.socket | None = None


async def supervise(config: Config, listener: socket.socket, serve_argv: Sequence[str]) -> int:
    """Serve on ``listener`` with ``config.workers`` worker processes until
    SIGINT or SIGTERM.

    ``serve_argv`` are the ``voicetrio serve`` arguments the supervisor was
    started with; each worker gets them again (it reads the same
    environment), plus the socket to accept on and its index.
    """
    port = listener.getsockname()[1]
    workers = [_Worker(i) for i in range(config.workers)]
    stopping = trio.Event()
    # HAProxy has one server line per address, and the workers share one:
    # the supervisor answers its agent check for the box, from what each
    # worker's own agent (on a loopback port) says (voicetrio.server.agent).
    box_agent: socket.socket | None = None
    if config.agent_port:
        try:
            box_agent = bind_listener(config.host, config.agent_port)
        except OSError as exc:
            print(
                f"voicetrio: cannot listen on {config.host}:{config.agent_port} "
                f"(STREAM_AGENT_PORT): {exc.strerror}",
                file=sys.stderr,
            )
            return 1
        for worker in workers:
            worker.agent = bind_listener("127.0.0.1", 0)
    all_stopped = trio.Event()
    metrics_dir = prom.make_shared_dir()
    # Read by prometheus-client when a worker first imports it.
    env = {**os.environ, prom.SHARED_DIR_ENV: metrics_dir}

    def command(worker: _Worker) -> list[str]:
        return [
            sys.executable, "-m", "voicetrio", "serve", *serve_argv,
            "--listen-fd", str(listener.fileno()), "--worker-index", str(worker.index),
            *([] if worker.agent is None else ["--agent-fd", str(worker.agent.fileno())]),
        ]  # fmt: skip

    async def run_worker(worker: _Worker) -> None:
        try:
            await keep_running(worker)
        finally:
            if all(w.process is None or w.process.returncode is not None for w in workers):
                all_stopped.set()

    async def keep_running(worker: _Worker) -> None:
        pause = RESTART_PAUSE_S
        while not stopping.is_set():
            started = trio.current_time()
            process = await trio.lowlevel.open_process(
                command(worker),
                stdin=subprocess.PIPE,
                pass_fds=(listener.fileno(), *([] if worker.agent is None else [worker.agent.fileno()])),
                env=env,
                # Out of the terminal's process group: Ctrl-C reaches the
                # supervisor only, which tells each worker once.
                start_new_session=True,
            )
            worker.process = process
            log_event(None, "worker_started", worker=worker.index, pid=process.pid)
            if stopping.is_set():  # the signal came while it was being started
                process.send_signal(signal.SIGTERM)
            try:
                code = await process.wait()
            finally:
                # Shielded: even a cancelled supervisor must not leave a worker.
                with trio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.terminate()
                        await process.wait()
                    if process.stdin is not None:
                        await process.stdin.aclose()
                    # Before its successor starts: its sessions are gone.
                    prom.forget_process(metrics_dir, process.pid)
            worker.exit_code = code
            if stopping.is_set():
                log_event(None, "worker_stopped", worker=worker.index, code=code)
                return
            lived = trio.current_time() - started
            pause = RESTART_PAUSE_S if lived >= HEALTHY_AFTER_S else min(pause * 2, RESTART_PAUSE_MAX_S)
            log_event(
                None,
                "worker_died",
                level=logging.ERROR,
                worker=worker.index,
                code=code,
                restart_in_s=pause,
            )
            with trio.move_on_at(trio.current_time() + pause):
                await stopping.wait()

    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                for worker in workers:
                    nursery.start_soon(run_worker, worker)
                if box_agent is not None:
                    ports = [w.agent.getsockname()[1] for w in workers if w.agent is not None]
                    nursery.start_soon(answer_for_workers, box_agent, ports, stopping, all_stopped)
                scheme = "https" if config.tls_cert else "http"
                print(
                    f"voicetrio serving on {scheme}://{config.host}:{port}/ with {config.workers} workers",
                    file=sys.stderr,
                    flush=True,
                )
                async for signum in signals:
                    log_event(None, "signal", signal=signal.Signals(signum).name)
                    stopping.set()
                    for worker in workers:
                        if worker.process is not None and worker.process.returncode is None:
                            worker.process.send_signal(signal.SIGTERM)
                    break
    finally:
        # Every worker has exited (the nursery waited for each).
        prom.remove_shared_dir(metrics_dir)
    listener.close()
    return 0 if all(w.exit_code == 0 for w in workers) else 1


def listener_from_fd(fd: int) -> socket.socket:
    """The supervisor's listening socket, in a worker."""
    return socket.socket(fileno=fd)


async def exit_when_orphaned(stop: trio.Event) -> None:
    """Set ``stop`` when stdin (the supervisor's pipe) reaches end of file."""
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
    try:
        while await stdin.receive_some():
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    log_event(None, "supervisor_gone")
    # The supervisor would have removed the metrics directory on its way
    # out; killed, it left that to us. A scrape while we drain now shows
    # nothing, which is all that is left to show.
    shared = prom.shared_dir()
    if shared is not None:
        prom.remove_shared_dir(shared)
    stop.set()
