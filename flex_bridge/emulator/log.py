"""An ordered log of every REST request the emulator served and every webhook it sent.

Tests read it through ``GET /_emulator/log`` to prove ordering (for example: the Sync item's
pending write strictly before the REST accept). Entries carry a sequence number that never
repeats, the emulator-clock time, and what happened. Form values are kept as sent, except
fields that carry secrets or phone numbers, which are masked.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

from flex_bridge.emulator.clock import Clock

MASKED_FIELDS = frozenset(
    {
        "SipAuthPassword",
        "Token",
        "token",
        "To",
        "From",
        "CallTo",
        "CallFrom",
        "DequeueTo",
        "DequeueFrom",
    }
)


def mask(params: dict[str, Any]) -> dict[str, Any]:
    return {k: ("***" if k in MASKED_FIELDS else v) for k, v in params.items()}


class RequestLog:
    def __init__(self, clock: Clock, limit: int = 200_000) -> None:
        self.clock = clock
        self._entries: deque[dict[str, Any]] = deque(maxlen=limit)
        self._seq = itertools.count(1)

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        entry = {"seq": next(self._seq), "time": self.clock.now(), "kind": kind, **fields}
        self._entries.append(entry)
        return entry

    def entries(self, since: int = 0, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            e for e in self._entries if e["seq"] > since and (kind is None or e["kind"] == kind)
        ]

    def clear(self) -> None:
        self._entries.clear()
