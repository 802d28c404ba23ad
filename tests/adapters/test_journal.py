"""The SQLite journal: recording, single flight per reservation, compare-and-set, dedupe keys."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flex_bridge.adapters.journal import SqliteJournal, journal_path
from flex_bridge.domain.intents import ErrorInfo, Intent, new_intent_id
from flex_bridge.domain.types import Op
from flex_bridge.errors import ConfigError, JournalError

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


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def journal(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(tmp_path / "journal.db", clock=clock)
    await j.open()
    yield j
    await j.close()


async def settle(journal: SqliteJournal, intent: Intent, error: ErrorInfo | None = None) -> Intent:
    moved = await journal.transition(
        intent.intent_id,
        ("recorded", "announced", "applied", "refused"),
        state="settled",
        error=error,
    )
    assert moved is not None
    return moved


# ------------------------------------------------------------------------------ submit
async def test_submit_records_and_claims(journal: SqliteJournal) -> None:
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
    journal: SqliteJournal, op: Op, state: str
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
    journal: SqliteJournal, state: str
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


async def test_after_settle_the_same_applied_change_replays(journal: SqliteJournal) -> None:
    first, _ = await journal.submit(make("accept"))
    settled = await settle(journal, first)
    again, created = await journal.submit(make("accept"))
    assert not created
    assert again == settled
    assert again.outcome == "applied"


async def test_after_settle_a_different_op_records_a_new_intent(journal: SqliteJournal) -> None:
    first, _ = await journal.submit(make("accept"))
    await settle(journal, first)
    wrapup = make("wrapup")
    stored, created = await journal.submit(wrapup)
    assert created and stored == wrapup
    assert await journal.latest_for_reservation(WR) == wrapup
    # The claim moved: a duplicate now joins the wrap-up, not the old accept.
    joined, created = await journal.submit(make("complete"))
    assert not created and joined == wrapup


async def test_after_settle_other_params_record_a_new_intent(journal: SqliteJournal) -> None:
    first, _ = await journal.submit(make("reject", params={"task_sid": WT}))
    await settle(journal, first)
    other = make("reject", params={"task_sid": WT, "activity_sid": "WA" + "0" * 32})
    _, created = await journal.submit(other)
    assert created


async def test_after_a_failure_the_same_op_may_be_tried_again(journal: SqliteJournal) -> None:
    first, _ = await journal.submit(make("accept"))
    await settle(journal, first, error=ErrorInfo(20001, "not pending"))
    retry = make("accept")
    stored, created = await journal.submit(retry)
    assert created and stored == retry


async def test_reservations_do_not_share_claims(journal: SqliteJournal) -> None:
    _, a = await journal.submit(make("accept", reservation_sid=sid("WR", 1)))
    _, b = await journal.submit(make("accept", reservation_sid=sid("WR", 2)))
    assert a and b


async def test_fifty_concurrent_submits_create_exactly_one(journal: SqliteJournal) -> None:
    candidates = [make("accept" if n % 2 else "reject") for n in range(50)]
    results = await asyncio.gather(*(journal.submit(c) for c in candidates))
    created = [intent for intent, was_created in results if was_created]
    assert len(created) == 1
    assert {intent.intent_id for intent, _ in results} == {created[0].intent_id}
    assert sum((await journal.count()).values()) == 1


async def test_concurrent_submits_from_two_connections(tmp_path: Path, clock: FakeClock) -> None:
    """Two journals on one file (two instances): BEGIN IMMEDIATE keeps the claim single."""
    path = tmp_path / "shared.db"
    one, two = SqliteJournal(path, clock=clock), SqliteJournal(path, clock=clock)
    await one.open()
    await two.open()
    try:
        results = await asyncio.gather(*(j.submit(make()) for _ in range(10) for j in (one, two)))
        assert sum(created for _, created in results) == 1
        assert len({intent.intent_id for intent, _ in results}) == 1
    finally:
        await one.close()
        await two.close()


# ------------------------------------------------------------------------------ transition
async def test_transition_is_compare_and_set(journal: SqliteJournal, clock: FakeClock) -> None:
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


async def test_transition_of_an_unknown_intent(journal: SqliteJournal) -> None:
    assert await journal.transition("in_" + "f" * 22, ("recorded",), state="settled") is None


async def test_concurrent_transitions_have_one_winner(journal: SqliteJournal) -> None:
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


async def test_transition_round_trips_every_field(journal: SqliteJournal) -> None:
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
async def test_unsettled_lists_only_unsettled_in_order(journal: SqliteJournal) -> None:
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
async def test_intents_survive_close_and_reopen(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "nested" / "dir" / "journal.db"
    first = SqliteJournal(path, clock=clock)
    await first.open()
    a, _ = await first.submit(make(reservation_sid=sid("WR", 1)))
    b, _ = await first.submit(make(reservation_sid=sid("WR", 2)))
    b = await settle(first, b)
    await first.record_timeout(WT, sid("WR", 1))
    assert await first.first_seen("event-1", 60)
    await first.close()

    second = SqliteJournal(path, clock=clock)
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


async def test_memory_journal(clock: FakeClock) -> None:
    j = SqliteJournal(":memory:", clock=clock)
    await j.open()
    try:
        await j.ping()
        _, created = await j.submit(make())
        assert created
    finally:
        await j.close()


async def test_a_closed_journal_raises_journal_error(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path / "j.db")
    with pytest.raises(JournalError, match="not open"):
        await j.get("in_" + "0" * 22)
    await j.open()
    await j.close()
    await j.close()  # twice is fine
    with pytest.raises(JournalError):
        await j.submit(make())


async def test_a_journal_that_cannot_open_raises_journal_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(JournalError, match="cannot open the journal"):
        await SqliteJournal(blocker / "journal.db").open()


async def test_a_failed_submit_leaves_nothing_behind(journal: SqliteJournal) -> None:
    first, _ = await journal.submit(make(reservation_sid=sid("WR", 1)))
    clash = make(reservation_sid=sid("WR", 2)).evolve(intent_id=first.intent_id)
    with pytest.raises(JournalError) as caught:
        await journal.submit(clash)
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)  # translated, not hidden
    # Rolled back: no claim for WR2, the journal still works.
    assert await journal.latest_for_reservation(sid("WR", 2)) is None
    _, created = await journal.submit(make(reservation_sid=sid("WR", 2)))
    assert created


# ------------------------------------------------------------------------------ first_seen
async def test_first_seen_until_the_ttl_runs_out(journal: SqliteJournal, clock: FakeClock) -> None:
    assert await journal.first_seen("WR1:reservation.accepted", 60)
    assert not await journal.first_seen("WR1:reservation.accepted", 60)
    assert await journal.first_seen("WR1:reservation.timeout", 60)
    clock.advance(59.9)
    assert not await journal.first_seen("WR1:reservation.accepted", 60)
    clock.advance(0.1)
    assert await journal.first_seen("WR1:reservation.accepted", 60)
    assert not await journal.first_seen("WR1:reservation.accepted", 60)


async def test_first_seen_is_atomic(journal: SqliteJournal) -> None:
    results = await asyncio.gather(*(journal.first_seen("key", 60) for _ in range(30)))
    assert results.count(True) == 1


async def test_purge_seen_removes_only_expired_keys(
    journal: SqliteJournal, clock: FakeClock
) -> None:
    await journal.first_seen("short", 10)
    await journal.first_seen("long", 100)
    clock.advance(50)
    assert await journal.purge_seen() == 1
    assert await journal.first_seen("short", 10)
    assert not await journal.first_seen("long", 100)


async def test_a_seen_key_is_not_lost_when_a_concurrent_submit_rolls_back(
    journal: SqliteJournal,
) -> None:
    """``first_seen`` must not run inside another operation's transaction."""
    first, _ = await journal.submit(make(reservation_sid=sid("WR", 1)))
    clash = make(reservation_sid=sid("WR", 2)).evolve(intent_id=first.intent_id)
    results = await asyncio.gather(
        journal.submit(clash), journal.first_seen("webhook-1", 60), return_exceptions=True
    )
    assert isinstance(results[0], JournalError)
    assert isinstance(results[0].__cause__, sqlite3.IntegrityError)
    assert results[1] is True
    assert not await journal.first_seen("webhook-1", 60)  # still remembered


