"""TaskRouter events: the handler registry, and the bridge's own handlers registered in it.

Users register async (or plain) callables for an event type from Python
(``registry.register("task.canceled", fn)``) or by dotted path in the policy file
(``[events.handlers] "task.canceled" = ["mypackage.hooks:on_cancel"]``). A handler receives
the event's form fields as a ``dict[str, str]``. One that raises is logged and counted, and
never stops the others or the webhook's reply. ``"*"`` registers for every event type.

The built-in handlers:

- every ``reservation.*`` event settles the matching channel item (protocol rule 6);
- ``reservation.timeout`` is counted in the journal, once per reservation, and the
  ``[timeout]`` policy decides: ``requeue`` leaves the task to TaskRouter, ``escalate``
  writes the escalation into the task's attributes (and its priority) after N timeouts;
- ``task.created`` runs the enrichers when ``[enrichment] on_task_created`` is set.

They are registered like any user handler, so they are isolated the same way: one failing
never stops the others or the webhook's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from flex_bridge.adapters.journal import Journal
from flex_bridge.app.attributes import update_attributes
from flex_bridge.app.metrics import Metrics
from flex_bridge.app.periodic import Periodic
from flex_bridge.app.plugins import load_callable
from flex_bridge.domain.escalation import escalate, escalation_level
from flex_bridge.domain.protocol import EVENT_STATUS
from flex_bridge.errors import FlexBridgeError

if TYPE_CHECKING:
    from flex_bridge.app.services import Services

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


builtin_logger = logging.getLogger("flex_bridge.builtins")

RESERVATION_EVENTS = (
    "reservation.accepted",
    "reservation.rejected",
    "reservation.timeout",
    "reservation.canceled",
    "reservation.rescinded",
    "reservation.wrapup",
    "reservation.completed",
)
BACKGROUND_ENRICHMENT_MARGIN = 5.0
DEDUPE_TTL = 86_400.0


INBOX_LEASE = 15.0  # seconds an instance has to apply what it took; as long as an intent's lease
INBOX_BATCH = 10


def event_key(event: Mapping[str, str], token: str | None) -> str:
    """An event delivery's dedupe key: type, resource and timestamp (the same for every
    redelivery of one event), else Twilio's idempotency token."""
    stamp = event.get("TimestampMs") or event.get("Timestamp", "")
    if event.get("ResourceSid") and stamp:
        return f"event:{event.get('EventType', '')}:{event['ResourceSid']}:{stamp}"
    return f"event-token:{token or ''}"


class EventInbox(Periodic):
    """Events are written to the journal before they are acknowledged, applied after, and
    re-applied after a crash by any instance (the journal's inbox leases them): at least once.
    The bridge's own handlers are idempotent; user handlers must be too (docs/bridge.md)."""

    name = "event inbox"

    def __init__(self, journal: Journal, handlers: HandlerRegistry, owner: str) -> None:
        super().__init__()
        self.journal = journal
        self.handlers = handlers
        self.owner = owner
        self._draining: asyncio.Task[int] | None = None
        self._more = False
        # One drain at a time in a process: the periodic sweep and one after a delivery
        # would otherwise apply two batches side by side (out of order), and ``idle`` could
        # return while the other was still applying its batch.
        self._one_drain = asyncio.Lock()

    async def receive(self, event: Mapping[str, str], token: str | None) -> bool:
        """Record one delivery durably (``JournalError`` when it cannot be: not to be
        acknowledged); False for one already recorded. Applied in the background."""
        if token and not await self.journal.first_seen(f"event-token:{token}", DEDUPE_TTL):
            return False  # a retry of a delivery already recorded
        if not await self.journal.inbox_put(event_key(event, token), dict(event)):
            return False
        self.apply_soon()
        return True

    def apply_soon(self) -> None:
        self._more = True  # a drain under way takes it too: it looks again before it ends
        if self._draining is None or self._draining.done():
            self._draining = asyncio.get_running_loop().create_task(self._drain_soon())

    async def _drain_soon(self) -> int:
        applied = 0
        while self._more:
            self._more = False
            try:
                applied += await self.drain()
            except FlexBridgeError as exc:  # left in the inbox: the periodic sweep retries
                logger.warning("event inbox: %s", exc)
                return applied
        return applied

    async def drain(self) -> int:
        """Apply every event not yet applied that no other instance is applying; returns how
        many."""
        applied = 0
        async with self._one_drain:
            while taken := await self.journal.inbox_take(self.owner, INBOX_LEASE, INBOX_BATCH):
                for key, event in taken:
                    await self.handlers.dispatch(event)
                    await self.journal.inbox_done(key)
                    applied += 1
        return applied

    async def idle(self) -> None:
        """Wait until every event received so far has been applied (tests, shutdown)."""
        if self._draining is not None:
            with contextlib.suppress(FlexBridgeError):
                await self._draining
        await self.drain()

    async def once(self) -> None:
        await self.drain()

    async def close(self) -> None:
        await super().close()
        if self._draining is not None:
            with contextlib.suppress(FlexBridgeError, asyncio.CancelledError):
                await self._draining


def register_builtin_handlers(svc: Services) -> None:
    async def settle_from_event(event: Mapping[str, str]) -> None:
        status = EVENT_STATUS.get(event.get("EventType", ""))
        if status is None:
            return
        await svc.coordinator.follow(
            status,
            reservation_sid=event.get("ReservationSid") or event.get("ResourceSid", ""),
            task_sid=event.get("TaskSid", ""),
            worker_sid=event.get("WorkerSid", ""),
        )

    async def on_timeout(event: Mapping[str, str]) -> None:
        task_sid = event.get("TaskSid", "")
        reservation = event.get("ReservationSid") or event.get("ResourceSid", "")
        timeouts = await svc.journal.record_timeout(task_sid, reservation)
        policy = svc.settings.policy.timeout
        level = escalation_level(policy, timeouts)
        builtin_logger.info(
            "task %s: reservation timed out (%d so far)%s",
            task_sid,
            timeouts,
            f"; escalating to level {level}" if level else "",
            extra={"reservation_sid": reservation},
        )
        if not level:
            return
        try:
            result = await update_attributes(
                svc.taskrouter,
                task_sid,
                lambda attributes, task: escalate(policy, timeouts, attributes, task.priority),
            )
        except FlexBridgeError as exc:
            builtin_logger.error("task %s: escalation failed: %s", task_sid, exc)
            raise
        if result.changed:
            svc.metrics.escalations.labels(str(level)).inc()

    async def enrich_created(event: Mapping[str, str]) -> None:
        enrichment = svc.enrichment
        task_sid = event.get("TaskSid") or event.get("ResourceSid", "")
        if enrichment is None or not task_sid:
            return
        specs = svc.settings.policy.enrichment.enrichers
        budget = max((s.timeout for s in specs), default=0.0) + BACKGROUND_ENRICHMENT_MARGIN
        outcome = await enrichment.enrich(task_sid, budget=budget)
        builtin_logger.info("task %s: enrichment on task.created: %s", task_sid, outcome.status)

    for event_type in RESERVATION_EVENTS:
        svc.handlers.register(event_type, settle_from_event, "flex_bridge:settle_from_event")
    svc.handlers.register("reservation.timeout", on_timeout, "flex_bridge:on_timeout")
    if svc.settings.policy.enrichment.on_task_created and svc.enrichment is not None:
        svc.handlers.register("task.created", enrich_created, "flex_bridge:enrich_created")
