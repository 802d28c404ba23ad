"""The PostgreSQL journal: one database shared by several flex-bridge instances.

asyncpg, a connection pool, and every method one transaction (or one statement) whose
locks make it atomic across processes, with the SQLite journal's semantics:

- ``submit`` upserts the reservation's row in ``claims`` first. The upsert takes that row's
  lock (a second submit for the reservation, from any instance, waits on it, and then sees
  what the first one committed), so the decision to join or record is made by one
  transaction at a time per reservation: never two claims.
- ``transition`` reads the intent ``FOR UPDATE`` and writes it back with
  ``WHERE state = ANY($n)``: compare-and-set, one winner.
- ``first_seen`` is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired``;
  ``record_timeout`` counts under a transaction-scoped advisory lock on the task.

The schema is created or migrated by ``open``, by whichever instance starts first: the DDL
runs under ``pg_advisory_xact_lock`` (instances starting together wait for each other, and
then find it done), and ``schema_version`` says which migrations ran. Errors of asyncpg and
of the server become ``JournalError``, naming the journal without its password.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from flex_bridge.adapters.journal.base import (
    COLUMNS,
    FIELDS,
    dump_json,
    intent_values,
    joins,
    postgres_name,
    row_to_intent,
)
from flex_bridge.domain.intents import Intent
from flex_bridge.errors import JournalError

T = TypeVar("T")

# Advisory locks take two int4 keys: the first says what the lock guards ("FLEX" in ASCII,
# then the next numbers), the second which one.
SCHEMA_LOCK: Final = (0x464C4558, 0)  # the schema's DDL, at start-up
TIMEOUTS_LOCK: Final = 0x464C4559  # with hashtext(task_sid): one task's timeout count

# Each migration runs once, in order, in the transaction that holds the schema lock; add new
# ones at the end (never edit one that has shipped). Text keys are COLLATE "C": intent ids
# sort by creation time byte by byte, whatever the database's locale.
MIGRATIONS: Final[tuple[tuple[int, str], ...]] = (
    (
        1,
        """
        CREATE TABLE IF NOT EXISTS intents (
            intent_id          text COLLATE "C" PRIMARY KEY,
            reservation_sid    text COLLATE "C" NOT NULL,
            task_sid           text COLLATE "C" NOT NULL,
            worker_sid         text COLLATE "C" NOT NULL,
            op                 text NOT NULL,
            source             text NOT NULL,
            via                text NOT NULL,
            params             text NOT NULL,
            state              text NOT NULL,
            deadline           double precision,
            attempts           integer NOT NULL DEFAULT 0,
            reservation_status text,
            error_code         integer,
            error_message      text,
            late_announce      boolean NOT NULL DEFAULT false,
            extra              text NOT NULL DEFAULT '{}',
            created_at         double precision NOT NULL,
            updated_at         double precision NOT NULL
        );
        CREATE INDEX IF NOT EXISTS intents_by_reservation ON intents (reservation_sid, intent_id);
        CREATE INDEX IF NOT EXISTS intents_unsettled ON intents (state, intent_id)
            WHERE state <> 'settled';
        CREATE TABLE IF NOT EXISTS claims (
            reservation_sid text COLLATE "C" PRIMARY KEY,
            intent_id       text COLLATE "C" NOT NULL
        );
        CREATE TABLE IF NOT EXISTS seen (
            key        text COLLATE "C" PRIMARY KEY,
            expires_at double precision NOT NULL
        );
        CREATE TABLE IF NOT EXISTS timeouts (
            reservation_sid text COLLATE "C" PRIMARY KEY,
            task_sid        text COLLATE "C" NOT NULL,
            at              double precision NOT NULL
        );
        CREATE INDEX IF NOT EXISTS timeouts_by_task ON timeouts (task_sid);
        """,
    ),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]

# What asyncpg and the server raise: refused or dropped connections, timeouts, query errors,
# a closed pool.
_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

_SELECT = f"SELECT {COLUMNS} FROM intents"
_INSERT = (
    f"INSERT INTO intents ({COLUMNS}) VALUES ({', '.join(f'${n + 1}' for n in range(len(FIELDS)))})"
)
_UPDATE = (
    "UPDATE intents SET "
    + ", ".join(f"{field} = ${n + 2}" for n, field in enumerate(FIELDS[1:]))
    + f" WHERE intent_id = $1 AND state = ANY(${len(FIELDS) + 1}::text[])"
)


class PostgresJournal:
    """The journal in a PostgreSQL database, for one or several flex-bridge instances.

    ``url`` is ``postgresql://user:password@host:port/database`` (or ``postgres://``); query
    parameters are asyncpg's (``sslmode``, …) or server settings (``search_path``, …). The
    pool holds ``min_size`` to ``max_size`` connections; ``timeout`` bounds connecting,
    waiting for a connection, and each statement.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.name = postgres_name(url)
        self.clock = clock
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self._secrets = _passwords(url)
        self._pool: Any = None  # asyncpg.Pool, untyped

    def __repr__(self) -> str:
        return f"PostgresJournal({self.name!r})"

    def _error(self, what: str, exc: BaseException) -> JournalError:
        message = str(exc) or type(exc).__name__
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return JournalError(f"{what} the journal at {self.name}: {message}")

    async def _run(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        pool = self._pool
        if pool is None:
            raise JournalError("the journal is not open")
        try:
            async with pool.acquire(timeout=self.timeout) as conn:
                return await operation(conn)
        except _ERRORS as exc:
            raise self._error("failed:", exc) from exc

    async def open(self) -> None:
        if self._pool is not None:
            raise JournalError(f"the journal at {self.name} is open already")
        try:
            pool = await asyncpg.create_pool(
                self.url,
                min_size=self.min_size,
                max_size=self.max_size,
                timeout=self.timeout,
                command_timeout=self.timeout,
            )
        except (*_ERRORS, ValueError) as exc:  # ValueError: a URL asyncpg cannot use
            raise self._error("cannot open", exc) from exc
        try:
            async with pool.acquire(timeout=self.timeout) as conn:
                await _migrate(conn, self.clock())
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, _ERRORS):
                raise self._error("cannot open", exc) from exc
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self.timeout)
        except asyncio.CancelledError:
            pool.terminate()
            raise
        except _ERRORS as exc:  # close() terminated the pool: nothing is left open
            pool.terminate()
            raise self._error("cannot close", exc) from exc

    async def ping(self) -> None:
        await self._run(lambda conn: conn.fetchval("SELECT 1"))

    async def get(self, intent_id: str) -> Intent | None:
        return await self._run(
            lambda conn: _one(conn, f"{_SELECT} WHERE intent_id = $1", intent_id)
        )

    async def latest_for_reservation(self, reservation_sid: str) -> Intent | None:
        return await self._run(
            lambda conn: _one(
                conn,
                f"{_SELECT} WHERE reservation_sid = $1 ORDER BY intent_id DESC LIMIT 1",
                reservation_sid,
            )
        )

    async def submit(self, intent: Intent) -> tuple[Intent, bool]:
        return await self._run(lambda conn: _submit(conn, intent))

    async def transition(
        self, intent_id: str, expected: Iterable[str], **changes: Any
    ) -> Intent | None:
        allowed = list(expected)
        return await self._run(
            lambda conn: _transition(conn, intent_id, allowed, changes, self.clock())
        )

    async def unsettled(self, limit: int = 1000) -> list[Intent]:
        return await self._run(
            lambda conn: _all(
                conn, f"{_SELECT} WHERE state <> 'settled' ORDER BY intent_id LIMIT $1", limit
            )
        )

    async def recent(self, limit: int = 100) -> list[Intent]:
        return await self._run(
            lambda conn: _all(conn, f"{_SELECT} ORDER BY intent_id DESC LIMIT $1", limit)
        )

    async def first_seen(self, key: str, ttl: float) -> bool:
        now = self.clock()
        status = await self._run(
            lambda conn: conn.execute(
                "INSERT INTO seen AS s (key, expires_at) VALUES ($1, $2) "
                "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at "
                "WHERE s.expires_at <= $3",
                key,
                now + ttl,
                now,
            )
        )
        return _rows(status) == 1

    async def purge_seen(self) -> int:
        now = self.clock()
        status = await self._run(
            lambda conn: conn.execute("DELETE FROM seen WHERE expires_at <= $1", now)
        )
        return _rows(status)

    async def record_timeout(self, task_sid: str, reservation_sid: str) -> int:
        now = self.clock()
        return await self._run(lambda conn: _record_timeout(conn, task_sid, reservation_sid, now))

    async def count(self) -> dict[str, int]:
        rows = await self._run(
            lambda conn: conn.fetch("SELECT state, count(*) FROM intents GROUP BY state")
        )
        return {str(state): int(n) for state, n in rows}


