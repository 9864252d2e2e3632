"""A dedicated thread that owns one blocking TTS engine and runs its jobs in order.

Some engines must never be entered from two threads: pyttsx3 over espeak-ng
crashes on a concurrent ``init`` and keeps only the last of several queued
files. ``trio.to_thread`` hands each call to whichever pooled thread is free,
so instead a TTS engine lives on one thread of its own, is created there
once, and every synthesis is a job on that thread's queue, run one at a time
in arrival order.

Seen from Trio, :meth:`TtsWorker.call` behaves like
``trio.to_thread.run_sync(..., abandon_on_cancel=True)``: a caller cancelled
while its job waits in the queue is skipped; one cancelled while its job runs
returns at once, and the result is dropped when it arrives. The engine always
finishes what it started, so it is never left half-way through a phrase. The
thread never waits on the event loop (results go back through
``TrioToken.run_sync_soon``, which does not block), so a busy or finished
loop cannot deadlock it.

The few checks every such engine makes on a phrase, going in and coming
out, live here too.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Final, Generic, TypeVar, cast

import trio

from voicetrio.core import audio
from voicetrio.engines.base import ModelLoadError, SpeechAudio, TtsError
from voicetrio.logs import log_event

E = TypeVar("E")
R = TypeVar("R")

#: The name of every TTS worker thread, so a test or an operator can find it.
THREAD_NAME: Final = "voicetrio-tts"
#: Speech whose 16-bit RMS is below this is silence (about -66 dBFS).
SILENT_RMS: Final = 16.0


class TtsLoadError(ModelLoadError, TtsError):
    """A TTS engine that could not start.

    Fatal like any model load (its code is MODEL_LOAD_FAIL), and still a
    TtsError for code that handles every TTS failure alike.
    """


class _Job(Generic[E]):
    """One call into the engine, and the slot its outcome comes back in."""

    __slots__ = ("abandoned", "done", "error", "fn", "value")

    def __init__(self, fn: Callable[[E], object]) -> None:
        self.fn = fn
        # Set only on the Trio thread (through run_sync_soon).
        self.done = trio.Event()
        # Written by the caller, read by the worker: a plain flag is enough,
        # since a race only decides between "skipped" and "run and dropped".
        self.abandoned = False
        self.value: object = None
        self.error: Exception | None = None


class TtsWorker(Generic[E]):
    """Runs ``setup()`` once on a thread of its own, then ``job(engine)`` calls in order.

    :meth:`run` owns the thread's life: it returns (or raises TtsLoadError)
    only after the thread has ended, or after ``stop_timeout_s`` if a job
    never finishes, in which case the daemon thread is left to the process.
    ``teardown(engine)`` runs on the thread as it ends.
    """

    def __init__(
        self,
        setup: Callable[[], E],
        *,
        what: str,
        teardown: Callable[[E], None] | None = None,
        stop_timeout_s: float = 5.0,
    ) -> None:
        if not stop_timeout_s > 0:
            raise ValueError(f"stop_timeout_s must be > 0, got {stop_timeout_s}")
        self.what = what
        self.stop_timeout_s = stop_timeout_s
        self._setup = setup
        self._teardown = teardown
        self._jobs: queue.SimpleQueue[_Job[E] | None] = queue.SimpleQueue()
        # Guards _accepting together with the queue, so that no job can be
        # queued after the thread has drained the queue for the last time.
        self._lock = threading.Lock()
        self._accepting = False
        self._stopping = False
        self._ran = False
        self._token: trio.lowlevel.TrioToken | None = None
        #: Jobs the engine ran (including those whose caller had gone).
        self.jobs_run = 0
        #: Jobs never run because their caller was cancelled while they waited.
        self.skipped = 0
        #: Jobs run to the end whose caller had been cancelled meanwhile.
        self.discarded = 0
        #: Seconds the engine spent on the last job it ran.
        self.last_job_s = 0.0

    @property
    def ready(self) -> bool:
        return self._accepting

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the thread, report started once the engine is up, serve until cancelled."""
        if self._ran:
            raise RuntimeError(f"{self.what}: a TtsWorker runs only once")
        self._ran = True
        self._token = trio.lowlevel.current_trio_token()
        loaded: _Job[E] = _Job(lambda engine: None)
        thread = threading.Thread(target=self._serve, args=(loaded,), name=THREAD_NAME, daemon=True)
        thread.start()
        try:
            await loaded.done.wait()
            if loaded.error is not None:
                raise loaded.error
            task_status.started()
            await trio.sleep_forever()
        finally:
            with self._lock:
                self._stopping = True
                self._accepting = False
            self._jobs.put(None)
            # Shielded so a cancelled run() still waits for the thread, and
            # bounded so a job that never ends cannot hold shutdown hostage.
            with trio.move_on_after(self.stop_timeout_s, shield=True) as scope:
                await trio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
            if scope.cancelled_caught:
                log_event(
                    None,
                    "tts_worker_stuck",
                    level=logging.WARNING,
                    engine=self.what,
                    waited_s=self.stop_timeout_s,
                )

    async def call(self, fn: Callable[[E], R]) -> R:
        """``fn(engine)`` on the engine's thread, after every job queued before it."""
        job: _Job[E] = _Job(fn)
        with self._lock:
            if not self._accepting:
                raise TtsError(f"{self.what} is not running")
            self._jobs.put(job)
        try:
            await job.done.wait()
        finally:
            if not job.done.is_set():
                job.abandoned = True
        if job.error is not None:
            raise job.error
        return cast(R, job.value)

    # --- on the worker thread -------------------------------------------

    def _serve(self, loaded: _Job[E]) -> None:
        try:
            engine = self._setup()
        except Exception as exc:
            error = exc if isinstance(exc, TtsLoadError) else TtsLoadError(f"{self.what}: {exc}")
            if error is not exc:
                error.__cause__ = exc
            loaded.error = error
            self._notify(loaded)
            return
        with self._lock:
            # run() may have been cancelled while the engine was loading.
            self._accepting = not self._stopping
        self._notify(loaded)
        try:
            self._serve_jobs(engine)
        finally:
            with self._lock:
                self._accepting = False
            self._fail_pending()
            if self._teardown is not None:
                try:
                    self._teardown(engine)
                except Exception:
                    log_event(
                        None,
                        "tts_teardown_failed",
                        level=logging.WARNING,
                        exc_info=True,
                        engine=self.what,
                    )

    def _serve_jobs(self, engine: E) -> None:
        while (job := self._jobs.get()) is not None:
            if job.abandoned:
                self.skipped += 1
                continue
            if self._stopping:
                # Stopping: answer at once rather than run the backlog.
                job.error = TtsError(f"{self.what} stopped")
                self._notify(job)
                continue
            started = time.perf_counter()
            try:
                job.value = job.fn(engine)
            except Exception as exc:
                job.error = exc
            self.last_job_s = time.perf_counter() - started
            self.jobs_run += 1
            if job.abandoned:
                self.discarded += 1
            else:
                self._notify(job)

    def _fail_pending(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None and not job.abandoned:
                job.error = TtsError(f"{self.what} stopped")
                self._notify(job)

    def _notify(self, job: _Job[E]) -> None:
        assert self._token is not None
        # If the loop has ended, so has everyone who was waiting.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(job.done.set)


class ThreadedTts(Generic[E]):
    """The TtsEngine surface of an engine that lives on a :class:`TtsWorker`
    thread: subclasses set ``_worker`` and ``calls`` and define ``_speak``,
    which runs on that thread."""

    _worker: TtsWorker[E]
    #: synthesize() calls, failed ones included.
    calls: int

    @property
    def ready(self) -> bool:
        return self._worker.ready

    @property
    def last_synthesis_s(self) -> float:
        """Engine time of the last phrase, retries included (0.0 before the first)."""
        return self._worker.last_job_s

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the engine thread and serve until cancelled. Raises TtsLoadError."""
        await self._worker.run(task_status=task_status)

    async def synthesize(self, text: str) -> SpeechAudio:
        self.calls += 1
        phrase = speakable(text)
        if not phrase:
            raise TtsError("nothing to speak: the phrase is empty")
        return await self._worker.call(functools.partial(self._speak, text=phrase))

    def _speak(self, engine: E, text: str) -> SpeechAudio:
        raise NotImplementedError


def speakable(text: str) -> str:
    """``text`` as an engine can take it: trimmed, without lone surrogates.

    A lone surrogate is valid in JSON but not in UTF-8, and espeak-ng (under
    pyttsx3 and piper alike) raises on it: it is dropped and the rest spoken.
    """
    return text.encode("utf-8", "ignore").decode("utf-8").strip()


def audible(pcm: bytes) -> bool:
    return audio.rms(pcm) >= SILENT_RMS


def preview(text: str) -> str:
    """A phrase as quoted in error messages: short, and repr'd."""
    return repr(text if len(text) <= 40 else text[:39] + "…")


__all__ = [
    "SILENT_RMS",
    "THREAD_NAME",
    "TtsLoadError",
    "TtsWorker",
    "audible",
    "preview",
    "speakable",
]
