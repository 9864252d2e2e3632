"""The HTTP and WebSocket front: Quart-Trio routes on Hypercorn's Trio worker.

It knows routes, static files and the process lifecycle; sessions know the
rest. :class:`Hub` owns every live session, so that shutdown can tell each of
them, give turns a grace period, and close them with 1001 before Hypercorn
stops. :func:`serve` fits ``nursery.start`` and reports the bound port, which
is how the tests run a real server on port 0.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.utils import UnexpectedMessageError
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response, jsonify, request, send_from_directory, websocket
from quart_trio import QuartTrio

from voicetrio import __version__, prom
from voicetrio.config import Config, share_of, usable_cores
from voicetrio.core import agent
from voicetrio.core.agent import AgentReport
from voicetrio.core.capacity import CapacityModel, Load, load, refusal
from voicetrio.core.events import Error
from voicetrio.core.inputs import Frame
from voicetrio.core.prompt import system_prompt
from voicetrio.engines.base import Engines, ModelLoadError
from voicetrio.engines.registry import EngineHost
from voicetrio.logs import log_event
from voicetrio.prom import PromObserver
from voicetrio.server import http_api
from voicetrio.server.access import AccessPolicy, Denied
from voicetrio.server.agent import serve_agent
from voicetrio.server.front import Connections, serve_app
from voicetrio.server.tls import server_context
from voicetrio.session.connection import Session, TransportClosed
from voicetrio.wire import realtime
from voicetrio.wire.adapter import WireAdapter
from voicetrio.wire.realtime.client_events import MAX_EVENT_BYTES
from voicetrio.wire.v1 import CloseCode, ErrorCode


def public_dir() -> Path:
    override = os.environ.get("STREAM_PUBLIC_DIR")
    if override:
        return Path(override).resolve()
    return (Path(__file__).resolve().parents[2] / "public").resolve()



class Hub:
    """Every live session of this process, and the shutdown sequence."""

    def __init__(self, config: Config, host: EngineHost | None = None, *, worker: int = 0) -> None:
        self.config = config
        self.worker = worker
        self.sessions: set[Session] = set()
        self.draining = False
        self.host = host or EngineHost(config)
        self.host.on_failure.append(self._model_failed)
        self.connections = Connections()
        # With several worker processes, each admits its share.
        self.max_sessions = share_of(config.effective_max_sessions, config.workers)
        # ... and has its share of the cores to spend on talkers.
        self.model = CapacityModel(
            cores=usable_cores() / config.workers, utilization=config.target_utilization
        )
        # With several workers, each writes its metrics where all can read them.
        self.observer = PromObserver(
            worker=worker, shared=prom.shared_dir() if config.workers > 1 else None
        )
        self.observer.watch(self.readings)

    @property
    def engines(self) -> Engines:
        return self.host.engines

    @property
    def capacity(self) -> int:
        """Talkers this process admits: what a turn is measured to cost the
        engines allows (capped by STREAM_MAX_SESSIONS when it is set), or,
        with nothing measured (the deterministic set), the configured count."""
        cost = self.host.turn_cost
        if cost is None:
            return self.max_sessions
        talkers = self.model.talkers(cost)
        return min(talkers, self.max_sessions) if self.config.max_sessions else talkers

    def figures(self) -> Load:
        return Load(
            sessions=len(self.sessions),
            capacity=self.capacity,
            decode_wait_s=self.engines.decoder.urgent_wait_s(),
            llm_wait_s=self.engines.replies.urgent_wait_s(),
        )

    def readings(self) -> prom.Readings:
        """This worker's live figures, for the metrics' gauges."""
        figures = self.figures()
        return prom.Readings(
            sessions=len(self.sessions),
            queue_depth=sum(len(s.outbox.queue) for s in self.sessions),
            queue_bytes=sum(s.outbox.queue.nbytes for s in self.sessions),
            capacity=figures.capacity,
            load=load(figures),
            ready=self.ready,
            decode_wait_s=figures.decode_wait_s,
            llm_wait_s=figures.llm_wait_s,
        )

    @property
    def sessions_total(self) -> int:
        """Sessions accepted so far: the Prometheus counter's figure (no second count)."""
        accepted = self.observer.registry.get_sample_value("voicetrio_sessions_accepted_total")
        return int(accepted or 0)

    @property
    def ready(self) -> bool:
        return not self.draining and self.host.ready and all(self.engines.readiness().values())

    def _model_failed(self, exc: ModelLoadError) -> None:
        for session in list(self.sessions):
            session.fail(Error(ErrorCode.MODEL_LOAD_FAIL, str(exc)), CloseCode.INTERNAL_ERROR)

    def agent_report(self) -> AgentReport:
        """What HAProxy's agent check hears now (voicetrio.core.agent)."""
        return agent.report(
            draining=self.draining,
            ready=self.ready,
            failed=self.host.failure is not None,
            load=load(self.figures()),
        )

    async def run_session(self, session: Session) -> None:
        if self.draining:
            # As a full server refuses, with no wait: behind a balancer the
            # retry goes to another backend (this one says drain to it).
            self.observer.rejected.labels(reason="draining").inc()
            log_event(None, "session_refused", reason="draining", sessions=len(self.sessions))
            busy = Error(
                ErrorCode.SERVER_BUSY,
                "the server is draining (shutting down); connect again",
                details=(("retry_after_s", 0),),
            )
            await session.refuse(busy, CloseCode.TRY_AGAIN_LATER, "server draining")
            return
        if self.host.failure is not None:
            await session.refuse(
                Error(ErrorCode.MODEL_LOAD_FAIL, str(self.host.failure)),
                CloseCode.INTERNAL_ERROR,
                "model failed to load",
            )
            return
        reason = refusal(self.figures())
        if reason is not None:
            # Refuse at once, with a hint, so a client (or a balancer) retries
            # elsewhere or later instead of waiting on a server that is full:
            # the talkers already admitted keep their latency.
            self.observer.rejected.labels(reason="busy").inc()
            log_event(None, "session_refused", reason=reason, sessions=len(self.sessions))
            busy = Error(
                ErrorCode.SERVER_BUSY,
                f"{reason}; try again later",
                details=(("retry_after_s", self.config.busy_retry_after_s),),
            )
            await session.refuse(busy, CloseCode.TRY_AGAIN_LATER, "server busy")
            return
        self.sessions.add(session)
        self.observer.sessions_total.inc()
        # At once, not at the next timer: a scrape on another worker counts it.
        self.observer.refresh()
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            self.observer.refresh()

    async def shutdown(self, grace_s: float, delay_s: float = 0.0) -> None:
        """Drain: refuse new sessions at once (the agent check says drain,
        /health 503); after ``delay_s``, in which the sessions go on as
        before while a balancer learns of it, tell every session, give turns
        in flight ``grace_s``, and close them."""
        self.draining = True
        if delay_s > 0:
            log_event(None, "draining", sessions=len(self.sessions), delay_s=delay_s)
            await trio.sleep(delay_s)
        deadline = trio.current_time() + grace_s
        log_event(None, "shutdown", sessions=len(self.sessions), grace_s=grace_s)
        async with trio.open_nursery() as nursery:
            for session in list(self.sessions):
                nursery.start_soon(session.shutdown, deadline)
        log_event(None, "shutdown_done")


