"""Anti-entropy: the channel converges to TaskRouter's truth even when callbacks are lost.

Every ``[reconcile] interval`` seconds one instance (the holder of the journal's
``reconcile`` lease; any other takes over when it dies) sweeps:

1. **Items.** For reservations whose newest intent is recent (``[reconcile] window``) and whose
   status is not final, it fetches the reservation and, where TaskRouter says something the
   channel does not show, follows TaskRouter exactly as for an event (rule 6). A reservation
   that is gone (404: Twilio deleted its finished task) is taken as ended: ``completed``
   when it had been accepted, ``canceled`` when it was still pending. At most
   ``[reconcile] budget`` fetches a sweep, and the sweep goes on next time where it stopped,
   so its cost stays a small, fixed share of TaskRouter's rate limit: ``budget`` requests per
   ``interval`` whatever the traffic (the HTTP adapter paces them besides).
2. **TTL renewal.** Sync items carry a TTL fixed at write time; an item of a still-active
   reservation last written more than half a TTL ago is written again, so it does not expire
   under an accepted reservation.
3. **Missed offers.** Pending reservations the journal has never seen (a callback lost while
   the bridge was up, or refused because the journal could not record it) are adopted.
4. **Retention.** Settled intents, dedupe keys and applied inbox entries older than
   ``[retention] intents`` are pruned, ``batch`` rows at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flex_bridge.app.assignment import adopt_missed_offers
from flex_bridge.app.periodic import Periodic
from flex_bridge.domain.intents import Intent, channel_item
from flex_bridge.domain.protocol import behind
from flex_bridge.errors import NotFoundError, UpstreamError

if TYPE_CHECKING:
    from flex_bridge.app.services import Services

logger = logging.getLogger("flex_bridge.reconcile")
LEASE = "reconcile"


def gone_status(last_known: str | None) -> str:
    """What a reservation that TaskRouter no longer knows most likely became."""
    return "completed" if last_known in ("accepted", "wrapping") else "canceled"


@dataclass(slots=True)
class SweepReport:
    checked: int = 0
    repaired: int = 0
    renewed: int = 0
    adopted: int = 0
    pruned: int = 0


class Reconciler(Periodic):
    name = "reconcile sweep"

    def __init__(self, svc: Services) -> None:
        super().__init__()
        self.svc = svc
        self.cursor = 0.0  # updated_at where the next sweep goes on

    async def sweep(self) -> SweepReport | None:
        """One sweep, if this instance holds the reconcile lease (else None)."""
        svc = self.svc
        policy = svc.settings.policy
        ownership = svc.coordinator.ownership
        lease = await svc.journal.acquire_lease(
            LEASE, ownership.owner, policy.reconcile.interval * 2
        )
        if lease is None:
            return None
        report = SweepReport()
        now = svc.coordinator.clock()
        since = max(self.cursor, now - policy.reconcile.window)
        intents = await svc.journal.active_reservations(since, policy.reconcile.budget)
        full = len(intents) >= policy.reconcile.budget
        self.cursor = intents[-1].updated_at + 1e-6 if full else 0.0
        for intent in intents:
            report.checked += 1
            try:
                repaired, renewed = await self._check(intent, now)
            except UpstreamError as exc:
                logger.warning("reconcile %s: %s", intent.reservation_sid, exc)
                continue
            report.repaired += repaired
            report.renewed += renewed
        report.adopted = await adopt_missed_offers(svc)
        report.pruned = await svc.journal.prune(
            now - policy.retention.intents, policy.retention.batch
        )
        return report

    async def _check(self, intent: Intent, now: float) -> tuple[bool, bool]:
        """Repair the item from TaskRouter's status; renew its TTL when it is old."""
        svc = self.svc
        try:
            view = await svc.taskrouter.fetch_reservation(intent.task_sid, intent.reservation_sid)
            status = view.status
        except NotFoundError:
            status = gone_status(intent.reservation_status)
        known = intent.reservation_status
        if intent.settled and status not in (known, "pending") and not behind(status, known):
            logger.info(
                "reconcile: TaskRouter says %s, the channel %s; following TaskRouter",
                status,
                known,
                extra={"reservation_sid": intent.reservation_sid},
            )
            await svc.coordinator.follow(
                status,
                reservation_sid=intent.reservation_sid,
                task_sid=intent.task_sid,
                worker_sid=intent.worker_sid,
            )
            return True, False
        ttl = svc.settings.policy.sync.item_ttl
        if intent.settled and now - intent.updated_at > ttl / 2:
            await svc.channel.publish(
                intent.worker_sid, intent.reservation_sid, channel_item(intent, now)
            )
            await svc.journal.transition(intent.intent_id, ("settled",))  # renewed: updated_at
            return False, True
        return False, False

    async def once(self) -> None:
        report = await self.sweep()
        if report is not None and (report.repaired or report.adopted):
            logger.info("reconcile: %s", report)
