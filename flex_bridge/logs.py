"""Logging set-up: one line per record, with the intent and reservation it concerns.

Modules log through named loggers (``flex_bridge.coordinator``, ...) and pass context as
``extra={"intent_id": ..., "reservation_sid": ...}``. Nothing logs tokens, auth tokens,
signatures or phone numbers: form bodies and Flex tokens are never formatted into messages.
"""

from __future__ import annotations

import logging
import sys

CONTEXT_KEYS = ("intent_id", "reservation_sid")


class ContextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{key}={getattr(record, key)}" for key in CONTEXT_KEYS if hasattr(record, key)
        )
        return f"{line} [{context}]" if context else line


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        ContextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The twilio package logs whole requests at INFO; keep them out.
    logging.getLogger("twilio").setLevel(logging.WARNING)