#: How stale another worker's gauges (queue depths, load) may be in a
#: scrape; sessions opened or closed are written at once.
METRICS_REFRESH_S: Final = 1.0

# How a send or close finds the connection gone. Hypercorn raises
# UnexpectedMessageError for a send once it has seen the connection close
# (the peer left, or the session severed it) before the send got there.
_GONE: Final = (trio.BrokenResourceError, trio.ClosedResourceError, UnexpectedMessageError)


class QuartTransport:
    """Adapts Quart's websocket to the session's Transport protocol."""

    def __init__(self, ws: Any, connections: Connections) -> None:
        self._ws = ws
        self._connections = connections
        client = ws.scope.get("client")
        self._peer = None if client is None else (str(client[0]), int(client[1]))

    async def receive(self) -> Frame:
        data: Frame | None = await self._ws.receive()
        # Quart maps an empty binary frame to None.
        return b"" if data is None else data

    async def send(self, data: Frame) -> None:
        try:
            await self._ws.send(data)
        except _GONE as exc:
            raise TransportClosed(str(exc)) from exc

    async def close(self, code: int, reason: str = "") -> None:
        try:
            await self._ws.close(code, reason)
        except _GONE as exc:
            raise TransportClosed(str(exc)) from exc

    def abort(self) -> None:
        self._connections.sever(self._peer)


