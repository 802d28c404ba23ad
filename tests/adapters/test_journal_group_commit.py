"""The SQLite journal's group commit: one writer thread, one transaction and one commit for
every operation waiting, each operation in a savepoint of its own, and no answer before the
commit that holds its write.

The writer is held with ``Gate`` (the journal's ``_before_commit`` hook, run in the writer
thread just before each COMMIT), so which operations share a batch is decided by the test,
not by timing. No assertion depends on a duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from flex_bridge.adapters.journal import SqliteJournal
from flex_bridge.adapters.journal.sqlite import READ
from flex_bridge.domain.intents import Intent, new_intent_id
from flex_bridge.errors import JournalError

T = TypeVar("T")
WT = "WT" + "0123456789abcdef" * 2
WK = "WK" + "00112233445566778899aabbccddeeff"
T0 = 1_714_566_896.789
WAIT = 30.0  # a bound on waiting for the writer thread, never reached when all is well

_made = 0


def sid(n: int) -> str:
    return f"WR{n:032x}"


def make(n: int, **changes: Any) -> Intent:
    global _made
    _made += 1
    created = T0 + _made / 1000
    return Intent(
        intent_id=new_intent_id(created),
        op="accept",
        reservation_sid=sid(n),
        task_sid=WT,
        worker_sid=WK,
        source="policy",
        params={"task_sid": WT},
        state="recorded",
        deadline=T0 + 120,
        created_at=created,
        updated_at=created,
    ).evolve(**changes)


class Gate:
    """Holds the journal's writer thread just before its next COMMIT until ``open``."""

    def __init__(self, journal: SqliteJournal) -> None:
        self.reached = threading.Event()
        self._open = threading.Event()
        self.fail_with: BaseException | None = None  # raised in the writer instead of committing
        journal._before_commit = self._hold

    def _hold(self) -> None:
        if self._open.is_set():
            return
        self.reached.set()
        if not self._open.wait(WAIT):
            raise RuntimeError("the gate was never opened")
        self.reached.clear()
        if (error := self.fail_with) is not None:
            self.fail_with = None
            raise error

    async def wait_reached(self) -> None:
        assert await asyncio.to_thread(self.reached.wait, WAIT), "the writer never came"

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._open.clear()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
async def journal(path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path, clock=lambda: T0 + 1)
    await j.open()
    yield j
    await j.close()


def start(awaitable: Awaitable[T]) -> asyncio.Future[T]:
    return asyncio.ensure_future(awaitable)


async def queued(*awaitables: Awaitable[Any]) -> list[asyncio.Future[Any]]:
    """Start each, in order, and let every one reach the writer's queue."""
    futures = [start(a) for a in awaitables]
    await asyncio.sleep(0)  # each task runs to its first await: its put on the queue
    return futures


async def held(journal: SqliteJournal, gate: Gate) -> asyncio.Future[bool]:
    """A write whose batch the gate holds at its COMMIT: the writer is busy from now on, so
    everything asked for next waits in the queue, for one batch."""
    holder = start(journal.first_seen("hold", 60))
    await gate.wait_reached()
    return holder


