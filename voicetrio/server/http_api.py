"""The HTTP APIs: ``POST /transcribe`` and the OpenAI audio API.

* ``POST /transcribe``: a file's transcript, ``{"transcript": ...}``.
* ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``: as
  OpenAI's, in ``json``, ``text``, ``srt``, ``verbose_json`` (segments, and
  words with ``timestamp_granularities[]=word``) and ``vtt``.
* ``POST /v1/audio/speech``: the TTS engine's speech in ``wav``, ``pcm``
  (24 kHz) or ``mp3``, streamed phrase by phrase as it is spoken.
* ``GET /v1/models`` and ``/v1/models/{id}``: see :mod:`model_list`.

Uploads are decoded by PyAV (:mod:`voicetrio.audio_files`), so WAV, FLAC,
MP3 and Ogg all work, to the PCM a streaming session hands its ASR engine,
and decoded in the same decoder queue the sessions use. Only the declared
engine interfaces are asked: ``AsrEngine`` for ``/transcribe``, the engine
set's ``FileAsrEngine`` (or, without one, the ASR engine as one untimed
segment) for the OpenAI uploads, ``TtsEngine`` for speech. The request
parsing and the answers' shapes are sans-IO (:mod:`voicetrio.core.openai_audio`).

Every refusal is a 4xx (a 5xx for a failed engine) with the OpenAI error
body ``{"error": {"message", "type", "param", "code"}}``; the token and
origin checks (``app.py``, :mod:`access`) answer ``/v1`` in that shape too.
"""

from __future__ import annotations

import json

import trio
from quart import Response, has_request_context, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import MethodNotAllowed, NotFound, RequestEntityTooLarge

from voicetrio.audio_files import decode_audio_file
from voicetrio.config import Config
from voicetrio.core.openai_audio import parse_speech, parse_transcript_ask, render_transcript
from voicetrio.core.openai_errors import ApiError, error_body
from voicetrio.engines.asr.whole_file import WholeFileAsr
from voicetrio.engines.base import (
    ENGINE_SAMPLE_RATE,
    AsrUnsupported,
    EngineError,
    FileRequest,
    FileTranscript,
    LanguageUnsupported,
    ModelLoadError,
    TranslationUnsupported,
)
from voicetrio.engines.registry import EngineHost
from voicetrio.server.model_list import available_models, find_model, list_body
from voicetrio.server.speech_formats import SpeechEncoder, served_formats, tempo_available
from voicetrio.server.speech_stream import open_speech

#: The OpenAI-compatible routes: their every error is in the OpenAI shape.
OPENAI_PREFIX = "/v1/"


def error_response(
    status: int, code: str, message: str, param: str | None = None
) -> tuple[Response, int]:
    return jsonify(error_body(status, code, message, param)), status


