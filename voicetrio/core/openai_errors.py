"""Errors in the OpenAI REST API's shape, sans-IO.

Every refusal of an OpenAI-compatible route is one JSON body::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "speed", "code": "BAD_REQUEST"}}

``code`` is voicetrio's (the upper-case codes its HTTP API has always sent,
so a client of ``/transcribe`` and of ``/v1`` reads the same ones); ``type``
is OpenAI's class of error, from the HTTP status, which is what the SDKs
and their users look at; ``param`` names the request field at fault, or is
null.
"""

from __future__ import annotations

from typing import Any


def error_type(status: int) -> str:
    """OpenAI's ``type`` for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": error_type(status), "param": param, "code": code}
    }


class ApiError(Exception):
    """A refusal: its HTTP status and what the body says."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.code, self.message, self.param)


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, "BAD_REQUEST", message, param)


__all__ = ["ApiError", "bad_request", "error_body", "error_type"]
