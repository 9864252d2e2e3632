"""The embedded LLM's process: llama.cpp's OpenAI-compatible server for one GGUF.

Run by :class:`~voicetrio.engines.llm.embedded.EmbeddedLlmServer`, never
imported by the server itself: a native crash (or an out-of-memory kill) here
ends this process only, and the supervisor starts another.

    python -m voicetrio.engines.llm.llama_worker --model PATH --port P \\
        [--host 127.0.0.1] [--ctx-size N] [--threads N] [--parallel N]

xllamacpp's ``Server`` loads the model, then serves HTTP on its own native
threads; this module only configures it and then waits to die. It dies when
told to (SIGTERM, SIGINT) and, so that it can never outlive the supervisor,
as soon as its stdin reaches end of file: the parent holds the only writing
end of that pipe, and the kernel closes it however the parent ends, even on
SIGKILL. It never runs interpreter shutdown, which could wait on, or crash
in, the server's native threads: signals keep their default action and EOF
ends it with ``os._exit``. (So stdin must stay open: run by hand, it stops on
Ctrl-D.)

If ``VOICETRIO_LLM_WORKER_KEY`` is set in the environment, the server
requires it as a bearer token (``/health`` stays public); it is passed there
rather than as an argument so that it never shows in a process listing.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Final

KEY_ENV: Final = "VOICETRIO_LLM_WORKER_KEY"
#: Status for "the model could not be loaded or the port not bound".
EXIT_START_FAILED: Final = 3
# llama.cpp log threshold: 2 keeps warnings and errors (the supervisor keeps
# the tail of stderr for its error messages) and drops per-request chatter.
_VERBOSITY: Final = 2


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m voicetrio.engines.llm.llama_worker")
    parser.add_argument("--model", required=True, help="path of the GGUF file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ctx-size", type=int, default=2048, help="context, shared by all slots")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for inference")
    parser.add_argument("--parallel", type=int, default=2, help="requests decoded at once")
    return parser.parse_args(argv)


def _exit_on_stdin_eof() -> None:
    # Anything written to stdin is ignored; only its end matters.
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # The kernel's default actions end the process at once, even inside a
    # native call, where a Python handler would wait for it to return.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # Watch from the start, so that a parent dying while the model loads
    # is noticed too.
    threading.Thread(target=_exit_on_stdin_eof, name="stdin-eof", daemon=True).start()

    import xllamacpp  # type: ignore[import-untyped]  # no stubs, no py.typed

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx_size
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    # No busy-waiting between a token's work items: on a small machine shared
    # with Whisper and the sessions, spinning threads starve each other
    # (measured on 2 cores beside one busy process: 2 threads at poll 50 gave
    # under 1 token/s, at poll 0 about 15, 1 thread about 65).
    params.cpuparams.poll = 0
    params.cpuparams_batch.poll = 0
    params.ui = False
    params.verbosity = _VERBOSITY
    key = os.environ.pop(KEY_ENV, "")
    if key:
        params.api_keys = [key]
    try:
        server = xllamacpp.Server(params)
    except Exception as exc:
        print(f"llama_worker: cannot start the server: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_START_FAILED)
    print(f"llama_worker: serving at {server.listening_address}", file=sys.stderr, flush=True)
    threading.Event().wait()  # until a signal or stdin EOF ends the process
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
