"""The codes a session reports by, whatever the wire protocol: a leaf.

Error codes name what went wrong (the v1 protocol sends them in ``error``
and some ``info`` events; engines raise errors that carry them), and the
WebSocket close codes say how a connection ended. Both belong to the session
core, not to one protocol, so that the core and the engines need not import
the v1 protocol module (which re-exports them under their old names).
"""

from __future__ import annotations

import enum
from typing import Final


class ErrorCode(enum.StrEnum):
    """Every code an ``error`` event (and some ``info`` events) can carry."""

    PROTOCOL_VIOLATION = "PROTOCOL_VIOLATION"
    INTERNAL = "INTERNAL"
    MODEL_LOAD_FAIL = "MODEL_LOAD_FAIL"
    BAD_MESSAGE = "BAD_MESSAGE"
    ASR_FAIL = "ASR_FAIL"
    LLM_TIMEOUT = "LLM_TIMEOUT"
    LLM_FAIL = "LLM_FAIL"
    TTS_FAIL = "TTS_FAIL"
    MAX_DURATION_EXCEEDED = "MAX_DURATION_EXCEEDED"
    BACKPRESSURE = "BACKPRESSURE"
    UNSUPPORTED_SAMPLE_RATE = "UNSUPPORTED_SAMPLE_RATE"
    CANCELLED = "CANCELLED"
    SERVER_BUSY = "SERVER_BUSY"


#: Codes after which the server closes the connection. Everything else is
#: recoverable: the session keeps its state and goes on.
FATAL_CODES: Final = frozenset(
    {
        ErrorCode.PROTOCOL_VIOLATION,
        ErrorCode.INTERNAL,
        ErrorCode.MODEL_LOAD_FAIL,
        ErrorCode.SERVER_BUSY,
    }
)


def is_fatal(code: ErrorCode) -> bool:
    return code in FATAL_CODES


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses (RFC 6455, section 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutdown
    POLICY_VIOLATION = 1008  # PROTOCOL_VIOLATION, client too far behind
    INTERNAL_ERROR = 1011  # INTERNAL, MODEL_LOAD_FAIL
    TRY_AGAIN_LATER = 1013


__all__ = ["FATAL_CODES", "CloseCode", "ErrorCode", "is_fatal"]
