"""Speech from pyttsx3 over espeak-ng: the default TTS of the real engine set.

pyttsx3 with espeak-ng is not thread-safe (a concurrent ``init`` crashes, a
re-created engine can write an empty file, queued ``save_to_file`` calls keep
only the last), so the engine is created once, on the one thread of a
:class:`~voicetrio.engines.tts.worker.TtsWorker`, and every phrase goes
through it alone: ``save_to_file`` to a temporary WAV, ``runAndWait``, read it
back, delete it. A phrase takes about 15 ms (espeak-ng itself is quicker;
pyttsx3 polls its run loop every 10 ms) and comes out as 22050 Hz mono
16-bit, so one thread keeps up with every session.

Call :meth:`Pyttsx3Tts.run` in a nursery (``await nursery.start(tts.run)``)
before the first :meth:`~Pyttsx3Tts.synthesize`; cancelling it stops the thread.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from voicetrio.core import audio
from voicetrio.engines.base import SpeechAudio, TtsError
from voicetrio.engines.tts.worker import (
    ThreadedTts,
    TtsLoadError,
    TtsWorker,
    audible,
    preview,
)

#: espeak-ng's speaking rates, in words per minute.
MIN_RATE_WPM: Final = 80
MAX_RATE_WPM: Final = 450
#: Sample rates accepted from the engine; espeak-ng gives 22050.
_RATES: Final = range(8000, 48001)
#: Spoken once at start, to check the engine end to end before reporting ready.
_WARM_UP_TEXT: Final = "Ready."

# pyttsx3 and espeak-ng keep one engine per process, so at most one
# Pyttsx3Tts may run at a time; the engine outlives it for the next one,
# since a re-created engine is where pyttsx3 has written empty files. A
# start that failed is the exception: whatever state left that engine
# silent goes with it, and the next start (the engine host's retry) creates
# a new one on its own thread.
_engine_in_use = threading.Lock()


@dataclass(slots=True)
class _Shared:
    engine: Any
    #: espeak-ng's own default, restored for an instance that names no voice.
    default_voice: str
    #: espeak_Synchronize: returns once espeak-ng has run every queued command.
    synchronize: Callable[[], object]


_shared: list[_Shared] = []


class Pyttsx3Tts(ThreadedTts[Any]):
    """The TtsEngine on pyttsx3 + espeak-ng; one worker thread, phrases in order."""

    def __init__(
        self,
        *,
        voice: str | None = None,
        rate_wpm: int = 175,
        volume: float = 1.0,
        tmp_dir: Path | None = None,
    ) -> None:
        if not MIN_RATE_WPM <= rate_wpm <= MAX_RATE_WPM:
            raise ValueError(
                f"rate_wpm must be within {MIN_RATE_WPM}..{MAX_RATE_WPM}, got {rate_wpm}"
            )
        if not 0.0 < volume <= 1.0:  # also rejects NaN
            raise ValueError(f"volume must be in (0, 1], got {volume}")
        if voice is not None and not voice.strip():
            raise ValueError("voice must be None (espeak-ng's default) or a voice name")
        self.voice = voice
        self.rate_wpm = rate_wpm
        self.volume = volume
        self.tmp_dir = tmp_dir
        self.calls = 0
        # Errors pyttsx3 reports through its "error" callback instead of raising;
        # touched only on the worker thread.
        self._engine_errors: list[BaseException] = []
        self._error_subscription: Any = None
        self._worker: TtsWorker[Any] = TtsWorker(
            self._load, what="pyttsx3 TTS", teardown=self._unload
        )

    # --- on the worker thread -------------------------------------------

    def _load(self) -> Any:
        if not _engine_in_use.acquire(blocking=False):
            raise TtsLoadError(
                "pyttsx3 keeps one engine per process and another Pyttsx3Tts is running; "
                "share that one"
            )
        try:
            shared = _shared_engine()
            engine = shared.engine
            self._error_subscription = engine.connect("error", self._on_engine_error)
            self._engine_errors.clear()
            engine.setProperty("voice", self.voice or shared.default_voice)
            engine.setProperty("rate", self.rate_wpm)
            engine.setProperty("volume", self.volume)
            # An engine that has spoken before applies (and rejects) settings
            # at once; a fresh one only inside runAndWait, so the warm-up
            # phrase is what checks them there.
            if self._engine_errors:
                raise self._engine_errors[-1]
            # Applied at once, rate and volume are queued inside espeak-ng,
            # and the cancel that opens pyttsx3's next run loop would drop
            # them: let espeak-ng take them in first.
            shared.synchronize()
            self._speak(engine, _WARM_UP_TEXT)
        except Exception as exc:
            try:
                _discard_shared()
            finally:
                self._unload_quietly()
            if isinstance(exc, TtsLoadError):
                raise
            hint = " (espeak-ng --voices lists the voices)" if self.voice else ""
            raise TtsLoadError(
                f"pyttsx3 could not start with voice={self.voice!r}, "
                f"rate_wpm={self.rate_wpm}, volume={self.volume}: {exc}{hint}"
            ) from exc
        return engine

    def _unload(self, engine: Any) -> None:
        self._unload_quietly()

    def _unload_quietly(self) -> None:
        try:
            if self._error_subscription is not None and _shared:
                _shared[0].engine.disconnect(self._error_subscription)
        finally:
            self._error_subscription = None
            _engine_in_use.release()

    def _on_engine_error(self, exception: BaseException | None = None, **_: object) -> None:
        self._engine_errors.append(exception or RuntimeError("unspecified pyttsx3 error"))

    def _speak(self, engine: Any, text: str) -> SpeechAudio:
        # pyttsx3 has been seen writing an empty file now and then: one retry.
        for _attempt in range(2):
            speech = self._render(engine, text)
            if speech is not None and audible(speech.pcm):
                return speech
        raise TtsError(f"pyttsx3 gave no audible speech for {preview(text)}, twice")

    def _render(self, engine: Any, text: str) -> SpeechAudio | None:
        """One pass through the engine: the speech, or None for an empty file."""
        fd, name = tempfile.mkstemp(prefix="voicetrio-tts-", suffix=".wav", dir=self.tmp_dir)
        os.close(fd)
        path = Path(name)
        self._engine_errors.clear()
        try:
            try:
                engine.save_to_file(text, name)
                engine.runAndWait()
            except Exception as exc:
                raise TtsError(f"pyttsx3 failed on {preview(text)}: {exc}") from exc
            if self._engine_errors:
                error = self._engine_errors[-1]
                raise TtsError(f"pyttsx3 failed on {preview(text)}: {error}") from error
            if path.stat().st_size == 0:
                return None
            pcm, rate = audio.read_wav(path)
        except (OSError, ValueError) as exc:
            raise TtsError(f"unreadable pyttsx3 output for {preview(text)}: {exc}") from exc
        finally:
            path.unlink(missing_ok=True)
        if rate not in _RATES:
            raise TtsError(
                f"pyttsx3 gave audio at {rate} Hz, outside {_RATES.start}..{_RATES.stop - 1}"
            )
        return SpeechAudio(pcm, rate) if pcm else None


def _shared_engine() -> _Shared:
    """The process's pyttsx3 espeak engine, created on first use."""
    if not _shared:
        try:
            import pyttsx3  # type: ignore[import-untyped]
            from pyttsx3.drivers import _espeak  # type: ignore[import-untyped]

            engine = pyttsx3.init("espeak")
        except ImportError as exc:
            raise TtsLoadError(f"pyttsx3 is not installed ({exc}): pip install pyttsx3") from exc
        except Exception as exc:
            raise TtsLoadError(
                f"pyttsx3 could not start espeak-ng ({exc}): install Debian package espeak-ng"
            ) from exc
        _silence_driver()
        default_voice = str(engine.getProperty("voice") or "en")
        _shared.append(_Shared(engine, default_voice, _espeak.Synchronize))
        # Let go of it while the interpreter is whole: left to the teardown
        # of modules, pyttsx3's finalizer finds its own imports gone and
        # prints an ignored exception on every exit.
        atexit.register(_shared.clear)
    return _shared[0]


