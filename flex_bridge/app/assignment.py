"""The assignment use case: what the policy does with an offer, from a callback or adopted.

An **offer** is a pending reservation with what TaskRouter's assignment callback says about
it. ``answer_callback`` applies the policy's rules to one that arrived as a callback, and
returns the reply: ``{}`` (defer; a REST rule's intent goes on in the background) or an
instruction, announced on the channel first. ``adopt_missed_offers`` finds the offers whose
callback never reached the bridge (it was down, restarting or unreachable: TaskRouter sends the
callback once, then the fallback URL) and applies the same rules, as if the callback had just
arrived; instruction rules cannot answer a callback that is gone, so their op goes over REST
(announced first, like every REST change). Both compute the reservation's deadline with
``protocol.reservation_deadline``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flex_bridge.adapters.taskrouter import Offer
from flex_bridge.domain.attributes import TooDeep, read_attributes
from flex_bridge.domain.intents import Intent
from flex_bridge.domain.ops import instruction_reply
from flex_bridge.domain.policy import AssignmentRule, choose_rule
from flex_bridge.domain.protocol import reservation_deadline
from flex_bridge.domain.types import JSON, Op, Via
from flex_bridge.errors import FlexBridgeError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from flex_bridge.app.services import Services

logger = logging.getLogger("flex_bridge.adoption")
TIMEOUT_LOOKUP_BOUND = 1.0  # seconds a callback may spend learning the workflow's timeout
INSTRUCT_MARGIN = 0.5  # seconds before the reply's deadline that recording an instruction needs


@dataclass(frozen=True, slots=True)
class OfferFacts:
    """What the policy matches on, and what an intent needs, about one pending reservation."""

    reservation_sid: str
    task_sid: str
    worker_sid: str
    task_queue_sid: str | None
    workflow_sid: str | None
    task_attributes: JSON
    worker_attributes: JSON
    created_at: float | None = None  # None: now (a callback comes as the reservation is made)

    @classmethod
    def from_callback(cls, form: Mapping[str, str]) -> OfferFacts:
        return cls(
            reservation_sid=form["ReservationSid"],
            task_sid=form["TaskSid"],
            worker_sid=form["WorkerSid"],
            task_queue_sid=form.get("TaskQueueSid") or None,
            workflow_sid=form.get("WorkflowSid") or None,
            task_attributes=read_attributes(form.get("TaskAttributes"), "TaskAttributes"),
            worker_attributes=read_attributes(form.get("WorkerAttributes"), "WorkerAttributes"),
        )

    @classmethod
    def from_offer(cls, offer: Offer) -> OfferFacts:
        res = offer.reservation
        return cls(
            reservation_sid=res.sid,
            task_sid=res.task_sid,
            worker_sid=res.worker_sid,
            task_queue_sid=offer.task_queue_sid,
            workflow_sid=offer.workflow_sid,
            task_attributes=read_attributes(offer.task_attributes, "TaskAttributes"),
            worker_attributes=read_attributes(offer.worker_attributes, "WorkerAttributes"),
            created_at=res.date_created,
        )


def _rule(svc: Services, offer: OfferFacts) -> AssignmentRule | None:
    return choose_rule(
        svc.settings.policy,
        task_queue_sid=offer.task_queue_sid,
        workflow_sid=offer.workflow_sid,
        task_attributes=offer.task_attributes,
        worker_attributes=offer.worker_attributes,
    )


async def deadline_of(svc: Services, offer: OfferFacts, bound: float | None = None) -> float:
    """The reservation's deadline; the workflow's timeout is looked up within ``bound``."""
    timeout = None
    if offer.workflow_sid:
        try:
            timeout = await asyncio.wait_for(
                svc.taskrouter.reservation_timeout(offer.workflow_sid), bound
            )
        except (TimeoutError, FlexBridgeError):
            logger.warning(
                "workflow %s: reservation timeout unknown; assuming the default",
                offer.workflow_sid,
            )
    return reservation_deadline(offer.created_at, timeout, time.time())


async def _submit(
    svc: Services, offer: OfferFacts, op: Op, rule: AssignmentRule, deadline: float, via: Via
) -> tuple[Intent, bool]:
    return await svc.coordinator.submit(
        op=op,
        reservation_sid=offer.reservation_sid,
        task_sid=offer.task_sid,
        worker_sid=offer.worker_sid,
        source="policy",
        params=rule.params,
        deadline=deadline,
        via=via,
        before_accept=rule.before_accept,
    )


async def answer_callback(svc: Services, offer: OfferFacts, reply_by: float | None = None) -> JSON:
    """The assignment callback's reply for ``offer``, after journaling what the policy chose.

    ``reply_by`` (``time.monotonic()``): when the caller will answer ``{}`` instead. An
    instruction goes in the reply only when recording that it did can finish well before
    then: an intent recorded as handed to TaskRouter is never sent again, so it must not be
    recorded for a reply that went out empty. Without the time, the intent stays announced and
    recovery sends it over REST after the grace."""
    rule = _rule(svc, offer)
    if rule is None or rule.op == "defer":
        return {}
    deadline = await deadline_of(svc, offer, TIMEOUT_LOOKUP_BOUND)
    # Shielded: when the reply's budget runs out first, the caller answers {} (defer) and the
    # journal write still completes, so the intent goes on in the background as promised;
    # cancelled half-way it would roll back and leave an answered offer nobody recorded.
    intent, created = await asyncio.shield(_submit(svc, offer, rule.op, rule, deadline, rule.via))
    if rule.via == "rest":
        return {}
    if not created:
        # A retried callback: answer as the first time, if that intent was this instruction.
        if intent.via == "instruction" and intent.op == rule.op:
            return instruction_reply(intent.op, intent.params)
        return {}
    intent = await svc.coordinator.announce_only(intent, svc.settings.policy.sync.announce_timeout)
    if intent.state != "announced":
        return {}  # strict mode and Sync is down: no change without an announcement
    if reply_by is not None and time.monotonic() > reply_by - INSTRUCT_MARGIN:
        return {}
    await svc.coordinator.mark_instructed(intent)
    return instruction_reply(rule.op, rule.params)


async def adopt_at_startup(svc: Services) -> None:
    adopted = await adopt_missed_offers(svc)
    if adopted:
        logger.info("adopted %d pending reservation(s) whose callback was missed", adopted)


async def adopt_missed_offers(svc: Services) -> int:
    """Apply the policy to pending reservations the journal has never seen; returns how many
    intents were submitted."""
    if not any(rule.op != "defer" for rule in svc.settings.policy.rules):
        return 0
    try:
        offers = await svc.taskrouter.pending_offers()
    except FlexBridgeError as exc:
        logger.warning("could not list pending reservations to adopt: %s", exc)
        return 0
    adopted = 0
    for found in offers:
        try:
            offer = OfferFacts.from_offer(found)
        except TooDeep as exc:  # one offer the policy cannot read; the others still count
            logger.warning(
                "skipped a pending reservation at start-up adoption: %s",
                exc,
                extra={"reservation_sid": found.reservation.sid},
            )
            continue
        if await svc.journal.latest_for_reservation(offer.reservation_sid) is not None:
            continue
        rule = _rule(svc, offer)
        if rule is None or rule.op == "defer":
            continue
        deadline = await deadline_of(svc, offer)
        _, created = await _submit(svc, offer, rule.op, rule, deadline, "rest")
        if created:
            adopted += 1
            logger.info(
                "adopted a pending reservation whose callback was missed (%s)",
                rule.op,
                extra={"reservation_sid": offer.reservation_sid},
            )
    return adopted
