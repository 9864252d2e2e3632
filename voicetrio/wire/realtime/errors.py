"""Refusals in the Realtime API's terms, and the codes it answers with.

A bad client event is answered with one ``error`` event and the session
goes on::

    {"type": "error", "event_id": "event_...", "error": {"type": "invalid_request_error",
     "code": "invalid_value", "message": "...", "param": "session.voice",
     "event_id": "<the client event's id>"}}

:class:`Refusal` is the core's :class:`~voicetrio.core.inputs.ProtocolError`
(code ``BAD_MESSAGE``: never fatal), with the API's code as its reason and
the parameter and client event id as its details, so the session answers it
like any refused frame and the adapter renders it in this shape.
"""

from __future__ import annotations

from typing import Final

from voicetrio.core.codes import ErrorCode
from voicetrio.core.inputs import ProtocolError

# The API's codes (the ones its documentation and clients name).
INVALID_JSON: Final = "invalid_json"
MISSING_PARAMETER: Final = "missing_required_parameter"
INVALID_TYPE: Final = "invalid_type"
INVALID_VALUE: Final = "invalid_value"
EVENT_TOO_LARGE: Final = "event_too_large"
NOT_SUPPORTED: Final = "not_supported"
COMMIT_EMPTY: Final = "input_audio_buffer_commit_empty"
RESPONSE_ACTIVE: Final = "conversation_already_has_active_response"
CANCEL_NOT_ACTIVE: Final = "response_cancel_not_active"
#: ``item_{delete,truncate,retrieve}_invalid_item_id``.
INVALID_ITEM: Final = "item_{}_invalid_item_id"


class Refusal(ProtocolError):
    """A client event the adapter refuses: an ``invalid_request_error``."""

    def __init__(
        self, code: str, message: str, *, param: str | None = None, event_id: str | None = None
    ) -> None:
        super().__init__(
            ErrorCode.BAD_MESSAGE,
            code,
            message,
            details=(("param", param), ("event_id", event_id)),
        )
        self.param = param
        self.event_id = event_id


__all__ = [
    "CANCEL_NOT_ACTIVE",
    "COMMIT_EMPTY",
    "EVENT_TOO_LARGE",
    "INVALID_ITEM",
    "INVALID_JSON",
    "INVALID_TYPE",
    "INVALID_VALUE",
    "MISSING_PARAMETER",
    "NOT_SUPPORTED",
    "RESPONSE_ACTIVE",
    "Refusal",
]
