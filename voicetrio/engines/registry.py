"""Builds the engine set a server runs on and keeps it alive.

:class:`EngineHost` hands out an :class:`Engines` at once, so the server can
answer HTTP (and ``/health`` can say "not ready") while models load in the
background. Engines that need loading sit behind a gate that waits for the
load, so a session that starts talking early is served as soon as the model
is in, and hears ``MODEL_LOAD_FAIL`` if it never will be.

Each engine loads on its own and, if it fails, is tried again by itself (a
TTS that failed does not reload Whisper), with doubling pauses
(:class:`~voicetrio.engines.load_retry.LoadRetry`); what a failed attempt
started (the TTS thread, the llama.cpp process) is stopped before the next.
Only when an engine has used up its attempts does the host fail, for good:
it sets :attr:`EngineHost.failure` to an :class:`EngineLoadFailed` and calls
its hooks, and the server shuts down rather than sit there refusing sessions.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from voicetrio.config import Config
from voicetrio.core.builtin_tools import NoTimers, builtin_toolbox
from voicetrio.core.capacity import TurnCost
from voicetrio.core.prompt import system_prompt
from voicetrio.engines.asr.realtime_remote import REMOTE_ASR_SLOTS, RealtimeAsr
from voicetrio.engines.base import (
    AsrEngine,
    ChatMessage,
    EngineError,
    Engines,
    FileAsrEngine,
    FileRequest,
    FileTranscript,
    LlmEngine,
    LlmError,
    ModelLoadError,
    SpeechAudio,
    TextTurnJudge,
    TtsEngine,
    TtsError,
    TurnJudge,
)
from voicetrio.engines.llm.tooling import ToolCallingLlm, embedded_tools, open_reply, tools_setting
from voicetrio.engines.load_retry import LoadRetry
from voicetrio.engines.probe import cpu_meter, probe_turn
from voicetrio.engines.scheduler import Scheduler, Slot
from voicetrio.logs import log_event

if TYPE_CHECKING:
    from voicetrio.core.tools import Toolbox
    from voicetrio.engines.llm.embedded import EmbeddedLlmServer

#: Replies the embedded llama.cpp server decodes at once (its ``--parallel``).
#: Measured on 2 cores (bench.llm_slots, 4 replies asked at once, 1 thread):
#: their first 10 tokens came in 1.8 s median with 1 slot, 1.1 s with 2 and
#: 1.8 s with 4; beside one busy core (Whisper), a second thread collapsed
#: to 1 token/s where one thread kept 39.
EMBEDDED_LLM_SLOTS = 2
#: Replies in flight at once to an OpenAI-compatible service.
REMOTE_LLM_SLOTS = 16

#: A probe turn that takes longer says nothing useful about capacity.
PROBE_TIMEOUT_S = 60.0

FailureHook = Callable[[ModelLoadError], None]
#: Loads what the engine set needs before it is ready; raises ModelLoadError.
Loader = Callable[["EngineHost"], Awaitable[None]]
#: One attempt at an engine: loads it, starting any service it needs in the
#: nursery given (which lives as long as the engine); raises ModelLoadError.
_Start = Callable[[trio.Nursery], Awaitable[None]]
_E = TypeVar("_E", bound=BaseException)


class EngineLoadFailed(ModelLoadError):
    """An engine that failed every attempt to load it: the server cannot serve."""

    def __init__(self, what: str, attempts: int, cause: ModelLoadError) -> None:
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        super().__init__(f"{what} did not load ({tries}): {cause}")
        self.what = what
        self.attempts = attempts
        self.cause = cause


def reply_slots(config: Config) -> int:
    """Replies the LLM streams at once: the embedded server's parallel slots,
    or what the configured service is trusted with."""
    if config.llm_slots:
        return config.llm_slots
    if config.openai_base_url:
        return REMOTE_LLM_SLOTS
    return EMBEDDED_LLM_SLOTS


class EngineHost:
    def __init__(
        self, config: Config, *, loader: Loader | None = None, engines: Engines | None = None
    ) -> None:
        """``engines`` replaces the set the config names (fault tests, custom
        engines); ``loader`` replaces the loading step (and is retried as one)."""
        self.config = config
        self._loader = loader
        self.retry = LoadRetry(config.engine_load_attempts, config.engine_load_backoff_s)
        # One decoder queue for all sessions: blocking engine work never
        # exceeds its slots, and finals go first.
        self.decoder = decoder_queue(config)
        self.loaded = trio.Event()
        self.failure: EngineLoadFailed | None = None
        self.on_failure: list[FailureHook] = []
        # Engine name -> the attempt under way, while it loads.
        self._attempts: dict[str, int] = {}
        #: What a turn costs the engines, once measured (real engines only).
        self.turn_cost: TurnCost | None = None
        self.engines = engines if engines is not None else self._build()

    @property
    def ready(self) -> bool:
        return self.loaded.is_set() and self.failure is None

    @property
    def loading(self) -> dict[str, int]:
        """Each engine still loading, with the attempt it is on (1 is the first)."""
        return dict(self._attempts)

    @property
    def load_attempt(self) -> int:
        """The furthest attempt any engine still loading is on; 0 when none is."""
        return max(self._attempts.values(), default=0)

    def _build(self) -> Engines:
        config = self.config
        from voicetrio.engines.fake import fake_engines

        if config.engines == "fake":
            engines = fake_engines(config, self.decoder)
            if config.asr_url:
                # The deterministic set with a remote ASR: a fleet test's front.
                engines = dataclasses.replace(engines, asr=remote_asr(config, self.decoder), files=None)
            if config.turn_judge == "scripted":
                from voicetrio.engines.turn.scripted import ScriptedTurnJudge

                # Always "complete": the turn ends after the short silence.
                engines = dataclasses.replace(
                    engines, turn=ScriptedTurnJudge(threshold=config.turn_threshold)
                )
            elif config.turn_judge == "scripted-text":
                from voicetrio.engines.turn.scripted import ScriptedTextJudge

                # The words always end the turn: after the short silence.
                engines = dataclasses.replace(engines, turn_text=ScriptedTextJudge())
            return engines
        from voicetrio.engines.vad.webrtc import WebRtcVad

        fake = fake_engines(config, self.decoder)
        slots = reply_slots(config)
        # A remote ASR: no Whisper in this process (uploads are then served
        # as one untimed segment, by the remote too).
        asr = remote_asr(config, self.decoder) if config.asr_url else GatedAsr(self)
        return Engines(
            name="real",
            vad=functools.partial(WebRtcVad, config.vad_aggressiveness, config.vad_hangover_ms),
            asr=asr,
            # Lean mode starts neither: nothing would ever call them.
            llm=fake.llm if config.lean else GatedLlm(self),
            tts=fake.tts if config.lean or config.tts_engine == "fake" else GatedTts(self),
            decoder=self.decoder,
            # A speculative reply may not take the last slot: a confirmed one needs it.
            replies=Scheduler(slots, tentative_slots=max(1, slots - 1)),
            files=asr if isinstance(asr, GatedAsr) else None,
            turn=turn_judge(config),
            turn_text=text_turn_judge(config),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load what needs loading; report at once, keep services up until cancelled.

        An engine that fails is tried again as :attr:`retry` says; one that
        fails its last attempt sets :attr:`failure`, calls the hooks, and
        stops every other engine and service; run() then returns.
        """
        task_status.started()
        async with trio.open_nursery() as nursery:
            try:
                await self._load(nursery)
                await self._probe()
            except* EngineLoadFailed as group:
                failure = first_leaf(group, EngineLoadFailed)
                assert failure is not None
                self.failure = failure
                log_event(
                    None,
                    "model_load_fail",
                    level=logging.ERROR,
                    engine=failure.what,
                    attempts=failure.attempts,
                    error=str(failure.cause),
                )
                for hook in self.on_failure:
                    hook(failure)
                nursery.cancel_scope.cancel()
            finally:
                self._attempts.clear()
                self.loaded.set()
            if self.failure is None:
                log_event(None, "engines_ready", engines=self.engines.name)

    async def _probe(self) -> None:
        """Measure what a turn costs on the engines just loaded (see
        :mod:`voicetrio.engines.probe`), before the server says it is ready."""
        engines = self.engines
        if not isinstance(engines.asr, GatedAsr) or engines.asr.inner is None:
            return  # the fake set, or engines given: nothing real to measure
        llm = engines.llm
        server = llm.server if isinstance(llm, GatedLlm) else None
        meter = cpu_meter(lambda: [] if server is None or server.pid is None else [server.pid])
        # The inner engines: the gated ones wait for `loaded`, set after this.
        tts = engines.tts.inner if isinstance(engines.tts, GatedTts) else engines.tts
        assert tts is not None  # loaded
        cost: TurnCost | None = None
        try:
            with trio.move_on_after(PROBE_TIMEOUT_S):
                cost = await probe_turn(
                    engines.asr.inner,
                    llm.inner if isinstance(llm, GatedLlm) else None,
                    tts,
                    system_prompt=system_prompt(self.config.system_prompt),
                    cpu=meter,
                )
        except EngineError as exc:
            # The engines answer sessions' errors as they come; capacity then
            # stays the configured count.
            log_event(None, "capacity_probe_fail", level=logging.WARNING, error=str(exc))
            return
        if cost is None:
            log_event(None, "capacity_probe_fail", level=logging.WARNING, error="timed out")
            return
        self.turn_cost = cost
        log_event(
            None,
            "capacity_probe",
            cpu_s=round(cost.cpu_s, 3),
            question_s=round(cost.question_s, 2),
            answer_s=round(cost.answer_s, 2),
        )

    async def _load(self, nursery: trio.Nursery) -> None:
        starts = self._starts()
        # Everything loads at once (the model in a thread, the LLM server in
        # its process, the speech engine on its own thread), each engine in a
        # task of its own that retries it alone and, once it is in, moves to
        # the host's nursery to keep what it started running.
        async with trio.open_nursery() as loading:
            for engine, (what, start) in starts.items():
                loading.start_soon(nursery.start, functools.partial(self._keep, engine, what, start))

    def _starts(self) -> dict[str, tuple[str, _Start]]:
        """What to load: engine name -> (how errors name it, one attempt)."""
        loader = self._loader
        if loader is not None:

            async def load_all(services: trio.Nursery) -> None:
                await loader(self)

            return {"engines": ("the engine set", load_all)}
        engines = self.engines
        remote = engines.asr
        if isinstance(remote, RealtimeAsr):

            async def start_remote(services: trio.Nursery) -> None:
                # Never a load failure: a remote that is down makes the
                # engine not ready (and /health 503) until it answers.
                await services.start(remote.run)

            starts: dict[str, tuple[str, _Start]] = {"asr": ("the remote ASR", start_remote)}
            if engines.name == "fake":
                return starts
        elif not isinstance(engines.asr, GatedAsr):
            return {}  # nothing of ours to load: the fake set, or engines given
        else:
            starts = {}
        asr = engines.asr

        if isinstance(asr, GatedAsr):

            async def load_asr(services: trio.Nursery) -> None:
                await asr.load()

            starts["asr"] = ("the ASR engine", load_asr)
        judge = engines.turn
        if judge is not None and not judge.ready:

            async def load_judge(services: trio.Nursery) -> None:
                assert judge is not None
                await _optional_judge(type(judge).__name__, judge.load())

            starts["turn"] = ("the turn judge", load_judge)
        text_judge = engines.turn_text
        if text_judge is not None and not text_judge.ready:

            async def start_text_judge(services: trio.Nursery) -> None:
                assert text_judge is not None
                await _optional_judge(type(text_judge).__name__, text_judge.start(services))

            starts["turn_text"] = ("the text turn judge", start_text_judge)
        if isinstance(engines.llm, GatedLlm):
            starts["llm"] = ("the LLM", engines.llm.start)
        if isinstance(engines.tts, GatedTts):
            starts["tts"] = (f"the TTS engine ({self.config.tts_engine})", engines.tts.start)
        return starts

    async def _keep(
        self,
        engine: str,
        what: str,
        start: _Start,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Load one engine, trying again after each failure until the policy
        says stop (then raise EngineLoadFailed); once it is in, report started
        and keep its services running until cancelled."""
        attempt = 1
        while True:
            self._attempts[engine] = attempt
            error: ModelLoadError | None = None
            started = False
            try:
                # One nursery per attempt: leaving it after a failure stops
                # whatever that attempt had started, before the next begins.
                async with trio.open_nursery() as services:
                    await start(services)
                    started = True
                    self._attempts.pop(engine, None)
                    task_status.started()
            except* ModelLoadError as group:
                if started:
                    raise  # a service failing later is not a load to retry
                error = first_leaf(group, ModelLoadError)
            if error is None:
                return
            delay = self.retry.delay_after(attempt)
            log_event(
                None,
                "engine_load_attempt_fail",
                level=logging.WARNING,
                engine=engine,
                attempt=attempt,
                of=self.retry.attempts,
                error=str(error),
                retry_in_s=delay,
            )
            if delay is None:
                raise EngineLoadFailed(what, attempt, error) from error
            await trio.sleep(delay)
            attempt += 1


def decoder_queue(config: Config) -> Scheduler:
    """The shared decoder's queue: Whisper's threads
    (``STREAM_DECODE_CONCURRENCY``), or the decodes in flight to a remote
    ASR (``STREAM_ASR_SLOTS``, 16 by default), of which partials may hold
    all but one: a final always finds a slot free or next."""
    if not config.asr_url:
        return Scheduler(config.decode_concurrency)
    slots = config.asr_slots or REMOTE_ASR_SLOTS
    return Scheduler(slots, tentative_slots=max(1, slots - 1))


def remote_asr(config: Config, decoder: Scheduler) -> RealtimeAsr:
    """The remote ASR of ``STREAM_ASR_URL``, decoding under ``decoder``."""
    return RealtimeAsr(
        config.asr_url,
        api_key=config.asr_api_key,
        model=config.asr_model,
        timeout_s=config.asr_timeout_s,
        scheduler=decoder,
    )


def turn_judge(config: Config) -> TurnJudge | None:
    """The turn judge of the real engine set, not loaded yet: Smart Turn
    when asked for (``smart``; ``""`` takes it when its model is installed);
    None for ``none``, the default (the fixed silence window)."""
    choice = config.turn_judge
    if choice in ("none", "text", "scripted-text"):
        return None
    if choice == "scripted":
        from voicetrio.engines.turn.scripted import ScriptedTurnJudge

        return ScriptedTurnJudge(threshold=config.turn_threshold, ready=False)
    from voicetrio.engines.turn.smart_turn import SmartTurnJudge, model_path

    if choice == "":
        try:
            model_path()
        except ModelLoadError:
            return None  # not installed: the default is then no judge
    return SmartTurnJudge(threshold=config.turn_threshold)


async def _optional_judge(name: str, loading: Awaitable[None]) -> None:
    """Await a turn judge's load; a judge that cannot load is logged, not
    raised: without it, turns end by the fixed silence window (and the other
    judge, if any), as they did before there was a judge."""
    try:
        await loading
    except ModelLoadError as exc:
        log_event(None, "turn_judge_unavailable", level=logging.WARNING, error=str(exc))
    else:
        log_event(None, "turn_judge_loaded", judge=name)


def text_turn_judge(config: Config) -> TextTurnJudge | None:
    """The text turn judge of the real engine set, not started yet: for
    ``text`` and ``both``; None otherwise."""
    if config.turn_judge == "scripted-text":
        from voicetrio.engines.turn.scripted import ScriptedTextJudge

        return ScriptedTextJudge(ready=False)
    if config.turn_judge not in ("text", "both"):
        return None
    from voicetrio.engines.turn.text_judge import LlmTextJudge

    return LlmTextJudge()


def first_leaf(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first ``kind`` in ``exc``, however deeply nurseries grouped it; or None."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := first_leaf(inner, kind)) is not None:
                return found
        return None
    return exc if isinstance(exc, kind) else None


class GatedAsr:
    """Whisper behind the host's load: calls wait for it, or fail with it."""

    def __init__(self, host: EngineHost) -> None:
        self.host = host
        self.inner: AsrEngine | None = None
        #: The same model, for whole files (set with ``inner``).
        self.files: FileAsrEngine | None = None

    @property
    def ready(self) -> bool:
        return self.host.ready

    async def load(self) -> None:
        from voicetrio.engines.asr.whisper import WhisperAsr
        from voicetrio.engines.catalog import resolve_whisper

        config = self.host.config
        # Resolving may join a model from parts once (145 MB) and hash it
        # against the catalog: off the loop.
        spec = await trio.to_thread.run_sync(
            functools.partial(
                resolve_whisper, config.model_whisper, default_compute_type=config.asr_compute_type
            )
        )
        whisper = WhisperAsr(spec, scheduler=self.host.decoder, cpu_threads=config.asr_cpu_threads)
        await whisper.load()
        self.inner = self.files = whisper
        log_event(None, "asr_loaded", model=spec.name, target=spec.target, pid=os.getpid())

    async def _ready_inner(self) -> AsrEngine:
        await self.host.loaded.wait()
        if self.host.failure is not None:
            raise self.host.failure
        assert self.inner is not None
        return self.inner

    async def transcribe(self, pcm: bytes, *, final: bool, slot: Slot | None = None) -> str:
        try:
            inner = await self._ready_inner()
        except BaseException:
            if slot is not None:
                slot.close()  # a slot the caller reserved goes back unused
            raise
        return await inner.transcribe(pcm, final=final, slot=slot)

    async def transcribe_file(self, pcm: bytes, request: FileRequest) -> FileTranscript:
        await self._ready_inner()
        assert self.files is not None  # loaded with inner
        return await self.files.transcribe_file(pcm, request)


class GatedLlm:
    """The configured OpenAI-compatible service, or the embedded one started here."""

    def __init__(self, host: EngineHost) -> None:
        self.host = host
        self.inner: LlmEngine | None = None
        #: The embedded llama.cpp server, when this process runs one.
        self.server: EmbeddedLlmServer | None = None

    @property
    def ready(self) -> bool:
        if not self.host.ready or self.inner is None:
            return False
        return (self.server is None or self.server.ready) and self.inner.ready

    async def start(self, nursery: trio.Nursery) -> None:
        from voicetrio.engines.llm.openai_compat import OpenAiLlm

        config = self.host.config
        if config.openai_base_url:
            self.inner = OpenAiLlm(
                base_url=config.openai_base_url,
                api_key=config.openai_api_key,
                model=config.openai_model,
                max_tokens=config.openai_max_tokens,
                temperature=config.openai_temperature,
                tools=tools_setting(config.llm_tools),
            )
            log_event(None, "llm_service", base_url=config.openai_base_url, model=config.openai_model)
            return
        from voicetrio.engines.catalog import resolve_llm
        from voicetrio.engines.llm.embedded import EmbeddedLlmServer

        # STREAM_LLM_MODEL's file, refused unless its sha256 is the catalog's
        # (hashing, when no marker vouches for it, takes seconds: a thread).
        model = await trio.to_thread.run_sync(resolve_llm, config.llm_model)
        server = EmbeddedLlmServer(
            model_path=model.path,
            ctx_size=config.llm_ctx_size,
            threads=config.llm_threads or None,
            parallel=reply_slots(config),
        )
        base_url: str = await nursery.start(server.run)
        self.server = server
        llm = OpenAiLlm(
            base_url=base_url,
            api_key=server.api_key,
            model=model.served_name,
            max_tokens=config.openai_max_tokens,
            temperature=config.openai_temperature,
            # Models that cannot call tools (SmolLM2) do not get them; the
            # small ones that can answer a note of results, not tool messages.
            tools=await embedded_tools(config.llm_tools, base_url, server.api_key),
            tool_results="text",
        )
        # A fresh llama.cpp server answers its first request ~0.3 s slower
        # (allocations, the system prompt's first evaluation, which its prompt
        # cache then keeps): pay that before /health says ready, not in a turn.
        warm_up: list[ChatMessage] = [
            {"role": "system", "content": system_prompt(config.system_prompt)},
            {"role": "user", "content": "Hello."},
        ]
        # With the tools a session offers (the same definitions), whose
        # description the server's prompt cache then keeps too.
        tools = builtin_toolbox(lambda: datetime.now(UTC), NoTimers())
        try:
            async with llm.stream(warm_up, tools=tools) as deltas:
                async for _ in deltas:
                    break
        except LlmError as exc:
            # The host tries again with a new server and a new client.
            await llm.aclose()
            raise ModelLoadError(f"the embedded language model does not answer: {exc}") from exc
        self.inner = llm
        log_event(None, "llm_embedded", base_url=base_url, model=model.served_name, path=str(model.path))

    @property
    def calls_tools(self) -> bool:
        """Before the engine is loaded: yes, so a turn offers its tools, which
        :func:`open_reply` then gives the loaded engine only if it calls tools."""
        return self.inner is None or (
            isinstance(self.inner, ToolCallingLlm) and self.inner.calls_tools
        )

    def stream(
        self, messages: Sequence[ChatMessage], *, tools: Toolbox | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        return self._stream(messages, tools)

    @asynccontextmanager
    async def _stream(
        self, messages: Sequence[ChatMessage], tools: Toolbox | None
    ) -> AsyncIterator[AsyncIterator[str]]:
        await self.host.loaded.wait()
        if self.host.failure is not None or self.inner is None:
            raise LlmError("the language model is not available")
        async with open_reply(self.inner, messages, tools) as deltas:
            yield deltas


class GatedTts:
    """pyttsx3 (or piper) on its own thread, started here."""

    def __init__(self, host: EngineHost) -> None:
        self.host = host
        self.inner: TtsEngine | None = None

    @property
    def ready(self) -> bool:
        return self.host.ready and self.inner is not None and self.inner.ready

    async def start(self, nursery: trio.Nursery) -> None:
        config = self.host.config
        engine: Any
        if config.tts_engine == "piper":
            from voicetrio.engines.tts.piper import PiperTts

            engine = PiperTts(volume=config.tts_volume)
        else:
            from voicetrio.engines.tts.espeak import Pyttsx3Tts

            engine = Pyttsx3Tts(
                voice=config.tts_voice or None,
                rate_wpm=config.tts_rate_wpm,
                volume=config.tts_volume,
            )
        await nursery.start(engine.run)
        self.inner = engine
        log_event(None, "tts_ready", engine=config.tts_engine)

    async def synthesize(self, text: str) -> SpeechAudio:
        await self.host.loaded.wait()
        if self.host.failure is not None or self.inner is None:
            raise TtsError("speech synthesis is not available")
        return await self.inner.synthesize(text)
