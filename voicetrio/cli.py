"""The ``voicetrio`` command: ``serve``, ``client`` and ``transcribe``."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Final

import trio

from voicetrio import __version__, models_cli
from voicetrio.client import cli as client_cli
from voicetrio.config import Config, ConfigError, from_env
from voicetrio.logs import log_event, setup_logging

#: The exit code of a server whose engines failed to load, every attempt.
EXIT_ENGINES_FAILED: Final = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicetrio", description=__doc__)
    parser.add_argument("--version", action="version", version=f"voicetrio {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the voice server")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1, STREAM_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000, STREAM_PORT; 0 = any free)")
    serve.add_argument(
        "--lean",
        action="store_const",
        const=True,
        help="transcripts only: no LLM or TTS (STREAM_LEAN)",
    )
    serve.add_argument(
        "--engines", choices=("fake", "real"), help="engine set (STREAM_ENGINES, default real)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port (STREAM_WORKERS, default 1)",
    )
    serve.add_argument(
        "--tls-cert",
        metavar="PEM",
        help="serve https:// and wss:// with this certificate (chain) file (STREAM_TLS_CERT)",
    )
    serve.add_argument(
        "--tls-key",
        metavar="PEM",
        help="the certificate's unencrypted private key file (STREAM_TLS_KEY)",
    )
    # Set by the supervisor for its workers, never by hand.
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    serve.add_argument("--agent-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument(
        "--asr-model",
        help="Whisper model: tiny.en (default), base, a CTranslate2 folder, e.g. base-int8 "
        "(STREAM_MODEL_WHISPER)",
    )

    transcribe = commands.add_parser("transcribe", help="transcribe an audio file offline")
    transcribe.add_argument("file", help="WAV, FLAC, MP3 or any file PyAV reads")
    transcribe.add_argument("--asr-model", help="as for serve (STREAM_MODEL_WHISPER)")

    client = commands.add_parser("client", help="stream a WAV file to a server, print events")
    client_cli.add_arguments(client)

    models = commands.add_parser("models", help="the model catalog: list, install, verify")
    models_cli.add_arguments(models)
    return parser


def load_config(args: argparse.Namespace) -> Config:
    return from_env(
        os.environ,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        lean=getattr(args, "lean", None),
        engines=getattr(args, "engines", None),
        workers=getattr(args, "workers", None),
        tls_cert=getattr(args, "tls_cert", None),
        tls_key=getattr(args, "tls_key", None),
        model_whisper=args.asr_model,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "client":
        return client_cli.run(args)
    if args.command == "models":
        return models_cli.run(args)
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"voicetrio: {exc}", file=sys.stderr)
        return 1
    if args.command == "transcribe":
        return transcribe_file(config, args.file)
    from voicetrio.server.tls import server_context
    from voicetrio.server.workers import bind_listener, listener_from_fd, supervise

    try:
        # Read the certificate and key now, in the supervisor too: a bad one
        # is one line and exit 1, not workers dying and restarting.
        server_context(config)
    except ConfigError as exc:
        print(f"voicetrio: {exc}", file=sys.stderr)
        return 1

    if args.listen_fd is not None:  # a worker: its supervisor holds the port
        setup_logging(config.log_level, worker=args.worker_index)
        # Its agent answers its supervisor, which answers HAProxy for the box.
        agent = None if args.agent_fd is None else listener_from_fd(args.agent_fd)
        return _serve_process(config, listener_from_fd(args.listen_fd), args.worker_index, agent)
    try:
        listener = bind_listener(config.host, config.port)
    except OSError as exc:
        print(f"voicetrio: cannot listen on {config.host}:{config.port}: {exc.strerror}", file=sys.stderr)
        return 1
    if config.workers > 1:
        setup_logging(config.log_level, worker="supervisor")
        return trio.run(supervise, config, listener, _serve_argv(args))
    try:
        agent = bind_listener(config.host, config.agent_port) if config.agent_port else None
    except OSError as exc:
        print(
            f"voicetrio: cannot listen on {config.host}:{config.agent_port} "
            f"(STREAM_AGENT_PORT): {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    setup_logging(config.log_level)
    return _serve_process(config, listener, None, agent)


def _serve_process(
    config: Config,
    listener: socket.socket,
    worker_index: int | None,
    agent: socket.socket | None = None,
) -> int:
    """Serve until a signal (exit 0), or until an engine has failed every
    attempt to load: then one line on stderr and EXIT_ENGINES_FAILED, for
    the supervisor (systemd, Kubernetes, --workers) to start it again."""
    from voicetrio.engines.registry import EngineLoadFailed, first_leaf

    failed: EngineLoadFailed | None = None
    try:
        trio.run(_serve_until_signal, config, listener, worker_index, agent)
    except* EngineLoadFailed as group:
        failed = first_leaf(group, EngineLoadFailed)
    if failed is not None:
        # One line, whatever the cause's message holds (the LLM's stderr tail).
        who = "voicetrio" if worker_index is None else f"voicetrio worker {worker_index}"
        print(f"{who}: {' '.join(str(failed).split())}", file=sys.stderr, flush=True)
        return EXIT_ENGINES_FAILED
    return 0


def _serve_argv(args: argparse.Namespace) -> list[str]:
    """The ``serve`` flags as given, for the workers to be started with."""
    argv: list[str] = []
    for flag, value in (
        ("--host", args.host),
        ("--port", args.port),
        ("--engines", args.engines),
        ("--asr-model", args.asr_model),
        ("--workers", args.workers),
        ("--tls-cert", args.tls_cert),
        ("--tls-key", args.tls_key),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if args.lean:
        argv.append("--lean")
    return argv


def transcribe_file(config: Config, path: str) -> int:
    from voicetrio.engines.asr.whisper import transcribe_file as whisper_transcribe
    from voicetrio.engines.base import EngineError
    from voicetrio.engines.models import resolve_model

    try:
        spec = resolve_model(config.model_whisper, default_compute_type=config.asr_compute_type)
        text = whisper_transcribe(path, spec, cpu_threads=config.asr_cpu_threads)
    except (ValueError, EngineError) as exc:
        print(f"voicetrio: {exc}", file=sys.stderr)
        return 1
    print(text)
    return 0


async def _serve_until_signal(
    config: Config,
    listener: socket.socket,
    worker_index: int | None,
    agent: socket.socket | None = None,
) -> None:
    """Serve on ``listener`` until SIGINT or SIGTERM (or, for a worker, until
    its supervisor is gone), then shut down gracefully."""
    from voicetrio.server.app import serve

    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as watchers:
            watchers.start_soon(_stop_on_signal, signals, stop)
            if worker_index is not None:
                from voicetrio.server.workers import exit_when_orphaned

                watchers.start_soon(exit_when_orphaned, stop)
            async with trio.open_nursery() as nursery:
                running = await nursery.start(
                    partial(
                        serve,
                        config,
                        shutdown=stop,
                        listener=listener,
                        worker=worker_index or 0,
                        agent_listener=agent,
                    )
                )
                if worker_index is None:  # a worker's supervisor says where it serves
                    scheme = "https" if running.tls else "http"
                    print(
                        f"voicetrio serving on {scheme}://{config.host}:{running.port}/",
                        file=sys.stderr,
                        flush=True,
                    )
            watchers.cancel_scope.cancel()


async def _stop_on_signal(signals: AsyncIterator[int], stop: trio.Event) -> None:
    async for signum in signals:
        log_event(None, "signal", signal=signal.Signals(signum).name)
        stop.set()
        return


if __name__ == "__main__":
    sys.exit(main())
