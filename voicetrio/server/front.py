"""Our own accept loop in front of Hypercorn's per-connection server, so that
a connection can be severed.

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

One more thing works around a Hypercorn bug (``docs/upstream-bugs.md``):
when a response ends before its request body has arrived (a 404, a refused
token, an upload refused before it is read), Hypercorn closes the connection
from the app's task just after telling the app ``http.disconnect``, on which
Quart-Trio cancels that task; the close is cancelled, the connection is left
open and never reused, and the client's next request on it gets no answer.
:func:`finish_request_first`, an ASGI wrapper, shields the response's last
send, inside which that close runs, so it happens; and it ends such a
response only once the body has arrived (bounded), so the connection is
usually kept alive after all, and a client still sending its body is not
reset before it reads the answer.

The rest is what Hypercorn's own Trio worker does, done here on public
ground: the app's ASGI lifespan (per the ASGI spec), a shutdown trigger,
then ``graceful_timeout`` for open connections. With a TLS context
(:mod:`voicetrio.server.tls`) each accepted connection is wrapped in a
``trio.SSLStream`` before Hypercorn gets it, as Hypercorn's own worker does;
the sever still acts on the TCP socket under it, which fails the TLS
stream's stuck send just the same. The Hypercorn internals
this still needs (its per-connection server and worker context) come from
:mod:`voicetrio.server.hypercorn_internals`, which lists them all and why, and
which a contract test checks against the installed Hypercorn.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final, Literal, cast

import trio
from hypercorn.config import Config as HyperConfig

# The ASGI types, as Hypercorn spells them (type checking only, but for
# ConnectionState, a NewType: see voicetrio.server.hypercorn_internals).
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    ConnectionState,
    LifespanScope,
    LifespanState,
    Scope,
)

from voicetrio.logs import log_event
from voicetrio.server.hypercorn_internals import TCPServer, WorkerContext

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
    """The open TCP connections of this worker, by peer address.

    With TLS, the socket stream under each connection's TLS stream: shutting
    the socket down is what frees a send stuck in either."""

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
            # Hypercorn's own close is skipped when it is cancelled midway,
            # and after a failed handshake. (The socket is all there is to
            # close: a TLS stream holds nothing more.)
            await trio.aclose_forcefully(stream)


class LifespanError(Exception):
    """The app failed to start up or shut down, or took too long to."""


class _Lifespan:
    """The app's ASGI lifespan, driven as the ASGI spec says: ``startup``
    before the first connection is accepted, ``shutdown`` after the last one
    has ended.

    The app's lifespan call runs in a task of its own until it is cancelled
    after shutdown: Quart-Trio keeps ``app.nursery`` (where the engine host
    runs) open inside it. As the spec asks, an app whose lifespan raises or
    returns before answering is served without lifespan events (the error is
    logged); an answer of ``failed``, or none within the timeout, raises
    :class:`LifespanError` (Hypercorn's own worker crashes the same way).
    """

    def __init__(self, app: ASGIFramework, state: LifespanState) -> None:
        self._app = app
        self._state = state
        # At most two messages go each way: startup, then shutdown.
        self._to_app, self._app_inbox = trio.open_memory_channel[ASGIReceiveEvent](2)
        self._app_outbox, self._from_app = trio.open_memory_channel[ASGISendEvent](2)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        scope: LifespanScope = {
            "type": "lifespan",
            "asgi": {"spec_version": "2.0", "version": "3.0"},
            "state": self._state,
        }
        task_status.started()
        try:
            await self._app(scope, self._app_inbox.receive, self._app_outbox.send)
        except Exception:
            log_event(None, "lifespan_error", level=logging.ERROR, exc_info=True)
        finally:
            # Whoever waits for an answer learns there will be none.
            self._app_inbox.close()
            self._app_outbox.close()

    async def startup(self, timeout_s: float) -> None:
        await self._phase("startup", {"type": "lifespan.startup"}, timeout_s)

    async def shutdown(self, timeout_s: float) -> None:
        await self._phase("shutdown", {"type": "lifespan.shutdown"}, timeout_s)

    async def _phase(
        self, phase: Literal["startup", "shutdown"], message: ASGIReceiveEvent, timeout_s: float
    ) -> None:
        try:
            await self._to_app.send(message)
            with trio.fail_after(timeout_s):
                answer = await self._from_app.receive()
        except (trio.BrokenResourceError, trio.EndOfChannel):
            return  # the app's lifespan is over: serve without it
        except trio.TooSlowError:
            raise LifespanError(f"the app's {phase} took longer than {timeout_s:g} s") from None
        if answer["type"] != f"lifespan.{phase}.complete":
            reason = cast("dict[str, Any]", answer).get("message") or answer["type"]
            raise LifespanError(f"the app's {phase} failed: {reason}")


class _AppWrapper:
    """An ASGI app, called the way Hypercorn's TCPServer calls apps
    (``hypercorn.typing.AppWrapper``): the two more arguments are for WSGI
    apps' threads, which an ASGI app has no use for."""

    def __init__(self, app: ASGIFramework) -> None:
        self._app = app

    async def __call__(
        self,
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        sync_spawn: Callable[..., Any],
        call_soon: Callable[..., Any],
    ) -> None:
        await self._app(scope, receive, send)


def finish_request_first(app: ASGIFramework, drain_s: float) -> ASGIFramework:
    """``app``, whose HTTP responses end only once their request body has been
    received, or ``drain_s`` after the app finished answering.

    Every byte of an early answer (404, 405, 401/403, an upload refused before
    it is read) is sent at once; only its end, after which Hypercorn either
    reuses the connection or closes it, waits for the client to finish
    sending. A request that has no body, or whose body the app read, has
    nothing to wait for.

    That end is sent shielded from cancellation: Hypercorn recycles or closes
    the connection inside it, after handing the app ``http.disconnect``, on
    which Quart-Trio cancels the task that is sending (docs/upstream-bugs.md).
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
                # Hypercorn writes to the socket under a shield of its own, so
                # this one makes no wait uncancellable that was not already: it
                # lets the close (or the recycle) that follows the write happen.
                with trio.CancelScope(shield=True):
                    await send(message)
                return
            await send(message)

        await app(scope, tracked_receive, send_after_body)

    return guarded


async def serve_app(
    app: ASGIFramework,
    config: HyperConfig,
    connections: Connections,
    *,
    listeners: list[socket.socket] | None = None,
    has_room: Callable[[], bool] = lambda: True,
    drain_s: float = DRAIN_S,
    tls: ssl.SSLContext | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``config.bind`` until ``shutdown_trigger`` returns.

    ``listeners`` are listening sockets to accept on instead (a worker's,
    shared with the other workers); ``has_room`` says whether this worker
    would admit one more session; ``drain_s`` bounds how long a response that
    ends before its request waits for the rest of the body
    (:func:`finish_request_first`); ``tls`` is the context to serve TLS with
    on every listener (:func:`voicetrio.server.tls.server_context`), None for
    plain TCP. Reports the addresses served (``http://host:port``, or
    ``https://``) through ``task_status``.
    """
    asgi = finish_request_first(app, drain_s)
    served = _AppWrapper(asgi)
    state: LifespanState = {}
    lifespan = _Lifespan(asgi, state)
    # No max_requests: a worker never retires itself.
    context = WorkerContext(None)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.run)
        await lifespan.startup(config.startup_timeout)
        async with trio.open_nursery() as server_nursery:
            if listeners is None:
                listeners = config.create_sockets().insecure_sockets
                for sock in listeners:
                    sock.listen(config.backlog)
            binds = [_url(sock, tls=tls is not None) for sock in listeners]

            async def serve_connection(stream: trio.SocketStream) -> None:
                if tls is not None:
                    # The handshake is Hypercorn's (bounded by its
                    # ssl_handshake_timeout); one that fails, a plain-HTTP
                    # client on the TLS port for one, ends this connection
                    # only. https_compatible: browsers close without
                    # close_notify. Connections keeps the socket under it.
                    secure = trio.SSLStream(stream, tls, server_side=True, https_compatible=True)
                    await TCPServer(served, config, context, ConnectionState(state.copy()), secure)
                    return
                # Annotated for SSL streams only; Hypercorn's own worker hands
                # it plain socket streams just the same.
                ssl_typed = cast("trio.SSLStream[trio.SocketStream]", stream)
                # Each connection its own copy of the lifespan state (ASGI):
                # TCPServer keeps the one it is given.
                await TCPServer(served, config, context, ConnectionState(state.copy()), ssl_typed)

            handle = partial(connections.handle, serve_connection)
            task_status.started(binds)
            try:
                async with trio.open_nursery() as accepting:
                    for sock in listeners:
                        accepting.start_soon(_accept, sock, handle, has_room, server_nursery)
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                # Kept-alive connections take no new request; the open ones
                # get graceful_timeout to finish, then are cancelled.
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.shutdown(config.shutdown_timeout)
        lifespan_nursery.cancel_scope.cancel()


def _url(sock: socket.socket, *, tls: bool = False) -> str:
    """What a listening socket serves, as Hypercorn's worker reports it."""
    address = sock.getsockname()
    scheme = "https" if tls else "http"
    if sock.family == socket.AF_INET:
        return f"{scheme}://{address[0]}:{address[1]}"
    if sock.family == socket.AF_INET6:
        return f"{scheme}://[{address[0]}]:{address[1]}"
    return f"{scheme}://unix:{address}"


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
