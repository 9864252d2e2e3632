"""Speech recognition by another server, over the OpenAI Realtime
transcription session (``/v1/realtime?intent=transcription``).

:class:`RealtimeAsr` is an :class:`~voicetrio.engines.base.AsrEngine` that
runs no model: each decode the ASR stage asks for (a partial on its cadence,
the speculative final in the silence window, the final) is one request to
the remote (another voicetrio in transcription mode, speaches, vLLM): the
utterance's audio so far, committed, answered by the completed transcript.
The session keeps its own VAD, endpointing, partial cadence and speculative
finals, so it behaves as with local Whisper; only the decode moves.

Connections: a pool, shared by every session of the process. A decode
leases an idle connection (or opens one: handshake, ``session.update``,
``session.updated``), and gives it back when its answer came. The decoder's
queue bounds the decodes in flight (``STREAM_ASR_SLOTS``, finals ahead of
partials). A decode that is cancelled once its commit is sent (a partial
moot at the end of the utterance, a speculative final retracted when speech
resumed: the commonest end of a decode) leaves its connection to be
*drained*: the moot answer is read in the background and the connection
goes back to the pool, so the remote sees a steady set of sessions rather
than one new session to admit per cancelled decode. A decode that fails or
times out closes its connection (the remote drops the work; no stale
answer can reach the next decode). A remote that refuses a new connection
as full (a voicetrio remote admits each connection as a talker, up to its
measured capacity) makes the front share the connections it holds for
:data:`BUSY_HOLD_S` before it asks again; refused with none held, the
decode fails. A failed connect marks the engine not ready (``/health``
says so, so a balancer stops sending sessions) and a keeper task tries
again, with doubling pauses, until the remote answers; decodes asked
meanwhile each try too, and fail with ASR_FAIL as a local decode that
failed would.

Every failure is an :class:`~voicetrio.engines.base.AsrError` (ASR_FAIL):
refused (HTTP status, connection refused), dropped (closed mid-decode), an
``error`` or ``.failed`` event, a frame that is not the API's, and a decode
that takes longer than ``timeout_s`` (``STREAM_ASR_TIMEOUT_S``) from the
moment it holds its slot. The session reports it exactly as a failed local
decode (``error`` ASR_FAIL for a final, a logged ``partial_fail`` for a
partial) and goes on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from typing import Final
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from voicetrio.core import remote_transcription as rt
from voicetrio.core.resample import resample
from voicetrio.core.work_queue import Lane
from voicetrio.engines.base import ENGINE_SAMPLE_RATE, AsrError
from voicetrio.engines.scheduler import Scheduler, Slot
from voicetrio.logs import log_event

#: Decodes in flight at once to a remote service (its default slots).
REMOTE_ASR_SLOTS: Final = 16
#: The keeper's pauses between connect attempts while the remote is down.
RECONNECT_FIRST_S: Final = 0.5
RECONNECT_MAX_S: Final = 10.0
#: After a remote refuses a connection as busy (its admission counts each
#: connection as a talker), the front opens no more than it has for this
#: long, and shares those.
BUSY_HOLD_S: Final = 5.0
#: A close handshake the remote does not answer is abandoned after this.
CLOSE_TIMEOUT_S: Final = 2.0
#: Server events are small (the largest is a transcript); the API's limit
#: is far above anything a transcription session sends.
MAX_EVENT_BYTES: Final = 1024 * 1024

#: The most audio one commit carries (25 s of 24 kHz pcm16): a server ends a
#: turn by itself at its longest utterance (voicetrio's
#: ``STREAM_MAX_UTTERANCE_MS``, 30 s by default), which would answer one
#: commit twice. A session's utterance is never longer (the same limit here);
#: a long upload is sent in commits of this size, its texts joined.
COMMIT_MAX_BYTES: Final = 25 * rt.REMOTE_RATE * 2

_Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]


class _RemoteBusy(AsrError):
    """The remote refused a new connection as full (``server_busy``, HTTP 429/503)."""


class _Remote:
    """One connection: one decode at a time, numbered for the event ids.

    The engine owns its TCP stream: trio-websocket leaves a client's stream
    open when the server closes the WebSocket (a client is to wait for the
    server's TCP close), so the engine closes it whatever happened."""

    def __init__(self, ws: WebSocketConnection, stream: _Stream) -> None:
        self.ws = ws
        self.stream = stream
        self.decodes = 0
        #: A commit is sent whole and its answer not read yet.
        self.awaiting = False

    async def close(self) -> None:
        try:
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await self.ws.aclose()
        finally:
            # Closes the socket at once, even when cancelled.
            await self.stream.aclose()

    @property
    def open(self) -> bool:
        return self.ws.closed is None

    async def configure(self, model: str, language: str | None) -> None:
        await self.ws.send_message(rt.session_update(model, language))
        while not rt.configured(await self.ws.get_message()):
            pass

    async def decode(self, pcm24k: bytes) -> str:
        """The text of ``pcm24k``: one commit per :data:`COMMIT_MAX_BYTES`
        of it (an upload may be longer than a turn), joined."""
        texts = []
        for offset in range(0, len(pcm24k), COMMIT_MAX_BYTES):
            texts.append(await self._commit(pcm24k[offset : offset + COMMIT_MAX_BYTES]))
        return " ".join(t.strip() for t in texts if t.strip())

    async def _commit(self, pcm24k: bytes) -> str:
        self.decodes += 1
        for frame in rt.request_frames(pcm24k, self.decodes):
            await self.ws.send_message(frame)
        self.awaiting = True
        exchange = rt.Exchange()
        while True:
            text = exchange.feed(await self.ws.get_message())
            if text is not None:
                self.awaiting = False
                return text

    async def finish(self) -> None:
        """Read the answer of a commit whose caller left (its text is moot),
        so that the connection is clean again. Raises ConnectionClosed,
        RemoteUnreadable."""
        exchange = rt.Exchange()
        with contextlib.suppress(rt.RemoteRefused):  # an answer too
            while exchange.feed(await self.ws.get_message()) is None:
                pass
        self.awaiting = False


class RealtimeAsr:
    """The :class:`~voicetrio.engines.base.AsrEngine` of a remote server.

    ``url`` is the server's API root (``http://host:8000/v1``) or its
    ``/v1/realtime`` URL (:func:`~voicetrio.core.remote_transcription.realtime_url`);
    ``api_key`` goes as ``Authorization: Bearer``; ``model`` is the
    transcription model named in the session (the remote's own choice on
    voicetrio; speaches and vLLM serve the model named). :meth:`run` must
    be running (in a nursery that lives as long as the engine) for decodes
    to be served.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str = "",
        model: str = "whisper-1",
        language: str | None = None,
        timeout_s: float = 10.0,
        scheduler: Scheduler | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.url = rt.realtime_url(url, model)
        self.model = model
        self.language = language
        self.timeout_s = timeout_s
        self.scheduler = scheduler if scheduler is not None else Scheduler(REMOTE_ASR_SLOTS)
        self._headers = [(b"authorization", f"Bearer {api_key}".encode())] if api_key else []
        parts = urlsplit(self.url)
        self._tls = ssl.create_default_context() if parts.scheme == "wss" else None
        self._hostname = parts.hostname or ""
        self._port = parts.port or (443 if self._tls is not None else 80)
        self._host = parts.netloc.rpartition("@")[2]
        self._resource = f"{parts.path}?{parts.query}"
        #: Whether the remote answered the latest connect attempt.
        self.ready = False
        self.decodes = 0
        self.last_decode_s = 0.0
        #: Connections opened in all (each costs the remote a session).
        self.connects = 0
        #: Connections the remote refused as full; decodes whose moot
        #: answer was read so that their connection could be reused.
        self.busy_refusals = 0
        self.drained = 0
        self._idle: list[_Remote] = []
        #: Connections open (idle, in use or being drained).
        self._live = 0
        #: Set (and replaced) when a connection goes idle or closes.
        self._freed = trio.Event()
        #: (connections, until): the most to hold after a busy refusal.
        self._busy_cap: tuple[int, float] | None = None
        self._nursery: trio.Nursery | None = None
        self._running = trio.Event()
        self._down = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the connections (their reader tasks live here) and keep one
        connection warm: at start, and again after any connect fails, until
        the remote answers. Reports started at once; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._running.set()
            task_status.started()
            # Each connection's task closes its socket when cancelled.
            await self._keep()

    async def _keep(self) -> None:
        pause = RECONNECT_FIRST_S
        while True:
            try:
                with trio.fail_after(self.timeout_s):
                    remote = await self._connect()
            except (AsrError, trio.TooSlowError) as exc:
                log_event(
                    None, "asr_remote_down", level=logging.WARNING, url=self.url, error=str(exc)
                )
                await trio.sleep(pause)
                pause = min(RECONNECT_MAX_S, pause * 2)
                continue
            self._idle.append(remote)
            pause = RECONNECT_FIRST_S
            self._down = trio.Event()
            await self._down.wait()

    async def _connect(self) -> _Remote:
        """A new connection, configured; marks the engine ready or not."""
        assert self._nursery is not None
        try:
            remote: _Remote = await self._nursery.start(self._hold)
        except _RemoteBusy:
            raise  # up, and full: not a reason to say not ready
        except AsrError:
            self._set_down()
            raise
        self.connects += 1
        if not self.ready:
            log_event(None, "asr_remote_up", url=self.url)
        self.ready = True
        return remote

    async def _hold(self, *, task_status: trio.TaskStatus[_Remote]) -> None:
        """Open one connection, report it once its session is configured, and
        keep its reader task until it closes.

        The reader runs in a nursery of this connection's own: trio-websocket
        raises a refused handshake (HTTP 401) from its reader task, which must
        reach the caller of :meth:`_connect`, not the engine's nursery. Raises
        AsrError before reporting; after, a connection's end is the end of
        this task, whatever ended it.
        """
        stream = await self._open_stream()
        started = False
        try:
            async with trio.open_nursery() as reader:
                ws = await wrap_client_stream(
                    reader,
                    stream,
                    self._host,
                    self._resource,
                    extra_headers=self._headers,
                    max_message_size=MAX_EVENT_BYTES,
                )
                remote = _Remote(ws, stream)
                await remote.configure(self.model, self.language)
                self._live += 1
                task_status.started(remote)
                started = True
        except Exception as exc:
            if not started:
                leaf = _leaf(exc)
                busy = (isinstance(leaf, rt.RemoteRefused) and leaf.code == "server_busy") or (
                    isinstance(leaf, ConnectionRejected) and leaf.status_code in (429, 503)
                )
                raise (_RemoteBusy if busy else AsrError)(self._connect_failure(exc)) from None
            # The connection's end shows to its user as ConnectionClosed.
            log_event(None, "asr_remote_connection_end", level=logging.DEBUG, error=repr(exc))
        finally:
            if started:
                self._live -= 1
                self._free()
            # Closes the socket at once, even when cancelled.
            await stream.aclose()

    def _connect_failure(self, exc: BaseException) -> str:
        """What went wrong opening a session, for the AsrError."""
        leaf = _leaf(exc)
        if isinstance(leaf, ConnectionRejected):
            return f"the remote ASR at {self.url} refused the connection: HTTP {leaf.status_code}"
        if isinstance(leaf, HandshakeError | ConnectionClosed | rt.RemoteTranscriptionError):
            return f"the remote ASR at {self.url} did not open a session: {_reason(leaf)}"
        return f"the remote ASR at {self.url} failed: {type(leaf).__name__}: {leaf}"

    def _set_down(self) -> None:
        self.ready = False
        self._down.set()

    async def _open_stream(self) -> _Stream:
        try:
            if self._tls is None:
                return await trio.open_tcp_stream(self._hostname, self._port)
            return await trio.open_ssl_over_tcp_stream(
                self._hostname, self._port, ssl_context=self._tls
            )
        except OSError as exc:
            raise AsrError(
                f"cannot connect to the remote ASR at {self.url}: {type(exc).__name__}: {exc}"
            ) from None

    def _discard(self, remote: _Remote) -> None:
        """Close ``remote`` without waiting for it (the caller may be cancelled)."""
        if self._nursery is not None:
            self._nursery.start_soon(remote.close)

    def _free(self) -> None:
        self._freed.set()
        self._freed = trio.Event()

    def _give_back(self, remote: _Remote) -> None:
        self._idle.append(remote)
        self._free()

    def _cap(self) -> float:
        """The most connections to hold now: any number, unless the remote
        said it is full a moment ago."""
        if self._busy_cap is None or trio.current_time() >= self._busy_cap[1]:
            self._busy_cap = None
            return math.inf
        return self._busy_cap[0]

    async def _lease(self) -> _Remote:
        """An idle connection, a new one, or, when the remote is full, the
        next of ours to come free."""
        await self._running.wait()
        while True:
            while self._idle:
                remote = self._idle.pop()
                if remote.open:
                    return remote
                self._discard(remote)  # closed by the remote while idle
            if self._live < self._cap():
                try:
                    return await self._connect()
                except _RemoteBusy as exc:
                    self.busy_refusals += 1
                    if self._live == 0:
                        raise
                    self._busy_cap = (self._live, trio.current_time() + BUSY_HOLD_S)
                    log_event(
                        None,
                        "asr_remote_busy",
                        level=logging.WARNING,
                        connections=self._live,
                        error=str(exc),
                    )
            await self._freed.wait()

    async def _drain(self, remote: _Remote) -> None:
        """Read the moot answer of a cancelled decode, then give the
        connection back (it stays one session on the remote, rather than a
        new one to admit), or close it."""
        clean = False
        with trio.move_on_after(self.timeout_s):
            try:
                await remote.finish()
                clean = remote.open
            except (ConnectionClosed, rt.RemoteUnreadable):
                pass
        if clean:
            self.drained += 1
            self._give_back(remote)
        else:
            await remote.close()

    async def transcribe(self, pcm: bytes, *, final: bool, slot: Slot | None = None) -> str:
        if slot is None:
            slot = self.scheduler.slot(Lane.URGENT if final else Lane.TENTATIVE)
        if len(pcm) % 2:
            slot.close()
            raise AsrError(f"{len(pcm)} bytes of PCM is not whole 16-bit samples")
        if not pcm:
            slot.close()  # a slot the caller reserved goes back unused
            return ""
        async with slot:
            started = trio.current_time()
            remote: _Remote | None = None
            answered = cancelled = False
            try:
                with trio.fail_after(self.timeout_s):
                    remote = await self._lease()
                    text = await remote.decode(resample(pcm, ENGINE_SAMPLE_RATE, rt.REMOTE_RATE))
                    answered = True
            except trio.TooSlowError:
                raise AsrError(
                    f"the remote ASR did not answer within {self.timeout_s:g} s "
                    "(STREAM_ASR_TIMEOUT_S)"
                ) from None
            except ConnectionClosed as exc:
                # The remote may be going down: the keeper finds out (and
                # says not ready) rather than this one connection.
                self._down.set()
                raise AsrError(f"the remote ASR closed the connection: {_reason(exc)}") from None
            except rt.RemoteRefused as exc:
                raise AsrError(f"the remote ASR failed: {exc}") from None
            except rt.RemoteUnreadable as exc:
                raise AsrError(f"the remote ASR's answer is unreadable: {exc}") from None
            except trio.Cancelled:
                cancelled = True
                raise
            finally:
                if remote is not None:
                    # Only a connection whose decode was answered is clean:
                    # any other may yet bring an answer meant for this decode.
                    if answered and remote.open:
                        self._give_back(remote)
                    elif cancelled and remote.open and remote.awaiting and self._nursery:
                        # A partial made moot, a speculative final retracted:
                        # the commonest end of a decode, and no fault.
                        self._nursery.start_soon(self._drain, remote)
                    else:
                        self._discard(remote)
            self.decodes += 1
            self.last_decode_s = trio.current_time() - started
            return text.strip()


def _leaf(exc: BaseException) -> BaseException:
    """The first exception in ``exc``, however deeply nurseries grouped it."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed) and exc.reason is not None:
        reason = exc.reason
        return f"code {reason.code}" + (f" ({reason.reason})" if reason.reason else "")
    return str(exc) or type(exc).__name__


__all__ = ["COMMIT_MAX_BYTES", "REMOTE_ASR_SLOTS", "RealtimeAsr"]
