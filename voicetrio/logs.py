"""Structured JSON logs: one object a line with ts, level, sid, event and fields.

Everything the server logs goes through :func:`log_event`, so secrets can be
kept out in one place: fields whose names look secret are masked.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final

LOGGER: Final = logging.getLogger("voicetrio")
_SECRET_MARKERS: Final = ("key", "token", "secret", "password", "authorization")


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | str | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "sid": getattr(record, "sid", None),
            "event": getattr(record, "event", record.getMessage()),
        }
        if self.worker is not None:
            payload["worker"] = self.worker
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def setup_logging(level: str = "INFO", *, worker: int | str | None = None) -> None:
    """JSON lines on stderr; with several server processes, each line names its ``worker``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Hypercorn's access log would double every request line; errors stay.
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)


def _mask(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        k: ("***" if any(m in k.lower() for m in _SECRET_MARKERS) else v) for k, v in fields.items()
    }


def log_event(
    sid: str | None,
    event: str,
    *,
    level: int = logging.INFO,
    exc_info: bool = False,
    **fields: Any,
) -> None:
    if not LOGGER.isEnabledFor(level):
        return
    LOGGER.log(
        level,
        event,
        exc_info=exc_info,
        extra={"sid": sid, "event": event, "fields": _mask(fields), "wall": time.time()},
    )
