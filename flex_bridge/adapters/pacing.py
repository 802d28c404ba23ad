"""Adaptive pacing of requests to one Twilio limit (AIMD, as TCP does with its window).

Twilio's per-account rate limits are not published, so the bridge learns them. Each limit
(TaskRouter, each Sync object) gets its own pace: requests leave at most ``rate`` per second,
evenly spaced. A 429 cuts the rate and holds every sender for the server's ``Retry-After``, but
never longer than ``MAX_HOLD``: the request that met the 429 honours the whole Retry-After in
its own retry (``adapters.retry``), while the others go on at the cut pace. One 429 with a long
Retry-After therefore slows the bridge; it does not stop it (changes to other reservations
with deadlines near would otherwise time out with TaskRouter healthy). A request never waits
for its turn past its operation's deadline (``retry.current_deadline``): it is not sent, and
``NotSentError`` says so. Successes raise the rate again (``× grow`` per success while no 429
was met for ``calm`` seconds, else ``+1/rate``, about one request per second more each second).

The cut is taken from what actually got through, not from the pace alone: ``decrease`` times
the successes of the last second (when that is below the pace). A burst sent at a pace far
above the limit therefore lands just under the limit in one cut, instead of halving its way
down and then climbing back one request per second at a time. One cut per generation: a 429
for a request that left before the last cut says nothing new about the new pace. Senders wait
in line and only the first waits for its slot, so a cut or a hold applies at once to every
request that has not left yet. Under a limit the pace settles just below it, so almost every
request is useful work instead of a 429; without a limit it grows to ``ceiling`` and costs
nothing.
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
from flex_bridge.errors import NotSentError

WINDOW = 1.0  # seconds over which the successes that set a cut are counted
MAX_HOLD = 1.0  # seconds one 429's Retry-After may hold every other sender


@dataclass
class AdaptiveRate:
    rate: float = 100.0
    floor: float = 1.0
    ceiling: float = 2000.0
    decrease: float = 0.9
    grow: float = 1.02
    calm: float = 5.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def __post_init__(self) -> None:
        self._next = 0.0
        self._last_throttle = -1e9
        self._last_cut = -1e9
        self._turn = asyncio.Lock()  # senders wait in order; the first one waits for its slot
        # Successes per WINDOW: the current window and the one before (a sliding estimate).
        self._window = 0
        self._current = 0
        self._previous = 0
        self.throttles = 0

    async def acquire(self, within: float | None = None) -> float:
        """Wait for this request's turn (no wait at all under ``retry.set_testing``); returns
        the time it leaves, to hand back to ``throttled`` if the request meets a 429.
        ``within``: seconds left before the request's deadline; ``NotSentError`` when its turn
        would not come by then.

        Senders queue in order and only the first one waits for the next slot, so a cut or a
        hold applies at once to every request that has not left yet."""
        if is_testing():
            return self.clock()
        give_up = None if within is None else self.clock() + within
        try:
            await asyncio.wait_for(self._turn.acquire(), within)
        except TimeoutError:
            raise NotSentError("not sent: its deadline passed while it waited in line") from None
        try:
            while True:
                now = self.clock()
                if self._next <= now:
                    break
                if give_up is not None and self._next > give_up:
                    raise NotSentError("not sent: its turn would come after its deadline")
                await self.sleep(self._next - now)
            # Keep the cadence when this turn came a little late; restart it after a pause.
            start = self._next if now - self._next < 1.0 / self.rate else now
            self._next = start + 1.0 / self.rate
            return now
        finally:
            self._turn.release()

    def _roll(self, now: float) -> None:
        window = int(now // WINDOW)
        if window != self._window:
            self._previous = self._current if window == self._window + 1 else 0
            self._current = 0
            self._window = window

    def goodput(self) -> float:
        """Successes per second over the last WINDOW."""
        now = self.clock()
        self._roll(now)
        elapsed = (now % WINDOW) / WINDOW
        return (self._previous * (1.0 - elapsed) + self._current) / WINDOW

    def throttled(self, retry_after: float | None, sent_at: float | None = None) -> None:
        """A 429: slow down (once per generation), and hold everyone for the server's
        Retry-After. ``sent_at`` is the slot ``acquire`` gave the request, when known."""
        now = self.clock()
        self.throttles += 1
        if sent_at is not None:
            # A request that left before the last cut was sent at the old pace.
            cut = sent_at >= self._last_cut
        else:
            cut = now - self._last_throttle > 1.0 / self.rate
        if cut:
            achieved = self.goodput()
            base = min(self.rate, achieved) if achieved > 0 else self.rate
            self.rate = max(self.floor, min(self.ceiling, base * self.decrease))
            self._last_cut = now
        self._last_throttle = now
        if retry_after:
            self._next = max(self._next, now + min(retry_after, MAX_HOLD))

    def succeeded(self) -> None:
        now = self.clock()
        self._roll(now)
        self._current += 1
        if now - self._last_throttle > self.calm:
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