def stored(path: Path | str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows as another connection sees them: committed ones only."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [tuple(row) for row in db.execute(sql, args).fetchall()]


# ------------------------------------------------------------------------------ batching
async def test_operations_waiting_together_share_one_commit(journal: SqliteJournal) -> None:
    gate = Gate(journal)
    before = journal.commits
    holder = await held(journal, gate)
    intents = [make(n) for n in range(20)]
    submits = await queued(*(journal.submit(i) for i in intents))
    others = await queued(journal.first_seen("event-1", 60), journal.acquire_lease("L", "me", 9))
    assert not any(f.done() for f in [holder, *submits, *others])
    gate.open()
    assert await holder
    assert [await s for s in submits] == [(i, True) for i in intents]
    assert [await o for o in others] == [True, 1]
    # The held batch, then one batch for the 22 operations that waited behind it.
    assert journal.commits - before == 2
    assert len(stored(journal.path, "SELECT intent_id FROM intents")) == 20


async def test_concurrent_submits_take_fewer_commits_than_operations(
    journal: SqliteJournal,
) -> None:
    before = journal.commits
    results = await asyncio.gather(*(journal.submit(make(n)) for n in range(50)))
    assert all(created for _, created in results)
    assert journal.commits - before < 50


async def test_a_batch_runs_in_the_order_asked_for(journal: SqliteJournal) -> None:
    """Single flight still holds inside one transaction: of twenty requests for one
    reservation in one batch the first records, the others join it."""
    gate = Gate(journal)
    holder = await held(journal, gate)
    candidates = [make(1, op="accept" if n % 2 else "reject") for n in range(20)]
    submits = await queued(*(journal.submit(c) for c in candidates))
    gate.open()
    await holder
    results = [await s for s in submits]
    assert results[0] == (candidates[0], True)
    assert all(r == (candidates[0], False) for r in results[1:])


async def test_reads_alone_need_no_commit(journal: SqliteJournal) -> None:
    intent, _ = await journal.submit(make(1))
    before = journal.commits
    assert await asyncio.gather(*(journal.get(intent.intent_id) for _ in range(5))) == [intent] * 5
    assert await journal.unsettled() == [intent]
    assert journal.commits == before


# ------------------------------------------------------------------------------ failures
async def test_a_failing_operation_leaves_its_neighbours_in_the_batch(
    journal: SqliteJournal,
) -> None:
    first, _ = await journal.submit(make(1))
    gate = Gate(journal)
    before = journal.commits
    holder = await held(journal, gate)

    def half_done(db: sqlite3.Connection) -> None:  # writes, then fails: rolled back whole
        db.execute("INSERT INTO seen (key, expires_at) VALUES ('half', 1e12)")
        raise ValueError("failed after a write")

    a, b = make(2), make(3)
    clash = make(4).evolve(intent_id=first.intent_id)  # its INSERT breaks the primary key
    futures = await queued(
        journal.submit(a),
        journal.submit(clash),
        journal._run(half_done),
        journal.submit(b),
        journal.get(first.intent_id),
    )
    gate.open()
    await holder
    assert await futures[0] == (a, True)
    with pytest.raises(JournalError) as caught:
        await futures[1]
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)  # its own error
    with pytest.raises(ValueError, match="failed after a write"):
        await futures[2]
    assert await futures[3] == (b, True)
    assert await futures[4] == first
    assert journal.commits - before == 2  # the held batch, then the neighbours together
    assert stored(journal.path, "SELECT key FROM seen") == [("hold",)]  # not 'half'
    assert await journal.latest_for_reservation(sid(4)) is None  # nor the clash's claim
    assert {i.intent_id for i in await journal.unsettled()} == {
        first.intent_id,
        a.intent_id,
        b.intent_id,
    }


async def test_an_operation_that_loses_the_transaction_fails_what_it_held(
    journal: SqliteJournal,
) -> None:
    """When SQLite rolls the whole transaction back (an I/O error, a full disk), the
    operations before it in the batch were not committed: they fail too, and nothing is
    acknowledged. Those after it run in a transaction of their own."""
    gate = Gate(journal)
    holder = await held(journal, gate)

    def lost(db: sqlite3.Connection) -> None:
        db.execute("ROLLBACK")  # as SQLite does on SQLITE_FULL or SQLITE_IOERR
        raise sqlite3.OperationalError("database or disk is full")

    before, after = make(1), make(2)
    futures = await queued(journal.submit(before), journal._run(lost), journal.submit(after))
    gate.open()
    await holder
    for future in futures[:2]:
        with pytest.raises(JournalError, match="disk is full"):
            await future
    assert await futures[2] == (after, True)
    assert await journal.get(before.intent_id) is None
    assert stored(journal.path, "SELECT intent_id FROM intents") == [(after.intent_id,)]


async def test_a_failed_commit_fails_the_whole_batch(journal: SqliteJournal) -> None:
    gate = Gate(journal)
    gate.fail_with = sqlite3.OperationalError("disk I/O error")
    a, b = make(1), make(2)
    futures = await queued(journal.submit(a), journal.submit(b))
    await gate.wait_reached()
    gate.open()
    for future in futures:
        with pytest.raises(JournalError, match="disk I/O error"):
            await future
    assert await journal.get(a.intent_id) is None
    assert await journal.get(b.intent_id) is None
    assert (await journal.submit(a))[1]  # rolled back, and the journal goes on


