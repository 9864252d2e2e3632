"""The floor: what one message costs in our stack before voicetrio does anything.

Serves a bare Quart-Trio app on Hypercorn in its own process (``--bare``
mode of this script): its WebSocket route accepts, then receives and drops
every message. N clients (the load benchmark's lean client) send 100 ms
frames of silence at real-time pace to it, and then the same to
``voicetrio serve --engines fake`` (lean: the ASR stage runs on every frame,
no reply is ever made, since silence holds no speech). The report gives each
server's CPU per message and per session, so the server's own share is what
is left when the floor is taken away. Usage::

    .venv/bin/python -m bench.floor --sessions 150 [--seconds 20]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from functools import partial

import trio

from bench.common import server_process
from bench.load import cpu_seconds
from bench.rawws import RawClient
from bench.soak import server_pids
from voicetrio.core.audio import silence


def bare_app() -> object:
    from quart import websocket
    from quart_trio import QuartTrio

    app = QuartTrio("floor")

    @app.websocket("/ws")
    async def ws() -> None:
        await websocket.accept()
        while True:
            await websocket.receive()

    @app.get("/health")
    async def health() -> str:
        return "ok"

    return app


async def serve_bare() -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, bare_app(), config))  # type: ignore[arg-type]
        port = binds[0].rsplit(":", 1)[1]
        print(f"voicetrio serving on http://127.0.0.1:{port}/", file=sys.stderr, flush=True)


async def talk(url: str, seconds: float, lags: list[float]) -> None:
    client = await RawClient.connect(url)
    frame = silence(100)
    await client.send_json({"type": "start", "sample_rate": 16000})

    async def drain() -> None:
        while True:
            await client.receive()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        t0 = trio.current_time()
        for k in range(int(seconds * 10)):
            due = t0 + k / 10
            await trio.sleep_until(due)
            lags.append(trio.current_time() - due)
            await client.send_audio(frame)
        nursery.cancel_scope.cancel()
    await client.close()


async def measure(port: int, sessions: int, seconds: float) -> tuple[float, float, float]:
    """(server CPU seconds, generator CPU seconds, wall seconds) for the run."""
    pids = server_pids(port)
    url = f"ws://127.0.0.1:{port}/ws"
    lags: list[float] = []
    cpu0, wall0 = cpu_seconds(pids), time.monotonic()
    own0 = resource.getrusage(resource.RUSAGE_SELF)
    async with trio.open_nursery() as nursery:
        for _ in range(sessions):
            nursery.start_soon(talk, url, seconds, lags)
            await trio.sleep(0.1 / sessions)
    own1 = resource.getrusage(resource.RUSAGE_SELF)
    own = own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime
    return cpu_seconds(pids) - cpu0, own, time.monotonic() - wall0


async def main(sessions: int, seconds: float) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    messages = sessions * seconds * 10
    rows = []
    async with server_process([sys.executable, "-m", "bench.floor", "--bare"], raw_command=True) as port:
        rows.append(("bare Quart-Trio on Hypercorn", *await measure(port, sessions, seconds)))
    env = {"STREAM_LOG_LEVEL": "WARNING", "STREAM_MAX_SESSIONS": str(sessions + 10)}
    async with server_process(["--engines", "fake", "--lean"], env=env) as port:
        rows.append(("voicetrio serve --engines fake --lean", *await measure(port, sessions, seconds)))
    print(f"{sessions} sessions x {seconds:g} s of 100 ms frames ({messages:.0f} messages each run)")
    for name, cpu, own, wall in rows:
        print(
            f"  {name:40s} server {cpu / wall * 100:5.1f} % of a core, "
            f"{cpu / messages * 1e6:5.0f} us per message; generator {own / wall * 100:4.1f} %"
        )


if __name__ == "__main__":
    if sys.argv[1:] == ["--bare"]:
        trio.run(serve_bare)
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=150)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    trio.run(main, args.sessions, args.seconds)