def _passwords(url: str) -> list[str]:
    """The password of ``url`` in each form an error message might quote it."""
    parts = urlsplit(url)
    found = [parts.password or "", *parse_qs(parts.query).get("password", [])]
    return sorted({p for raw in found if raw for p in (raw, unquote(raw))}, key=len, reverse=True)


def _rows(status: str) -> int:
    """The row count of a command status (``INSERT 0 1``, ``DELETE 3``)."""
    match = re.search(r"(\d+)$", status)
    return int(match.group(1)) if match else 0


# The operations, each on one pooled connection; several statements run in one transaction.
async def _migrate(conn: Any, now: float) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *SCHEMA_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version integer PRIMARY KEY, applied_at double precision NOT NULL)"
        )
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
        if current > SCHEMA_VERSION:
            raise JournalError(
                f"the journal's schema is version {current}, newer than this flex-bridge's "
                f"({SCHEMA_VERSION}): upgrade flex-bridge"
            )
        for version, ddl in MIGRATIONS:
            if version > current:
                await conn.execute(ddl)
                await conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                    version,
                    now,
                )


async def _one(conn: Any, sql: str, *args: Any) -> Intent | None:
    row = await conn.fetchrow(sql, *args)
    return row_to_intent(row) if row is not None else None


async def _all(conn: Any, sql: str, *args: Any) -> list[Intent]:
    return [row_to_intent(row) for row in await conn.fetch(sql, *args)]


