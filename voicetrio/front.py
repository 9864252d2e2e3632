"""Hypercorn's Trio worker loop, run here so that a connection can be severed.

Hypercorn writes every byte inside a shielded cancel scope, so that no
response is ever cut midway. The price: a client that stops reading leaves a
send that no cancellation can end, and the session blocked on it could never
finish, not at the backpressure hard limit, not at shutdown. Serving the
listeners ourselves lets us keep each connection's socket stream, keyed by
the peer address that every ASGI scope carries, and :meth:`Connections.sever`
it: shut the socket down, which fails the stuck send, so Hypercorn sees the
connection closed and the session unwinds. The client reads what its own
socket buffer held, then finds the connection reset.

The accept loop is ours too, for one more thing: when several worker
processes accept from one socket, a worker that is full waits a moment
before it accepts, so that a worker with room takes the connection; if none
has room, the full one accepts after all and refuses it (``SERVER_BUSY``),
so a client is never left waiting.

Everything else is Hypercorn's ``worker_serve``: lifespan, a shutdown
trigger, then ``graceful_timeout`` for open connections. Plain TCP only
(voicetrio terminates no TLS; put a proxy in front for that). It uses
Hypercorn's worker parts, which is why ``pyproject.toml`` pins its minor
version.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final, cast

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr, wrap_app
from quart_trio import QuartTrio

from voicetrio.logs import log_event

#: A peer as ASGI scopes name it: (host, port).
Peer = tuple[str, int]
#: How long a full worker leaves a new connection to the others.
FULL_YIELD_S: Final = 0.25
# Out of file descriptors or memory: wait, then accept again (as trio does).
_ACCEPT_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_RETRY_S: Final = 0.1


def peer_of(family: int, address: tuple[str, int] | tuple[str, int, int, int]) -> Peer | None:
    """The ASGI ``client`` of a socket address (as Hypercorn computes it)."""
    if family in (socket.AF_INET, socket.AF_INET6):
        return (address[0], address[1])
    return None


class Connections:
    """The open TCP connections of this worker, by peer address."""

    def __init__(self) -> None:
        self._streams: dict[Peer, trio.SocketStream] = {}

    def sever(self, peer: Peer | None) -> None:
        """Shut the connection down in both directions, now (if it is still open).

        A task blocked sending to it (shielded or not) wakes with an error;
        the reader sees end of file."""
        stream = self._streams.get(peer) if peer is not None else None
        if stream is None:
            return
        # OSError: already shut down, or reset by the peer.
        with contextlib.suppress(OSError):
            stream.socket.shutdown(socket.SHUT_RDWR)

    async def handle(
        self,
        serve_connection: Callable[[trio.SocketStream], Awaitable[None]],
        stream: trio.SocketStream,
    ) -> None:
        try:
            try:
                peer = peer_of(stream.socket.family, stream.socket.getpeername())
            except OSError:  # reset before we could ask who it was
                return
            if peer is None:
                return
            self._streams[peer] = stream
            try:
                await serve_connection(stream)
            finally:
                del self._streams[peer]
        finally:
            # Hypercorn's own close is skipped when it is cancelled midway.
            await trio.aclose_forcefully(stream)


async def serve_app(
    app: QuartTrio,
    config: HyperConfig,
    connections: Connections,
    *,
    listeners: list[socket.socket] | None = None,
    has_room: Callable[[], bool] = lambda: True,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``config.bind`` until ``shutdown_trigger`` returns.

    ``listeners`` are listening sockets to accept on instead (a worker's,
    shared with the other workers); ``has_room`` says whether this worker
    would admit one more session. Reports the addresses served
    (``http://host:port``) through ``task_status``.
    """
    asgi: AppWrapper = wrap_app(app, config.wsgi_max_body_size, "asgi")
    config.set_statsd_logger_class(StatsdLogger)
    state: LifespanState = {}
    lifespan = Lifespan(asgi, config, state)
    context = WorkerContext(None)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            if listeners is None:
                listeners = config.create_sockets().insecure_sockets
                for sock in listeners:
                    sock.listen(config.backlog)
            binds = [f"http://{repr_socket_addr(s.family, s.getsockname())}" for s in listeners]

            async def serve_connection(stream: trio.SocketStream) -> None:
                # Annotated for SSL streams only; Hypercorn's own worker hands
                # it plain socket streams just the same.
                ssl_typed = cast("trio.SSLStream[trio.SocketStream]", stream)
                await TCPServer(asgi, config, context, ConnectionState(state.copy()), ssl_typed)

            handle = partial(connections.handle, serve_connection)
            task_status.started(binds)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(raise_shutdown, shutdown_trigger)
                    for sock in listeners:
                        nursery.start_soon(_accept, sock, handle, has_room, server_nursery)
                    await trio.sleep_forever()
            except* ShutdownError:
                pass
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def _accept(
    sock: socket.socket,
    handle: Callable[[trio.SocketStream], Awaitable[None]],
    has_room: Callable[[], bool],
    handlers: trio.Nursery,
) -> None:
    listener = trio.socket.from_stdlib_socket(sock)
    with listener:
        while True:
            # Wait for a connection before deciding, so that "full" is judged
            # when there is one to take, not when the previous one was.
            await trio.lowlevel.wait_readable(listener)
            if not has_room():
                await trio.sleep(FULL_YIELD_S)
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                continue  # another worker took it
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                log_event(None, "accept_failed", level=logging.ERROR, error=errno.errorcode[exc.errno])
                await trio.sleep(_ACCEPT_RETRY_S)
                continue
            handlers.start_soon(handle, trio.SocketStream(trio.socket.from_stdlib_socket(conn)))
