"""Which intents are being driven: at most ``limit`` drivers at once, the rest wait their turn.

An intent in flight is a journal row. Its driver (a task running the coordinator's steps,
with a pending HTTP request and its coroutine frames) costs about 25 KB while it waits on
Sync or TaskRouter. So the coordinator runs at most ``limit`` drivers; any intent started
beyond that waits in a FIFO as its id, about a hundred bytes, and its driver starts when
another one ends. The HTTP client has fewer connections than ``limit`` (100), so a driver
that waits here would otherwise have waited for a connection instead: the wait moves, it
does not grow. Time limits (announce window, deadline) are absolute, so an intent that waited
here past its deadline meets it at its first step.

Callbacks first: while TaskRouter's callbacks are being answered (``ingress``), at most
``busy_limit`` drivers run, so a burst of callbacks is acknowledged at the speed of the HTTP
stack rather than sharing the CPU with hundreds of intents' Sync and TaskRouter calls. The
others wait their turn, and start as soon as no callback is being answered, or as drivers
end. An intent's own callback counts too, so at a moderate rate nothing waits: fewer than
``busy_limit`` intents are in flight.

Only a driver started with ``reserve`` gets a hand-off (the intent as submitted, and the lease
taken with it), so the driver need not read the intent or take the lease again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from flex_bridge.domain.intents import Intent

# The intent as the submit recorded it, and the fencing token of the lease taken with it.
Handoff = tuple[Intent, int]
Drive = Callable[[str, Handoff | None], Coroutine[Any, Any, None]]

DRIVERS_LIMIT = 500
BUSY_LIMIT = 16


class Ingress:
    """How many callbacks are being answered now; ``on_quiet`` runs when none are."""

    def __init__(self, on_quiet: Callable[[], None]) -> None:
        self.count = 0
        self.on_quiet = on_quiet

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self.on_quiet()


class Drivers:
    def __init__(
        self,
        drive: Drive,
        *,
        limit: int = DRIVERS_LIMIT,
        busy_limit: int = BUSY_LIMIT,
        on_count: Callable[[int], None] = lambda n: None,
        on_done: Callable[[str, asyncio.Task[None]], None] = lambda i, t: None,
    ) -> None:
        self.drive = drive
        self.limit = limit
        self.busy_limit = busy_limit
        self.ingress = Ingress(self._follow)
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

    def _free(self) -> bool:
        limit = self.busy_limit if self.ingress.count else self.limit
        return len(self._tasks) + self._reserved < limit

    def reserve(self) -> bool:
        """Hold a driver's place for an intent being submitted, if one is free."""
        if self.closing or not self._free():
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
        if handoff is not None or self._free():
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
            if not self._free():
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