# ------------------------------------------------------------------------------ durability
async def test_no_answer_before_the_commit_that_holds_the_write(
    journal: SqliteJournal, path: Path
) -> None:
    gate = Gate(journal)
    intent = make(1)
    submit = start(journal.submit(intent))
    read = start(journal.get(intent.intent_id))  # in the same batch, after the write
    await gate.wait_reached()  # the batch is written, its COMMIT not yet run
    for _ in range(20):
        await asyncio.sleep(0.005)  # the event loop runs: nothing has been handed back
        assert not submit.done() and not read.done()
    assert stored(path, "SELECT intent_id FROM intents") == []  # not committed, not seen
    gate.open()
    assert await submit == (intent, True)
    assert await read == intent
    assert stored(path, "SELECT intent_id FROM intents") == [(intent.intent_id,)]


# ------------------------------------------------------------------------------ cancelling
async def test_a_caller_cancelled_while_queued_never_runs(journal: SqliteJournal) -> None:
    gate = Gate(journal)
    holder = await held(journal, gate)
    dropped, kept = make(1), make(2)
    futures = await queued(journal.submit(dropped), journal.submit(kept))
    futures[0].cancel()
    gate.open()
    await holder
    with pytest.raises(asyncio.CancelledError):
        await futures[0]
    assert await futures[1] == (kept, True)
    assert await journal.get(dropped.intent_id) is None
    assert not await journal._run(lambda db: db.in_transaction, READ)


async def test_a_caller_cancelled_in_its_batch_gets_its_write_committed(
    journal: SqliteJournal, path: Path
) -> None:
    """The writer took the operation already: it runs whole and is committed with its
    batch; the cancelled caller just never hears of it, and no transaction stays open."""
    gate = Gate(journal)
    intent = make(1)
    submit = start(journal.submit(intent))
    await gate.wait_reached()
    submit.cancel()
    gate.open()
    with pytest.raises(asyncio.CancelledError):
        await submit
    assert await journal.get(intent.intent_id) == intent
    assert not await journal._run(lambda db: db.in_transaction, READ)
    with contextlib.closing(sqlite3.connect(path, timeout=0.1)) as other:
        other.execute("BEGIN IMMEDIATE")  # the write lock is free
        other.execute("ROLLBACK")


# ------------------------------------------------------------------------------ closing
async def test_close_runs_what_was_queued_then_closes(path: Path) -> None:
    journal = SqliteJournal(path)
    await journal.open()
    gate = Gate(journal)
    holder = await held(journal, gate)
    intents = [make(n) for n in range(5)]
    submits = await queued(*(journal.submit(i) for i in intents))
    closing = start(journal.close())
    await asyncio.sleep(0)
    with pytest.raises(JournalError, match="not open"):
        await journal.get(intents[0].intent_id)  # nothing new once closing
    assert not closing.done()
    gate.open()
    await holder
    await closing
    assert [await s for s in submits] == [(i, True) for i in intents]
    again = SqliteJournal(path)  # the lock was released
    await again.open()
    try:
        assert {i.intent_id for i in await again.unsettled()} == {i.intent_id for i in intents}
    finally:
        await again.close()


async def test_open_close_and_open_again(path: Path) -> None:
    journal = SqliteJournal(path)
    for _ in range(3):
        await journal.open()
        with pytest.raises(JournalError, match="open already"):
            await journal.open()
        await journal.submit(make(_made + 1))
        await journal.close()
    with pytest.raises(JournalError, match="not open"):
        await journal.submit(make(1))


# ------------------------------------------------------------------------------ transition
async def test_transition_refuses_a_field_an_intent_does_not_have(journal: SqliteJournal) -> None:
    intent, _ = await journal.submit(make(1))
    with pytest.raises(TypeError):
        await journal.transition(intent.intent_id, ("recorded",), colour="red")
    with pytest.raises(TypeError):
        await journal.transition(intent.intent_id, ("recorded",), updated_at=5.0)
    assert await journal.get(intent.intent_id) == intent


async def test_transition_writes_only_the_changed_columns(journal: SqliteJournal) -> None:
    """A transition leaves the columns it does not change as stored, byte for byte (here a
    ``params`` text another writer stored in another key order), and returns the row."""
    intent, _ = await journal.submit(make(1, params={"b": 1, "a": 2}))
    await journal._run(
        lambda db: db.execute(
            "UPDATE intents SET params = ? WHERE intent_id = ?",
            ('{"b": 1, "a": 2}', intent.intent_id),
        )
    )
    moved = await journal.transition(intent.intent_id, ("recorded",), state="announced")
    assert moved == intent.evolve(state="announced", updated_at=T0 + 1)
    assert stored(journal.path, "SELECT params FROM intents") == [('{"b": 1, "a": 2}',)]
