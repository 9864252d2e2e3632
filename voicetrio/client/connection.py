"""The client side of the wire protocol, over trio-websocket.

Tests, benchmarks and ``voicetrio client`` all talk to the server through this
module, so it speaks the protocol the way a careful client would: it stamps
every event with its arrival time, joins each ``pcm16`` announcement to the
binary frame that follows it, and turns the ways a connection ends into a small
set of exceptions instead of trio-websocket internals::

    ClientError
     +-- ConnectFailed         the WebSocket never opened (refused, DNS, timeout, HTTP)
     +-- ClientClosed          the connection is closed (.code, .reason)
     +-- StartRejected         the server answered ``start`` with an error (.event)
     +-- ServerProtocolError   the server sent a frame the protocol does not allow

:func:`stream_pcm` paces audio like a microphone would, from an absolute
schedule so that a slow send never pushes the frames after it later.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from voicetrio.wire import v1 as protocol
from voicetrio.wire.v1 import ErrorCode

DEFAULT_URL: Final = "ws://127.0.0.1:8000/ws"

# Base64 WAV chunks of long phrases outgrow trio-websocket's 1 MiB default.
_MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024

# A start answered with one of these is refused; any other event that arrives
# before the hello belongs to an earlier turn and is kept for next_event().
_START_REFUSALS: Final = frozenset({ErrorCode.BAD_MESSAGE, ErrorCode.UNSUPPORTED_SAMPLE_RATE})


class ClientError(Exception):
    """Base of every error this module raises on purpose."""


class ConnectFailed(ClientError):
    """The WebSocket could not be opened; ``str()`` is one line for a human."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(f"cannot connect to {url}: {problem}")
        self.url = url
        self.problem = problem


class ClientClosed(ClientError):
    """The connection is closed: by us, by the server, or by the network.

    ``code`` is the WebSocket close code (1006 when the TCP connection broke
    without a close frame); ``reason`` is the close frame's text, if any.
    """

    def __init__(self, code: int, reason: str | None) -> None:
        detail = f": {reason}" if reason else ""
        super().__init__(f"connection closed with code {code}{detail}")
        self.code = code
        self.reason = reason


class StartRejected(ClientError):
    """The server answered ``start`` with an ``error`` event instead of a hello."""

    def __init__(self, event: dict[str, Any], at_s: float = 0.0) -> None:
        super().__init__(f"start rejected: {event.get('code')}: {event.get('message')}")
        self.event = event
        self.at_s = at_s
        self.code = str(event.get("code"))
        self.reason: str | None = event.get("reason")


class ServerProtocolError(ClientError):
    """A server frame that is not a valid event where it arrived."""


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """One server event and when it arrived."""

    at_s: float  # seconds since the client connected, on trio's clock
    event: dict[str, Any]  # as decoded by protocol.parse_event
    audio: bytes | None = None  # the binary frame joined to a pcm16 tts_chunk

    @property
    def type(self) -> str:
        return str(self.event["type"])


class AudioSink(Protocol):
    """Anything :func:`stream_pcm` can feed; :class:`VoiceClient` is one."""

    async def send_audio(self, pcm: bytes) -> None: ...


