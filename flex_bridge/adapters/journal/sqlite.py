"""The SQLite journal: one file, one process.

The standard ``sqlite3`` module, driven from one thread of its own. Every method is one
atomic operation (one function run whole in that thread; ``BEGIN IMMEDIATE`` where it takes
several statements), so two requests or two tasks can never both claim one reservation or
both move one intent.

Durability: WAL mode with ``synchronous=FULL``; ``submit`` returns only after the intent is
on disk, so nothing is acknowledged that a crash could lose.

One process: a journal holds an exclusive ``flock`` on ``<path>.lock`` while it is open, so a
second flex-bridge on the same file stops at start-up (several instances share a PostgreSQL
journal instead). ``read_only=True`` opens the file beside a running bridge, for inspection.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from flex_bridge.adapters.journal.base import (
    COLUMNS,
    FIELDS,
    dump_json,
    intent_values,
    joins,
    row_to_intent,
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
"""


class SqliteJournal:
    """The journal in one SQLite file (or ``:memory:``), for one process.

    One connection, owned by one thread: every operation is one function run in that
    thread, whole (a single hop from the event loop, however many statements it takes). The
    thread runs operations one at a time, in the order they were asked for, so each one is
    atomic (``BEGIN IMMEDIATE`` where it takes several statements). An operation whose caller
    is cancelled before the thread started it never runs; one already started runs to its end
    (commit or rollback), so a cancelled caller never leaves a transaction open.

    ``open`` takes an exclusive ``flock`` on ``<path>.lock`` (held until ``close``): a second
    journal on the same file, in this process or another, is refused with ``JournalError``.
    ``read_only=True`` takes no lock, opens the file read-only and creates nothing: for
    reading the journal of a running bridge (WAL lets a reader in beside the writer).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
    ) -> None:
        self.path = str(path)
        self.clock = clock
        self.read_only = read_only
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._lock: int | None = None

    @property
    def lock_path(self) -> str | None:
        """The file whose ``flock`` marks the journal as in use (None: ``:memory:``, read-only)."""
        if self.path in ("", ":memory:") or self.read_only:
            return None
        return f"{self.path}.lock"

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        db, thread = self._db, self._thread
        if db is None or thread is None:
            raise JournalError("the journal is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(thread, operation, db)
        except sqlite3.Error as exc:  # locked, read-only, deleted, full, corrupt ...
            raise JournalError(f"the journal at {self.path} failed: {exc}") from exc

    async def open(self) -> None:
        if self._db is not None:
            raise JournalError(f"the journal at {self.path} is open already")
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flex-bridge-journal")

        def connect() -> sqlite3.Connection:
            if self.read_only:
                uri = f"{Path(self.path).absolute().as_uri()}?mode=ro"
                db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA busy_timeout=5000")
                return db
            if self.path not in ("", ":memory:"):
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
                db.execute("PRAGMA busy_timeout=5000")
                db.executescript(SCHEMA)
            except BaseException:
                db.close()
                self._unlock()
                raise
            return db

        try:
            self._db = await asyncio.get_running_loop().run_in_executor(thread, connect)
        except (sqlite3.Error, OSError) as exc:
            thread.shutdown(wait=False)
            raise JournalError(f"cannot open the journal at {self.path}: {exc}") from exc
        except JournalError:
            thread.shutdown(wait=False)
            raise
        self._thread = thread

    async def close(self) -> None:
        db, thread = self._db, self._thread
        self._db = self._thread = None
        if db is not None and thread is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(thread, db.close)
            finally:
                thread.shutdown(wait=False)
                self._unlock()

    def _unlock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)  # closing the descriptor releases its flock

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())

    async def get(self, intent_id: str) -> Intent | None:
        return await self._run(lambda db: _get(db, intent_id))

    async def latest_for_reservation(self, reservation_sid: str) -> Intent | None:
        return await self._run(
            lambda db: _one(
                db,
                f"SELECT {COLUMNS} FROM intents WHERE reservation_sid = ? "
                "ORDER BY intent_id DESC LIMIT 1",
                (reservation_sid,),
            )
        )

    async def submit(self, intent: Intent) -> tuple[Intent, bool]:
        return await self._run(lambda db: _submit(db, intent))

    async def transition(
        self, intent_id: str, expected: Iterable[str], **changes: Any
    ) -> Intent | None:
        allowed = tuple(expected)
        return await self._run(
            lambda db: _transition(db, intent_id, allowed, changes, self.clock())
        )

    async def unsettled(self, limit: int = 1000) -> list[Intent]:
        return await self._run(
            lambda db: _all(
                db,
                f"SELECT {COLUMNS} FROM intents WHERE state != 'settled' "
                "ORDER BY intent_id LIMIT ?",
                (limit,),
            )
        )

    async def recent(self, limit: int = 100) -> list[Intent]:
        return await self._run(
            lambda db: _all(
                db, f"SELECT {COLUMNS} FROM intents ORDER BY intent_id DESC LIMIT ?", (limit,)
            )
        )

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
        return await self._run(lambda db: _record_timeout(db, task_sid, reservation_sid, now))

    async def count(self) -> dict[str, int]:
        rows = await self._run(
            lambda db: db.execute("SELECT state, COUNT(*) FROM intents GROUP BY state").fetchall()
        )
        return {str(state): int(n) for state, n in rows}


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


# The operations, each run whole in the journal's thread.
def _one(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> Intent | None:
    row = db.execute(sql, args).fetchone()
    return row_to_intent(row) if row else None


def _all(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[Intent]:
    return [row_to_intent(r) for r in db.execute(sql, args).fetchall()]


def _get(db: sqlite3.Connection, intent_id: str) -> Intent | None:
    return _one(db, f"SELECT {COLUMNS} FROM intents WHERE intent_id = ?", (intent_id,))


_PLACEHOLDERS = ", ".join("?" * len(FIELDS))
_SETS = ", ".join(f"{field} = ?" for field in FIELDS[1:])


def _submit(db: sqlite3.Connection, intent: Intent) -> tuple[Intent, bool]:
    db.execute("BEGIN IMMEDIATE")
    try:
        existing = _one(
            db,
            f"SELECT {COLUMNS} FROM intents WHERE intent_id = "
            "(SELECT intent_id FROM claims WHERE reservation_sid = ?)",
            (intent.reservation_sid,),
        )
        if joins(existing, intent):
            assert existing is not None
            db.execute("COMMIT")
            return existing, False
        # A replay of a change already made (a late double click, a webhook retry after
        # the intent settled): answer with the intent that made it.
        replayed = _one(
            db,
            f"SELECT {COLUMNS} FROM intents WHERE reservation_sid = ? AND op = ? "
            "AND params = ? AND state = 'settled' AND error_message IS NULL "
            "ORDER BY intent_id DESC LIMIT 1",
            (intent.reservation_sid, intent.op, dump_json(intent.params)),
        )
        if replayed is not None:
            db.execute("COMMIT")
            return replayed, False
        db.execute(
            f"INSERT INTO intents ({COLUMNS}) VALUES ({_PLACEHOLDERS})", intent_values(intent)
        )
        db.execute(
            "INSERT INTO claims (reservation_sid, intent_id) VALUES (?, ?) "
            "ON CONFLICT (reservation_sid) DO UPDATE SET intent_id = excluded.intent_id",
            (intent.reservation_sid, intent.intent_id),
        )
        db.execute("COMMIT")
        return intent, True
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _transition(
    db: sqlite3.Connection,
    intent_id: str,
    allowed: tuple[str, ...],
    changes: dict[str, Any],
    now: float,
) -> Intent | None:
    current = _get(db, intent_id)
    if current is None or current.state not in allowed:
        return None
    updated = current.evolve(**changes, updated_at=now)
    values = intent_values(updated)
    marks = ", ".join("?" * len(allowed))
    cursor = db.execute(
        f"UPDATE intents SET {_SETS} WHERE intent_id = ? AND state IN ({marks})",
        (*values[1:], intent_id, *allowed),
    )
    if cursor.rowcount != 1:
        return None  # moved by another process between the read and the write
    return updated


def _record_timeout(db: sqlite3.Connection, task_sid: str, reservation_sid: str, now: float) -> int:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "INSERT OR IGNORE INTO timeouts (reservation_sid, task_sid, at) VALUES (?, ?, ?)",
            (reservation_sid, task_sid, now),
        )
        row = db.execute("SELECT COUNT(*) FROM timeouts WHERE task_sid = ?", (task_sid,)).fetchone()
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return int(row[0]) if row else 0
