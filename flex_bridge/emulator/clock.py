"""The emulator's clock and timer queue.

Real time is the default. ``Clock.advance`` moves time forward without sleeping, so tests can
time out a reservation that has a 120 s deadline in a millisecond: every timer that becomes due
fires before ``advance`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds


def iso(ts: float | None) -> str | None:
    """Twilio's date-time format: ``2014-05-14T18:50:02Z``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def http_date(ts: float) -> str:
    """RFC 2822 form, as Twilio's Timestamp webhook parameter carries."""
    return datetime.fromtimestamp(ts, UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


@dataclass(order=True, slots=True)
class Timer:
    when: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """Timers on the emulator clock. Callbacks are plain functions run on the event loop."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._heap: list[Timer] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, next(self._seq), callback)
        heapq.heappush(self._heap, timer)
        self._wake.set()
        return timer

    def run_due(self) -> int:
        """Fire every timer that is due now; returns how many fired."""
        fired = 0
        now = self.clock.now()
        while self._heap and self._heap[0].when <= now:
            timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                fired += 1
                timer.callback()
            now = self.clock.now()
        return fired

    def advance(self, seconds: float) -> int:
        self.clock.advance(seconds)
        fired = self.run_due()
        self._wake.set()
        return fired

    async def run(self) -> None:
        """Background loop: sleep until the next timer (or a change), fire what is due."""
        while True:
            self.run_due()
            while self._heap and self._heap[0].cancelled:
                heapq.heappop(self._heap)
            delay = None
            if self._heap:
                delay = max(0.0, self._heap[0].when - self.clock.now())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
