"""The assignment use case when the reply's budget runs out during the journal write."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flex_bridge.adapters.journal import SqliteJournal
from flex_bridge.app.assignment import OfferFacts, answer_callback
from flex_bridge.domain.intents import Intent
from tests.support.bridge import wait_until
from tests.support.clock import Clock
from tests.support.fakes import WK, WR, WT, FakeChannel, FakeTaskRouter
from tests.test_reconcile import services


class SlowJournal(SqliteJournal):
    """A journal whose submit takes a while (a busy database)."""

    async def submit(self, intent: Intent) -> tuple[Intent, bool]:
        await asyncio.sleep(0.2)
        return await super().submit(intent)

    async def submit_leased(
        self, intent: Intent, owner: str, ttl: float
    ) -> tuple[Intent, bool, int | None]:
        await asyncio.sleep(0.2)
        return await super().submit_leased(intent, owner, ttl)


async def test_a_callback_answered_late_still_records_its_intent(tmp_path: Path) -> None:
    """The web layer answers {} when the decision is not made in time and cancels the use
    case: the journal write must still complete, or TaskRouter was answered for an offer the
    bridge never recorded (it would wait, pending, for nobody)."""
    clock = Clock()
    journal = SlowJournal(tmp_path / "journal.db", clock=clock)
    await journal.open()
    tr, channel = FakeTaskRouter(), FakeChannel()
    tr.reservations.add("pending")
    policy: dict[str, object] = {"assignment": {"rules": [{"name": "all", "op": "accept"}]}}
    svc = services(journal, tr, channel, clock, policy)
    offer = OfferFacts(WR, WT, WK, None, None, {}, {})
    try:
        await asyncio.wait_for(answer_callback(svc, offer), 0.05)
        raise AssertionError("the slow journal should have outlasted the budget")
    except TimeoutError:
        pass

    async def settled() -> Intent | None:
        # The shielded write goes on after the reply gave up, then the coordinator drives
        # it; a slow disk delays both, so wait for the outcome, not for a fixed time.
        await svc.coordinator.idle()
        latest = await journal.latest_for_reservation(WR)
        return latest if latest is not None and latest.settled else None

    latest = await wait_until(settled)
    assert latest.outcome == "applied"
    assert tr.reservations.forms == [{"ReservationStatus": "accepted"}]
    await journal.close()
