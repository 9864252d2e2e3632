"""Builds the engine set a server runs on and keeps it alive.

:class:`EngineHost` hands out an :class:`Engines` at once, so the server can
answer HTTP (and ``/health`` can say "not ready") while models load in the
background. Engines that need loading sit behind a gate that waits for the
load, so a session that starts talking early is served as soon as the model
is in, and hears ``MODEL_LOAD_FAIL`` if it never will be.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from voicetrio.config import Config
from voicetrio.engines.base import AsrEngine, Engines, ModelLoadError
from voicetrio.logs import log_event

if TYPE_CHECKING:
    from voicetrio.engines.whisper import Samples

FailureHook = Callable[[ModelLoadError], None]
#: Loads what the engine set needs before it is ready; raises ModelLoadError.
Loader = Callable[["EngineHost"], Awaitable[None]]


class EngineHost:
    def __init__(self, config: Config, *, loader: Loader | None = None) -> None:
        self.config = config
        self._loader = loader
        # One limiter for all sessions: blocking engine work never exceeds it.
        self.limiter = trio.CapacityLimiter(config.decode_concurrency)
        self.loaded = trio.Event()
        self.failure: ModelLoadError | None = None
        self.on_failure: list[FailureHook] = []
        self.engines = self._build()

    @property
    def ready(self) -> bool:
        return self.loaded.is_set() and self.failure is None

    def _build(self) -> Engines:
        config = self.config
        from voicetrio.engines.fake import FakeLlm, FakeTts, fake_engines

        if config.engines == "fake":
            return fake_engines(config, self.limiter)
        from voicetrio.engines.webrtc_vad import WebRtcVad

        # The reply engines of the real set arrive with the LLM and TTS
        # integration; until then it answers with the deterministic ones.
        return Engines(
            name="real",
            vad=functools.partial(WebRtcVad, config.vad_aggressiveness, config.vad_hangover_ms),
            asr=GatedAsr(self),
            llm=FakeLlm(
                first_token_s=config.fake_llm_first_token_ms / 1000,
                token_s=config.fake_llm_token_ms / 1000,
            ),
            tts=FakeTts(delay_s=config.fake_tts_ms / 1000),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load what needs loading; report at once, keep services up until cancelled."""
        task_status.started()
        try:
            await self._load()
        except ModelLoadError as exc:
            self.failure = exc
            log_event(None, "model_load_fail", level=logging.ERROR, error=str(exc))
            for hook in self.on_failure:
                hook(exc)
        finally:
            self.loaded.set()
        if self.failure is None:
            log_event(None, "engines_ready", engines=self.engines.name)

    async def _load(self) -> None:
        if self._loader is not None:
            await self._loader(self)
            return
        if self.config.engines == "fake":
            return
        asr = self.engines.asr
        assert isinstance(asr, GatedAsr)
        await asr.load()


class GatedAsr:
    """Whisper behind the host's load: calls wait for it, or fail with it."""

    def __init__(self, host: EngineHost) -> None:
        self.host = host
        self.inner: AsrEngine | None = None

    @property
    def ready(self) -> bool:
        return self.host.ready

    async def load(self) -> None:
        from voicetrio.engines.models import resolve_model
        from voicetrio.engines.whisper import WhisperAsr

        config = self.host.config
        # Resolving may join a model from parts once (145 MB): off the loop.
        spec = await trio.to_thread.run_sync(
            functools.partial(
                resolve_model, config.model_whisper, default_compute_type=config.asr_compute_type
            )
        )
        whisper = WhisperAsr(spec, limiter=self.host.limiter, cpu_threads=config.asr_cpu_threads)
        await whisper.load()
        self.inner = whisper
        log_event(None, "asr_loaded", model=spec.name, target=spec.target, pid=os.getpid())

    async def _ready_inner(self) -> AsrEngine:
        await self.host.loaded.wait()
        if self.host.failure is not None:
            raise self.host.failure
        assert self.inner is not None
        return self.inner

    async def transcribe(self, pcm: bytes, *, final: bool) -> str:
        inner = await self._ready_inner()
        return await inner.transcribe(pcm, final=final)

    async def transcribe_samples(self, samples: Samples, *, final: bool) -> str:
        from voicetrio.engines.whisper import WhisperAsr

        inner = await self._ready_inner()
        assert isinstance(inner, WhisperAsr)
        return await inner.transcribe_samples(samples, final=final)
