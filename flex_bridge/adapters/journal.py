"""The journal: intents, webhook dedupe keys and the single-flight claim per reservation.

``Journal`` is the seam; ``SqliteJournal`` (the standard ``sqlite3`` module, driven from one
thread of its own) is the implementation today. Every
method is one atomic operation (one transaction here; a Lua script or MULTI in a Redis
implementation), so two requests, two tasks or two instances can never both claim one
reservation or both move one intent.

Durability: SQLite in WAL mode with ``synchronous=FULL``; ``submit`` returns only after the
intent is on disk, so nothing is acknowledged that a crash could lose.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from flex_bridge.domain.intents import IN_FLIGHT, UNSETTLED, ErrorInfo, Intent
from flex_bridge.errors import ConfigError, JournalError

T = TypeVar("T")


class Journal(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def submit(self, intent: Intent) -> tuple[Intent, bool]:
        """Record ``intent`` unless the reservation already has one that it should join.

        Returns ``(intent, True)`` when recorded, or ``(existing, False)`` when an intent in
        flight (recorded, announced, instructed) holds the reservation (any op), when a
        decided intent awaiting its settle has the same op and params, or when an intent with
        the same op and params already settled applied on it (a replay of a change already
        made). A decided intent awaiting its settle does not block another op.
        """
        ...

    async def get(self, intent_id: str) -> Intent | None: ...

    async def latest_for_reservation(self, reservation_sid: str) -> Intent | None: ...

    async def transition(
        self, intent_id: str, expected: Iterable[str], **changes: Any
    ) -> Intent | None:
        """Apply ``changes`` if the intent's state is one of ``expected``; else None."""
        ...

    async def unsettled(self, limit: int = 1000) -> list[Intent]: ...

    async def recent(self, limit: int = 100) -> list[Intent]:
        """The newest intents first."""
        ...

    async def first_seen(self, key: str, ttl: float) -> bool:
        """True the first time ``key`` is seen within ``ttl`` seconds (atomically)."""
        ...

    async def purge_seen(self) -> int:
        """Forget dedupe keys past their TTL; returns how many."""
        ...

    async def record_timeout(self, task_sid: str, reservation_sid: str) -> int:
        """Count a reservation timeout once per reservation; returns the task's count."""
        ...

    async def count(self) -> dict[str, int]: ...


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

COLUMNS = (
    "intent_id, reservation_sid, task_sid, worker_sid, op, source, via, params, state, "
    "deadline, attempts, reservation_status, error_code, error_message, late_announce, extra, "
    "created_at, updated_at"
)


def journal_path(value: str) -> str:
    """``FLEX_BRIDGE_JOURNAL``: a path, ``sqlite:///path`` or ``sqlite://:memory:``."""
    if value.startswith("sqlite:///"):
        return value[len("sqlite:///") :] or ":memory:"
    if value in ("sqlite://:memory:", ":memory:"):
        return ":memory:"
    if "://" in value:
        raise ConfigError(
            f"FLEX_BRIDGE_JOURNAL={value!r}: only a path or sqlite:///path is supported"
        )
    return value


def _row_to_intent(row: sqlite3.Row | tuple[Any, ...]) -> Intent:
    (
        intent_id,
        reservation_sid,
        task_sid,
        worker_sid,
        op,
        source,
        via,
        params,
        state,
        deadline,
        attempts,
        reservation_status,
        error_code,
        error_message,
        late_announce,
        extra,
        created_at,
        updated_at,
    ) = tuple(row)
    error = None
    if error_message is not None:
        error = ErrorInfo(error_code, error_message)
    return Intent(
        intent_id=intent_id,
        op=op,
        reservation_sid=reservation_sid,
        task_sid=task_sid,
        worker_sid=worker_sid,
        source=source,
        params=json.loads(params),
        state=state,
        deadline=deadline,
        created_at=created_at,
        updated_at=updated_at,
        via=via,
        attempts=attempts,
        reservation_status=reservation_status,
        error=error,
        late_announce=bool(late_announce),
        extra=json.loads(extra),
    )


