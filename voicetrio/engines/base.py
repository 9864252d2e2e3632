"""The four engine interfaces a session talks to, and the errors they raise.

A session knows engines only through these ``typing.Protocol``s. Engines are
async at the edge: an engine whose work is blocking (Whisper, espeak) runs it
in ``trio.to_thread.run_sync`` under a slot of the scheduler it shares with
every session (:mod:`voicetrio.engines.scheduler`), so the session never blocks the event loop and cancelling a turn
only abandons a result, never a half-updated model.

Error tree::

    EngineError            (code says which protocol error the session sends)
     +-- AsrError          ASR_FAIL
     |    +-- AsrUnsupported           a file request the model cannot do (not a failure)
     |         +-- TranslationUnsupported   translate on an English-only model
     |         +-- LanguageUnsupported      a language the model does not know
     +-- LlmError          LLM_FAIL
     +-- TtsError          TTS_FAIL
     +-- ModelLoadError    MODEL_LOAD_FAIL (fatal for the session)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

# SpeechAudio and ChatMessage live in leaves that the session and the CLI use
# without the engines; they are named here too because every engine speaks them.
from voicetrio.core.audio import SpeechAudio
from voicetrio.core.codes import ErrorCode
from voicetrio.core.prompt import ChatMessage
from voicetrio.core.transcript import FileRequest, FileTranscript, Segment, Word
from voicetrio.core.turn_policy import TurnVerdict
from voicetrio.engines.scheduler import Scheduler, Slot

if TYPE_CHECKING:
    import trio

#: The rate every engine sees: the session resamples client audio to it.
ENGINE_SAMPLE_RATE = 16000
#: The VAD frame; webrtcvad accepts 10, 20 or 30 ms.
VAD_FRAME_MS = 30


class EngineError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL


class AsrError(EngineError):
    code = ErrorCode.ASR_FAIL


class AsrUnsupported(AsrError):
    """A file request this model cannot do as asked: the caller's to change, not
    a failure. ``param`` names the request field at fault."""

    param = "model"


class TranslationUnsupported(AsrUnsupported):
    """Translation asked of an English-only model."""


class LanguageUnsupported(AsrUnsupported):
    """A spoken language the model does not know (any but English on ``tiny.en``)."""

    param = "language"


class LlmError(EngineError):
    code = ErrorCode.LLM_FAIL


class TtsError(EngineError):
    code = ErrorCode.TTS_FAIL


class ModelLoadError(EngineError):
    code = ErrorCode.MODEL_LOAD_FAIL


class VadEngine(Protocol):
    """Per-session voice activity detector (may keep state between frames)."""

    @property
    def hangover_ms(self) -> int:
        """How long the detector keeps saying "speech" after the voice stops
        (0 for none). The ASR stage takes it off its silence window, so that
        the end of a turn comes the configured silence after the voice."""
        ...

    def is_speech(self, frame: bytes) -> bool:
        """``frame`` is exactly VAD_FRAME_MS of 16 kHz 16-bit mono PCM."""
        ...

    def reset(self) -> None:
        """Forget the state kept between frames (a new stream starts)."""
        ...


VadFactory = Callable[[], VadEngine]


class AsrEngine(Protocol):
    @property
    def ready(self) -> bool:
        """Whether the engine can serve now (its model is loaded); ``/health`` says it."""
        ...

    async def transcribe(self, pcm: bytes, *, final: bool, slot: Slot | None = None) -> str:
        """Text of ``pcm`` (16 kHz 16-bit mono). ``final`` marks the last decode
        of an utterance, which may be slower and more careful. ``slot`` is the
        decode's place in the shared decoder's queue (default: a new one, in
        the urgent lane for a final, the tentative lane for a partial).
        The upload routes call it too, with a whole file decoded to PCM, as
        one final decode. Raises AsrError."""
        ...


class FileAsrEngine(Protocol):
    """Whole-file transcription with timings: the OpenAI upload routes'.

    Apart from :class:`AsrEngine` because a streaming engine need not give
    timings: an engine set without one serves uploads as one untimed
    segment (:class:`~voicetrio.engines.asr.whole_file.WholeFileAsr`).
    """

    async def transcribe_file(self, pcm: bytes, request: FileRequest) -> FileTranscript:
        """Segments (and words, if ``request.words``) of ``pcm``, a whole file
        as 16 kHz 16-bit mono, decoded in the shared decoder's queue as a
        final is. ``request.task`` "translate" gives English text. Raises
        AsrUnsupported for what the model cannot do (translation by an
        English-only model, a language it does not know), AsrError for a
        failed decode."""
        ...


class LlmEngine(Protocol):
    @property
    def ready(self) -> bool:
        """Whether the engine can serve now (its service answers); ``/health`` says it."""
        ...

    def stream(
        self, messages: Sequence[ChatMessage]
    ) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """Open a streamed reply; iterate for text deltas. Leaving the context
        (normally, on error or on cancellation) closes the stream at once.
        Raises LlmError on entry or while iterating."""
        ...


class TtsEngine(Protocol):
    @property
    def ready(self) -> bool:
        """Whether the engine can serve now (its speech thread runs); ``/health`` says it."""
        ...

    async def synthesize(self, text: str) -> SpeechAudio:
        """Speech for one phrase. Raises TtsError."""
        ...


class TurnJudgeError(EngineError):
    """A turn judge could not judge. Never the client's concern: the turn
    policy falls back to its fixed silence window (core/turn_policy.py)."""


class TurnJudge(Protocol):
    """Whether the user's turn sounds complete, from its last seconds of audio
    (Smart Turn, engines/turn/). Shared by all sessions; optional: without
    one, the end of a turn is decided by silence and the words alone."""

    @property
    def ready(self) -> bool:
        """Whether :meth:`judge` can run now (the model is loaded)."""
        ...

    async def load(self) -> None:
        """Load the model (in a thread); raises ModelLoadError. Idempotent."""
        ...

    def judge(self, pcm: bytes) -> TurnVerdict:
        """Blocking: the verdict on ``pcm``, the utterance so far as 16 kHz
        16-bit mono (only its end is heard). Raises TurnJudgeError."""
        ...

    async def judge_async(self, pcm: bytes) -> TurnVerdict:
        """:meth:`judge` off the event loop, one run at a time; cancelling
        abandons the run. Raises TurnJudgeError."""
        ...


class TextTurnJudge(Protocol):
    """How likely the words so far end the user's turn, read by a language
    model (engines/turn/text_judge.py, core/text_turn.py). Shared by all
    sessions; optional, like the audio judge."""

    @property
    def ready(self) -> bool:
        """Whether :meth:`end_probability` can run now."""
        ...

    async def start(self, services: trio.Nursery) -> None:
        """Start what it runs on (a model server) in ``services``, where it
        keeps running; returns once it answers. Raises ModelLoadError."""
        ...

    async def end_probability(self, text: str) -> float:
        """The probability (0..1) that ``text`` is the whole of the user's
        turn. Raises TurnJudgeError (the policy then goes without it)."""
        ...


@dataclass(frozen=True, slots=True)
class Engines:
    """What a session needs: one of each, shared by all sessions but the VAD."""

    name: str
    vad: VadFactory
    asr: AsrEngine
    llm: LlmEngine
    tts: TtsEngine
    #: The queue of the shared decoder, which ``asr`` decodes under.
    decoder: Scheduler = field(default_factory=lambda: Scheduler(1))
    #: The queue in front of the LLM: one slot per reply it streams at once.
    replies: Scheduler = field(default_factory=lambda: Scheduler(64))
    #: Uploads with timings (segments, words, translation); None: ``asr`` serves
    #: them as one untimed segment.
    files: FileAsrEngine | None = None
    #: Whether the user's turn sounds complete (Smart Turn); None: the end
    #: of a turn is the fixed silence window, as without one.
    turn: TurnJudge | None = None
    #: Whether the words so far end the turn (a small language model); None:
    #: not used.
    turn_text: TextTurnJudge | None = None

    def readiness(self) -> dict[str, bool]:
        return {"asr": self.asr.ready, "llm": self.llm.ready, "tts": self.tts.ready}


EngineName = Literal["fake", "real"]
__all__ = [
    "ENGINE_SAMPLE_RATE",
    "VAD_FRAME_MS",
    "AsrEngine",
    "AsrError",
    "AsrUnsupported",
    "ChatMessage",
    "EngineError",
    "EngineName",
    "Engines",
    "FileAsrEngine",
    "FileRequest",
    "FileTranscript",
    "LanguageUnsupported",
    "LlmEngine",
    "LlmError",
    "ModelLoadError",
    "Segment",
    "SpeechAudio",
    "TranslationUnsupported",
    "TtsEngine",
    "TtsError",
    "TurnJudge",
    "TurnJudgeError",
    "TurnVerdict",
    "VadEngine",
    "VadFactory",
    "Word",
]