async def _submit(conn: Any, intent: Intent) -> tuple[Intent, bool]:
    async with conn.transaction():
        # The claim row, created empty if new, and locked either way: submits for one
        # reservation queue here, each seeing what the one before committed.
        claimed = await conn.fetchval(
            "INSERT INTO claims AS c (reservation_sid, intent_id) VALUES ($1, '') "
            "ON CONFLICT (reservation_sid) DO UPDATE SET intent_id = c.intent_id "
            "RETURNING intent_id",
            intent.reservation_sid,
        )
        existing = None
        if claimed:
            existing = await _one(conn, f"{_SELECT} WHERE intent_id = $1 FOR UPDATE", claimed)
        if joins(existing, intent):
            assert existing is not None
            return existing, False
        # A replay of a change already made (a late double click, a webhook retry after
        # the intent settled): answer with the intent that made it.
        replayed = await _one(
            conn,
            f"{_SELECT} WHERE reservation_sid = $1 AND op = $2 AND params = $3 "
            "AND state = 'settled' AND error_message IS NULL "
            "ORDER BY intent_id DESC LIMIT 1",
            intent.reservation_sid,
            intent.op,
            dump_json(intent.params),
        )
        if replayed is not None:
            return replayed, False
        await conn.execute(_INSERT, *intent_values(intent))
        await conn.execute(
            "UPDATE claims SET intent_id = $2 WHERE reservation_sid = $1",
            intent.reservation_sid,
            intent.intent_id,
        )
        return intent, True


async def _transition(
    conn: Any, intent_id: str, allowed: list[str], changes: dict[str, Any], now: float
) -> Intent | None:
    async with conn.transaction():
        current = await _one(conn, f"{_SELECT} WHERE intent_id = $1 FOR UPDATE", intent_id)
        if current is None or current.state not in allowed:
            return None
        updated = current.evolve(**changes, updated_at=now)
        status = await conn.execute(_UPDATE, *intent_values(updated), allowed)
        if _rows(status) != 1:
            return None
        return updated


async def _record_timeout(conn: Any, task_sid: str, reservation_sid: str, now: float) -> int:
    async with conn.transaction():
        # One count per task at a time, so two timeouts of one task never both count 1.
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", TIMEOUTS_LOCK, task_sid
        )
        await conn.execute(
            "INSERT INTO timeouts (reservation_sid, task_sid, at) VALUES ($1, $2, $3) "
            "ON CONFLICT (reservation_sid) DO NOTHING",
            reservation_sid,
            task_sid,
            now,
        )
        count = await conn.fetchval("SELECT count(*) FROM timeouts WHERE task_sid = $1", task_sid)
    return int(count)