def create_app(config: Config, hub: Hub) -> QuartTrio:
    app = QuartTrio(__name__, static_folder=None)
    static_root = public_dir()

    @app.before_serving
    async def load_engines() -> None:
        # In the background: HTTP answers (and /health says "starting") while
        # models load.
        await app.nursery.start(hub.host.run)
        if hub.observer.shared is not None:
            app.nursery.start_soon(_refresh_metrics, hub)

    policy = AccessPolicy.from_settings(config.auth_tokens, config.allowed_origins)

    @app.before_request
    async def check_access() -> tuple[Response, int] | None:
        # Open: the page, its files and /health (load balancers probe it).
        if request.path == "/" or request.path.startswith("/static/") or request.path == "/health":
            return None
        denied = policy.check(dict(request.headers.items()))
        if denied is None:
            return None
        hub.observer.rejected.labels(reason=denied.code.lower()).inc()
        return jsonify({"error": {"code": denied.code, "message": denied.message}}), denied.status

    @app.get("/health")
    async def health() -> tuple[Response, int]:
        figures = hub.figures()
        cost = hub.host.turn_cost
        body: dict[str, Any] = {
            "status": _status(hub),
            "version": __version__,
            "mode": "lean" if config.lean else "full",
            "sessions": len(hub.sessions),
            "max_sessions": hub.max_sessions,
            # Talkers admitted at most, from the measured cost of a turn.
            "capacity": figures.capacity,
            # What the start-up probe turn measured: CPU per second of talk.
            "cpu_per_talker": None if cost is None else round(cost.cpu_per_second(hub.model.pause_s), 4),
            "queues": {
                "decode_wait_s": round(figures.decode_wait_s, 3),
                "llm_wait_s": round(figures.llm_wait_s, 3),
            },
            # For a balancer: the fullest of sessions/capacity and the queues; 1 is full.
            "load": round(load(figures), 3),
            "accepting": hub.ready and refusal(figures) is None,
            "sessions_total": hub.sessions_total,
            # With several workers, this answer is one worker's.
            "worker": hub.worker,
            "workers": config.workers,
            "engines": {"set": hub.engines.name, "ready": hub.engines.readiness()},
        }
        if not hub.host.loaded.is_set():
            # While engines load (and retry): how far along, and how far it may go.
            body["load_attempt"] = hub.host.load_attempt
            body["load_attempts"] = hub.host.retry.attempts
            body["loading"] = hub.host.loading
        return jsonify(body), 200 if hub.ready else 503

    @app.get("/api/stream_config")
    async def stream_config() -> Response:
        return jsonify(config.public_dict())

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(hub.observer.exposition(), content_type=CONTENT_TYPE_LATEST)

    @app.get("/")
    async def index() -> Response:
        return await send_from_directory(static_root, "index.html")

    @app.get("/static/<path:filename>")
    async def static_file(filename: str) -> Response:
        # send_from_directory refuses any path that leaves static_root (404).
        return await send_from_directory(static_root, filename)

    def refuse(denied: Denied) -> tuple[Response, int]:
        # Refused before the handshake completes: no session, no work.
        hub.observer.rejected.labels(reason=denied.code.lower()).inc()
        log_event(None, "session_refused", reason=denied.code)
        return jsonify({"error": {"code": denied.code, "message": denied.message}}), denied.status

    async def run_session(adapter: WireAdapter | None = None, lean: bool | None = None) -> None:
        ws: Any = websocket
        session = Session(
            QuartTransport(ws._get_current_object(), hub.connections),
            config,
            hub.engines,
            observer=hub.observer,
            adapter=adapter,
            lean=lean,
        )
        await hub.run_session(session)

    async def ws_handler() -> Response | tuple[Response, int] | None:
        denied = policy.check(
            dict(websocket.headers.items()), websocket.args.to_dict(), websocket=True
        )
        if denied is not None:
            return refuse(denied)
        await websocket.accept()
        await run_session()
        return None

    async def realtime_handler() -> Response | tuple[Response, int] | None:
        # The OpenAI Realtime API: the same admission, tokens (also the
        # browser's subprotocol token) and origins; another adapter.
        hello = realtime.read(dict(websocket.headers.items()), websocket.args.to_dict())
        if config.lean:
            hello = dataclasses.replace(hello, kind="transcription")
        denied = policy.check(hello.headers, websocket.args.to_dict(), websocket=True)
        if denied is not None:
            return refuse(denied)
        await websocket.accept(subprotocol=hello.subprotocol)
        adapter = realtime.RealtimeAdapter(
            hello,
            token=uuid.uuid4().hex[:16],
            silence_ms=config.vad_silence_ms,
            instructions=system_prompt(config.system_prompt),
            asr_model=config.model_whisper if config.engines == "real" else config.engines,
            voice=config.tts_voice or "default",
        )
        await run_session(adapter, lean=hello.kind == "transcription")
        return None

    http_api.register(app, config, hub.host)
    app.websocket("/ws")(ws_handler)
    app.websocket("/ws2", endpoint="ws2")(ws_handler)
    app.websocket("/v1/realtime", endpoint="realtime")(realtime_handler)
    return app


