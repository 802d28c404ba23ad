"""The event-handler registry: built-in handlers plus the user's, isolated from each other.

Users register async (or plain) callables for an event type from Python
(``registry.register("task.canceled", fn)``) or by dotted path in the policy file
(``[events.handlers] "task.canceled" = ["mypackage.hooks:on_cancel"]``). A handler receives
the event's form fields as a ``dict[str, str]``. One that raises is logged and counted, and
never stops the others or the webhook's reply. ``"*"`` registers for every event type.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from flex_bridge.metrics import Metrics
from flex_bridge.plugins import load_callable

logger = logging.getLogger("flex_bridge.events")

Event = Mapping[str, str]
Handler = Callable[[Event], Awaitable[None] | None]


def load_handler(path: str) -> Handler:
    """``package.module:function`` (or ``package.module.function``) -> the callable."""
    return load_callable(path, f"event handler {path!r}")


class HandlerRegistry:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics()
        self._handlers: dict[str, list[tuple[str, Handler]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def register(self, event_type: str, handler: Handler, name: str | None = None) -> None:
        label = name or str(getattr(handler, "__qualname__", repr(handler)))
        self._handlers.setdefault(event_type, []).append((label, handler))

    def load(self, configured: Mapping[str, tuple[str, ...]]) -> None:
        for event_type, paths in configured.items():
            for path in paths:
                self.register(event_type, load_handler(path), path)

    def handlers_for(self, event_type: str) -> list[tuple[str, Handler]]:
        return [*self._handlers.get(event_type, []), *self._handlers.get("*", [])]

    async def dispatch(self, event: Event) -> int:
        """Run every handler for the event; returns how many failed."""
        event_type = event.get("EventType", "")
        failures = 0
        for name, handler in self.handlers_for(event_type):
            try:
                result: Any = handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                failures += 1
                self.metrics.handler_failures.labels(event_type).inc()
                logger.exception(
                    "event handler %s failed on %s %s",
                    name,
                    event_type,
                    event.get("ResourceSid", ""),
                )
        return failures

    def dispatch_soon(self, event: Event) -> None:
        task = asyncio.get_running_loop().create_task(self._run(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, event: Event) -> None:
        await self.dispatch(event)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
