"""Builds the engine set a server runs on, from the config."""

from __future__ import annotations

import trio

from voicetrio.config import Config
from voicetrio.engines.base import Engines, ModelLoadError


async def build_engines(config: Config) -> Engines:
    # One limiter for all sessions: blocking engine work never exceeds it.
    limiter = trio.CapacityLimiter(config.decode_concurrency)
    if config.engines == "fake":
        from voicetrio.engines.fake import fake_engines

        return fake_engines(config, limiter)
    raise ModelLoadError(f"engine set {config.engines!r} is not available in this build")
