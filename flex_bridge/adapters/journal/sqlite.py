"""The SQLite journal: one file, one process.

The standard ``sqlite3`` module, driven from one thread of its own, the writer. Every method
is one atomic operation (one function run whole in that thread), so two requests or two
tasks can never both claim one reservation or both move one intent.

Group commit: the event loop puts each operation on the writer's queue (no executor, no
lock). The writer takes every operation waiting (it blocks for the first, then drains the
queue), runs them in the order they were asked for in one ``BEGIN IMMEDIATE`` transaction
(the file's write lock, taken before the first read: atomic even against another connection
to the file), each in a ``SAVEPOINT`` of its own (a failing operation rolls back only itself
and gets its own exception), commits once, and only then answers the whole batch with one
wake-up of the event loop: a burst costs one transaction and one ``fdatasync``.

Durability: WAL mode with ``synchronous=FULL``; an operation is answered only after the
``COMMIT`` that holds its write returned, so nothing is acknowledged that a crash could lose.
A batch of reads only runs outside any transaction.

The SQL of each operation is in ``sqlite_sql``; this module is the connection, the writer
thread and the group commit.

Health: ``ping`` writes the one-row ``health`` table in a transaction of its own (never
batched), waiting at most ``ping_timeout`` for the write lock, and first checks that the file
at ``path`` is still the one opened (a journal deleted or replaced while open goes on
"working" on the orphaned inode, and loses everything at the next restart) and writable.

One process: a journal holds an exclusive ``flock`` on ``<path>.lock`` while it is open, so a
second flex-bridge on the same file stops at start-up (several instances share a PostgreSQL
journal instead). ``read_only=True`` opens the file beside a running bridge, for inspection.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

from flex_bridge.adapters.journal import sqlite_sql as sql
from flex_bridge.adapters.journal.base import (
    COLUMNS,
    MEMORY,
    dump_body,
    load_body,
)
from flex_bridge.domain.intents import Intent
from flex_bridge.errors import JournalError

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS intents (
    intent_id        TEXT PRIMARY KEY,
    reservation_sid  TEXT NOT NULL,
    task_sid         TEXT NOT NULL,
    worker_sid       TEXT NOT NULL,
    op               TEXT NOT NULL,
    source           TEXT NOT NULL,
    via              TEXT NOT NULL,
    params           TEXT NOT NULL,
    state            TEXT NOT NULL,
    deadline         REAL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    reservation_status TEXT,
    error_code       INTEGER,
    error_message    TEXT,
    late_announce    INTEGER NOT NULL DEFAULT 0,
    extra            TEXT NOT NULL DEFAULT '{}',
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS intents_by_reservation ON intents (reservation_sid, intent_id);
CREATE INDEX IF NOT EXISTS intents_unsettled ON intents (state) WHERE state != 'settled';
CREATE TABLE IF NOT EXISTS claims (
    reservation_sid  TEXT PRIMARY KEY,
    intent_id        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (
    key         TEXT PRIMARY KEY,
    expires_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS timeouts (
    reservation_sid TEXT PRIMARY KEY,
    task_sid        TEXT NOT NULL,
    at              REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS timeouts_by_task ON timeouts (task_sid);
-- Added with leases, the inbox and health (PostgreSQL's schema version 2): each statement
-- creates only what is missing, so a journal file of an older flex-bridge gains them at open.
CREATE INDEX IF NOT EXISTS intents_by_update ON intents (updated_at);
CREATE INDEX IF NOT EXISTS seen_by_expiry ON seen (expires_at);
CREATE INDEX IF NOT EXISTS timeouts_by_time ON timeouts (at);
CREATE TABLE IF NOT EXISTS leases (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    token       INTEGER NOT NULL,
    expires_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires_at);
CREATE TABLE IF NOT EXISTS lease_tokens (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    last  INTEGER NOT NULL
);
INSERT OR IGNORE INTO lease_tokens (id, last) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS inbox (
    key          TEXT PRIMARY KEY,
    body         TEXT NOT NULL,
    received_at  REAL NOT NULL,
    done_at      REAL,
    lease_owner  TEXT,
    lease_until  REAL
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (received_at, key) WHERE done_at IS NULL;
CREATE INDEX IF NOT EXISTS inbox_done ON inbox (done_at) WHERE done_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS health (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    at  REAL NOT NULL
);
"""

BUSY_TIMEOUT_MS = 5000  # how long a transaction waits for another connection's write lock
# How long ``ping`` waits for its answer beyond ``ping_timeout`` (the lock wait): queued behind
# other operations, or a disk that does not complete the write.
PING_SLACK = 5.0
# The most operations one transaction takes: a burst longer than this is committed in parts.
MAX_BATCH = 256

