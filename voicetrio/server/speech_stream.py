"""``/v1/audio/speech``'s body: a text spoken phrase by phrase, encoded as it comes.

The text is cut into phrases as a reply is (:mod:`voicetrio.core.phrases`,
with the session's phrase lengths: a short first phrase, so the first audio
comes sooner), each phrase is spoken by the engine set's TTS engine, and
its audio is encoded and sent before the next is spoken. Each phrase has
the TTS timeout a session gives it.

:func:`open_speech` speaks the first phrase before it returns, so that a TTS
engine that fails at once is an HTTP error, not a 200 with an empty body;
a failure later can only cut the stream (the client sees the body end
without its last chunk).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable

import trio

from voicetrio.config import Config
from voicetrio.core.phrases import PhraseAggregator
from voicetrio.engines.base import TtsEngine, TtsError
from voicetrio.logs import log_event
from voicetrio.server.speech_formats import SpeechEncoder


def phrases_of(text: str, config: Config) -> list[str]:
    """``text`` cut as the session cuts a reply (no gap: it is all here)."""
    aggregator = PhraseAggregator(
        max_length=config.tts_max_phrase_length,
        first_max_length=config.tts_first_phrase_length,
    )
    return aggregator.push(text, 0.0) + aggregator.flush()


async def open_speech(
    tts: TtsEngine, text: str, encoder: SpeechEncoder, config: Config
) -> AsyncIterator[bytes]:
    """The encoded speech of ``text``, its first phrase already spoken.

    Raises TtsError (or another EngineError) if the first phrase fails.
    """
    phrases = phrases_of(text, config)
    first = await _speak(tts, phrases[0], encoder, config.tts_timeout_s) if phrases else b""
    return _rest(tts, first, phrases[1:], encoder, config.tts_timeout_s)


async def _rest(
    tts: TtsEngine, first: bytes, phrases: list[str], encoder: SpeechEncoder, timeout_s: float
) -> AsyncIterator[bytes]:
    if first:
        yield first
    try:
        for phrase in phrases:
            chunk = await _speak(tts, phrase, encoder, timeout_s)
            if chunk:
                yield chunk
        tail = await _encode(encoder.finish)
    except TtsError as exc:
        # Nothing can be said in a body already under way: log why it ends short.
        log_event(None, "speech_cut", error=str(exc))
        raise
    if tail:
        yield tail


async def _speak(tts: TtsEngine, phrase: str, encoder: SpeechEncoder, timeout_s: float) -> bytes:
    with trio.move_on_after(timeout_s) as timer:
        speech = await tts.synthesize(phrase)
    if timer.cancelled_caught:
        raise TtsError(f"speech synthesis took longer than {timeout_s:g} s for one phrase")
    return await _encode(functools.partial(encoder.feed, speech))


async def _encode(fn: Callable[[], bytes]) -> bytes:
    # An MP3 frame or a time stretch costs milliseconds of CPU: not on the loop.
    return await trio.to_thread.run_sync(fn)


__all__ = ["open_speech", "phrases_of"]