def _discard_shared() -> None:
    """Let go of the process's engine, so that the next start creates a new
    one. Called on the worker thread, with ``_engine_in_use`` held."""
    if not _shared:
        return
    old = _shared.pop()
    import pyttsx3

    # pyttsx3.init hands back any live engine of the driver, and the failed
    # start's traceback may keep this one alive for a while.
    pyttsx3._activeEngines.pop("espeak", None)
    # Collected later, its driver proxy would ask espeak-ng to drop the
    # synthesis callback, by then the new engine's (pyttsx3 2.99's call
    # fails and is swallowed, a fixed one would not): cut it off now.
    with contextlib.suppress(AttributeError):
        old.engine.proxy._driver = None


def _silence_driver() -> None:
    # The espeak driver prints "Audio saved to <path>" to stdout for every
    # file it writes; a server's stdout is not for that. Shadowing print in
    # that one module silences it without touching sys.stdout for everyone.
    driver = sys.modules.get("pyttsx3.drivers.espeak")
    if driver is not None:
        setattr(driver, "print", _no_print)  # noqa: B010 (mypy: no such attribute yet)


def _no_print(*args: object, **kwargs: object) -> None:
    pass


__all__ = ["MAX_RATE_WPM", "MIN_RATE_WPM", "Pyttsx3Tts"]
