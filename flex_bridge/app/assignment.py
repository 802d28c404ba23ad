"""Adopting offers whose assignment callback never reached the bridge.

TaskRouter sends an assignment callback once (then the fallback URL, if any). If the bridge
was down, restarting, or unreachable at that moment, the reservation waits, pending, until it
times out, and the policy never saw it. At start-up the bridge lists the reservations still
pending and applies the assignment rules to those it has no intent for, as if the callback had
just arrived. Instruction rules cannot answer a callback that is gone, so their op goes over
REST (announced first, like every REST change).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from flex_bridge.domain.policy import choose_rule
from flex_bridge.errors import FlexBridgeError

if TYPE_CHECKING:
    from flex_bridge.app.services import Services

logger = logging.getLogger("flex_bridge.adoption")
DEFAULT_RESERVATION_TIMEOUT = 120


def _attributes(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def adopt_at_startup(svc: Services) -> None:
    adopted = await adopt_missed_offers(svc)
    if adopted:
        logger.info("adopted %d pending reservation(s) whose callback was missed", adopted)


async def adopt_missed_offers(svc: Services) -> int:
    """Apply the policy to pending reservations the journal has never seen; returns how many
    intents were submitted."""
    policy = svc.settings.policy
    if not any(rule.op != "defer" for rule in policy.rules):
        return 0
    try:
        offers = await svc.taskrouter.pending_offers()
    except FlexBridgeError as exc:
        logger.warning("could not list pending reservations to adopt: %s", exc)
        return 0
    adopted = 0
    for offer in offers:
        res = offer.reservation
        if await svc.journal.latest_for_reservation(res.sid) is not None:
            continue
        rule = choose_rule(
            policy,
            task_queue_sid=offer.task_queue_sid,
            workflow_sid=offer.workflow_sid,
            task_attributes=_attributes(offer.task_attributes),
            worker_attributes=_attributes(offer.worker_attributes),
        )
        if rule is None or rule.op == "defer":
            continue
        timeout = DEFAULT_RESERVATION_TIMEOUT
        if offer.workflow_sid:
            with contextlib.suppress(FlexBridgeError):
                timeout = await svc.taskrouter.reservation_timeout(offer.workflow_sid)
        created_at = res.date_created if res.date_created is not None else time.time()
        _, created = await svc.coordinator.submit(
            op=rule.op,
            reservation_sid=res.sid,
            task_sid=res.task_sid,
            worker_sid=res.worker_sid,
            source="policy",
            params=rule.params,
            deadline=created_at + timeout,
            before_accept=rule.before_accept,
        )
        if created:
            adopted += 1
            logger.info(
                "adopted a pending reservation whose callback was missed (%s)",
                rule.op,
                extra={"reservation_sid": res.sid},
            )
    return adopted
