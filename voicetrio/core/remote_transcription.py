"""The client side of an OpenAI Realtime transcription session, sans-IO.

The remote ASR engine (:mod:`voicetrio.engines.asr.realtime_remote`) asks a
server speaking the Realtime API (another voicetrio with
``?intent=transcription``, speaches, vLLM) for one transcript at a time on a
connection: the session is set to manual turns (``turn_detection: null``),
and each decode is ``input_audio_buffer.clear`` (a reused connection keeps
nothing of the audio before), the audio in ``append`` events (pcm16 at
24 kHz, the one rate every server of the API takes), then ``commit``. The
answer is the first ``...input_audio_transcription.completed`` (the text),
``.failed`` or ``error`` after the commit; the events in between (committed,
the item, deltas) say nothing the engine needs.

:class:`Exchange` reads one decode's answer from the server's frames; the
functions make the client's frames and the URL. No sockets here: the engine
moves the frames.

Error tree::

    RemoteTranscriptionError       the answer is not a transcript
     +-- RemoteRefused             an ``error`` or ``.failed`` event (code, message)
     +-- RemoteUnreadable          a frame that is not the API's JSON
"""

from __future__ import annotations

import base64
import json
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: The one input rate of pcm16 in the API (``audio/pcm``, rate 24000).
REMOTE_RATE: Final = 24000
#: Audio per ``append`` event, in bytes of 24 kHz pcm16 (10 s; 1.3 MB as
#: base64): well under the API's 15 MiB per event and voicetrio's 16 MiB
#: frame limit, and few events for an utterance (one for most).
APPEND_BYTES: Final = 10 * REMOTE_RATE * 2
#: The server's answer when the committed audio held no speech its VAD
#: heard: no words, not a failure (as a local decode of silence gives "").
COMMIT_EMPTY: Final = "input_audio_buffer_commit_empty"

COMPLETED: Final = "conversation.item.input_audio_transcription.completed"
FAILED: Final = "conversation.item.input_audio_transcription.failed"


class RemoteTranscriptionError(Exception):
    """The server's answer to a decode is not a transcript."""


class RemoteRefused(RemoteTranscriptionError):
    """An ``error`` event (``code`` its error code) or a ``.failed`` transcription."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class RemoteUnreadable(RemoteTranscriptionError):
    """A frame that is not a JSON object with a ``type``."""


def realtime_url(base: str, model: str = "") -> str:
    """The transcription session's URL for ``base``.

    ``base`` is the server's API root as ``OPENAI_BASE_URL`` is written
    (``http://host:8000/v1``; ``ws``/``wss`` too), to which ``/realtime`` is
    added, or a URL already ending in ``/realtime``. ``http`` becomes ``ws``
    and ``https`` ``wss``; ``intent=transcription`` (and ``model`` if given
    and not already there) join the query. Raises ValueError for any other
    scheme or no host.
    """
    parts = urlsplit(base.strip())
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    scheme = schemes.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"{base!r} is not an http(s):// or ws(s):// URL with a host")
    path = parts.path.rstrip("/")
    if not path.endswith("/realtime"):
        path += "/realtime"
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query["intent"] = "transcription"
    if model and "model" not in query:
        query["model"] = model
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


def session_update(model: str, language: str | None = None) -> str:
    """The ``session.update`` (GA shape) that makes a transcription session
    serve this client: pcm16 at 24 kHz, manual turns, the model named."""
    transcription: dict[str, Any] = {"model": model}
    if language:
        transcription["language"] = language
    return _frame(
        {
            "type": "session.update",
            "event_id": "evt_vt_session",
            "session": {
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": REMOTE_RATE},
                        "turn_detection": None,
                        "transcription": transcription,
                    }
                },
            },
        }
    )


def request_frames(pcm24k: bytes, number: int) -> list[str]:
    """The client events of decode ``number`` on a connection: clear, the
    audio (24 kHz pcm16) in appends of at most :data:`APPEND_BYTES`, commit."""
    frames = [_frame({"type": "input_audio_buffer.clear", "event_id": f"evt_vt_{number}_clear"})]
    for index, offset in enumerate(range(0, len(pcm24k), APPEND_BYTES)):
        chunk = pcm24k[offset : offset + APPEND_BYTES]
        frames.append(
            _frame(
                {
                    "type": "input_audio_buffer.append",
                    "event_id": f"evt_vt_{number}_append_{index}",
                    "audio": base64.b64encode(chunk).decode("ascii"),
                }
            )
        )
    frames.append(
        _frame({"type": "input_audio_buffer.commit", "event_id": f"evt_vt_{number}_commit"})
    )
    return frames


def read_event(frame: str | bytes) -> dict[str, Any]:
    """One server event; RemoteUnreadable if it is not a JSON object with a type."""
    try:
        event = json.loads(frame)
    except ValueError as exc:
        raise RemoteUnreadable(f"the server sent a frame that is not JSON: {exc}") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise RemoteUnreadable("the server sent an event without a type")
    return event


def _refusal(event: dict[str, Any]) -> RemoteRefused:
    error = event.get("error")
    if not isinstance(error, dict):
        return RemoteRefused("unknown", "the server sent an error without details")
    code = error.get("code") or error.get("type") or "unknown"
    return RemoteRefused(str(code), str(error.get("message") or ""))


def configured(frame: str | bytes) -> bool:
    """Whether ``frame`` says the session's settings were taken (True),
    or is something to skip while waiting for that (False: ``session.created``
    and the like). Raises RemoteRefused for an ``error`` (the settings were
    refused, or the server is full) and RemoteUnreadable."""
    event = read_event(frame)
    kind = event["type"]
    if kind == "error":
        raise _refusal(event)
    return kind in ("session.updated", "transcription_session.updated")


class Exchange:
    """One decode's answer, read from the server's events after its commit.

    Feed each frame to :meth:`feed` until it returns the text. Everything
    before the terminal event (``input_audio_buffer.cleared``, ``committed``,
    the item, deltas) is skipped: the connection is one decode's alone, so
    the first terminal event is this decode's.
    """

    def __init__(self) -> None:
        self.done = False

    def feed(self, frame: str | bytes) -> str | None:
        """The transcript if ``frame`` ends the decode, else None. Raises
        RemoteRefused (an ``error``, a ``.failed``), RemoteUnreadable."""
        if self.done:
            raise RuntimeError("this exchange has its answer already")
        event = read_event(frame)
        kind = event["type"]
        if kind == COMPLETED:
            self.done = True
            transcript = event.get("transcript")
            if not isinstance(transcript, str):
                raise RemoteUnreadable("a completed transcription without a transcript")
            return transcript
        if kind == FAILED:
            self.done = True
            raise _refusal(event)
        if kind == "error":
            refusal = _refusal(event)
            if refusal.code == COMMIT_EMPTY:
                # Nothing the server's VAD called speech: no words.
                self.done = True
                return ""
            self.done = True
            raise refusal
        return None


def _frame(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


__all__ = [
    "APPEND_BYTES",
    "COMMIT_EMPTY",
    "COMPLETED",
    "FAILED",
    "REMOTE_RATE",
    "Exchange",
    "RemoteRefused",
    "RemoteTranscriptionError",
    "RemoteUnreadable",
    "configured",
    "read_event",
    "realtime_url",
    "request_frames",
    "session_update",
]
