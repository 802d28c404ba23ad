"""The bridge's own event handlers: channel convergence, timeouts and escalation, enrichment.

- every ``reservation.*`` event settles the matching channel item (protocol rule 6);
- ``reservation.timeout`` is counted in the journal, once per reservation, and the
  ``[timeout]`` policy decides: ``requeue`` leaves the task to TaskRouter, ``escalate``
  writes the escalation into the task's attributes (and its priority) after N timeouts;
- ``task.created`` runs the enrichers when ``[enrichment] on_task_created`` is set.

They are registered like any user handler, so they are isolated the same way: one failing
never stops the others or the webhook's answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from flex_bridge.attributes import update_attributes
from flex_bridge.domain.escalation import escalate, escalation_level
from flex_bridge.errors import FlexBridgeError

if TYPE_CHECKING:
    from flex_bridge.web.services import Services

logger = logging.getLogger("flex_bridge.builtins")

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


def register_builtin_handlers(svc: Services) -> None:
    async def settle_from_event(event: Mapping[str, str]) -> None:
        await svc.coordinator.on_reservation_event(
            event.get("EventType", ""),
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
        logger.info(
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
            logger.error("task %s: escalation failed: %s", task_sid, exc)
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
        logger.info("task %s: enrichment on task.created: %s", task_sid, outcome.status)

    for event_type in RESERVATION_EVENTS:
        svc.handlers.register(event_type, settle_from_event, "flex_bridge:settle_from_event")
    svc.handlers.register("reservation.timeout", on_timeout, "flex_bridge:on_timeout")
    if svc.settings.policy.enrichment.on_task_created and svc.enrichment is not None:
        svc.handlers.register("task.created", enrich_created, "flex_bridge:enrich_created")