# How an operation runs: a read (no savepoint), a write (in the batch's transaction, in a
# savepoint of its own), or alone (``ping``: outside any batch, its own transaction).
READ: Final = 0
WRITE: Final = 1
ALONE: Final = 2

# One queued operation: its function, the caller's future, and how it runs. ``None`` as the
# function: the journal is closing (after everything queued before it).
_Op = tuple[Callable[[sqlite3.Connection], Any] | None, "asyncio.Future[Any]", int]
# One answer: the future, and its exception or its value.
_Answer = tuple["asyncio.Future[Any]", BaseException | None, Any]


class SqliteJournal:
    """The journal in one SQLite file (or ``:memory:``), for one process.

    One connection, owned by one thread, the writer: every operation is one function run in
    that thread, whole. The writer runs operations in the order they were asked for, in
    batches (everything queued when it is free), one transaction per batch, each operation in
    a savepoint of its own: each one is atomic, and one that fails leaves the others of its
    batch as they were. Every answer waits for its batch's commit.

    A caller cancelled while its operation waits in the queue: the operation is skipped if
    the writer has not taken its batch yet, and run (whole, committed with its batch) if it
    has; either way no transaction is left open. ``close`` runs whatever was queued before
    it, then closes.

    ``open`` takes an exclusive ``flock`` on ``<path>.lock`` (held until ``close``): a second
    journal on the same file, in this process or another, is refused with ``JournalError``.
    ``read_only=True`` takes no lock, opens the file read-only and creates nothing: for
    reading the journal of a running bridge (WAL lets a reader in beside the writer); its
    operations run one by one, outside any transaction, and its ``ping`` checks the file and
    reads.

    ``ping_timeout`` bounds how long ``ping`` waits for the write lock before it reports the
    journal locked. ``commits`` counts the write transactions committed (batches).
    """

    # Called in the writer thread just before each batch's COMMIT (tests: hold a batch there).
    _before_commit: Callable[[], None] | None = None

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
        ping_timeout: float = 2.0,
    ) -> None:
        self.path = str(path)
        self.clock = clock
        self.read_only = read_only
        self.ping_timeout = ping_timeout
        self.commits = 0
        self._queue: queue.SimpleQueue[_Op] | None = None  # None: not open
        self._lock: int | None = None
        self._file: _File | None = None  # the file opened, for ping (None: ``:memory:``)

    @property
    def lock_path(self) -> str | None:
        """The file whose ``flock`` marks the journal as in use (None: ``:memory:``, read-only)."""
        if self.path in ("", MEMORY) or self.read_only:
            return None
        return f"{self.path}.lock"

    async def _run(self, operation: Callable[[sqlite3.Connection], T], kind: int = WRITE) -> T:
        ops = self._queue
        if ops is None:
            raise _closed()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        ops.put((operation, future, kind))
        try:
            return await future
        except sqlite3.Error as exc:  # locked, read-only, deleted, full, corrupt ...
            raise JournalError(f"the journal at {self.path} failed: {exc}") from exc

    async def _read(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(operation, READ)

    async def open(self) -> None:
        if self._queue is not None:
            raise JournalError(f"the journal at {self.path} is open already")
        ops: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        thread = threading.Thread(
            target=self._main, args=(ops, ready), name="flex-bridge-journal", daemon=True
        )
        thread.start()
        try:
            await ready
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"cannot open the journal at {self.path}: {exc}") from exc
        except asyncio.CancelledError:
            ops.put((None, asyncio.get_running_loop().create_future(), ALONE))  # close it
            raise
        self._queue = ops

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            uri = f"{Path(self.path).absolute().as_uri()}?mode=ro"
            db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._file = _File.of(self.path)
            return db
        if self.path not in ("", MEMORY):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.lock_path, self.path)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except BaseException:
            self._unlock()
            raise
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.executescript(SCHEMA)
            if self.path not in ("", MEMORY):
                self._file = _File.of(self.path)
        except BaseException:
            db.close()
            self._unlock()
            raise
        return db

    async def close(self) -> None:
        ops, self._queue = self._queue, None
        if ops is not None:
            closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            ops.put((None, closed, ALONE))
            # Shielded: a cancelled close still closes (the writer does it, then unlocks).
            await asyncio.shield(closed)

    def _unlock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)  # closing the descriptor releases its flock

    # ------------------------------------------------------------------------ the writer
    def _main(self, ops: queue.SimpleQueue[_Op], ready: asyncio.Future[None]) -> None:
        """The writer thread: connect, then serve batches until the closing mark."""
        try:
            db = self._connect()
        except BaseException as exc:
            _answer([(ready, exc, None)])
            return
        _answer([(ready, None, None)])
        closing: asyncio.Future[Any] | None = None
        try:
            while closing is None:
                batch, closing = _take(ops)
                try:
                    answers = self._execute(db, batch)
                except Exception as exc:  # a bug, or a test's hook: never leave callers waiting
                    if db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            db.execute("ROLLBACK")
                    answers = [(op[1], exc, None) for op in batch]
                _answer(answers)
        finally:
            with contextlib.suppress(sqlite3.Error):
                db.close()
            self._unlock()
            last: list[_Answer] = [] if closing is None else [(closing, None, None)]
            while not ops.empty():  # asked for after the closing mark: never run
                op = ops.get()
                last.append((op[1], _closed() if op[0] else None, None))
            _answer(last)

    def _execute(self, db: sqlite3.Connection, batch: list[_Op]) -> list[_Answer]:
        """Run ``batch`` in order; the answers, every write among them committed."""
        answers: list[_Answer] = []
        group: list[_Op] = []
        for op in batch:
            if op[1].cancelled():
                continue  # its caller gave up before the writer took it: never run
            if op[2] == ALONE or self.read_only:
                if group:
                    self._transaction(db, group, answers)
                    group = []
                answers.append(_call(db, op))
            else:
                group.append(op)
        if group:
            self._transaction(db, group, answers)
        return answers

    def _transaction(
        self, db: sqlite3.Connection, group: list[_Op], answers: list[_Answer]
    ) -> None:
        """Run ``group`` in one transaction (reads only: in none), each write in a savepoint
        of its own when there are several; add their answers once committed."""
        if all(op[2] == READ for op in group):
            answers.extend(_call(db, op) for op in group)
            return
        at = 0
        while at < len(group):
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:  # locked past the busy timeout, read-only, ...
                answers.extend((op[1], exc, None) for op in group[at:])
                return
            savepoints = len(group) - at > 1
            done: list[_Answer] = []
            while at < len(group):
                op, at = group[at], at + 1
                try:
                    answer = _step(db, op, savepoints)
                except sqlite3.Error as exc:  # the savepoint itself failed
                    answer = (op[1], exc, None)
                    if db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            db.execute("ROLLBACK")
                if not db.in_transaction:
                    # Rolled back whole (an I/O error, a full disk, or the only operation
                    # failed): whatever the transaction held is lost with it.
                    error = answer[1] or sqlite3.OperationalError(
                        "transaction ended by an operation"
                    )
                    answers.extend(_failed([*done, answer], error))
                    done = []
                    break
                done.append(answer)
            if db.in_transaction:
                answers.extend(self._commit(db, done))

    def _commit(self, db: sqlite3.Connection, done: list[_Answer]) -> list[_Answer]:
        try:
            if self._before_commit is not None:
                self._before_commit()
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            return _failed(done, exc)
        self.commits += 1
        return done

    # ------------------------------------------------------------------------ operations
    async def ping(self) -> None:
        """Check the file is the one opened and writable, then write ``health`` (a read for
        a read-only journal); ``JournalError`` saying what is wrong otherwise."""
        file, now, bound = self._file, self.clock(), self.ping_timeout

        def operation(db: sqlite3.Connection) -> None:
            if file is not None:
                file.check(self.path, writable=not self.read_only)
            if self.read_only:
                db.execute("SELECT 1").fetchone()
                return
            db.execute(f"PRAGMA busy_timeout={max(1, round(bound * 1000))}")
            try:
                with _write(db):
                    db.execute(
                        "INSERT INTO health (id, at) VALUES (1, ?) "
                        "ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                        (now,),
                    )
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise JournalError(
                        f"the journal at {self.path} is locked: a write waited {bound:g} s "
                        f"for another connection's lock ({exc})"
                    ) from exc
                raise
            finally:
                db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

        try:
            await asyncio.wait_for(self._run(operation, ALONE), bound + PING_SLACK)
        except TimeoutError:
            raise JournalError(
                f"the journal at {self.path} did not complete a write within "
                f"{bound + PING_SLACK:g} s"
            ) from None

    async def get(self, intent_id: str) -> Intent | None:
        return await self._read(lambda db: sql.get(db, intent_id))

    async def latest_for_reservation(self, reservation_sid: str) -> Intent | None:
        return await self._read(
            lambda db: sql.one(
                db,
                f"SELECT {COLUMNS} FROM intents WHERE reservation_sid = ? "
                "ORDER BY intent_id DESC LIMIT 1",
                (reservation_sid,),
            )
        )

    async def submit(self, intent: Intent) -> tuple[Intent, bool]:
        return await self._run(lambda db: sql.submit(db, intent))

    async def submit_leased(
        self, intent: Intent, owner: str, ttl: float
    ) -> tuple[Intent, bool, int | None]:
        now = self.clock()
        return await self._run(lambda db: sql.submit_leased(db, intent, owner, now, now + ttl))

    async def transition(
        self,
        intent_id: str,
        expected: Iterable[str],
        *,
        fence: int | None = None,
        release: str | None = None,
        **changes: Any,
    ) -> Intent | None:
        allowed, now = tuple(expected), self.clock()
        args = [*sql.column_args(changes), now, intent_id, *allowed]  # TypeError: no such field
        statement = sql.update_sql(tuple(changes), len(allowed), fence is not None)
        if fence is not None:
            args += (intent_id, fence, now)  # the lease, held with that token, unexpired

        def operation(db: sqlite3.Connection) -> Intent | None:
            moved = sql.one(db, statement, args)  # the row as stored now, if it moved
            if moved is not None and release is not None:
                sql.release_lease(db, intent_id, release, now)
            return moved

        return await self._run(operation)

    async def unsettled(self, limit: int = 1000) -> list[Intent]:
        return await self._read(
            lambda db: sql.all(
                db,
                f"SELECT {COLUMNS} FROM intents WHERE state != 'settled' "
                "ORDER BY intent_id LIMIT ?",
                (limit,),
            )
        )

    async def recent(self, limit: int = 100) -> list[Intent]:
        return await self._read(
            lambda db: sql.all(
                db, f"SELECT {COLUMNS} FROM intents ORDER BY intent_id DESC LIMIT ?", (limit,)
            )
        )

    async def active_reservations(self, since: float, limit: int) -> list[Intent]:
        if limit <= 0:
            return []
        return await self._read(lambda db: sql.all(db, sql.ACTIVE, (since, limit)))

    async def first_seen(self, key: str, ttl: float) -> bool:
        now = self.clock()

        def operation(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT INTO seen (key, expires_at) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at "
                "WHERE seen.expires_at <= ?",
                (key, now + ttl, now),
            )
            return cursor.rowcount == 1

        return await self._run(operation)

    async def purge_seen(self) -> int:
        """Forget dedupe keys past their TTL; the recovery sweep calls it."""
        now = self.clock()
        return await self._run(
            lambda db: db.execute("DELETE FROM seen WHERE expires_at <= ?", (now,)).rowcount
        )

    async def record_timeout(self, task_sid: str, reservation_sid: str) -> int:
        now = self.clock()
        return await self._run(lambda db: sql.record_timeout(db, task_sid, reservation_sid, now))

    async def count(self) -> dict[str, int]:
        rows = await self._read(
            lambda db: db.execute("SELECT state, COUNT(*) FROM intents GROUP BY state").fetchall()
        )
        return {str(state): int(n) for state, n in rows}

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> int | None:
        now = self.clock()
        return await self._run(lambda db: sql.acquire_lease(db, name, owner, now, now + ttl))

    async def release_lease(self, name: str, owner: str) -> None:
        now = self.clock()
        await self._run(lambda db: sql.release_lease(db, name, owner, now))

    async def inbox_put(self, key: str, body: dict[str, str]) -> bool:
        now, text = self.clock(), dump_body(body)

        def operation(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT INTO inbox (key, body, received_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO NOTHING",
                (key, text, now),
            )
            return cursor.rowcount == 1

        return await self._run(operation)

    async def inbox_take(
        self, owner: str, lease: float, limit: int
    ) -> list[tuple[str, dict[str, str]]]:
        if limit <= 0:
            return []
        now = self.clock()
        rows = await self._run(lambda db: sql.inbox_take(db, owner, now, now + lease, limit))
        return [(key, load_body(body)) for key, body in rows]

    async def inbox_done(self, key: str) -> None:
        now = self.clock()
        await self._run(
            lambda db: db.execute(
                "UPDATE inbox SET done_at = ? WHERE key = ? AND done_at IS NULL", (now, key)
            )
        )

    async def prune(self, before: float, limit: int) -> int:
        if limit <= 0:
            return 0
        now = self.clock()
        return await self._run(lambda db: sql.prune(db, before, now, limit))


# ------------------------------------------------------------------------------ the writer's parts
def _take(ops: queue.SimpleQueue[_Op]) -> tuple[list[_Op], asyncio.Future[Any] | None]:
    """The next batch: block for the first operation, then take whatever else is waiting, up
    to ``MAX_BATCH`` or the closing mark (whose future comes second)."""
    batch: list[_Op] = []
    op = ops.get()
    while op[0] is not None:
        batch.append(op)
        if len(batch) >= MAX_BATCH or ops.empty():
            return batch, None
        op = ops.get()
    return batch, op[1]


def _closed() -> JournalError:
    return JournalError("the journal is not open")


def _call(db: sqlite3.Connection, op: _Op) -> _Answer:
    """Run one operation as it is (a read, an operation alone, a read-only journal's)."""
    operation, future = op[0], op[1]
    assert operation is not None
    try:
        return (future, None, operation(db))
    except Exception as exc:
        return (future, exc, None)


def _step(db: sqlite3.Connection, op: _Op, savepoint: bool) -> _Answer:
    """Run one operation of a batch inside its transaction; a write in a savepoint of its
    own (``savepoint``) that a failure rolls back, alone: a failure rolls back everything."""
    operation, future = op[0], op[1]
    assert operation is not None
    if op[2] == READ:
        return _call(db, op)  # a failed read changed nothing
    if not savepoint:
        try:
            return (future, None, operation(db))
        except Exception as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            return (future, exc, None)
    db.execute("SAVEPOINT op")
    try:
        value = operation(db)
    except Exception as exc:
        if db.in_transaction:
            db.execute("ROLLBACK TO op")
            db.execute("RELEASE op")
        return (future, exc, None)
    db.execute("RELEASE op")
    return (future, None, value)


def _failed(done: list[_Answer], error: BaseException | None) -> list[_Answer]:
    """``done``, every answer not already an error turned into ``error``: its transaction
    was not committed."""
    return [(future, exc if exc is not None else error, None) for future, exc, _ in done]


def _answer(answers: list[_Answer]) -> None:
    """Hand ``answers`` to their event loops: one wake-up per loop (one in practice)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
    for answer in answers:
        by_loop.setdefault(answer[0].get_loop(), []).append(answer)
    for loop, mine in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_deliver, mine)


def _deliver(answers: list[_Answer]) -> None:
    """In the event loop: resolve each future not cancelled meanwhile."""
    for future, exc, value in answers:
        if future.done():
            continue
        if exc is None:
            future.set_result(value)
        else:
            future.set_exception(exc)


def _lock(lock_path: str | None, path: str) -> int | None:
    """An exclusive ``flock`` on ``lock_path``, or JournalError naming ``path`` if held.

    ``flock`` belongs to the open file description: a second open of the same file, even in
    this process, conflicts; the kernel releases it when the process ends, however it ends.
    """
    if lock_path is None:
        return None
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(
            f"the journal at {path} is in use: another flex-bridge process holds this journal "
            f"({lock_path}); use a PostgreSQL journal for several instances"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


class _File:
    """Which file a journal opened (device and inode), to tell when it is gone or replaced."""

    __slots__ = ("device", "inode", "path")

    def __init__(self, path: str, device: int, inode: int) -> None:
        self.path, self.device, self.inode = path, device, inode

    @classmethod
    def of(cls, path: str) -> _File:
        absolute = os.path.abspath(path)  # not fooled by a later chdir
        found = os.stat(absolute)
        return cls(absolute, found.st_dev, found.st_ino)

    def check(self, name: str, *, writable: bool) -> None:
        """JournalError unless the file is still there, the same one, and (``writable``)
        writable: with a write permission bit set, and open to this process's writes."""
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            raise JournalError(
                f"the journal at {name} is gone: its file was deleted or moved while open "
                "(whatever is written now is lost at the next restart)"
            ) from None
        except OSError as exc:
            raise JournalError(f"the journal at {name} cannot be checked: {exc}") from exc
        if (found.st_dev, found.st_ino) != (self.device, self.inode):
            raise JournalError(
                f"the journal at {name} was replaced while open: the file there now is not "
                "the one this flex-bridge writes"
            )
        # The open connection could still write (its descriptor was opened read-write), but
        # the file was made read-only: the next start could not write it. The mode bits
        # count even for root, whom os.access never refuses.
        if writable and (
            not stat.S_IMODE(found.st_mode) & 0o222 or not os.access(self.path, os.W_OK)
        ):
            raise JournalError(
                f"the journal at {name} is read-only: its file is not writable "
                f"({stat.filemode(found.st_mode)})"
            )


@contextlib.contextmanager
def _write(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction of its own (``ping``'s), its lock taken before the first read
    (``BEGIN IMMEDIATE``): committed at the end of the block, rolled back if it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
