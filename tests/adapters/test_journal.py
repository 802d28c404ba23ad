"""The journals, each test on SQLite and on PostgreSQL: recording, single flight per
reservation, compare-and-set, dedupe keys; then what is each one's own (SQLite's one-process
lock and read-only mode, PostgreSQL's schema migration and errors).

PostgreSQL comes from ``tests/support/postgres.py``: ``FLEX_BRIDGE_TEST_POSTGRES``, or a
throwaway cluster; without either the ``[postgres]`` tests skip (never under CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import pytest

from flex_bridge.adapters.journal import (
    Journal,
    PostgresJournal,
    SqliteJournal,
    journal_path,
    open_journal,
)
from flex_bridge.adapters.journal.postgres import SCHEMA_VERSION
from flex_bridge.domain.intents import ErrorInfo, Intent, new_intent_id
from flex_bridge.domain.types import Op
from flex_bridge.errors import ConfigError, JournalError
from tests.support.postgres import PostgresServer, free_port, running_postgres, with_query

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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


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
    assert [r["version"] for r in versions] == [SCHEMA_VERSION]
    assert [r["table_name"] for r in tables] == [
        "claims",
        "intents",
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
