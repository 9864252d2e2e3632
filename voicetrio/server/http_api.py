"""Whole-file transcription over HTTP: ``POST /transcribe`` and the
OpenAI-compatible ``POST /v1/audio/transcriptions``.

Uploads are decoded by PyAV (:mod:`voicetrio.audio_files`), so WAV, FLAC,
MP3 and Ogg all work, to the PCM a streaming session hands its ASR engine,
and transcribed by that engine as one final decode, in the same decoder
queue the sessions use. Only :class:`~voicetrio.engines.base.AsrEngine` is
asked, so any engine serves uploads as it serves sessions. Every refusal is
a 4xx (or a 5xx for a failed engine) with a JSON body
``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

from typing import Final

import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import RequestEntityTooLarge

from voicetrio.audio_files import decode_audio_file
from voicetrio.config import Config
from voicetrio.engines.base import ENGINE_SAMPLE_RATE, EngineError
from voicetrio.engines.registry import EngineHost

RESPONSE_FORMATS: Final = ("json", "text")


class UploadError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


def register(app: QuartTrio, config: Config, host: EngineHost) -> None:
    app.config["MAX_CONTENT_LENGTH"] = config.max_upload_bytes

    @app.errorhandler(RequestEntityTooLarge)
    async def too_large(_: Exception) -> tuple[Response, int]:
        response, status = error_response(
            413, "UPLOAD_TOO_LARGE", f"upload exceeds {config.max_upload_bytes} bytes"
        )
        # The rest of the body is only drained (front.finish_request_first,
        # at most DRAIN_S) and dropped: close after it, so the connection of
        # a client that sent too much is not kept for another request.
        response.headers["Connection"] = "close"
        return response, status

    @app.errorhandler(UploadError)
    async def refused(exc: UploadError) -> tuple[Response, int]:
        return error_response(exc.status, exc.code, exc.message)

    @app.post("/transcribe")
    async def transcribe() -> Response:
        text = await _transcribe_upload(config, host)
        return jsonify({"transcript": text})

    @app.post("/v1/audio/transcriptions")
    async def openai_transcriptions() -> Response | tuple[str, int, dict[str, str]]:
        form = await request.form
        response_format = form.get("response_format", "json")
        if response_format not in RESPONSE_FORMATS:
            raise UploadError(
                400,
                "BAD_REQUEST",
                f"response_format {response_format!r} is not supported; use json or text",
            )
        language = form.get("language")
        if language is not None and language not in ("en", ""):
            raise UploadError(
                400, "BAD_REQUEST", f"language {language!r} is not supported by this model; use en"
            )
        text = await _transcribe_upload(config, host)
        if response_format == "text":
            return text, 200, {"Content-Type": "text/plain; charset=utf-8"}
        return jsonify({"text": text})


async def _transcribe_upload(config: Config, host: EngineHost) -> str:
    files = await request.files
    upload = files.get("file")
    if upload is None:
        raise UploadError(400, "BAD_REQUEST", 'multipart field "file" with the audio is required')
    data = upload.read()
    if not data:
        raise UploadError(400, "EMPTY_UPLOAD", "the uploaded file is empty")
    pcm = await _decode(data)
    seconds = len(pcm) / 2 / ENGINE_SAMPLE_RATE
    if seconds > config.max_upload_s:
        raise UploadError(
            413,
            "UPLOAD_TOO_LONG",
            f"audio of {seconds:.1f} s exceeds the limit of {config.max_upload_s:g} s",
        )
    if host.failure is not None:
        raise UploadError(503, "MODEL_LOAD_FAIL", str(host.failure))
    try:
        text = await host.engines.asr.transcribe(pcm, final=True)
    except EngineError as exc:
        raise UploadError(500, str(exc.code), str(exc)) from None
    return text.strip()


async def _decode(data: bytes) -> bytes:
    """16 kHz mono PCM of an uploaded file, decoded off the event loop."""
    try:
        return await trio.to_thread.run_sync(decode_audio_file, data, ENGINE_SAMPLE_RATE)
    except ValueError as exc:
        raise UploadError(415, "NOT_AUDIO", str(exc)) from None