def _intent_values(intent: Intent) -> tuple[Any, ...]:
    return (
        intent.intent_id,
        intent.reservation_sid,
        intent.task_sid,
        intent.worker_sid,
        intent.op,
        intent.source,
        intent.via,
        json.dumps(intent.params, sort_keys=True),
        intent.state,
        intent.deadline,
        intent.attempts,
        intent.reservation_status,
        intent.error.code if intent.error else None,
        intent.error.message if intent.error else None,
        int(intent.late_announce),
        json.dumps(intent.extra, sort_keys=True),
        intent.created_at,
        intent.updated_at,
    )


class SqliteJournal:
    """The journal in one SQLite file (or ``:memory:``).

    One connection, owned by one thread: every operation is one function run in that
    thread, whole (a single hop from the event loop, however many statements it takes). The
    thread runs operations one at a time, in the order they were asked for, so each one is
    atomic within the process; ``BEGIN IMMEDIATE`` and compare-and-set ``UPDATE``s make them
    atomic across processes sharing the file. An operation whose caller is cancelled before
    the thread started it never runs; one already started runs to its end (commit or
    rollback), so a cancelled caller never leaves a transaction open.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self.clock = clock
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        db, thread = self._db, self._thread
        if db is None or thread is None:
            raise JournalError("the journal is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(thread, operation, db)
        except sqlite3.Error as exc:  # locked, read-only, deleted, full, corrupt ...
            raise JournalError(f"the journal at {self.path} failed: {exc}") from exc

    async def open(self) -> None:
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flex-bridge-journal")

        def connect() -> sqlite3.Connection:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA busy_timeout=5000")
                db.executescript(SCHEMA)
            except BaseException:
                db.close()
                raise
            return db

        try:
            self._db = await asyncio.get_running_loop().run_in_executor(thread, connect)
        except (sqlite3.Error, OSError) as exc:
            thread.shutdown(wait=False)
            raise JournalError(f"cannot open the journal at {self.path}: {exc}") from exc
        self._thread = thread

    async def close(self) -> None:
        db, thread = self._db, self._thread
        self._db = self._thread = None
        if db is not None and thread is not None:
            await asyncio.get_running_loop().run_in_executor(thread, db.close)
            thread.shutdown(wait=False)

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


# The operations, each run whole in the journal's thread.
def _one(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> Intent | None:
    row = db.execute(sql, args).fetchone()
    return _row_to_intent(row) if row else None


def _all(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[Intent]:
    return [_row_to_intent(r) for r in db.execute(sql, args).fetchall()]


def _get(db: sqlite3.Connection, intent_id: str) -> Intent | None:
    return _one(db, f"SELECT {COLUMNS} FROM intents WHERE intent_id = ?", (intent_id,))


_PLACEHOLDERS = ", ".join("?" * len(COLUMNS.split(",")))
_SETS = ", ".join(f"{c.strip()} = ?" for c in COLUMNS.split(",")[1:])


def _submit(db: sqlite3.Connection, intent: Intent) -> tuple[Intent, bool]:
    db.execute("BEGIN IMMEDIATE")
    try:
        existing = _one(
            db,
            f"SELECT {COLUMNS} FROM intents WHERE intent_id = "
            "(SELECT intent_id FROM claims WHERE reservation_sid = ?)",
            (intent.reservation_sid,),
        )
        if existing is not None and existing.state in IN_FLIGHT:
            db.execute("COMMIT")
            return existing, False
        if (
            existing is not None
            and existing.state in UNSETTLED
            and existing.op == intent.op
            and existing.params == intent.params
        ):
            # Decided, its item not yet settled (Sync down): the same request joins it.
            db.execute("COMMIT")
            return existing, False
        # A decided intent whose settle is still pending does not hold the reservation: its
        # REST change is done, and a newer intent's item supersedes its late settle.
        # A replay of a change already made (a late double click, a webhook retry after
        # the intent settled): answer with the intent that made it.
        replayed = _one(
            db,
            f"SELECT {COLUMNS} FROM intents WHERE reservation_sid = ? AND op = ? "
            "AND params = ? AND state = 'settled' AND error_message IS NULL "
            "ORDER BY intent_id DESC LIMIT 1",
            (intent.reservation_sid, intent.op, json.dumps(intent.params, sort_keys=True)),
        )
        if replayed is not None:
            db.execute("COMMIT")
            return replayed, False
        db.execute(
            f"INSERT INTO intents ({COLUMNS}) VALUES ({_PLACEHOLDERS})", _intent_values(intent)
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
    values = _intent_values(updated)
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
