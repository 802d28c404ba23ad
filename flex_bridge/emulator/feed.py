"""The live feed: Sync changes and TaskRouter events, fanned out to WebSocket subscribers.

It stands in for the Flex UI's live connection. A subscriber that falls more than
``queue_size`` messages behind is disconnected rather than slowing the emulator down.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any


class Feed:
    def __init__(self, queue_size: int = 10_000) -> None:
        self.queue_size = queue_size
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._seq = itertools.count(1)

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(self.queue_size)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._subscribers.discard(queue)

    def publish(self, message: dict[str, Any]) -> None:
        message = {"seq": next(self._seq), **message}
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self._subscribers.discard(queue)
                # Tell the slow reader why its stream ends.
                queue.get_nowait()
                queue.put_nowait(None)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
