"""Which intents are being driven: at most ``limit`` drivers at once, the rest wait their turn.

An intent in flight is a journal row. Its driver (a task running the coordinator's steps,
with a pending HTTP request and its coroutine frames) costs about 25 KB while it waits on
Sync or TaskRouter. So the coordinator runs at most ``limit`` drivers; any intent started
beyond that waits in a FIFO as its id, about a hundred bytes, and its driver starts when
another one ends. The HTTP client has fewer connections than ``limit`` (100), so a driver
that waits here would otherwise have waited for a connection instead: the wait moves, it
does not grow. Time limits (announce window, deadline) are absolute, so an intent that waited
here past its deadline meets it at its first step.

Only a driver started with ``reserve`` gets a hand-off (the intent as submitted, and the lease
taken with it), so the driver need not read the intent or take the lease again.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

from flex_bridge.domain.intents import Intent

# The intent as the submit recorded it, and the fencing token of the lease taken with it.
Handoff = tuple[Intent, int]
Drive = Callable[[str, Handoff | None], Coroutine[Any, Any, None]]

DRIVERS_LIMIT = 500


class Drivers:
    def __init__(
        self,
        drive: Drive,
        *,
        limit: int = DRIVERS_LIMIT,
        on_count: Callable[[int], None] = lambda n: None,
        on_done: Callable[[str, asyncio.Task[None]], None] = lambda i, t: None,
    ) -> None:
        self.drive = drive
        self.limit = limit
        self.on_count = on_count
        self.on_done = on_done
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._waiting: dict[str, None] = {}  # insertion-ordered: a FIFO without duplicates
        self._reserved = 0
        self.closing = False

    def __contains__(self, intent_id: str) -> bool:
        return intent_id in self._tasks or intent_id in self._waiting

    def __len__(self) -> int:
        return len(self._tasks) + len(self._waiting)

    @property
    def driving(self) -> int:
        return len(self._tasks)

    def reserve(self) -> bool:
        """Hold a driver's place for an intent being submitted, if one is free."""
        if self.closing or len(self._tasks) + self._reserved >= self.limit:
            return False
        self._reserved += 1
        return True

    def unreserve(self) -> None:
        self._reserved -= 1
        self._follow()

    def start(self, intent_id: str, handoff: Handoff | None = None) -> None:
        """Drive ``intent_id``: at once (in a reserved place when there is a ``handoff``),
        or when a driver is free. Nothing if it is driven or waiting already, or closing."""
        if handoff is not None:
            self._reserved -= 1
        if intent_id in self or self.closing:
            return
        if handoff is not None or len(self._tasks) + self._reserved < self.limit:
            self._run(intent_id, handoff)
        else:
            self._waiting[intent_id] = None
        self.on_count(len(self))

    def _run(self, intent_id: str, handoff: Handoff | None) -> None:
        # A fresh context for the task and its callback: both would otherwise copy the
        # caller's, and from a request handler that keeps the request, its form and its
        # connection alive as long as the intent is in flight (tens of KB each, for nothing).
        context = contextvars.Context()
        task = asyncio.get_running_loop().create_task(
            self.drive(intent_id, handoff), context=context
        )
        self._tasks[intent_id] = task
        task.add_done_callback(lambda t: self._ended(intent_id, t), context=context)

    def _ended(self, intent_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.pop(intent_id, None)
        self._follow()
        self.on_count(len(self))
        self.on_done(intent_id, task)

    def _follow(self) -> None:
        """Start waiting intents, the oldest first, in the places free."""
        while self._waiting and not self.closing:
            if len(self._tasks) + self._reserved >= self.limit:
                return
            following = next(iter(self._waiting))
            del self._waiting[following]
            self._run(following, None)

    async def idle(self) -> None:
        """Wait until no intent is driven or waiting."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def cancel(self) -> None:
        """Stop: waiting intents are dropped (the journal keeps them), drivers cancelled."""
        self.closing = True
        self._waiting.clear()
        for task in list(self._tasks.values()):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self.on_count(len(self))
