"""Every part of Hypercorn voicetrio uses beyond its documented API, in one place.

Hypercorn documents one way to run it from code: ``hypercorn.trio.serve(app,
config, shutdown_trigger=...)`` with the options of
:class:`hypercorn.config.Config` (its "API usage" guide). That is not enough
for :mod:`voicetrio.server.front`, which must keep each connection's socket so that
a session can sever a connection whose send is stuck: Hypercorn writes under
a shielded cancel scope, its documented backpressure is "``await send()``
blocks until the client reads or the connection closes", and it has no send
or write timeout, no hook on accept and no way to reach a connection's
socket from the app. So :mod:`voicetrio.server.front` accepts connections itself
and hands each to Hypercorn's per-connection server. Everything else it
needs it does itself, on public ground: the ASGI lifespan (the ASGI spec),
the shutdown trigger, the bind addresses, the workaround for the hang after
an early answer (an ASGI wrapper, ``front.finish_request_first``).

What remains is :data:`HYPERCORN_INTERNALS`, checked name by name (that each
exists, takes the parameters we pass and has the attributes we use) by
``tests/test_hypercorn_contract.py``, so an upgraded Hypercorn that changes
one fails there, naming it, rather than in a connection. Import those names
from this module, not from Hypercorn, so that this list stays the whole list.

Beyond names, voicetrio relies on some of Hypercorn's *behaviour*, which only
behaviour tests can check:

* ``TCPServer`` writes with ``send_all`` under a shielded scope, and a send
  that fails (the socket shut down under it) ends the connection cleanly:
  the sever (``tests/reliability/test_slow_reader.py``; through TLS,
  ``tests/test_tls.py``).
* Handed a ``trio.SSLStream``, ``TCPServer`` does the TLS handshake itself
  (bounded by ``ssl_handshake_timeout``) and returns at once when it fails;
  a stream without ``do_handshake`` is served as plain TCP
  (``tests/test_tls.py``).
* It closes an HTTP/1.1 connection whose response ended before its request
  inside the app's last ``send``, just after handing the app
  ``http.disconnect``: ``front.finish_request_first`` shields that send
  (``tests/test_keepalive.py``, ``docs/upstream-bugs.md``).
* It stores the lifespan state it is given without copying it (0.18; 0.17
  copied): ``front`` hands each connection a copy of its own.
* An ASGI scope's ``client`` is the socket's peer as ``(host, port)``, which
  ``front.Connections`` keys connections by (the sever tests again).

``pyproject.toml`` pins Hypercorn's minor version (``<0.19``) because of all
this: lift the pin only after these tests pass on the new version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import UnexpectedMessageError


@dataclass(frozen=True, slots=True)
class Internal:
    """One Hypercorn name we use, and what about it we rely on."""

    module: str
    #: The name in ``module``; dotted for an attribute of a class in it.
    name: str
    #: Who uses it, for what.
    used_for: str
    #: The parameters we pass, in order (for a class, its constructor's after
    #: ``self``; with ``call``, that method's).
    parameters: tuple[str, ...] = ()
    #: Check the parameters of this method instead of the object's own.
    call: str = ""
    #: Attributes we use on the object itself (a class's methods).
    attributes: tuple[str, ...] = ()
    #: Attributes we use on what the class makes (set in its constructor).
    instance_attributes: tuple[str, ...] = ()
    #: Something we catch: it must stay an Exception.
    exception: bool = False

    @property
    def path(self) -> str:
        return f"{self.module}.{self.name}"


HYPERCORN_INTERNALS: Final = (
    Internal(
        "hypercorn.trio.tcp_server",
        "TCPServer",
        "voicetrio.server.front: serves one HTTP/1.1, h2c or WebSocket connection on a "
        "stream we accepted (and keep, to sever it), or on the TLS stream over it; "
        "awaited until the connection ends",
        parameters=("app", "config", "context", "state", "stream"),
        attributes=("__await__",),
    ),
    Internal(
        "hypercorn.trio.worker_context",
        "WorkerContext",
        "voicetrio.server.front: the worker state every connection shares; "
        "`await context.terminated.set()` at shutdown stops kept-alive connections "
        "from taking new requests",
        parameters=("max_requests",),
        instance_attributes=("terminated",),
    ),
    Internal(
        "hypercorn.typing",
        "AppWrapper",
        "voicetrio.server.front: how TCPServer calls the app, "
        "app(scope, receive, send, sync_spawn, call_soon); front adapts the ASGI app to it",
        parameters=("scope", "receive", "send", "sync_spawn", "call_soon"),
        call="__call__",
    ),
    Internal(
        "hypercorn.typing",
        "ConnectionState",
        "voicetrio.server.front: the type of the per-connection copy of the lifespan state "
        "given to TCPServer",
    ),
    Internal(
        "hypercorn.config",
        "Config.create_sockets",
        "voicetrio.server.front: binds config.bind when no listening socket is given "
        "(a public method, but not in Hypercorn's documentation)",
    ),
    Internal(
        "hypercorn.config",
        "Sockets",
        "voicetrio.server.front: what create_sockets returns; we listen on its insecure_sockets",
        instance_attributes=("insecure_sockets",),
    ),
    Internal(
        "hypercorn.utils",
        "UnexpectedMessageError",
        "voicetrio.server.app: what a WebSocket send or close raises once Hypercorn has "
        "seen the connection close; caught as 'the connection is gone'",
        exception=True,
    ),
)

#: Documented ``hypercorn.config.Config`` options voicetrio sets or reads.
#: Public, but setting one that a new version renamed would pass unnoticed
#: (a plain attribute on the object), so the contract test checks them too.
HYPERCORN_CONFIG_OPTIONS: Final = (
    "accesslog",
    "backlog",
    "bind",
    "errorlog",
    "graceful_timeout",
    "shutdown_timeout",
    "startup_timeout",
    "websocket_max_message_size",
)

__all__ = [
    "HYPERCORN_CONFIG_OPTIONS",
    "HYPERCORN_INTERNALS",
    "Internal",
    "TCPServer",
    "UnexpectedMessageError",
    "WorkerContext",
]