def register(app: QuartTrio, config: Config, host: EngineHost) -> None:
    app.config["MAX_CONTENT_LENGTH"] = config.max_upload_bytes
    models = available_models(config)

    @app.errorhandler(RequestEntityTooLarge)
    async def too_large(_: Exception) -> tuple[Response, int]:
        response, status = error_response(
            413, "UPLOAD_TOO_LARGE", f"upload exceeds {config.max_upload_bytes} bytes", "file"
        )
        # The rest of the body is only drained (front.finish_request_first,
        # at most DRAIN_S) and dropped: close after it, so the connection of
        # a client that sent too much is not kept for another request.
        response.headers["Connection"] = "close"
        return response, status

    @app.errorhandler(ApiError)
    async def refused(exc: ApiError) -> tuple[Response, int]:
        return error_response(exc.status, exc.code, exc.message, exc.param)

    def openai_route() -> bool:
        # A WebSocket has no request context: its refusals stay Quart's.
        return has_request_context() and request.path.startswith(OPENAI_PREFIX)

    @app.errorhandler(NotFound)
    async def not_found(exc: NotFound) -> NotFound | tuple[Response, int]:
        if not openai_route():
            return exc  # every other path keeps Quart's own page
        return error_response(404, "NOT_FOUND", f"no route {request.path}")

    @app.errorhandler(MethodNotAllowed)
    async def not_allowed(exc: MethodNotAllowed) -> MethodNotAllowed | tuple[Response, int]:
        if not openai_route():
            return exc
        response, status = error_response(
            405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed on {request.path}"
        )
        response.headers["Allow"] = ", ".join(sorted(exc.valid_methods or ()))
        return response, status

    @app.after_request
    async def openai_error_shape(response: Response) -> Response:
        # The token and origin checks run before any route (app.py) and answer
        # {"error": {"code", "message"}}: an OpenAI client wants type and param too.
        if (
            not openai_route()
            or response.status_code < 400
            or response.mimetype != "application/json"
        ):
            return response
        body = await response.get_json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and "type" not in error:
            reshaped = error_body(
                response.status_code, str(error.get("code")), str(error.get("message"))
            )
            response.set_data(json.dumps(reshaped))
        return response

    @app.post("/transcribe")
    async def transcribe() -> Response:
        pcm = await _upload_pcm(config)
        _check_loaded(host)
        try:
            text = await host.engines.asr.transcribe(pcm, final=True)
        except EngineError as exc:
            raise _engine_failure(exc) from None
        return jsonify({"transcript": text.strip()})

    async def transcript_route(*, translate: bool) -> Response:
        form = await request.form
        ask = parse_transcript_ask(form.to_dict(flat=False), translate=translate)
        transcript = await _transcribe_file(config, host, ask.file)
        body, content_type = render_transcript(transcript, ask)
        return Response(body, content_type=content_type)

    @app.post("/v1/audio/transcriptions")
    async def openai_transcriptions() -> Response:
        return await transcript_route(translate=False)

    @app.post("/v1/audio/translations")
    async def openai_translations() -> Response:
        return await transcript_route(translate=True)

    @app.post("/v1/audio/speech")
    async def openai_speech() -> Response:
        if config.lean:
            raise ApiError(
                400,
                "SPEECH_NOT_AVAILABLE",
                "this server runs lean (transcripts only): it has no speech engine",
            )
        ask = parse_speech(await request.get_json(force=True, silent=True), served=served_formats())
        if ask.speed != 1.0 and not tempo_available():
            raise ApiError(
                400,
                "UNSUPPORTED_VALUE",
                "speed other than 1.0 needs FFmpeg's atempo filter, which this PyAV lacks",
                "speed",
            )
        _check_loaded(host)
        encoder = SpeechEncoder(ask.response_format, ask.speed)
        try:
            chunks = await open_speech(host.engines.tts, ask.input, encoder, config)
        except EngineError as exc:
            raise _engine_failure(exc) from None
        response = Response(chunks, content_type=encoder.content_type)
        # Streamed as spoken: a client that plays as it reads takes as long as
        # the speech lasts (minutes for 4096 characters), past Quart's 60 s.
        response.timeout = None
        return response

    @app.get("/v1/models")
    async def openai_models() -> Response:
        return jsonify(list_body(models))

    @app.get("/v1/models/<path:model_id>")
    async def openai_model(model_id: str) -> Response:
        entry = find_model(models, model_id)
        if entry is None:
            raise ApiError(
                404, "MODEL_NOT_FOUND", f"no model {model_id!r} here; GET /v1/models lists them", "model"
            )
        return jsonify(entry.body())


async def _upload_pcm(config: Config) -> bytes:
    """The multipart ``file`` as 16 kHz mono PCM, within the upload limits."""
    files = await request.files
    upload = files.get("file")
    if upload is None:
        raise ApiError(400, "BAD_REQUEST", 'multipart field "file" with the audio is required', "file")
    data = upload.read()
    if not data:
        raise ApiError(400, "EMPTY_UPLOAD", "the uploaded file is empty", "file")
    pcm = await _decode(data)
    seconds = len(pcm) / 2 / ENGINE_SAMPLE_RATE
    if seconds > config.max_upload_s:
        raise ApiError(
            413,
            "UPLOAD_TOO_LONG",
            f"audio of {seconds:.1f} s exceeds the limit of {config.max_upload_s:g} s",
            "file",
        )
    return pcm


async def _transcribe_file(config: Config, host: EngineHost, asked: FileRequest) -> FileTranscript:
    pcm = await _upload_pcm(config)
    _check_loaded(host)
    engines = host.engines
    files = engines.files if engines.files is not None else WholeFileAsr(engines.asr)
    try:
        return await files.transcribe_file(pcm, asked)
    except AsrUnsupported as exc:
        raise ApiError(400, _unsupported_code(exc), str(exc), exc.param) from None
    except EngineError as exc:
        raise _engine_failure(exc) from None


def _unsupported_code(exc: AsrUnsupported) -> str:
    if isinstance(exc, TranslationUnsupported):
        return "TRANSLATION_NOT_SUPPORTED"
    if isinstance(exc, LanguageUnsupported):
        return "LANGUAGE_NOT_SUPPORTED"
    return "NOT_SUPPORTED"


def _check_loaded(host: EngineHost) -> None:
    if host.failure is not None:
        raise ApiError(503, "MODEL_LOAD_FAIL", str(host.failure))


def _engine_failure(exc: EngineError) -> ApiError:
    # An engine that never loaded will not serve a retry either; one that
    # failed this request may serve the next.
    status = 503 if isinstance(exc, ModelLoadError) else 500
    return ApiError(status, str(exc.code), str(exc))


async def _decode(data: bytes) -> bytes:
    """16 kHz mono PCM of an uploaded file, decoded off the event loop."""
    try:
        return await trio.to_thread.run_sync(decode_audio_file, data, ENGINE_SAMPLE_RATE)
    except ValueError as exc:
        raise ApiError(415, "NOT_AUDIO", str(exc), "file") from None


__all__ = ["OPENAI_PREFIX", "error_response", "register"]