async def _refresh_metrics(hub: Hub) -> None:
    """Keep this worker's gauges fresh for scrapes that another worker
    answers (its own answers refresh them anyway)."""
    while True:
        await trio.sleep(METRICS_REFRESH_S)
        hub.observer.refresh()


def _status(hub: Hub) -> str:
    if hub.draining:
        return "draining"
    if hub.host.failure is not None:
        return "failed"
    return "ok" if hub.ready else "starting"


def hypercorn_config(config: Config) -> HyperConfig:
    hc = HyperConfig()
    hc.bind = [f"{config.host}:{config.port}"]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = 2.0
    # Leave room above our own limits so an oversized frame gets our clear
    # error rather than Hypercorn's bare close 1009: the v1 frame limits, and
    # the Realtime API's 15 MiB per event (one append of a long recording).
    hc.websocket_max_message_size = max(
        4 * max(config.max_frame_bytes, config.max_text_bytes), MAX_EVENT_BYTES + 1024 * 1024
    )
    return hc


@dataclass(frozen=True, slots=True)
class Running:
    """What :func:`serve` reports once it listens."""

    port: int
    hub: Hub
    shutdown: trio.Event
    #: Served over TLS (STREAM_TLS_CERT): https:// and wss://.
    tls: bool = False
    #: The port answering HAProxy's agent check, if any.
    agent_port: int | None = None

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}/ws"


async def serve(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    host: EngineHost | None = None,
    listener: socket.socket | None = None,
    worker: int = 0,
    agent_listener: socket.socket | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set; then drain the sessions and return.

    If an engine fails every attempt to load, the sessions are told
    (``MODEL_LOAD_FAIL``), the server shuts down as if ``shutdown`` had been
    set (and sets it), and serve() raises that
    :class:`~voicetrio.engines.registry.EngineLoadFailed`: a server that
    cannot serve ends, so that whatever runs it can start it again.

    Reports a :class:`Running` (bound port, hub) through ``task_status``.
    ``host`` replaces the engine host built from the config (another engine
    set, or a loader of one's own). ``listener`` is a listening socket to
    accept on instead of binding ``config.host:config.port`` (a worker's,
    shared with the others); ``worker`` is its index. ``agent_listener``,
    a listening socket, answers HAProxy's agent check until serve() returns.
    """
    # First: a bad certificate or key is a ConfigError before anything starts.
    tls = server_context(config)
    hub = Hub(config, host, worker=worker)
    app = create_app(config, hub)
    stop = trio.Event() if shutdown is None else shutdown
    # After Hub's own hook, which has told the sessions why.
    hub.host.on_failure.append(lambda _: stop.set())

    async def trigger() -> None:
        await stop.wait()
        # No delay for a server whose engines failed: it has nothing to finish.
        delay_s = config.drain_delay_s if hub.host.failure is None else 0.0
        await hub.shutdown(config.shutdown_grace_s, delay_s)

    def has_room() -> bool:
        # Alone, a full server takes a connection at once, to refuse it.
        return config.workers == 1 or refusal(hub.figures()) is None

    async def front(task_status: trio.TaskStatus[list[str]]) -> None:
        await serve_app(
            app,
            hypercorn_config(config),
            hub.connections,
            listeners=None if listener is None else [listener],
            has_room=has_room,
            tls=tls,
            shutdown_trigger=trigger,
            task_status=task_status,
        )
        # Served and drained: the agent's last word (drain) has been said.
        nursery.cancel_scope.cancel()

    async def agent_reply() -> AgentReport:
        return hub.agent_report()

    async with trio.open_nursery() as nursery:
        agent_port: int | None = None
        if agent_listener is not None:
            agent_port = await nursery.start(serve_agent, agent_listener, agent_reply)
        binds: list[str] = await nursery.start(front)
        port = int(binds[0].rsplit(":", 1)[1])
        scheme = "https" if tls is not None else "http"
        log_event(
            None,
            "listening",
            url=f"{scheme}://{config.host}:{port}",
            engines=config.engines,
            agent_port=agent_port,
        )
        task_status.started(Running(port, hub, stop, tls=tls is not None, agent_port=agent_port))
    if hub.host.failure is not None:
        raise hub.host.failure
