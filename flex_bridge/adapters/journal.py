"""The journal: intents, webhook dedupe keys and the single-flight claim per reservation.

``Journal`` is the seam; ``SqliteJournal`` (aiosqlite) is the implementation today. Every
method is one atomic operation (one transaction here; a Lua script or MULTI in a Redis
implementation), so two requests, two tasks or two instances can never both claim one
reservation or both move one intent.

Durability: SQLite in WAL mode with ``synchronous=FULL``; ``submit`` returns only after the
intent is on disk, so nothing is acknowledged that a crash could lose.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from flex_bridge.domain.intents import UNSETTLED, ErrorInfo, Intent
from flex_bridge.errors import ConfigError, JournalError


class Journal(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def submit(self, intent: Intent) -> tuple[Intent, bool]:
        """Record ``intent`` unless the reservation already has one that it should join.

        Returns ``(intent, True)`` when recorded, or ``(existing, False)`` when an unsettled
        intent holds the reservation (any op), or when an intent with the same op and params
        already settled applied on it (a replay of a change already made).
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


def _row_to_intent(row: aiosqlite.Row | tuple[Any, ...]) -> Intent:
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
    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self.clock = clock
        self._db: aiosqlite.Connection | None = None
        # One connection: the lock keeps each multi-statement operation whole.
        self._lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise JournalError("the journal is not open")
        return self._db

    async def open(self) -> None:
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=FULL")
            await self._db.execute("PRAGMA busy_timeout=5000")
            await self._db.executescript(SCHEMA)
        except Exception as exc:
            raise JournalError(f"cannot open the journal at {self.path}: {exc}") from exc

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> None:
        async with self.db.execute("SELECT 1") as cursor:
            await cursor.fetchone()

    async def _one(self, sql: str, args: tuple[Any, ...]) -> Intent | None:
        async with self.db.execute(sql, args) as cursor:
            row = await cursor.fetchone()
        return _row_to_intent(row) if row else None

    async def get(self, intent_id: str) -> Intent | None:
        return await self._one(f"SELECT {COLUMNS} FROM intents WHERE intent_id = ?", (intent_id,))

    async def latest_for_reservation(self, reservation_sid: str) -> Intent | None:
        return await self._one(
            f"SELECT {COLUMNS} FROM intents WHERE reservation_sid = ? "
            "ORDER BY intent_id DESC LIMIT 1",
            (reservation_sid,),
        )

    async def submit(self, intent: Intent) -> tuple[Intent, bool]:
        async with self._lock:
            return await self._submit(intent)

    async def _submit(self, intent: Intent) -> tuple[Intent, bool]:
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            existing = await self._one(
                f"SELECT {COLUMNS} FROM intents WHERE intent_id = "
                "(SELECT intent_id FROM claims WHERE reservation_sid = ?)",
                (intent.reservation_sid,),
            )
            if existing is not None and existing.state in UNSETTLED:
                await db.execute("COMMIT")
                return existing, False
            # A replay of a change already made (a late double click, a webhook retry after
            # the intent settled): answer with the intent that made it.
            replayed = await self._one(
                f"SELECT {COLUMNS} FROM intents WHERE reservation_sid = ? AND op = ? "
                "AND params = ? AND state = 'settled' AND error_message IS NULL "
                "ORDER BY intent_id DESC LIMIT 1",
                (intent.reservation_sid, intent.op, json.dumps(intent.params, sort_keys=True)),
            )
            if replayed is not None:
                await db.execute("COMMIT")
                return replayed, False
            placeholders = ", ".join("?" * len(COLUMNS.split(",")))
            await db.execute(
                f"INSERT INTO intents ({COLUMNS}) VALUES ({placeholders})", _intent_values(intent)
            )
            await db.execute(
                "INSERT INTO claims (reservation_sid, intent_id) VALUES (?, ?) "
                "ON CONFLICT (reservation_sid) DO UPDATE SET intent_id = excluded.intent_id",
                (intent.reservation_sid, intent.intent_id),
            )
            await db.execute("COMMIT")
            return intent, True
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def transition(
        self, intent_id: str, expected: Iterable[str], **changes: Any
    ) -> Intent | None:
        async with self._lock:
            return await self._transition(intent_id, tuple(expected), changes)

    async def _transition(
        self, intent_id: str, allowed: tuple[str, ...], changes: dict[str, Any]
    ) -> Intent | None:
        current = await self.get(intent_id)
        if current is None or current.state not in allowed:
            return None
        updated = current.evolve(**changes, updated_at=self.clock())
        values = _intent_values(updated)
        columns = [c.strip() for c in COLUMNS.split(",")]
        sets = ", ".join(f"{c} = ?" for c in columns[1:])
        marks = ", ".join("?" * len(allowed))
        cursor = await self.db.execute(
            f"UPDATE intents SET {sets} WHERE intent_id = ? AND state IN ({marks})",
            (*values[1:], intent_id, *allowed),
        )
        if cursor.rowcount != 1:
            return None  # moved by someone else between the read and the write
        return updated

    async def unsettled(self, limit: int = 1000) -> list[Intent]:
        async with self.db.execute(
            f"SELECT {COLUMNS} FROM intents WHERE state != 'settled' ORDER BY intent_id LIMIT ?",
            (limit,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [_row_to_intent(r) for r in rows]

    async def recent(self, limit: int = 100) -> list[Intent]:
        async with self.db.execute(
            f"SELECT {COLUMNS} FROM intents ORDER BY intent_id DESC LIMIT ?", (limit,)
        ) as cursor:
            rows = await cursor.fetchall()
        return [_row_to_intent(r) for r in rows]

    # Every write takes the lock, even a single statement: on the one shared connection a
    # statement issued while another operation's transaction is open joins that transaction,
    # and its ROLLBACK would undo it.
    async def first_seen(self, key: str, ttl: float) -> bool:
        async with self._lock:
            now = self.clock()
            cursor = await self.db.execute(
                "INSERT INTO seen (key, expires_at) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at "
                "WHERE seen.expires_at <= ?",
                (key, now + ttl, now),
            )
            return cursor.rowcount == 1

    async def purge_seen(self) -> int:
        async with self._lock:
            cursor = await self.db.execute(
                "DELETE FROM seen WHERE expires_at <= ?", (self.clock(),)
            )
            return cursor.rowcount

    async def record_timeout(self, task_sid: str, reservation_sid: str) -> int:
        async with self._lock:
            return await self._record_timeout(task_sid, reservation_sid)

    async def _record_timeout(self, task_sid: str, reservation_sid: str) -> int:
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute(
                "INSERT OR IGNORE INTO timeouts (reservation_sid, task_sid, at) VALUES (?, ?, ?)",
                (reservation_sid, task_sid, self.clock()),
            )
            async with db.execute(
                "SELECT COUNT(*) FROM timeouts WHERE task_sid = ?", (task_sid,)
            ) as cursor:
                row = await cursor.fetchone()
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        return int(row[0]) if row else 0

    async def count(self) -> dict[str, int]:
        async with self.db.execute("SELECT state, COUNT(*) FROM intents GROUP BY state") as cur:
            rows = await cur.fetchall()
        return {str(state): int(n) for state, n in rows}
