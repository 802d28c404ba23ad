"""Callers waiting for an intent to settle (``?wait`` on the ``/flex`` API).

An intent driven in this process wakes its waiters at each step (``notify``); one driven by
another instance is not seen here, so while it is not driven here a waiter also looks at the
journal every ``POLL`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from flex_bridge.domain.intents import Intent

POLL = 0.25
UNDECIDED = frozenset({"recorded", "announced"})


class Waiters:
    def __init__(self) -> None:
        # One event per waiting caller: several callers (a double click) may wait on one.
        self._events: dict[str, set[asyncio.Event]] = {}

    def notify(self, intent_id: str) -> None:
        for event in self._events.get(intent_id, ()):
            event.set()

    async def wait(
        self,
        intent_id: str,
        timeout: float,
        read: Callable[[], Awaitable[Intent | None]],
        here: Callable[[], bool],
    ) -> Intent | None:
        """The intent once decided (applied, refused, handed to TaskRouter, settled), or as
        it is at ``timeout`` (``read`` reads the journal; ``here()``: driven in this process,
        whose steps wake the waiter, so no polling)."""
        event = asyncio.Event()
        events = self._events.setdefault(intent_id, set())
        events.add(event)
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        try:
            intent = await read()
            while intent is not None and intent.state in UNDECIDED and loop.time() < until:
                event.clear()
                with contextlib.suppress(TimeoutError):
                    left = until - loop.time()
                    await asyncio.wait_for(event.wait(), left if here() else min(POLL, left))
                intent = await read()
            return intent
        finally:
            events.discard(event)
            if not events and self._events.get(intent_id) is events:
                del self._events[intent_id]
