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

Two more things work around a Hypercorn bug (``docs/upstream-bugs.md``):
when a response ends before its request body has arrived (a 404, a refused
token, an upload refused before it is read), Hypercorn closes the connection
from the app's task just after telling the app ``http.disconnect``, on which
Quart-Trio cancels that task; the close is cancelled, the connection is left
open and never reused, and the client's next request on it gets no answer.
Here that close is shielded, so it happens; and such a response ends only
once the body has arrived (:func:`finish_request_first`, bounded), so the
connection is usually kept alive after all, and a client still sending its
body is not reset before it reads the answer.

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
from hypercorn.typing import (
    AppWrapper,
    ASGIFramework,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    ConnectionState,
    LifespanState,
    Scope,
)
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
#: How long an answer sent before its request body arrived waits for the rest
#: of that body before Hypercorn closes the connection instead of reusing it.
DRAIN_S: Final = 10.0


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


class _TCPServer(TCPServer):
    """Hypercorn's connection, whose close always happens.

    ``_close`` is private to Hypercorn; the pin on its minor version covers
    this override as it covers the rest of this module."""

    async def _close(self) -> None:
        # Hypercorn closes a connection whose response ended before its
        # request from the app's own task, right after telling the app
        # ``http.disconnect``, on which Quart-Trio cancels that task: the close
        # is cancelled at its first checkpoint, before the socket is shut.
        # Shutting and closing a socket does not block, so the shield is
        # never held for long.
        with trio.CancelScope(shield=True):
            await super()._close()


def finish_request_first(app: ASGIFramework, drain_s: float) -> ASGIFramework:
    """``app``, whose HTTP responses end only once their request body has been
    received, or ``drain_s`` after the app finished answering.

    Every byte of an early answer (404, 405, 401/403, an upload refused before
    it is read) is sent at once; only its end, after which Hypercorn either
    reuses the connection or closes it, waits for the client to finish
    sending. A request that has no body, or whose body the app read, has
    nothing to wait for.
    """

    async def guarded(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        body_received = trio.Event()
        draining = False

        async def tracked_receive() -> ASGIReceiveEvent:
            # Quart-Trio keeps receiving until the response is sent, so the
            # rest of an unread body flows through here.
            message = await receive()
            if message["type"] != "http.request":
                body_received.set()  # a disconnect: no body will come
                return message
            more = message.get("more_body", False)
            if not more:
                body_received.set()
            if draining:
                # The answer is all sent: drop the rest rather than let Quart
                # buffer it (up to MAX_CONTENT_LENGTH, for a refused client).
                return {"type": "http.request", "body": b"", "more_body": more}
            return message

        async def send_after_body(message: ASGISendEvent) -> None:
            nonlocal draining
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                draining = True
                # Past the bound Hypercorn closes the connection: a client
                # that never sends its body cannot hold it open.
                with trio.move_on_after(drain_s):
                    await body_received.wait()
            await send(message)

        await app(scope, tracked_receive, send_after_body)

    return guarded


async def serve_app(
    app: QuartTrio,
    config: HyperConfig,
    connections: Connections,
    *,
    listeners: list[socket.socket] | None = None,
    has_room: Callable[[], bool] = lambda: True,
    drain_s: float = DRAIN_S,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``config.bind`` until ``shutdown_trigger`` returns.

    ``listeners`` are listening sockets to accept on instead (a worker's,
    shared with the other workers); ``has_room`` says whether this worker
    would admit one more session; ``drain_s`` bounds how long a response that
    ends before its request waits for the rest of the body
    (:func:`finish_request_first`). Reports the addresses served
    (``http://host:port``) through ``task_status``.
    """
    asgi: AppWrapper = wrap_app(
        finish_request_first(app, drain_s), config.wsgi_max_body_size, "asgi"
    )
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
                await _TCPServer(asgi, config, context, ConnectionState(state.copy()), ssl_typed)

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
