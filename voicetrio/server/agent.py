"""HAProxy's agent check, answered on a TCP port of its own (``STREAM_AGENT_PORT``).

The reply is computed by :mod:`voicetrio.core.agent` at the moment HAProxy
connects, so it is always the live state: HAProxy reads one line and the
connection is closed. A peer that connects and never reads cannot hold a
task: every send is bounded.

With ``--workers N`` the supervisor answers on the public port for the box
(:func:`ask`, each worker on a loopback socket the supervisor bound for it).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import trio

from voicetrio.core.agent import MAX_REPLY_BYTES, AgentReport, BadReply, combine, parse

#: How long a reply may take to be written (HAProxy waits agent-inter, 1 s in deploy/haproxy/).
REPLY_TIMEOUT_S: Final = 1.0
#: How long the supervisor waits for a worker's reply: well within its own,
#: since a dead worker's socket (the supervisor holds it for the next one)
#: takes the connection and never answers. A worker this slow on loopback
#: is too busy to take sessions anyway.
ASK_TIMEOUT_S: Final = 0.3


async def serve_agent(
    listener: socket.socket,
    answer: Callable[[], Awaitable[AgentReport]],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer every connection to ``listener`` (already listening) with
    ``answer()``'s line, then close it; runs until cancelled. Reports the
    bound port."""
    trio_listener = trio.SocketListener(trio.socket.from_stdlib_socket(listener))
    port = int(listener.getsockname()[1])

    async def reply(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(REPLY_TIMEOUT_S):
                line = (await answer()).line()
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(line)
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        task_status.started(port)
        await trio.serve_listeners(reply, [trio_listener], handler_nursery=nursery)


async def ask(host: str, port: int) -> AgentReport | None:
    """A worker's agent reply, or None if it does not answer (a worker being
    restarted) or answers what no worker says."""
    data = b""
    with trio.move_on_after(ASK_TIMEOUT_S):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            return None
        async with stream:
            try:
                while chunk := await stream.receive_some(MAX_REPLY_BYTES):
                    data += chunk
                    if b"\n" in data or len(data) > MAX_REPLY_BYTES:
                        break
            except (trio.BrokenResourceError, OSError):
                return None
    try:
        return parse(data)
    except BadReply:
        return None


async def answer_for_workers(
    listener: socket.socket,
    worker_ports: Sequence[int],
    stopping: trio.Event,
    until: trio.Event,
) -> None:
    """The supervisor's agent: answer for the box from every worker's own
    agent (on loopback, asked at once, in parallel), ``drain`` as soon as
    ``stopping`` is set; until ``until`` is set (every worker has exited)."""

    async def box() -> AgentReport:
        reports: list[AgentReport | None] = [None] * len(worker_ports)

        async def one(index: int, port: int) -> None:
            reports[index] = await ask("127.0.0.1", port)

        if not stopping.is_set():
            async with trio.open_nursery() as nursery:
                for index, port in enumerate(worker_ports):
                    nursery.start_soon(one, index, port)
        return combine(reports, draining=stopping.is_set())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_agent, listener, box)
        await until.wait()
        nursery.cancel_scope.cancel()


__all__ = ["ASK_TIMEOUT_S", "REPLY_TIMEOUT_S", "answer_for_workers", "ask", "serve_agent"]
