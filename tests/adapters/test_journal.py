"""The journals, each test on SQLite and on PostgreSQL: recording, single flight per
reservation, compare-and-set, dedupe keys, leases with fencing, the event inbox, active
reservations, retention and health; then what is each one's own (SQLite's one-process lock,
read-only mode and file checks, PostgreSQL's schema migration and errors).

PostgreSQL comes from ``tests/support/postgres.py``: ``FLEX_BRIDGE_TEST_POSTGRES``, or a
throwaway cluster; without either the ``[postgres]`` tests skip (never under CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from flex_bridge.adapters.journal import (
    COLUMNS,
    FIELDS,
    Journal,
    PostgresJournal,
    SqliteJournal,
    journal_path,
    journal_setting,
    open_journal,
)
from flex_bridge.adapters.journal.base import intent_values
from flex_bridge.adapters.journal.postgres import MIGRATIONS, SCHEMA_VERSION
from flex_bridge.domain.intents import ErrorInfo, Intent, new_intent_id
from flex_bridge.domain.types import Op
from flex_bridge.errors import ConfigError, JournalError
from tests.support.net import free_port
from tests.support.postgres import PostgresServer, with_query

WT = "WT" + "0123456789abcdef" * 2
WT2 = "WT" + "1" * 32
WK = "WK" + "00112233445566778899aabbccddeeff"
T0 = 1_714_566_896.789


def sid(prefix: str, n: int) -> str:
    return f"{prefix}{n:032x}"


WR = sid("WR", 1)


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


_made = 0


def make(op: Op = "accept", reservation_sid: str = WR, **changes: Any) -> Intent:
    """A fresh intent; ids grow with each call, as real ones do with time."""
    global _made
    _made += 1
    created = T0 + _made / 1000
    base = Intent(
        intent_id=new_intent_id(created),
        op=op,
        reservation_sid=reservation_sid,
        task_sid=WT,
        worker_sid=WK,
        source="plugin",
        params={"task_sid": WT},
        state="recorded",
        deadline=T0 + 120,
        created_at=created,
        updated_at=created,
    )
    return base.evolve(**changes)


# ------------------------------------------------------------------------------ the stores
@dataclass
class SqliteStore:
    """A journal file: ``journal()`` is one more journal on it, not yet open."""

    path: Path
    clock: FakeClock
    integrity_error: ClassVar[type[Exception]] = sqlite3.IntegrityError

    def journal(self) -> Journal:
        return SqliteJournal(self.path, clock=self.clock)


@dataclass
class PostgresStore:
    """A schema of its own in the test server: ``journal()`` is one more instance on it."""

    dsn: str
    clock: FakeClock
    integrity_error: ClassVar[type[Exception]] = asyncpg.UniqueViolationError

    def journal(self) -> Journal:
        return PostgresJournal(self.dsn, clock=self.clock)


Store = SqliteStore | PostgresStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# ``postgres``: the session's PostgreSQL, a fixture of ``tests/conftest.py``.


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> PostgresServer | None:
    """None for SQLite; the session's PostgreSQL (started, skipped or failed: on first use)."""
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres")
        return server
    return None


