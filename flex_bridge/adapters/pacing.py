"""Adaptive pacing of requests to one Twilio product (AIMD, as TCP does with its window).

Twilio's per-account rate limits are not published, so the bridge learns them. Each product
(TaskRouter, Sync, IAM) gets its own pace: requests leave at most ``rate`` per second,
evenly spaced. A 429 cuts the rate (``× decrease``) and holds every sender until the
server's ``Retry-After`` has passed; successes raise it again (``× grow`` per success while
no 429 was met for ``calm`` seconds, else ``+1/rate``, about one request per second more
each second). Under a limit the pace settles just below it, so almost every request is useful
work instead of a 429; without a limit it grows to ``ceiling`` and costs nothing.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from flex_bridge.adapters.retry import is_testing


@dataclass
class AdaptiveRate:
    rate: float = 100.0
    floor: float = 1.0
    ceiling: float = 2000.0
    decrease: float = 0.7
    grow: float = 1.02
    calm: float = 5.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def __post_init__(self) -> None:
        self._next = 0.0
        self._last_throttle = -1e9
        self.throttles = 0

    async def acquire(self) -> None:
        """Wait for this request's slot (no wait at all under ``retry.set_testing``)."""
        if is_testing():
            return
        now = self.clock()
        slot = max(now, self._next)
        self._next = slot + 1.0 / self.rate
        if slot > now:
            await self.sleep(slot - now)

    def throttled(self, retry_after: float | None) -> None:
        """A 429: slow down, and hold everyone for the server's Retry-After."""
        now = self.clock()
        self.throttles += 1
        # One cut per burst of 429s: those already in flight were sent at the old pace.
        if now - self._last_throttle > 1.0 / self.rate:
            self.rate = max(self.floor, self.rate * self.decrease)
        self._last_throttle = now
        if retry_after:
            self._next = max(self._next, now + retry_after)

    def succeeded(self) -> None:
        if self.clock() - self._last_throttle > self.calm:
            self.rate = min(self.ceiling, self.rate * self.grow)
        else:
            self.rate = min(self.ceiling, self.rate + 1.0 / self.rate)


SYNC_OBJECT = re.compile(r"^/v1/Services/[^/]+/(Documents|Maps|Lists|Streams)/([^/]+)")
SYNC_RATE = 20.0  # Sync's documented writes per second per object


class Pacing:
    """One ``AdaptiveRate`` per limit: per product for TaskRouter and IAM, per object for Sync
    (its limit is 20 writes/s per Document, Map, List or Stream)."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self.max_keys = max_keys
        self._paces: OrderedDict[str, AdaptiveRate] = OrderedDict()

    @staticmethod
    def key(url: str) -> str:
        parts = urlsplit(url)
        product = (parts.hostname or "").split(".", 1)[0]
        if product == "sync":
            found = SYNC_OBJECT.match(parts.path)
            if found:
                return f"sync:{found.group(1)}:{found.group(2)}"
        return product

    def pace(self, url: str) -> AdaptiveRate:
        key = self.key(url)
        pace = self._paces.get(key)
        if pace is None:
            if key.startswith("sync:"):
                pace = AdaptiveRate(rate=SYNC_RATE, ceiling=SYNC_RATE * 1.25)
            else:
                pace = AdaptiveRate()
            self._paces[key] = pace
            while len(self._paces) > self.max_keys:
                self._paces.popitem(last=False)
        else:
            self._paces.move_to_end(key)
        return pace
