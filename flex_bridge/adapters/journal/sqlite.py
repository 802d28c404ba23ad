"""The SQLite journal: one file, one process.

The standard ``sqlite3`` module, driven from one thread of its own. Every method is one
atomic operation (one function run whole in that thread; ``BEGIN IMMEDIATE`` where it takes
several statements), so two requests or two tasks can never both claim one reservation or
both move one intent.

Durability: WAL mode with ``synchronous=FULL``; ``submit`` returns only after the intent is
on disk, so nothing is acknowledged that a crash could lose.

Every operation that reads before it writes runs under ``BEGIN IMMEDIATE`` (the file's write
lock, taken before the first read), so it stays atomic even against another connection to
the file (a read-only inspector, an operator's ``sqlite3`` shell), not only within this one.

Health: ``ping`` writes the one-row ``health`` table, waiting at most ``ping_timeout`` for the
write lock, and first checks that the file at ``path`` is still the one opened (a journal
deleted or replaced while open goes on "working" on the orphaned inode, and loses
everything at the next restart) and still writable.

One process: a journal holds an exclusive ``flock`` on ``<path>.lock`` while it is open, so a
second flex-bridge on the same file stops at start-up (several instances share a PostgreSQL
journal instead). ``read_only=True`` opens the file beside a running bridge, for inspection.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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

BUSY_TIMEOUT_MS = 5000  # how long an operation waits for another connection's write lock
# How long ``ping`` waits for its answer beyond ``ping_timeout`` (the lock wait): queued behind
# other operations, or a disk that does not complete the write.
PING_SLACK = 5.0


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
    reading the journal of a running bridge (WAL lets a reader in beside the writer); its
    ``ping`` checks the file and reads.

    ``ping_timeout`` bounds how long ``ping`` waits for the write lock before it reports the
    journal locked.
    """

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
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._lock: int | None = None
        self._file: _File | None = None  # the file opened, for ping (None: ``:memory:``)

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
                db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                self._file = _File.of(self.path)
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
                db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                db.executescript(SCHEMA)
                if self.path not in ("", ":memory:"):
                    self._file = _File.of(self.path)
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
            await asyncio.wait_for(self._run(operation), bound + PING_SLACK)
        except TimeoutError:
            raise JournalError(
                f"the journal at {self.path} did not complete a write within "
                f"{bound + PING_SLACK:g} s"
            ) from None

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
        self,
        intent_id: str,
        expected: Iterable[str],
        *,
        fence: int | None = None,
        **changes: Any,
    ) -> Intent | None:
        allowed = tuple(expected)
        now = self.clock()
        return await self._run(lambda db: _transition(db, intent_id, allowed, changes, now, fence))

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

    async def active_reservations(self, since: float, limit: int) -> list[Intent]:
        if limit <= 0:
            return []
        return await self._run(lambda db: _all(db, _ACTIVE, (since, limit)))

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

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> int | None:
        now = self.clock()
        return await self._run(lambda db: _acquire_lease(db, name, owner, now, now + ttl))

    async def release_lease(self, name: str, owner: str) -> None:
        now = self.clock()
        await self._run(
            lambda db: db.execute(
                "UPDATE leases SET expires_at = ? WHERE name = ? AND owner = ? AND expires_at > ?",
                (now, name, owner, now),
            )
        )

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
        rows = await self._run(lambda db: _inbox_take(db, owner, now, now + lease, limit))
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
        return await self._run(lambda db: _prune(db, before, now, limit))


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
    """One write transaction, its lock taken before the first read (``BEGIN IMMEDIATE``):
    committed at the end of the block, rolled back if it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


_FINAL = ", ".join(f"'{status}'" for status in sorted(FINAL_STATUSES))
# Each reservation's newest intent, if recently updated and the reservation not over.
_ACTIVE = (
    f"SELECT {COLUMNS} FROM intents AS i WHERE i.updated_at >= ? "
    f"AND (i.reservation_status IS NULL OR i.reservation_status NOT IN ({_FINAL})) "
    "AND NOT EXISTS (SELECT 1 FROM intents AS n "
    "WHERE n.reservation_sid = i.reservation_sid AND n.intent_id > i.intent_id) "
    "ORDER BY i.updated_at, i.intent_id LIMIT ?"
)


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
    with _write(db):
        existing = _one(
            db,
            f"SELECT {COLUMNS} FROM intents WHERE intent_id = "
            "(SELECT intent_id FROM claims WHERE reservation_sid = ?)",
            (intent.reservation_sid,),
        )
        if joins(existing, intent):
            assert existing is not None
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
            return replayed, False
        intent = after_claim(existing, intent)
        db.execute(
            f"INSERT INTO intents ({COLUMNS}) VALUES ({_PLACEHOLDERS})", intent_values(intent)
        )
        db.execute(
            "INSERT INTO claims (reservation_sid, intent_id) VALUES (?, ?) "
            "ON CONFLICT (reservation_sid) DO UPDATE SET intent_id = excluded.intent_id",
            (intent.reservation_sid, intent.intent_id),
        )
        return intent, True


def _transition(
    db: sqlite3.Connection,
    intent_id: str,
    allowed: tuple[str, ...],
    changes: dict[str, Any],
    now: float,
    fence: int | None,
) -> Intent | None:
    with _write(db):
        if fence is not None and not _holds(db, intent_id, fence, now):
            return None  # the lease expired or changed hands: a stale owner's late write
        current = _get(db, intent_id)
        if current is None or current.state not in allowed:
            return None
        updated = current.evolve(**changes, updated_at=now)
        values = intent_values(updated)
        db.execute(f"UPDATE intents SET {_SETS} WHERE intent_id = ?", (*values[1:], intent_id))
        return updated


def _holds(db: sqlite3.Connection, name: str, token: int, now: float) -> bool:
    """Whether the lease ``name`` is held, unexpired, with ``token``."""
    row = db.execute(
        "SELECT 1 FROM leases WHERE name = ? AND token = ? AND expires_at > ?", (name, token, now)
    ).fetchone()
    return row is not None


def _record_timeout(db: sqlite3.Connection, task_sid: str, reservation_sid: str, now: float) -> int:
    with _write(db):
        db.execute(
            "INSERT OR IGNORE INTO timeouts (reservation_sid, task_sid, at) VALUES (?, ?, ?)",
            (reservation_sid, task_sid, now),
        )
        row = db.execute("SELECT COUNT(*) FROM timeouts WHERE task_sid = ?", (task_sid,)).fetchone()
    return int(row[0]) if row else 0


def _acquire_lease(
    db: sqlite3.Connection, name: str, owner: str, now: float, until: float
) -> int | None:
    with _write(db):
        row = db.execute(
            "SELECT owner, token, expires_at FROM leases WHERE name = ?", (name,)
        ).fetchone()
        if row is not None and row[2] > now:  # held
            if row[0] != owner:
                return None
            db.execute("UPDATE leases SET expires_at = ? WHERE name = ?", (until, name))
            return int(row[1])  # a renewal keeps its token
        # A new tenure: the next token of the journal-wide counter.
        db.execute("UPDATE lease_tokens SET last = last + 1 WHERE id = 1")
        token = int(db.execute("SELECT last FROM lease_tokens WHERE id = 1").fetchone()[0])
        db.execute(
            "INSERT INTO leases (name, owner, token, expires_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, token = excluded.token, "
            "expires_at = excluded.expires_at",
            (name, owner, token, until),
        )
        return token


def _inbox_take(
    db: sqlite3.Connection, owner: str, now: float, until: float, limit: int
) -> list[tuple[str, str]]:
    with _write(db):
        rows = db.execute(
            "SELECT key, body FROM inbox WHERE done_at IS NULL "
            "AND (lease_until IS NULL OR lease_until <= ?) "
            "ORDER BY received_at, key LIMIT ?",
            (now, limit),
        ).fetchall()
        db.executemany(
            "UPDATE inbox SET lease_owner = ?, lease_until = ? WHERE key = ?",
            [(owner, until, key) for key, _ in rows],
        )
    return [(str(key), str(body)) for key, body in rows]


# Settled intents last updated before the cut-off, the oldest first, at most a limit.
_DOOMED = (
    "SELECT intent_id FROM intents WHERE state = 'settled' AND updated_at < ? "
    "ORDER BY updated_at, intent_id LIMIT ?"
)


def _prune(db: sqlite3.Connection, before: float, now: float, limit: int) -> int:
    with _write(db):
        # The claims first: they name the intents about to go (the same rows, twice).
        deleted = db.execute(
            f"DELETE FROM claims WHERE intent_id IN ({_DOOMED})", (before, limit)
        ).rowcount
        deleted += db.execute(
            f"DELETE FROM intents WHERE intent_id IN ({_DOOMED})", (before, limit)
        ).rowcount
        for table, where, args in (
            ("seen", "expires_at <= ?", (now,)),
            ("inbox", "done_at < ?", (before,)),
            ("timeouts", "at < ?", (before,)),
            ("leases", "expires_at <= ? AND expires_at < ?", (now, before)),
        ):
            deleted += db.execute(
                f"DELETE FROM {table} WHERE rowid IN "
                f"(SELECT rowid FROM {table} WHERE {where} LIMIT ?)",
                (*args, limit),
            ).rowcount
    return deleted
