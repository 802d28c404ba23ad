"""Logging set-up: one line per record, with the intent and reservation it concerns.

Modules log through named loggers (``flex_bridge.coordinator``, ...) and pass context as
``extra={"intent_id": ..., "reservation_sid": ...}``. Nothing logs tokens, auth tokens,
signatures or phone numbers: form bodies and Flex tokens are never formatted into messages.

Two formats (``FLEX_BRIDGE_LOG_FORMAT``): ``text`` (the default), one line of text per record,
and ``json``, one JSON object per line. Every record goes through the root logger's one
handler: the bridge's, the servers' (uvicorn, Hypercorn) and the access log's alike.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

CONTEXT_KEYS = ("intent_id", "reservation_sid")
# What an access log record carries (``flex_bridge.access``), as JSON fields of their own.
ACCESS_KEYS = ("method", "path", "status", "duration_ms")
FORMATS = ("text", "json")


class ContextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{key}={getattr(record, key)}" for key in CONTEXT_KEYS if hasattr(record, key)
        )
        return f"{line} [{context}]" if context else line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, the context keys the record carries, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in (*CONTEXT_KEYS, *ACCESS_KEYS):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def formatter(fmt: str = "text") -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    return ContextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The twilio package logs whole requests at INFO; keep them out.
    logging.getLogger("twilio").setLevel(logging.WARNING)
    # The servers' own loggers keep no handler of their own: their records reach this one.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "hypercorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