class VoiceClient:
    """One session with the server, over an open WebSocket.

    Sending and receiving are independent, so one task may stream audio while
    another reads events. Only one task at a time may read events.
    """

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self.t0 = trio.current_time()
        # A pcm16 tts_chunk whose binary frame has not been read yet. Keeping it
        # here means a read cancelled between the two frames resumes correctly.
        self._announced: ReceivedEvent | None = None
        # Events read by start() while it waited for the hello.
        self._backlog: deque[ReceivedEvent] = deque()

    @property
    def websocket(self) -> WebSocketConnection:
        return self._ws

    @property
    def closed_code(self) -> int | None:
        """The close code once the connection is closed, else ``None``."""
        reason = self._ws.closed
        return None if reason is None else reason.code

    @property
    def closed_reason(self) -> str | None:
        reason = self._ws.closed
        return None if reason is None else reason.reason

    async def start(self, sample_rate: int = 16000, audio_format: str = "wav") -> dict[str, Any]:
        """Send ``start`` and return the server's ``protocol`` hello.

        Raises :class:`StartRejected` if the server answers with a
        ``BAD_MESSAGE``, ``UNSUPPORTED_SAMPLE_RATE`` or fatal error instead.
        Other events that arrive first (the tail of an earlier turn) are kept
        and returned by :meth:`next_event` in order.
        """
        # A server that refuses at once (SERVER_BUSY while full or draining)
        # may have closed before our start reached it: its refusal is still to
        # be read, and the read below raises ClientClosed if there is none.
        with contextlib.suppress(ClientClosed):
            await self._send_json(
                {"type": "start", "sample_rate": sample_rate, "audio_format": audio_format}
            )
        while True:
            received = await self._read_event()
            event = received.event
            if event["type"] == "protocol":
                return event
            if event["type"] == "error" and (
                event.get("code") in _START_REFUSALS or event.get("recoverable") is False
            ):
                raise StartRejected(event, received.at_s)
            self._backlog.append(received)

    async def send_audio(self, pcm: bytes) -> None:
        """Send one binary frame of 16-bit little-endian mono PCM."""
        await self.send_raw(pcm)

    async def stop(self) -> None:
        await self._send_json({"type": "stop"})

    async def cancel(self) -> None:
        await self._send_json({"type": "cancel"})

    async def send_raw(self, data: str | bytes) -> None:
        """Send any frame as is: a text frame for ``str``, binary for ``bytes``."""
        try:
            await self._ws.send_message(data)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def next_event(self) -> ReceivedEvent:
        """The next server event; raises :class:`ClientClosed` once none are left.

        Events the server sent before closing are still returned first.
        """
        if self._backlog:
            return self._backlog.popleft()
        return await self._read_event()

    def events(self) -> AsyncIterator[ReceivedEvent]:
        """Iterate over events until the connection closes."""
        return _EventStream(self)

    async def close(self, code: int = 1000) -> None:
        """Close the connection and wait for the server's close frame."""
        await self._ws.aclose(code)

    async def _send_json(self, message: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(message, separators=(",", ":")))

    async def _read_event(self) -> ReceivedEvent:
        if self._announced is None:
            message = await self._receive()
            at_s = trio.current_time() - self.t0
            if isinstance(message, bytes):
                raise ServerProtocolError(
                    f"unannounced binary frame of {len(message)} bytes from the server"
                )
            try:
                event = protocol.parse_event(message)
            except ValueError as exc:
                raise ServerProtocolError(str(exc)) from None
            received = ReceivedEvent(at_s, event)
            if not _announces_pcm(event):
                return received
            self._announced = received
        announced = self._announced
        expected = _announced_size(announced.event)
        message = await self._receive()
        self._announced = None
        if not isinstance(message, bytes):
            raise ServerProtocolError(
                f"tts_chunk seq={announced.event.get('seq')} announced a binary frame of "
                f"{expected} bytes, but the next frame is text: {message[:80]!r}"
            )
        if len(message) != expected:
            raise ServerProtocolError(
                f"tts_chunk seq={announced.event.get('seq')} announced {expected} bytes, "
                f"but the binary frame has {len(message)}"
            )
        return ReceivedEvent(announced.at_s, announced.event, message)

    async def _receive(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except ConnectionClosed as exc:
            raise _closed(exc) from None


class _EventStream:
    # A class rather than an async generator: nothing to finalize if the
    # caller stops iterating early.
    def __init__(self, client: VoiceClient) -> None:
        self._client = client

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> ReceivedEvent:
        try:
            return await self._client.next_event()
        except ClientClosed:
            raise StopAsyncIteration from None


def _announces_pcm(event: dict[str, Any]) -> bool:
    return event["type"] == "tts_chunk" and event.get("format") == "pcm16"


def _announced_size(event: dict[str, Any]) -> int:
    size = event.get("bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ServerProtocolError(f"pcm16 tts_chunk without a valid byte count: {event!r}")
    return size


def _closed(exc: ConnectionClosed) -> ClientClosed:
    reason = exc.reason
    if reason is None:  # trio-websocket closed before any close frame
        return ClientClosed(1006, None)
    return ClientClosed(reason.code, reason.reason)


@asynccontextmanager
async def connect(
    url: str = DEFAULT_URL,
    *,
    headers: list[tuple[str, str]] | None = None,
    connect_timeout_s: float = 10.0,
    disconnect_timeout_s: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[VoiceClient]:
    """Open a session with the server at ``url``; close it (1000) on exit.

    ``ssl_context`` verifies a ``wss://`` server (default: the system's
    trusted CAs; see :func:`tls_context` for a CA file of one's own).
    Raises :class:`ConnectFailed` if the WebSocket cannot be opened, a
    certificate that does not verify included.
    """
    extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers or []]
    try:
        opener = open_websocket_url(
            url,
            extra_headers=extra,
            max_message_size=_MAX_MESSAGE_BYTES,
            connect_timeout=connect_timeout_s,
            disconnect_timeout=disconnect_timeout_s,
            ssl_context=ssl_context,
        )
    except ValueError as exc:  # a URL that is not ws:// or wss://
        raise ConnectFailed(url, str(exc)) from None
    opened = False
    try:
        async with opener as ws:
            opened = True
            try:
                yield VoiceClient(ws)
            finally:
                # A bounded close of our own: trio-websocket's would raise
                # DisconnectionTimeout over whatever the body raised.
                with trio.move_on_after(disconnect_timeout_s):
                    await ws.aclose()
                # When the server closes first, trio-websocket's reader sees
                # the TCP close and stops without closing its own socket, and
                # aclose() is then a no-op: close the stream ourselves.
                await ws._stream.aclose()
    except (HandshakeError, OSError, trio.BrokenResourceError) as exc:
        # BrokenResourceError: the TLS handshake failed (trio wraps the
        # ssl.SSLError, a certificate that does not verify, in it).
        if opened:
            raise
        problem = _describe_connect_error(exc, connect_timeout_s)
        if isinstance(exc, ConnectionTimeout) and url.startswith("wss://"):
            # trio-websocket swallows a failed TLS handshake (a certificate
            # that does not verify, a plain-HTTP server) and waits out the
            # timeout, so the likely causes are named here.
            problem += " (a wss:// server whose certificate does not verify, or no TLS on that port?)"
        raise ConnectFailed(url, problem) from exc


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A client TLS context that trusts the CA certificates in ``ca_file``
    (PEM), or the system's when None. Raises :class:`ClientError` for a file
    that cannot be read or holds no certificate."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except OSError as exc:  # ssl.SSLError included: no certificate in the file
        problem = exc.reason if isinstance(exc, ssl.SSLError) else exc.strerror
        raise ClientError(f"CA file {ca_file}: {problem or exc}") from None


def _describe_connect_error(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, ConnectionTimeout):
        return f"no WebSocket handshake within {timeout_s:g}s"
    if isinstance(exc, ConnectionRejected):
        return f"the server rejected the WebSocket handshake with HTTP {exc.status_code}"
    # trio wraps the per-address failures in an OSError whose cause is a group.
    root: BaseException = exc.__cause__ or exc
    while True:
        if isinstance(root, BaseExceptionGroup) and root.exceptions:
            root = root.exceptions[0]
        elif not isinstance(root, ConnectionRefusedError) and root.__cause__ is not None:
            root = root.__cause__
        else:
            break
    if isinstance(root, ConnectionRefusedError):
        return "connection refused"
    if isinstance(root, ssl.SSLCertVerificationError):
        return f"the server's TLS certificate does not verify ({root.verify_message})"
    if isinstance(root, ssl.SSLError):
        return f"the TLS handshake failed ({root.reason or root})"
    if isinstance(root, trio.BrokenResourceError):
        # The connection ended during the TLS handshake: a plain-HTTP
        # server on a wss:// URL, or a proxy that hung up.
        return "the connection ended during the TLS handshake"
    if isinstance(root, OSError) and root.strerror:
        return root.strerror[:1].lower() + root.strerror[1:]
    return str(root) or type(root).__name__


def frame_samples(sample_rate: int, frame_ms: int) -> int:
    """Samples in one frame of ``frame_ms`` (at least one)."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if frame_ms <= 0:
        raise ValueError(f"frame_ms must be positive, got {frame_ms}")
    return max(1, sample_rate * frame_ms // 1000)


def split_frames(pcm: bytes, sample_rate: int, frame_ms: int) -> list[bytes]:
    """Cut 16-bit PCM into frames of ``frame_ms``; the last may be shorter."""
    if len(pcm) % 2:
        raise ValueError(f"PCM of {len(pcm)} bytes is not whole 16-bit samples")
    step = 2 * frame_samples(sample_rate, frame_ms)
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


async def stream_pcm(
    client: AudioSink,
    pcm: bytes,
    sample_rate: int,
    *,
    frame_ms: int = 100,
    realtime: bool = True,
) -> None:
    """Send ``pcm`` in frames of ``frame_ms``, at the pace it would be spoken.

    Frame ``k`` leaves at ``start + k * frame duration``, the first at once; a
    late send makes the next frames catch up instead of shifting them all.
    With ``realtime=False`` the frames go as fast as the socket takes them.
    """
    frames = split_frames(pcm, sample_rate, frame_ms)
    # The exact frame length, so audio time and wall time agree even when
    # frame_ms is not a whole number of samples.
    frame_s = frame_samples(sample_rate, frame_ms) / sample_rate
    start = trio.current_time()
    for k, frame in enumerate(frames):
        if realtime:
            await trio.sleep_until(start + k * frame_s)
        await client.send_audio(frame)


__all__ = [
    "DEFAULT_URL",
    "AudioSink",
    "ClientClosed",
    "ClientError",
    "ConnectFailed",
    "ReceivedEvent",
    "ServerProtocolError",
    "StartRejected",
    "VoiceClient",
    "connect",
    "frame_samples",
    "split_frames",
    "stream_pcm",
]