# ------------------------------------------------------------------------------ record_timeout
async def test_record_timeout_counts_once_per_reservation_and_per_task(
    journal: SqliteJournal,
) -> None:
    assert await journal.record_timeout(WT, sid("WR", 1)) == 1
    assert await journal.record_timeout(WT, sid("WR", 1)) == 1  # a webhook retry
    assert await journal.record_timeout(WT, sid("WR", 2)) == 2
    assert await journal.record_timeout(WT2, sid("WR", 3)) == 1
    assert await journal.record_timeout(WT, sid("WR", 3)) == 2  # WR3 counted for WT2 already
    assert await journal.record_timeout(WT, sid("WR", 4)) == 3


async def test_record_timeout_concurrently(journal: SqliteJournal) -> None:
    counts = await asyncio.gather(*(journal.record_timeout(WT, sid("WR", 1)) for _ in range(20)))
    assert set(counts) == {1}


# ------------------------------------------------------------------------------ journal_path
@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("flex-bridge.db", "flex-bridge.db"),
        ("/var/lib/flex/journal.db", "/var/lib/flex/journal.db"),
        ("data/journal.db", "data/journal.db"),
        ("sqlite:///journal.db", "journal.db"),
        ("sqlite:////var/lib/flex/journal.db", "/var/lib/flex/journal.db"),
        ("sqlite:///", ":memory:"),
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


async def test_recent_lists_the_newest_first(journal: SqliteJournal) -> None:
    made = [make(reservation_sid=sid("WR", n)) for n in range(4)]
    for intent in made:
        await journal.submit(intent)
    await settle(journal, made[2])
    assert [i.intent_id for i in await journal.recent()] == [i.intent_id for i in reversed(made)]
    assert [i.intent_id for i in await journal.recent(limit=2)] == [
        made[3].intent_id,
        made[2].intent_id,
    ]


async def test_a_cancelled_caller_leaves_no_transaction_open(journal: SqliteJournal) -> None:
    """Each operation runs whole in the journal's thread: cancelling the caller either keeps
    it from starting or lets it finish; the journal goes on working either way."""
    submit = asyncio.ensure_future(journal.submit(make(reservation_sid=sid("WR", 7))))
    await asyncio.sleep(0)
    submit.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await submit
    first, created = await journal.submit(make(reservation_sid=sid("WR", 8)))
    assert created
    assert await journal.get(first.intent_id) == first
