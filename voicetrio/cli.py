"""The ``voicetrio`` command: ``serve`` and ``client``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

import trio

from voicetrio import __version__, client_cli
from voicetrio.config import Config, ConfigError, from_env
from voicetrio.logs import log_event, setup_logging


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
        "--engines", choices=("fake", "real"), help="engine set (STREAM_ENGINES, default fake)"
    )

    client = commands.add_parser("client", help="stream a WAV file to a server, print events")
    client_cli.add_arguments(client)
    return parser


def load_config(args: argparse.Namespace) -> Config:
    return from_env(
        os.environ,
        host=args.host,
        port=args.port,
        lean=args.lean,
        engines=args.engines,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "client":
        return client_cli.run(args)
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"voicetrio: {exc}", file=sys.stderr)
        return 1
    setup_logging(config.log_level)
    trio.run(_serve_until_signal, config)
    return 0


async def _serve_until_signal(config: Config) -> None:
    from voicetrio.server import serve

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            running = await nursery.start(lambda task_status: serve(config, shutdown=stop, task_status=task_status))
            print(f"voicetrio serving on http://{config.host}:{running.port}/", file=sys.stderr, flush=True)
            async for signum in signals:
                log_event(None, "signal", signal=signal.Signals(signum).name)
                stop.set()
                break


if __name__ == "__main__":
    sys.exit(main())