@pytest.fixture
async def store(
    backend: PostgresServer | None, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    if backend is None:
        yield SqliteStore(tmp_path / "state" / "journal.db", clock)
        return
    async with backend.schema() as dsn:
        yield PostgresStore(dsn, clock)


@pytest.fixture
async def pg_dsn(postgres: PostgresServer) -> AsyncIterator[str]:
    async with postgres.schema() as dsn:
        yield dsn


@pytest.fixture
async def journal(store: Store) -> AsyncIterator[Journal]:
    j = store.journal()
    await j.open()
    yield j
    await j.close()


async def settle(journal: Journal, intent: Intent, error: ErrorInfo | None = None) -> Intent:
    moved = await journal.transition(
        intent.intent_id,
        ("recorded", "announced", "applied", "refused"),
        state="settled",
        error=error,
    )
    assert moved is not None
    return moved


# ------------------------------------------------------------------------------ submit
async def test_submit_records_and_claims(journal: Journal) -> None:
    intent = make(params={"task_sid": WT, "nested": {"a": [1, 2]}}, extra={"k": "v"})
    stored, created = await journal.submit(intent)
    assert created
    assert stored == intent
    assert await journal.get(intent.intent_id) == intent
    assert await journal.latest_for_reservation(WR) == intent
    assert await journal.get("in_" + "0" * 22) is None
    assert await journal.latest_for_reservation(sid("WR", 999)) is None
    assert await journal.count() == {"recorded": 1}


@pytest.mark.parametrize("op", ["accept", "reject", "conference", "complete"])
@pytest.mark.parametrize("state", ["recorded", "announced", "instructed"])
async def test_a_request_while_an_intent_is_in_flight_joins_it(
    journal: Journal, op: Op, state: str
) -> None:
    first, _ = await journal.submit(make("accept"))
    if state != "recorded":
        moved = await journal.transition(first.intent_id, ("recorded",), state=state)
        assert moved is not None
        first = moved
    again, created = await journal.submit(make(op))
    assert not created
    assert again == first
    assert await journal.count() == {state: 1}


@pytest.mark.parametrize("state", ["applied", "refused"])
async def test_a_decided_intent_awaiting_its_settle_lets_another_op_in(
    journal: Journal, state: str
) -> None:
    """Sync down: the accept is applied but its item not settled. A complete must not wait
    for Sync (its REST change is independent); the same accept again still joins."""
    first, _ = await journal.submit(make("accept"))
    moved = await journal.transition(first.intent_id, ("recorded",), state=state)
    assert moved is not None
    again, created = await journal.submit(make("accept"))
    assert not created
    assert again == moved
    other, created = await journal.submit(make("complete"))
    assert created
    assert other.op == "complete"
    assert await journal.latest_for_reservation(WR) == other


async def test_after_settle_the_same_applied_change_replays(journal: Journal) -> None:
    first, _ = await journal.submit(make("accept"))
    settled = await settle(journal, first)
    again, created = await journal.submit(make("accept"))
    assert not created
    assert again == settled
    assert again.outcome == "applied"


async def test_a_new_intent_sorts_after_the_reservations_last_even_with_a_clock_behind(
    journal: Journal,
) -> None:
    """Items are ordered by intent id: an intent made by an instance whose clock is a few
    milliseconds behind another's must still sort after the reservation's last intent."""
    first, _ = await journal.submit(make())
    settled = await journal.transition(first.intent_id, ("recorded",), state="settled")
    assert settled is not None
    earlier = "in_" + "0" * 12 + "a" * 10  # minted by a clock far behind
    later, created = await journal.submit(make(op="complete").evolve(intent_id=earlier))
    assert created and later.intent_id > first.intent_id
    assert await journal.get(later.intent_id) == later
    latest = await journal.latest_for_reservation(WR)
    assert latest is not None and latest.intent_id == later.intent_id


async def test_after_settle_a_different_op_records_a_new_intent(journal: Journal) -> None:
    first, _ = await journal.submit(make("accept"))
    await settle(journal, first)
    wrapup = make("wrapup")
    stored, created = await journal.submit(wrapup)
    assert created and stored == wrapup
    assert await journal.latest_for_reservation(WR) == wrapup
    # The claim moved: a duplicate now joins the wrap-up, not the old accept.
    joined, created = await journal.submit(make("complete"))
    assert not created and joined == wrapup


async def test_after_settle_other_params_record_a_new_intent(journal: Journal) -> None:
    first, _ = await journal.submit(make("reject", params={"task_sid": WT}))
    await settle(journal, first)
    other = make("reject", params={"task_sid": WT, "activity_sid": "WA" + "0" * 32})
    _, created = await journal.submit(other)
    assert created


async def test_after_a_failure_the_same_op_may_be_tried_again(journal: Journal) -> None:
    first, _ = await journal.submit(make("accept"))
    await settle(journal, first, error=ErrorInfo(20001, "not pending"))
    retry = make("accept")
    stored, created = await journal.submit(retry)
    assert created and stored == retry


async def test_reservations_do_not_share_claims(journal: Journal) -> None:
    _, a = await journal.submit(make("accept", reservation_sid=sid("WR", 1)))
    _, b = await journal.submit(make("accept", reservation_sid=sid("WR", 2)))
    assert a and b


async def test_fifty_concurrent_submits_create_exactly_one(journal: Journal) -> None:
    candidates = [make("accept" if n % 2 else "reject") for n in range(50)]
    results = await asyncio.gather(*(journal.submit(c) for c in candidates))
    created = [intent for intent, was_created in results if was_created]
    assert len(created) == 1
    assert {intent.intent_id for intent, _ in results} == {created[0].intent_id}
    assert sum((await journal.count()).values()) == 1


async def test_two_instances_never_both_claim(store: Store) -> None:
    """Two journals on one store, each as another instance would open it: PostgreSQL shares
    the claim (the claim row's lock); SQLite refuses the second (one process per file)."""
    one, two = store.journal(), store.journal()
    await one.open()
    try:
        if isinstance(store, SqliteStore):
            with pytest.raises(JournalError, match="another flex-bridge process holds"):
                await two.open()
            return
        await two.open()
        try:
            results = await asyncio.gather(
                *(j.submit(make(op)) for op in ("accept", "reject") * 10 for j in (one, two))
            )
            assert sum(created for _, created in results) == 1
            assert len({intent.intent_id for intent, _ in results}) == 1
        finally:
            await two.close()
    finally:
        await one.close()


async def test_two_instances_never_both_move_an_intent(pg_dsn: str) -> None:
    """PostgreSQL (SQLite has one process per file: see the test above)."""
    one, two = PostgresJournal(pg_dsn), PostgresJournal(pg_dsn)
    await one.open()
    await two.open()
    try:
        intent, _ = await one.submit(make())
        results = await asyncio.gather(
            *(
                j.transition(intent.intent_id, ("recorded",), state="announced", attempts=n)
                for n in range(10)
                for j in (one, two)
            )
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        assert await two.get(intent.intent_id) == winners[0]
        timeouts = await asyncio.gather(
            *(j.record_timeout(WT, sid("WR", n)) for n in range(10) for j in (one, two))
        )
        # Each reservation counted once, one count at a time: 1..10, whoever came second.
        assert set(timeouts) == set(range(1, 11))
        assert await one.record_timeout(WT, sid("WR", 99)) == 11
    finally:
        await one.close()
        await two.close()


# ------------------------------------------------------------------------------ transition
async def test_transition_is_compare_and_set(journal: Journal, clock: FakeClock) -> None:
    intent, _ = await journal.submit(make())
    clock.advance(5)
    assert await journal.transition(intent.intent_id, ("announced",), state="applied") is None
    unchanged = await journal.get(intent.intent_id)
    assert unchanged == intent

    moved = await journal.transition(
        intent.intent_id, ("recorded",), state="announced", attempts=1, late_announce=True
    )
    assert moved is not None
    assert (moved.state, moved.attempts, moved.late_announce) == ("announced", 1, True)
    assert moved.updated_at == T0 + 5
    assert await journal.get(intent.intent_id) == moved
    # The same move again finds the state changed: only one of two racers wins.
    assert await journal.transition(intent.intent_id, ("recorded",), state="announced") is None


async def test_transition_of_an_unknown_intent(journal: Journal) -> None:
    assert await journal.transition("in_" + "f" * 22, ("recorded",), state="settled") is None


async def test_concurrent_transitions_have_one_winner(journal: Journal) -> None:
    intent, _ = await journal.submit(make())
    results = await asyncio.gather(
        *(
            journal.transition(intent.intent_id, ("recorded",), state="announced", attempts=n)
            for n in range(20)
        )
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert await journal.get(intent.intent_id) == winners[0]


async def test_transition_round_trips_every_field(journal: Journal) -> None:
    intent, _ = await journal.submit(make())
    moved = await journal.transition(
        intent.intent_id,
        ("recorded",),
        state="refused",
        reservation_status="timeout",
        error=ErrorInfo(None, "deadline passed"),
        extra={"fetches": 2},
    )
    assert moved is not None
    stored = await journal.get(intent.intent_id)
    assert stored == moved
    assert stored is not None and stored.error == ErrorInfo(None, "deadline passed")
    cleared = await journal.transition(intent.intent_id, ("refused",), state="settled")
    assert cleared is not None and cleared.error == ErrorInfo(None, "deadline passed")


# ------------------------------------------------------------------------------ unsettled
async def test_unsettled_lists_only_unsettled_in_order(journal: Journal) -> None:
    made = [make(reservation_sid=sid("WR", n)) for n in range(5)]
    for intent in made:
        await journal.submit(intent)
    await settle(journal, made[1])
    await journal.transition(made[3].intent_id, ("recorded",), state="instructed")
    unsettled = await journal.unsettled()
    assert [i.intent_id for i in unsettled] == [made[n].intent_id for n in (0, 2, 3, 4)]
    assert [i.intent_id for i in await journal.unsettled(limit=2)] == [
        made[0].intent_id,
        made[2].intent_id,
    ]
    assert await journal.count() == {"recorded": 3, "instructed": 1, "settled": 1}


# ------------------------------------------------------------------------------ durability
async def test_intents_survive_close_and_reopen(store: Store) -> None:
    first = store.journal()
    await first.open()
    a, _ = await first.submit(make(reservation_sid=sid("WR", 1)))
    b, _ = await first.submit(make(reservation_sid=sid("WR", 2)))
    b = await settle(first, b)
    await first.record_timeout(WT, sid("WR", 1))
    assert await first.first_seen("event-1", 60)
    await first.close()

    second = store.journal()
    await second.open()
    try:
        assert await second.get(a.intent_id) == a
        assert await second.get(b.intent_id) == b
        assert [i.intent_id for i in await second.unsettled()] == [a.intent_id]
        # The claim survived too: a duplicate still joins.
        joined, created = await second.submit(make(reservation_sid=sid("WR", 1)))
        assert not created and joined == a
        assert await second.record_timeout(WT, sid("WR", 1)) == 1
        assert not await second.first_seen("event-1", 60)
    finally:
        await second.close()


async def test_a_closed_journal_raises_journal_error(store: Store) -> None:
    j = store.journal()
    with pytest.raises(JournalError, match="not open"):
        await j.get("in_" + "0" * 22)
    await j.open()
    await j.close()
    await j.close()  # twice is fine
    with pytest.raises(JournalError):
        await j.submit(make())


async def test_a_failed_submit_leaves_nothing_behind(journal: Journal, store: Store) -> None:
    first, _ = await journal.submit(make(reservation_sid=sid("WR", 1)))
    clash = make(reservation_sid=sid("WR", 2)).evolve(intent_id=first.intent_id)
    with pytest.raises(JournalError) as caught:
        await journal.submit(clash)
    assert isinstance(caught.value.__cause__, store.integrity_error)  # translated, not hidden
    # Rolled back: no claim for WR2, the journal still works.
    assert await journal.latest_for_reservation(sid("WR", 2)) is None
    _, created = await journal.submit(make(reservation_sid=sid("WR", 2)))
    assert created


# ------------------------------------------------------------------------------ first_seen
async def test_first_seen_until_the_ttl_runs_out(journal: Journal, clock: FakeClock) -> None:
    assert await journal.first_seen("WR1:reservation.accepted", 60)
    assert not await journal.first_seen("WR1:reservation.accepted", 60)
    assert await journal.first_seen("WR1:reservation.timeout", 60)
    clock.advance(59.9)
    assert not await journal.first_seen("WR1:reservation.accepted", 60)
    clock.advance(0.1)
    assert await journal.first_seen("WR1:reservation.accepted", 60)
    assert not await journal.first_seen("WR1:reservation.accepted", 60)


async def test_first_seen_is_atomic(journal: Journal) -> None:
    results = await asyncio.gather(*(journal.first_seen("key", 60) for _ in range(30)))
    assert results.count(True) == 1


async def test_purge_seen_removes_only_expired_keys(journal: Journal, clock: FakeClock) -> None:
    await journal.first_seen("short", 10)
    await journal.first_seen("long", 100)
    clock.advance(50)
    assert await journal.purge_seen() == 1
    assert await journal.first_seen("short", 10)
    assert not await journal.first_seen("long", 100)


async def test_a_seen_key_is_not_lost_when_a_concurrent_submit_rolls_back(
    journal: Journal, store: Store
) -> None:
    """``first_seen`` must not run inside another operation's transaction."""
    first, _ = await journal.submit(make(reservation_sid=sid("WR", 1)))
    clash = make(reservation_sid=sid("WR", 2)).evolve(intent_id=first.intent_id)
    results = await asyncio.gather(
        journal.submit(clash), journal.first_seen("webhook-1", 60), return_exceptions=True
    )
    assert isinstance(results[0], JournalError)
    assert isinstance(results[0].__cause__, store.integrity_error)
    assert results[1] is True
    assert not await journal.first_seen("webhook-1", 60)  # still remembered


# ------------------------------------------------------------------------------ record_timeout
async def test_record_timeout_counts_once_per_reservation_and_per_task(
    journal: Journal,
) -> None:
    assert await journal.record_timeout(WT, sid("WR", 1)) == 1
    assert await journal.record_timeout(WT, sid("WR", 1)) == 1  # a webhook retry
    assert await journal.record_timeout(WT, sid("WR", 2)) == 2
    assert await journal.record_timeout(WT2, sid("WR", 3)) == 1
    assert await journal.record_timeout(WT, sid("WR", 3)) == 2  # WR3 counted for WT2 already
    assert await journal.record_timeout(WT, sid("WR", 4)) == 3


async def test_record_timeout_concurrently(journal: Journal) -> None:
    counts = await asyncio.gather(*(journal.record_timeout(WT, sid("WR", 1)) for _ in range(20)))
    assert set(counts) == {1}


async def test_recent_lists_the_newest_first(journal: Journal) -> None:
    made = [make(reservation_sid=sid("WR", n)) for n in range(4)]
    for intent in made:
        await journal.submit(intent)
    await settle(journal, made[2])
    assert [i.intent_id for i in await journal.recent()] == [i.intent_id for i in reversed(made)]
    assert [i.intent_id for i in await journal.recent(limit=2)] == [
        made[3].intent_id,
        made[2].intent_id,
    ]


async def test_a_cancelled_caller_leaves_no_transaction_open(journal: Journal) -> None:
    """Cancelling the caller either keeps the operation from starting, lets it finish, or
    rolls it back whole (PostgreSQL, cancelled mid-transaction); the journal goes on working
    either way."""
    submit = asyncio.ensure_future(journal.submit(make(reservation_sid=sid("WR", 7))))
    await asyncio.sleep(0)
    submit.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await submit
    first, created = await journal.submit(make(reservation_sid=sid("WR", 8)))
    assert created
    assert await journal.get(first.intent_id) == first


async def test_callers_cancelled_at_any_point_leave_whole_operations(journal: Journal) -> None:
    """Cancelled anywhere in ``submit`` (after 0 to 4 ms): the intent and its claim are both
    there or both not; a second submit then joins or records accordingly."""
    tries = 40
    started = [make(reservation_sid=sid("WR", 100 + n)) for n in range(tries)]
    for n, intent in enumerate(started):
        task = asyncio.ensure_future(journal.submit(intent))
        await asyncio.sleep(n / 10_000)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await journal.ping()
    for intent in started:
        stored = await journal.get(intent.intent_id)
        again, created = await journal.submit(make(reservation_sid=intent.reservation_sid))
        if stored is None:  # never ran, or rolled back: no claim left either
            assert created
        else:
            assert stored == intent
            assert not created and again == intent


# ------------------------------------------------------------------------------ leases
async def test_a_lease_is_renewed_by_its_owner_and_refused_to_others(
    journal: Journal, clock: FakeClock
) -> None:
    token = await journal.acquire_lease("L", "a", 30)
    assert token is not None
    assert await journal.acquire_lease("L", "b", 30) is None
    clock.advance(20)
    assert await journal.acquire_lease("L", "a", 30) == token  # renewed: the same token
    clock.advance(20)  # 40 s after the first take, 20 after the renewal: still a's
    assert await journal.acquire_lease("L", "b", 30) is None
    clock.advance(10)  # the renewal's 30 s ran out
    taken = await journal.acquire_lease("L", "b", 30)
    assert taken is not None and taken > token
    assert await journal.acquire_lease("L", "a", 30) is None
    # Leases are per name.
    other = await journal.acquire_lease("M", "a", 30)
    assert other is not None


async def test_every_new_tenure_gets_a_greater_token(journal: Journal, clock: FakeClock) -> None:
    tokens = []
    for owner in ("a", "b", "a", "a"):  # the last: a again, after its own lease expired
        token = await journal.acquire_lease("L", owner, 10)
        assert token is not None
        tokens.append(token)
        clock.advance(10)  # expired exactly at expires_at
    assert tokens == sorted(set(tokens))


async def test_release_frees_the_lease_for_its_owner_only(
    journal: Journal, clock: FakeClock
) -> None:
    token = await journal.acquire_lease("L", "a", 60)
    assert token is not None
    await journal.release_lease("L", "b")  # not b's: nothing happens
    assert await journal.acquire_lease("L", "b", 60) is None
    await journal.release_lease("L", "a")
    await journal.release_lease("L", "a")  # twice is fine
    taken = await journal.acquire_lease("L", "b", 60)
    assert taken is not None and taken > token
    await journal.release_lease("nothing", "a")  # an unknown lease: nothing happens
    await journal.release_lease("L", "b")
    again = await journal.acquire_lease("L", "a", 60)  # a's again, under a new token
    assert again is not None and again > taken


async def test_concurrent_acquires_have_one_winner(journal: Journal) -> None:
    results = await asyncio.gather(
        *(journal.acquire_lease("L", f"owner-{n}", 30) for n in range(20))
    )
    assert len([r for r in results if r is not None]) == 1


async def test_tokens_keep_increasing_after_prune_drops_the_lease(
    journal: Journal, clock: FakeClock
) -> None:
    first = await journal.acquire_lease("L", "a", 10)
    assert first is not None
    clock.advance(100)
    assert await journal.prune(clock.now, 100) == 1  # the expired lease
    second = await journal.acquire_lease("L", "a", 10)
    assert second is not None and second > first


async def test_a_fenced_transition_needs_the_current_unexpired_lease(
    journal: Journal, clock: FakeClock
) -> None:
    intent, _ = await journal.submit(make())
    iid = intent.intent_id
    # No lease at all: refused.
    assert await journal.transition(iid, ("recorded",), fence=1, state="announced") is None
    token = await journal.acquire_lease(iid, "a", 30)
    assert token is not None
    assert await journal.transition(iid, ("recorded",), fence=token + 1, state="announced") is None
    moved = await journal.transition(iid, ("recorded",), fence=token, state="announced")
    assert moved is not None and moved.state == "announced"
    clock.advance(30)  # a's lease runs out: its late write is refused, whatever the state
    assert await journal.transition(iid, ("announced",), fence=token, state="applied") is None
    taken = await journal.acquire_lease(iid, "b", 30)
    assert taken is not None
    assert await journal.transition(iid, ("announced",), fence=token, state="applied") is None
    assert await journal.get(iid) == moved
    applied = await journal.transition(iid, ("announced",), fence=taken, state="applied")
    assert applied is not None
    # A released lease fences too; an unfenced transition goes on as ever.
    await journal.release_lease(iid, "b")
    assert await journal.transition(iid, ("applied",), fence=taken, state="settled") is None
    settled = await journal.transition(iid, ("applied",), state="settled")
    assert settled is not None and settled.state == "settled"


# ------------------------------------------------------------------------------ inbox
async def test_inbox_put_records_each_key_once(journal: Journal) -> None:
    body = {"EventType": "reservation.accepted", "ResourceSid": WR, "Empty": ""}
    assert await journal.inbox_put("ev-1", body)
    assert not await journal.inbox_put("ev-1", {"EventType": "other"})  # a redelivery
    assert await journal.inbox_take("a", 30, 10) == [("ev-1", body)]
    assert not await journal.inbox_put("ev-1", body)  # taken, still there


async def test_inbox_take_leases_the_oldest_entries(journal: Journal, clock: FakeClock) -> None:
    for key in ("k3", "k1", "k2", "k4"):
        assert await journal.inbox_put(key, {"key": key})
        clock.advance(1)
    first = await journal.inbox_take("a", 30, 2)
    assert first == [("k3", {"key": "k3"}), ("k1", {"key": "k1"})]
    assert [key for key, _ in await journal.inbox_take("b", 30, 10)] == ["k2", "k4"]
    assert await journal.inbox_take("c", 30, 10) == []
    assert await journal.inbox_take("c", 30, 0) == []
    await journal.inbox_done("k3")
    await journal.inbox_done("k3")  # twice is fine
    await journal.inbox_done("unknown")
    clock.advance(29.9)
    assert await journal.inbox_take("c", 30, 10) == []
    clock.advance(0.1)  # a's and b's leases ran out; the entry done is never taken again
    assert [key for key, _ in await journal.inbox_take("c", 30, 10)] == ["k1", "k2", "k4"]


async def test_concurrent_takers_never_get_one_entry(journal: Journal) -> None:
    for n in range(40):
        await journal.inbox_put(f"ev-{n:02}", {"n": str(n)})
    batches = await asyncio.gather(*(journal.inbox_take(f"t{n}", 60, 7) for n in range(8)))
    taken = [key for batch in batches for key, _ in batch]
    assert sorted(taken) == [f"ev-{n:02}" for n in range(40)]  # each once, none lost
    assert await journal.inbox_take("late", 60, 10) == []


# ------------------------------------------------------------------------------ active
async def test_active_reservations_are_the_recent_newest_not_final(
    journal: Journal, clock: FakeClock
) -> None:
    async def at(moment: float, reservation: int, status: str | None, op: Op = "accept") -> Intent:
        intent, created = await journal.submit(make(op, reservation_sid=sid("WR", reservation)))
        assert created
        clock.now = T0 + moment
        moved = await journal.transition(
            intent.intent_id, ("recorded",), state="settled", reservation_status=status
        )
        assert moved is not None
        return moved

    await at(5, 1, "accepted")  # updated before `since`
    r2 = await at(20, 2, "accepted")
    await at(12, 3, "accepted")
    await at(30, 3, "completed", "complete")  # R3's newest is final: R3 is over
    r4 = await at(15, 4, None)  # no status yet: active
    await at(11, 5, "canceled")
    r5 = await at(25, 5, "wrapping", "wrapup")  # the newest counts, not the older final one
    for n, status in enumerate(("timeout", "rescinded", "rejected", "completed", "canceled")):
        await at(40, 10 + n, status)
    r6 = await at(10, 6, "pending")  # exactly at `since`
    active = await journal.active_reservations(T0 + 10, 100)
    assert [i.intent_id for i in active] == [
        r6.intent_id,
        r4.intent_id,
        r2.intent_id,
        r5.intent_id,
    ]
    assert active[1] == r4
    assert [i.intent_id for i in await journal.active_reservations(T0 + 10, 2)] == [
        r6.intent_id,
        r4.intent_id,
    ]
    assert await journal.active_reservations(T0 + 26, 100) == []
    assert await journal.active_reservations(T0, 0) == []


async def test_an_unsettled_newest_intent_is_active(journal: Journal, clock: FakeClock) -> None:
    intent, _ = await journal.submit(make())
    clock.now = intent.updated_at
    assert await journal.active_reservations(intent.updated_at, 10) == [intent]


# ------------------------------------------------------------------------------ prune
async def test_prune_deletes_what_is_old_and_done_only(journal: Journal, clock: FakeClock) -> None:
    old_settled, _ = await journal.submit(make(reservation_sid=sid("WR", 1)))
    old_settled = await settle(journal, old_settled)
    old_unsettled, _ = await journal.submit(make(reservation_sid=sid("WR", 2)))
    # R3: an old settled intent, then a newer unsettled one holding the claim.
    older, _ = await journal.submit(make(reservation_sid=sid("WR", 3)))
    await settle(journal, older)
    holder, _ = await journal.submit(make("complete", reservation_sid=sid("WR", 3)))
    await journal.first_seen("expired", 10)
    await journal.first_seen("kept", 1000)
    await journal.inbox_put("done-early", {})
    await journal.inbox_put("pending", {})
    await journal.inbox_take("a", 5, 10)
    await journal.inbox_done("done-early")
    await journal.record_timeout(WT, sid("WR", 1))
    await journal.acquire_lease("expired-lease", "a", 10)
    await journal.acquire_lease("held-lease", "a", 1000)

    clock.advance(100)  # everything above is now 100 s old
    cutoff = clock.now - 50
    recent, _ = await journal.submit(make(reservation_sid=sid("WR", 4)))
    await settle(journal, recent)
    await journal.inbox_put("done-late", {})
    await journal.inbox_done("done-late")
    await journal.record_timeout(WT, sid("WR", 5))

    # intents 2 (WR1's, R3's older) + their claim 1 (WR1's), seen 1, inbox 1, timeouts 1,
    # leases 1.
    assert await journal.prune(cutoff, 100) == 7
    assert await journal.prune(cutoff, 100) == 0
    assert await journal.get(old_settled.intent_id) is None
    assert await journal.get(older.intent_id) is None
    assert await journal.get(old_unsettled.intent_id) == old_unsettled
    assert await journal.get(holder.intent_id) == holder
    assert await journal.get(recent.intent_id) is not None
    assert await journal.count() == {"recorded": 2, "settled": 1}
    # R3's claim (on its unsettled intent) stays: a duplicate joins it. R1's went with its
    # intent: an accept there now is a new intent.
    joined, created = await journal.submit(make("complete", reservation_sid=sid("WR", 3)))
    assert not created and joined == holder
    _, created = await journal.submit(make(reservation_sid=sid("WR", 1)))
    assert created
    assert not await journal.first_seen("kept", 1000)
    assert await journal.first_seen("expired", 10)
    assert not await journal.inbox_put("pending", {})
    assert not await journal.inbox_put("done-late", {})
    assert await journal.inbox_put("done-early", {})  # forgotten: new again
    assert await journal.record_timeout(WT, sid("WR", 6)) == 2  # WR1's count went
    assert await journal.acquire_lease("held-lease", "b", 10) is None


async def test_prune_deletes_at_most_limit_rows_per_table(
    journal: Journal, clock: FakeClock
) -> None:
    for n in range(3):
        intent, _ = await journal.submit(make(reservation_sid=sid("WR", n)))
        await settle(journal, intent)
        await journal.first_seen(f"seen-{n}", 1)
        await journal.inbox_put(f"ev-{n}", {})
        await journal.inbox_done(f"ev-{n}")
        await journal.record_timeout(WT, sid("WR", n))
        await journal.acquire_lease(f"lease-{n}", "a", 1)
    clock.advance(10)
    assert await journal.prune(clock.now, 0) == 0
    # Each call: one intent and its claim, one row of each other table.
    assert await journal.prune(clock.now, 1) == 6
    assert await journal.count() == {"settled": 2}
    assert await journal.prune(clock.now, 5) == 12
    assert await journal.count() == {}
    assert await journal.prune(clock.now, 5) == 0


async def test_prune_beside_submits_on_the_same_reservations(
    journal: Journal, clock: FakeClock
) -> None:
    """Pruning settled intents while new ones are submitted for the same reservations:
    both finish (no deadlock between the claim and intent locks), and each reservation ends
    with its new intent holding the claim."""
    for n in range(20):
        intent, _ = await journal.submit(make(reservation_sid=sid("WR", n)))
        await settle(journal, intent)
    clock.advance(100)
    fresh = [make("complete", reservation_sid=sid("WR", n)) for n in range(20)]
    submitted, *_ = await asyncio.gather(
        asyncio.gather(*(journal.submit(intent) for intent in fresh)),
        journal.prune(clock.now, 7),
        journal.prune(clock.now, 7),
        journal.prune(clock.now, 7),
    )
    assert all(created for _, created in submitted)
    # Concurrent prunes may pick the same candidates (one deletes them): the next catches up.
    await journal.prune(clock.now, 100)
    for intent in fresh:
        again = make("wrapup", reservation_sid=intent.reservation_sid)
        joined, created = await journal.submit(again)
        assert not created and joined == intent
    assert await journal.count() == {"recorded": 20}


async def test_purge_seen_is_unlimited(journal: Journal, clock: FakeClock) -> None:
    for n in range(5):
        await journal.first_seen(f"k{n}", 1)
    clock.advance(1)
    assert await journal.purge_seen() == 5


# ------------------------------------------------------------------------------ health
async def test_ping_writes_the_health_row(journal: Journal, store: Store, clock: FakeClock) -> None:
    clock.advance(42)
    await journal.ping()
    assert await fetch_one(store, "SELECT id, at FROM health") == (1, T0 + 42)


async def fetch_one(store: Store, sql: str) -> tuple[Any, ...]:
    """One row, read beside the journal with a connection of the test's own."""
    if isinstance(store, SqliteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as db:
            return tuple(db.execute(sql).fetchone())
    conn = await asyncpg.connect(store.dsn)
    try:
        return tuple(await conn.fetchrow(sql))
    finally:
        await conn.close()


# ------------------------------------------------------------------------------ SQLite's own
async def test_memory_journal(clock: FakeClock) -> None:
    j = SqliteJournal(":memory:", clock=clock)
    await j.open()
    try:
        await j.ping()
        _, created = await j.submit(make())
        assert created
    finally:
        await j.close()


async def test_a_journal_that_cannot_open_raises_journal_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(JournalError, match="cannot open the journal"):
        await SqliteJournal(blocker / "journal.db").open()


# The schema of the first SQLite journal (before leases, the inbox and health).
SQLITE_SCHEMA_V1 = """
CREATE TABLE intents (
    intent_id TEXT PRIMARY KEY, reservation_sid TEXT NOT NULL, task_sid TEXT NOT NULL,
    worker_sid TEXT NOT NULL, op TEXT NOT NULL, source TEXT NOT NULL, via TEXT NOT NULL,
    params TEXT NOT NULL, state TEXT NOT NULL, deadline REAL, attempts INTEGER NOT NULL DEFAULT 0,
    reservation_status TEXT, error_code INTEGER, error_message TEXT,
    late_announce INTEGER NOT NULL DEFAULT 0, extra TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE INDEX intents_by_reservation ON intents (reservation_sid, intent_id);
CREATE INDEX intents_unsettled ON intents (state) WHERE state != 'settled';
CREATE TABLE claims (reservation_sid TEXT PRIMARY KEY, intent_id TEXT NOT NULL);
CREATE TABLE seen (key TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE timeouts (
    reservation_sid TEXT PRIMARY KEY, task_sid TEXT NOT NULL, at REAL NOT NULL
);
CREATE INDEX timeouts_by_task ON timeouts (task_sid);
"""


async def test_a_journal_file_of_the_first_schema_gains_the_new_tables(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "journal.db"
    old = make()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(SQLITE_SCHEMA_V1)
        db.execute(
            f"INSERT INTO intents ({COLUMNS}) VALUES ({', '.join('?' * len(FIELDS))})",
            intent_values(old),
        )
        db.execute("INSERT INTO claims VALUES (?, ?)", (WR, old.intent_id))
        db.commit()
    for _ in range(2):  # migrated once, then opened as it is
        journal = SqliteJournal(path, clock=clock)
        await journal.open()
        try:
            await journal.ping()
            assert await journal.get(old.intent_id) == old
            joined, created = await journal.submit(make(reservation_sid=WR))
            assert not created and joined == old
            assert await journal.acquire_lease(old.intent_id, "a", 30) is not None
            await journal.inbox_put("ev-1", {"a": "b"})
            assert await journal.active_reservations(0, 10) == [old]
            assert await journal.prune(0, 10) == 0
        finally:
            await journal.close()


async def test_ping_refuses_a_journal_file_made_read_only(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path)
    await journal.open()
    try:
        await journal.ping()
        path.chmod(0o444)  # the open connection could still write; a restart could not
        with pytest.raises(JournalError, match=r"journal at .*journal\.db is read-only"):
            await journal.ping()
        path.chmod(0o644)
        await journal.ping()
    finally:
        await journal.close()


async def test_ping_refuses_a_journal_file_deleted_or_replaced(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path)
    await journal.open()
    try:
        _, created = await journal.submit(make())  # writes still "work", on the lost inode
        assert created
        path.rename(tmp_path / "moved.db")
        with pytest.raises(JournalError, match="is gone: its file was deleted or moved"):
            await journal.ping()
        with contextlib.closing(sqlite3.connect(path)) as db:  # another file in its place
            db.execute("CREATE TABLE other (x)")
        with pytest.raises(JournalError, match="was replaced while open"):
            await journal.ping()
        path.unlink()
        (tmp_path / "moved.db").rename(path)  # the same file back
        await journal.ping()
        path.unlink()
        with pytest.raises(JournalError, match="is gone"):
            await journal.ping()
    finally:
        await journal.close()


async def test_ping_reports_a_journal_locked_by_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    assert SqliteJournal(path).ping_timeout == 2.0
    journal = SqliteJournal(path, ping_timeout=0.3)
    await journal.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # the write lock, held
        started = time.monotonic()
        with pytest.raises(JournalError, match=r"is locked: a write waited 0\.3 s"):
            await journal.ping()
        assert 0.25 < time.monotonic() - started < 3
        other.execute("ROLLBACK")
        await journal.ping()
        # The ping's bound was its own: the other operations wait as long as before.
        timeout = await journal._run(lambda db: db.execute("PRAGMA busy_timeout").fetchone())
        assert timeout == (5000,)
    finally:
        other.close()
        await journal.close()


async def test_a_read_only_journal_pings_by_reading(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    writer = SqliteJournal(path)
    await writer.open()
    await writer.close()
    reader = SqliteJournal(path, read_only=True)
    await reader.open()
    try:
        await reader.ping()
        path.unlink()
        with pytest.raises(JournalError, match="is gone"):
            await reader.ping()
    finally:
        await reader.close()


# ------------------------------------------------------------------------------ journal_path
@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("flex-bridge.db", "flex-bridge.db"),
        ("/var/lib/flex/journal.db", "/var/lib/flex/journal.db"),
        ("data/journal.db", "data/journal.db"),
        # SQLAlchemy's URLs: three slashes and a relative path, four for an absolute one.
        ("sqlite:///journal.db", "journal.db"),
        ("sqlite:///rel/path/journal.db", "rel/path/journal.db"),
        ("sqlite:////var/lib/flex/journal.db", "/var/lib/flex/journal.db"),
        ("sqlite:////abs/path", "/abs/path"),
        # In memory: the Python API only (journal_setting refuses it).
        ("sqlite://:memory:", ":memory:"),
        (":memory:", ":memory:"),
    ],
)
def test_journal_path(value: str, path: str) -> None:
    assert journal_path(value) == path


@pytest.mark.parametrize(
    "value", ["redis://localhost:6379/0", "postgres://db/flex", "http://x/journal.db"]
)
def test_journal_path_refuses_other_schemes(value: str) -> None:
    with pytest.raises(ConfigError, match="FLEX_BRIDGE_JOURNAL"):
        journal_path(value)


def test_journal_path_refuses_a_url_naming_no_file() -> None:
    """``sqlite:///`` used to become an in-memory journal: no durability, yet ready."""
    with pytest.raises(ConfigError, match="FLEX_BRIDGE_JOURNAL: sqlite:/// names no file"):
        journal_path("sqlite:///")


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("sqlite:///rel/path", "rel/path"),
        ("sqlite:////abs/path", "/abs/path"),
        ("state/journal.db", "state/journal.db"),
    ],
)
def test_journal_setting_honours_sqlalchemy_urls(value: str, path: str) -> None:
    assert journal_setting(value) == path


@pytest.mark.parametrize("value", ["sqlite:///", ":memory:", "sqlite://:memory:"])
def test_journal_setting_refuses_an_in_memory_journal(value: str) -> None:
    with pytest.raises(ConfigError, match="FLEX_BRIDGE_JOURNAL"):
        journal_setting(value)


def test_an_in_memory_journal_takes_no_lock(clock: FakeClock) -> None:
    assert SqliteJournal(":memory:").lock_path is None
    assert SqliteJournal("x.db", read_only=True).lock_path is None
    assert SqliteJournal("state/x.db").lock_path == "state/x.db.lock"


async def test_a_second_journal_on_the_file_is_refused(tmp_path: Path) -> None:
    """flock belongs to the open file description: a second open in this process conflicts
    as one in another process would; closing the first frees the file."""
    path = tmp_path / "journal.db"
    first, second = SqliteJournal(path), SqliteJournal(path)
    await first.open()
    try:
        with pytest.raises(JournalError) as refused:
            await second.open()
        message = str(refused.value)
        assert str(path) in message
        assert "another flex-bridge process holds this journal" in message
        assert "use a PostgreSQL journal for several instances" in message
        await first.ping()  # the holder is unaffected
    finally:
        await first.close()
    await second.open()  # free again
    await second.close()
    await second.close()


HOLDER = """
import asyncio, sys
from flex_bridge.adapters.journal import SqliteJournal
from flex_bridge.errors import JournalError

async def main() -> None:
    journal = SqliteJournal(sys.argv[1])
    try:
        await journal.open()
    except JournalError as exc:
        print(exc, flush=True)
        sys.exit(3)
    print("holding", flush=True)
    sys.stdin.readline()

asyncio.run(main())
"""


@contextlib.contextmanager
def other_process(path: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


async def test_another_process_on_the_file_is_refused_until_it_dies(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with other_process(path) as holder:
        assert holder.stdout is not None
        line = await asyncio.to_thread(holder.stdout.readline)
        assert line == "holding\n"
        with pytest.raises(JournalError, match="another flex-bridge process holds this journal"):
            await SqliteJournal(path).open()
        holder.kill()  # SIGKILL: the kernel releases its lock
        await asyncio.to_thread(holder.wait)
    journal = SqliteJournal(path)
    await journal.open()
    try:
        with other_process(path) as second:
            out, _ = await asyncio.to_thread(second.communicate, "", 30)
            assert second.returncode == 3
            assert f"the journal at {path} is in use" in out
            assert "use a PostgreSQL journal for several instances" in out
    finally:
        await journal.close()


async def test_a_read_only_journal_reads_beside_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    writer, reader = SqliteJournal(path), SqliteJournal(path, read_only=True)
    await writer.open()
    try:
        await reader.open()  # no lock taken, none refused
        try:
            intent, _ = await writer.submit(make())
            assert await reader.get(intent.intent_id) == intent
            assert [i.intent_id for i in await reader.unsettled()] == [intent.intent_id]
            with pytest.raises(JournalError, match="readonly"):
                await reader.submit(make(reservation_sid=sid("WR", 2)))
        finally:
            await reader.close()
    finally:
        await writer.close()
    reopened = SqliteJournal(path, read_only=True)  # after the writer closed, too
    await reopened.open()
    try:
        assert await reopened.count() == {"recorded": 1}
    finally:
        await reopened.close()


# ------------------------------------------------------------------------------ PostgreSQL's own
async def test_instances_starting_together_create_the_schema_once(pg_dsn: str) -> None:
    journals = [PostgresJournal(pg_dsn) for _ in range(6)]
    try:
        await asyncio.gather(*(j.open() for j in journals))
        _, created = await journals[0].submit(make())
        assert created
        assert await journals[5].count() == {"recorded": 1}
    finally:
        await asyncio.gather(*(j.close() for j in journals))
    conn = await asyncpg.connect(pg_dsn)
    try:
        versions = await conn.fetch("SELECT version FROM schema_version")
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() ORDER BY table_name"
        )
    finally:
        await conn.close()
    assert [r["version"] for r in versions] == list(range(1, SCHEMA_VERSION + 1))
    assert [r["table_name"] for r in tables] == [
        "claims",
        "health",
        "inbox",
        "intents",
        "leases",
        "schema_version",
        "seen",
        "timeouts",
    ]
    again = PostgresJournal(pg_dsn)  # a restart: nothing to migrate, the data kept
    await again.open()
    try:
        assert await again.count() == {"recorded": 1}
    finally:
        await again.close()


async def test_a_schema_newer_than_the_code_is_refused(pg_dsn: str) -> None:
    journal = PostgresJournal(pg_dsn)
    await journal.open()
    await journal.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("INSERT INTO schema_version VALUES ($1, 0)", SCHEMA_VERSION + 1)
    finally:
        await conn.close()
    with pytest.raises(JournalError, match="newer than this flex-bridge"):
        await PostgresJournal(pg_dsn).open()


async def test_an_unreachable_server_is_a_journal_error_without_the_password() -> None:
    port = free_port()  # nothing listens there
    journal = PostgresJournal(f"postgresql://flex:s3cr%40t@127.0.0.1:{port}/flex", timeout=5)
    with pytest.raises(JournalError) as refused:
        await journal.open()
    message = str(refused.value)
    assert message.startswith(f"cannot open the journal at postgresql://flex@127.0.0.1:{port}/flex")
    assert "s3cr" not in message
    assert "s3cr" not in repr(journal)
    with pytest.raises(JournalError, match="not open"):
        await journal.ping()
    await journal.close()


async def test_query_errors_and_dropped_connections_are_journal_errors(pg_dsn: str) -> None:
    name = "flex-bridge-test-" + pg_dsn.rsplit("=", 1)[-1]
    journal = PostgresJournal(with_query(pg_dsn, application_name=name), max_size=2)
    await journal.open()
    try:
        intent, _ = await journal.submit(make())
        conn = await asyncpg.connect(pg_dsn)
        try:
            # The server drops the journal's connections: the pool replaces them.
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = $1",
                name,
            )
            for _ in range(3):
                with contextlib.suppress(JournalError):
                    await journal.ping()
            assert await journal.get(intent.intent_id) == intent
            # A query the server refuses.
            await conn.execute("ALTER TABLE intents RENAME TO intents_gone")
            with pytest.raises(JournalError, match="intents") as failed:
                await journal.get(intent.intent_id)
            assert isinstance(failed.value.__cause__, asyncpg.UndefinedTableError)
            assert str(failed.value).startswith("failed: the journal at postgresql://")
            await conn.execute("ALTER TABLE intents_gone RENAME TO intents")
            assert await journal.get(intent.intent_id) == intent
        finally:
            await conn.close()
    finally:
        await journal.close()
    with pytest.raises(JournalError, match="not open"):
        await journal.get(intent.intent_id)


async def test_a_database_of_an_older_schema_is_migrated_in_place(pg_dsn: str) -> None:
    old = make()
    conn = await asyncpg.connect(pg_dsn)
    try:  # what the first PostgreSQL journal created, with an intent in it
        await conn.execute(
            "CREATE TABLE schema_version ("
            "version integer PRIMARY KEY, applied_at double precision NOT NULL)"
        )
        await conn.execute(MIGRATIONS[0][1])
        await conn.execute("INSERT INTO schema_version VALUES (1, 0)")
    finally:
        await conn.close()
    first = PostgresJournal(pg_dsn)
    await first.open()
    await first.submit(old)
    await first.close()
    # ... as if the first one had been opened by the old code: put the schema back to v1.
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "DROP TABLE leases, inbox, health; DROP SEQUENCE lease_tokens; "
            "DROP INDEX intents_by_update, seen_by_expiry, timeouts_by_time; "
            "DELETE FROM schema_version WHERE version > 1"
        )
    finally:
        await conn.close()

    journals = [PostgresJournal(pg_dsn) for _ in range(3)]  # instances upgraded together
    try:
        await asyncio.gather(*(j.open() for j in journals))
        journal = journals[0]
        await journal.ping()
        assert await journal.get(old.intent_id) == old
        joined, created = await journals[1].submit(make())
        assert not created and joined == old
        token = await journal.acquire_lease(old.intent_id, "a", 30)
        assert token is not None
        moved = await journals[2].transition(
            old.intent_id, ("recorded",), fence=token, state="announced"
        )
        assert moved is not None
        assert await journal.inbox_put("ev-1", {"a": "b"})
        assert await journal.active_reservations(0, 10) == [moved]
    finally:
        await asyncio.gather(*(j.close() for j in journals))
    conn = await asyncpg.connect(pg_dsn)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_version")]
        indexes = {r["indexname"] for r in await conn.fetch("SELECT indexname FROM pg_indexes")}
    finally:
        await conn.close()
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert {"intents_by_update", "inbox_pending", "leases_by_expiry"} <= indexes


async def test_two_instances_share_leases_and_the_inbox(pg_dsn: str) -> None:
    clock = FakeClock()
    one, two = PostgresJournal(pg_dsn, clock=clock), PostgresJournal(pg_dsn, clock=clock)
    await one.open()
    await two.open()
    try:
        intent, _ = await one.submit(make())
        iid = intent.intent_id
        tokens = await asyncio.gather(
            *(
                j.acquire_lease(iid, f"{name}-{n}", 30)
                for n in range(10)
                for name, j in (("one", one), ("two", two))
            )
        )
        held = [t for t in tokens if t is not None]
        assert len(held) == 1
        clock.advance(30)  # expired: a takeover race, one winner, a greater token
        taken = await asyncio.gather(
            *(j.acquire_lease(iid, f"new-{n}", 30) for n, j in enumerate((one, two) * 5))
        )
        winners = [t for t in taken if t is not None]
        assert len(winners) == 1 and winners[0] > held[0]
        # The old token's writes are refused on either instance; the new one's go through.
        for j in (one, two):
            assert await j.transition(iid, ("recorded",), fence=held[0], state="announced") is None
        assert await two.transition(iid, ("recorded",), fence=winners[0], state="announced")

        for n in range(30):
            await (one, two)[n % 2].inbox_put(f"ev-{n:02}", {"n": str(n)})
        batches = await asyncio.gather(
            *(j.inbox_take(f"taker-{n}", 60, 4) for n, j in enumerate((one, two) * 5))
        )
        taken_keys = [key for batch in batches for key, _ in batch]
        assert len(taken_keys) == len(set(taken_keys)) == 30
    finally:
        await one.close()
        await two.close()


async def test_a_takeover_waits_for_a_fenced_transition_in_progress(pg_dsn: str) -> None:
    """The fenced transition holds the lease row FOR SHARE: a takeover's update waits for its
    commit, then gets its new token; the intent moved under the old token exactly once."""
    clock = FakeClock()
    journal = PostgresJournal(pg_dsn, clock=clock)
    await journal.open()
    conn = await asyncpg.connect(pg_dsn)
    try:
        intent, _ = await journal.submit(make())
        token = await journal.acquire_lease(intent.intent_id, "a", 30)
        assert token is not None
        async with conn.transaction():  # a fenced transition, paused before its commit
            held = await conn.fetchval(
                "SELECT token FROM leases WHERE name = $1 FOR SHARE", intent.intent_id
            )
            assert held == token
            clock.advance(31)
            takeover = asyncio.ensure_future(journal.acquire_lease(intent.intent_id, "b", 30))
            await asyncio.sleep(0.3)
            assert not takeover.done()  # waiting on the row
        new = await takeover
        assert new is not None and new > token
    finally:
        await conn.close()
        await journal.close()


async def test_ping_reports_a_read_only_database(pg_dsn: str) -> None:
    journal = PostgresJournal(pg_dsn)
    await journal.open()  # creates the schema
    await journal.close()
    # A read-only session (as on a standby): opening at the current version only reads.
    reader = PostgresJournal(with_query(pg_dsn, default_transaction_read_only="on"))
    await reader.open()
    try:
        assert await reader.count() == {}
        with pytest.raises(JournalError, match="read-only: cannot write the journal at"):
            await reader.ping()
    finally:
        await reader.close()


async def test_ping_reports_a_locked_health_row(pg_dsn: str) -> None:
    assert PostgresJournal(pg_dsn).ping_timeout == 2.0
    journal = PostgresJournal(pg_dsn, ping_timeout=0.3)
    await journal.open()
    conn = await asyncpg.connect(pg_dsn)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE health IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(JournalError, match=r"locked: a write waited 0\.3 s") as locked:
                await journal.ping()
            assert time.monotonic() - started < 3
            assert isinstance(locked.value.__cause__, asyncpg.LockNotAvailableError)
        await journal.ping()
    finally:
        await conn.close()
        await journal.close()


class Proxy:
    """A TCP relay in front of the server: ``cut()`` closes its port and drops every
    connection through it, as a server that went away would."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.append(up_writer)
        await asyncio.gather(
            _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
        )

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


async def test_ping_reports_a_server_gone_away(pg_dsn: str) -> None:
    parts = urlsplit(pg_dsn)
    if not parts.hostname or not parts.port:
        pytest.skip("the test server is not reached over TCP")
    proxy = Proxy(parts.hostname, parts.port)
    port = await proxy.start()
    # The same credentials (CI's server wants a password; a throwaway cluster trusts).
    user = f"{parts.username}:{parts.password}" if parts.password else parts.username
    where = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
    journal = PostgresJournal(urlunsplit(parts._replace(netloc=where)), timeout=5)
    try:
        await journal.open()
    except BaseException:
        await proxy.cut()
        raise
    try:
        await journal.ping()
        await proxy.cut()
        for _ in range(2):  # the dropped connection, then the refused reconnection
            with pytest.raises(JournalError, match="cannot write the journal at postgresql://"):
                await journal.ping()
    finally:
        await journal.close()


# ------------------------------------------------------------------------------ open_journal
@pytest.mark.parametrize(
    ("setting", "kind", "where"),
    [
        ("journal.db", SqliteJournal, "journal.db"),
        ("sqlite:////var/lib/flex/journal.db", SqliteJournal, "/var/lib/flex/journal.db"),
        (":memory:", SqliteJournal, ":memory:"),
        ("postgresql://flex:pw@db:5432/flex", PostgresJournal, "postgresql://flex@db:5432/flex"),
        ("postgres://flex@db/flex?sslmode=require", PostgresJournal, "postgres://flex@db/flex"),
    ],
)
def test_open_journal_chooses_by_the_setting(setting: str, kind: type, where: str) -> None:
    journal = open_journal(setting)
    assert isinstance(journal, kind)
    if isinstance(journal, SqliteJournal):
        assert journal.path == where
    else:
        assert isinstance(journal, PostgresJournal)
        assert journal.name == where and journal.url == setting


@pytest.mark.parametrize(
    "url", ["postgresql://db", "postgresql://db/", "postgresql:///flex", "postgres://db:x/flex"]
)
def test_a_postgres_url_must_name_a_host_and_a_database(url: str) -> None:
    with pytest.raises(ConfigError, match="FLEX_BRIDGE_JOURNAL"):
        open_journal(url)
