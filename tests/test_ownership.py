"""Rule 9 on one journal shared by two coordinators (two instances): an intent is driven by
one at a time, another takes it over when the lease expires, a stale owner is fenced out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flex_bridge.adapters.journal import SqliteJournal
from flex_bridge.app.coordinator import Coordinator
from flex_bridge.app.ownership import LEASE_TTL
from flex_bridge.app.recovery import Recovery
from flex_bridge.domain.policy import Policy
from tests.support.clock import T0, Clock
from tests.support.fakes import WK, WR, WT, FakeChannel, FakeReservations
from tests.support.intents import make_intent


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[tuple[SqliteJournal, Clock]]:
    clock = Clock()
    journal = SqliteJournal(tmp_path / "journal.db", clock=clock)
    await journal.open()
    yield journal, clock
    await journal.close()


def instance(journal: SqliteJournal, clock: Clock, tr: FakeReservations, name: str) -> Coordinator:
    return Coordinator(journal, FakeChannel(), tr, Policy(), clock=clock, owner=name)


async def test_an_intent_another_instance_drives_is_left_to_it_until_its_lease_expires(
    journal: tuple[SqliteJournal, Clock],
) -> None:
    store, clock = journal
    tr = FakeReservations.holding("pending")
    a, b = instance(store, clock, tr, "a"), instance(store, clock, tr, "b")
    intent, _ = await store.submit(
        make_intent(at=T0, reservation_sid=WR, task_sid=WT, worker_sid=WK, deadline=None)
    )
    # Instance a took the lease and died before its first step (SIGKILL: never released).
    assert await store.acquire_lease(intent.intent_id, "a", LEASE_TTL) is not None
    del a
    await Recovery(b).sweep()
    await b.idle()
    assert tr.forms == []  # b does not touch it while a's lease holds
    clock.now += LEASE_TTL + 1
    await Recovery(b).sweep()
    await b.idle()
    assert tr.forms == [{"ReservationStatus": "accepted"}]  # b took it over: one accept
    done = await store.get(intent.intent_id)
    assert done is not None and done.settled and done.outcome == "applied"


async def test_a_stale_owners_late_transition_is_refused(
    journal: tuple[SqliteJournal, Clock],
) -> None:
    store, clock = journal
    intent, _ = await store.submit(
        make_intent(at=T0, reservation_sid=WR, task_sid=WT, worker_sid=WK, deadline=None)
    )
    stale = await store.acquire_lease(intent.intent_id, "a", LEASE_TTL)
    assert stale is not None
    clock.now += LEASE_TTL + 1  # a stalled past its lease; b takes over
    fresh = await store.acquire_lease(intent.intent_id, "b", LEASE_TTL)
    assert fresh is not None and fresh != stale
    late = await store.transition(intent.intent_id, ("recorded",), fence=stale, state="announced")
    assert late is None
    moved = await store.transition(intent.intent_id, ("recorded",), fence=fresh, state="announced")
    assert moved is not None and moved.state == "announced"


async def test_a_restarted_instance_with_the_same_name_takes_its_leases_back_at_once(
    journal: tuple[SqliteJournal, Clock],
) -> None:
    store, clock = journal
    tr = FakeReservations.holding("pending")
    intent, _ = await store.submit(
        make_intent(at=T0, reservation_sid=WR, task_sid=WT, worker_sid=WK, deadline=None)
    )
    assert await store.acquire_lease(intent.intent_id, "host:8000", LEASE_TTL) is not None
    restarted = instance(store, clock, tr, "host:8000")  # the same instance, restarted
    await Recovery(restarted).sweep()
    await restarted.idle()
    assert tr.forms == [{"ReservationStatus": "accepted"}]
