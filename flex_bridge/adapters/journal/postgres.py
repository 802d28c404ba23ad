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
- ``acquire_lease`` is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE mine or expired``
  whose new tokens come from the ``lease_tokens`` sequence, drawn after the row is locked;
  ``transition(fence=)`` reads the lease ``FOR SHARE`` before the intent, so a takeover
  waits for a transition under the old token to commit (and then sees its result).
- ``inbox_take`` claims with ``FOR UPDATE SKIP LOCKED``: concurrent takers pass each
  other's rows by, and re-check the lease on the row they lock.
- ``prune`` locks the claims before the intents they name, as ``submit`` does (no
  deadlock), and every ``DELETE`` re-checks its condition on the row it deletes.

The schema is created or migrated by ``open``, by whichever instance starts first: the DDL
runs under ``pg_advisory_xact_lock`` (instances starting together wait for each other, and
then find it done), and ``schema_version`` says which migrations ran (at the current version,
``open`` only reads it: a restart needs no DDL, nor its privileges). Errors of asyncpg and
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
    FINAL_STATUSES,
    after_claim,
    dump_body,
    dump_json,
    intent_values,
    joins,
    load_body,
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
    (
        2,
        """
        CREATE TABLE IF NOT EXISTS leases (
            name       text COLLATE "C" PRIMARY KEY,
            owner      text NOT NULL,
            token      bigint NOT NULL,
            expires_at double precision NOT NULL
        );
        CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires_at);
        CREATE SEQUENCE IF NOT EXISTS lease_tokens AS bigint;
        CREATE TABLE IF NOT EXISTS inbox (
            key         text COLLATE "C" PRIMARY KEY,
            body        text NOT NULL,
            received_at double precision NOT NULL,
            done_at     double precision,
            lease_owner text,
            lease_until double precision
        );
        CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (received_at, key)
            WHERE done_at IS NULL;
        CREATE INDEX IF NOT EXISTS inbox_done ON inbox (done_at) WHERE done_at IS NOT NULL;
        CREATE TABLE IF NOT EXISTS health (
            id integer PRIMARY KEY CHECK (id = 1),
            at double precision NOT NULL
        );
        INSERT INTO health (id, at) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
        CREATE INDEX IF NOT EXISTS intents_by_update ON intents (updated_at);
        CREATE INDEX IF NOT EXISTS seen_by_expiry ON seen (expires_at);
        CREATE INDEX IF NOT EXISTS timeouts_by_time ON timeouts (at);
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
# Each reservation's newest intent, if recently updated and the reservation not over.
_ACTIVE = (
    f"SELECT {COLUMNS} FROM intents AS i WHERE i.updated_at >= $1 "
    "AND (i.reservation_status IS NULL OR i.reservation_status <> ALL($2::text[])) "
    "AND NOT EXISTS (SELECT 1 FROM intents AS n "
    "WHERE n.reservation_sid = i.reservation_sid AND n.intent_id > i.intent_id) "
    "ORDER BY i.updated_at, i.intent_id LIMIT $3"
)
# Take the lease: insert it, renew it (same owner, unexpired: same token), or take it over
# (expired: a new token, drawn only once the row is locked, so it is the newest); no row when
# another owner holds it. $1 name, $2 owner, $3 until, $4 now.
_ACQUIRE = """
    INSERT INTO leases AS l (name, owner, token, expires_at)
    VALUES ($1, $2, nextval('lease_tokens'), $3)
    ON CONFLICT (name) DO UPDATE SET
        token = CASE WHEN l.owner = excluded.owner AND l.expires_at > $4 THEN l.token
                     ELSE nextval('lease_tokens') END,
        owner = excluded.owner,
        expires_at = excluded.expires_at
    WHERE l.owner = excluded.owner OR l.expires_at <= $4
    RETURNING token
"""
# Let the lease $1 go at once ($3 now) if $2 holds it: the row stays, expired.
_RELEASE = "UPDATE leases SET expires_at = $3 WHERE name = $1 AND owner = $2 AND expires_at > $3"
# Up to $4 entries not done and not leased (or whose lease ran out), the oldest first, leased
# to $1 until $2; $3 now. SKIP LOCKED: a concurrent taker's rows are passed by.
_TAKE = """
    WITH taken AS (
        SELECT key FROM inbox
        WHERE done_at IS NULL AND (lease_until IS NULL OR lease_until <= $3)
        ORDER BY received_at, key LIMIT $4
        FOR UPDATE SKIP LOCKED
    )
    UPDATE inbox AS i SET lease_owner = $1, lease_until = $2
    FROM taken WHERE i.key = taken.key
    RETURNING i.key, i.body, i.received_at
"""
# The other tables ``prune`` trims: (table, key, condition on $2 and $3, the cut-offs these
# are: "now" or "before"). The condition is checked again on each row deleted (one renewed
# meanwhile stays).
_TRIMMED: Final = (
    ("seen", "key", "expires_at <= $2", ("now",)),
    ("inbox", "key", "done_at < $2", ("before",)),
    ("timeouts", "reservation_sid", "at < $2", ("before",)),
    ("leases", "name", "expires_at <= $2 AND expires_at < $3", ("now", "before")),
)


class PostgresJournal:
    """The journal in a PostgreSQL database, for one or several flex-bridge instances.

    ``url`` is ``postgresql://user:password@host:port/database`` (or ``postgres://``); query
    parameters are asyncpg's (``sslmode``, …) or server settings (``search_path``, …). The
    pool holds ``min_size`` to ``max_size`` connections; ``timeout`` bounds connecting,
    waiting for a connection, and each statement. ``ping_timeout`` bounds how long ``ping``
    waits for a lock (``lock_timeout``) before it reports the journal locked.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 10.0,
        ping_timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.name = postgres_name(url)
        self.clock = clock
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self.ping_timeout = ping_timeout
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
        """Write the ``health`` row in a transaction; ``JournalError`` saying why it could not
        be written (unreachable, read-only, locked past ``ping_timeout``, …) otherwise."""
        pool = self._pool
        if pool is None:
            raise JournalError("the journal is not open")
        now, bound = self.clock(), self.ping_timeout
        try:
            async with pool.acquire(timeout=self.timeout) as conn, conn.transaction():
                # SET LOCAL takes no parameters: a number formatted here, nothing else.
                await conn.execute(f"SET LOCAL lock_timeout = {max(1, round(bound * 1000))}")
                await conn.execute(
                    "INSERT INTO health (id, at) VALUES (1, $1) "
                    "ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                    now,
                )
        except asyncpg.LockNotAvailableError as exc:
            raise self._error(f"locked: a write waited {bound:g} s for a lock in", exc) from exc
        except asyncpg.ReadOnlySQLTransactionError as exc:
            raise self._error("read-only: cannot write", exc) from exc
        except _ERRORS as exc:
            raise self._error("cannot write", exc) from exc

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

    async def submit_leased(
        self, intent: Intent, owner: str, ttl: float
    ) -> tuple[Intent, bool, int | None]:
        now = self.clock()

        async def operation(conn: Any) -> tuple[Intent, bool, int | None]:
            async with conn.transaction():
                recorded, created = await _submit(conn, intent)
                if not created:
                    return recorded, False, None
                token = await conn.fetchval(_ACQUIRE, recorded.intent_id, owner, now + ttl, now)
                return recorded, True, None if token is None else int(token)

        return await self._run(operation)

    async def transition(
        self,
        intent_id: str,
        expected: Iterable[str],
        *,
        fence: int | None = None,
        release: str | None = None,
        **changes: Any,
    ) -> Intent | None:
        allowed = list(expected)
        now = self.clock()
        return await self._run(
            lambda conn: _transition(conn, intent_id, allowed, changes, now, fence, release)
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

    async def active_reservations(self, since: float, limit: int) -> list[Intent]:
        if limit <= 0:
            return []
        final = sorted(FINAL_STATUSES)
        return await self._run(lambda conn: _all(conn, _ACTIVE, since, final, limit))

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

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> int | None:
        now = self.clock()
        token = await self._run(lambda conn: conn.fetchval(_ACQUIRE, name, owner, now + ttl, now))
        return None if token is None else int(token)

    async def release_lease(self, name: str, owner: str) -> None:
        now = self.clock()
        await self._run(lambda conn: conn.execute(_RELEASE, name, owner, now))

    async def inbox_put(self, key: str, body: dict[str, str]) -> bool:
        now, text = self.clock(), dump_body(body)
        status = await self._run(
            lambda conn: conn.execute(
                "INSERT INTO inbox (key, body, received_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (key) DO NOTHING",
                key,
                text,
                now,
            )
        )
        return _rows(status) == 1

    async def inbox_take(
        self, owner: str, lease: float, limit: int
    ) -> list[tuple[str, dict[str, str]]]:
        if limit <= 0:
            return []
        now = self.clock()
        rows = await self._run(lambda conn: conn.fetch(_TAKE, owner, now + lease, now, limit))
        rows = sorted(rows, key=lambda row: (row["received_at"], row["key"]))
        return [(str(row["key"]), load_body(row["body"])) for row in rows]

    async def inbox_done(self, key: str) -> None:
        now = self.clock()
        await self._run(
            lambda conn: conn.execute(
                "UPDATE inbox SET done_at = $2 WHERE key = $1 AND done_at IS NULL", key, now
            )
        )

    async def prune(self, before: float, limit: int) -> int:
        if limit <= 0:
            return 0
        now = self.clock()
        return await self._run(lambda conn: _prune(conn, before, now, limit))


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
    # At the current version (every start but the first after an upgrade), only read.
    if await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"):
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
        if current == SCHEMA_VERSION:
            return
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
        intent = after_claim(existing, intent)
        await conn.execute(_INSERT, *intent_values(intent))
        await conn.execute(
            "UPDATE claims SET intent_id = $2 WHERE reservation_sid = $1",
            intent.reservation_sid,
            intent.intent_id,
        )
        return intent, True


async def _transition(
    conn: Any,
    intent_id: str,
    allowed: list[str],
    changes: dict[str, Any],
    now: float,
    fence: int | None,
    release: str | None,
) -> Intent | None:
    async with conn.transaction():
        if fence is not None:
            # FOR SHARE: a takeover (acquire_lease's update of this row) waits for this
            # transaction, so it never overlaps a write made under the old token.
            held = await conn.fetchval(
                "SELECT 1 FROM leases WHERE name = $1 AND token = $2 AND expires_at > $3 FOR SHARE",
                intent_id,
                fence,
                now,
            )
            if held is None:
                return None  # the lease expired or changed hands: a stale owner's late write
        current = await _one(conn, f"{_SELECT} WHERE intent_id = $1 FOR UPDATE", intent_id)
        if current is None or current.state not in allowed:
            return None
        updated = current.evolve(**changes, updated_at=now)
        status = await conn.execute(_UPDATE, *intent_values(updated), allowed)
        if _rows(status) != 1:
            return None
        if release is not None:
            await conn.execute(_RELEASE, intent_id, release, now)
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


async def _prune(conn: Any, before: float, now: float, limit: int) -> int:
    async with conn.transaction():
        doomed = [
            row["intent_id"]
            for row in await conn.fetch(
                "SELECT intent_id FROM intents WHERE state = 'settled' AND updated_at < $1 "
                "ORDER BY updated_at, intent_id LIMIT $2",
                before,
                limit,
            )
        ]
        deleted = 0
        if doomed:
            # submit locks a reservation's claim, then its intent: lock in the same order.
            await conn.execute(
                "SELECT 1 FROM claims WHERE intent_id = ANY($1::text[]) "
                "ORDER BY reservation_sid FOR UPDATE",
                doomed,
            )
            gone = [
                row["intent_id"]
                for row in await conn.fetch(
                    "DELETE FROM intents WHERE intent_id = ANY($1::text[]) "
                    "AND state = 'settled' AND updated_at < $2 RETURNING intent_id",
                    doomed,
                    before,
                )
            ]
            deleted += len(gone)
            status = await conn.execute(
                "DELETE FROM claims WHERE intent_id = ANY($1::text[])", gone
            )
            deleted += _rows(status)
        cutoffs = {"now": now, "before": before}
        for table, key, where, args in _TRIMMED:
            status = await conn.execute(
                f"DELETE FROM {table} WHERE {where} AND {key} IN "
                f"(SELECT {key} FROM {table} WHERE {where} LIMIT $1)",
                limit,
                *(cutoffs[arg] for arg in args),
            )
            deleted += _rows(status)
    return deleted
