"""The SQL each SQLite journal operation runs: functions of a ``sqlite3.Connection``.

``SqliteJournal`` (``sqlite.py``) runs them in its writer thread, inside its group commit;
none of them begins or ends a transaction.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from flex_bridge.adapters.journal.base import (
    COLUMNS,
    FIELDS,
    FINAL_STATUSES,
    INTENT_FIELDS,
    after_claim,
    column_values,
    dump_json,
    intent_values,
    joins,
    row_to_intent,
)
from flex_bridge.domain.intents import Intent

_FINAL = ", ".join(f"'{status}'" for status in sorted(FINAL_STATUSES))
# Each reservation's newest intent, if recently updated and the reservation not over.
ACTIVE = (
    f"SELECT {COLUMNS} FROM intents AS i WHERE i.updated_at >= ? "
    f"AND (i.reservation_status IS NULL OR i.reservation_status NOT IN ({_FINAL})) "
    "AND NOT EXISTS (SELECT 1 FROM intents AS n "
    "WHERE n.reservation_sid = i.reservation_sid AND n.intent_id > i.intent_id) "
    "ORDER BY i.updated_at, i.intent_id LIMIT ?"
)


# The operations, each run whole in the writer thread; a write inside its batch's transaction.
def one(db: sqlite3.Connection, sql: str, args: Sequence[Any]) -> Intent | None:
    row = db.execute(sql, args).fetchone()
    return row_to_intent(row) if row else None


def all(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[Intent]:
    return [row_to_intent(r) for r in db.execute(sql, args).fetchall()]


def get(db: sqlite3.Connection, intent_id: str) -> Intent | None:
    return one(db, f"SELECT {COLUMNS} FROM intents WHERE intent_id = ?", (intent_id,))


_PLACEHOLDERS = ", ".join("?" * len(FIELDS))


def submit(db: sqlite3.Connection, intent: Intent) -> tuple[Intent, bool]:
    existing = one(
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
    replayed = one(
        db,
        f"SELECT {COLUMNS} FROM intents WHERE reservation_sid = ? AND op = ? "
        "AND params = ? AND state = 'settled' AND error_message IS NULL "
        "ORDER BY intent_id DESC LIMIT 1",
        (intent.reservation_sid, intent.op, dump_json(intent.params)),
    )
    if replayed is not None:
        return replayed, False
    intent = after_claim(existing, intent)
    db.execute(f"INSERT INTO intents ({COLUMNS}) VALUES ({_PLACEHOLDERS})", intent_values(intent))
    db.execute(
        "INSERT INTO claims (reservation_sid, intent_id) VALUES (?, ?) "
        "ON CONFLICT (reservation_sid) DO UPDATE SET intent_id = excluded.intent_id",
        (intent.reservation_sid, intent.intent_id),
    )
    return intent, True


# The columns an intent field changes, for ``transition``: ``error`` is two; ``intent_id`` and
# ``updated_at`` are not changed this way (the row's key; the time of the change).
_COLUMNS_OF: Final = {
    name: ("error_code", "error_message") if name == "error" else (name,)
    for name in INTENT_FIELDS
    if name not in ("intent_id", "updated_at")
}


def column_args(changes: dict[str, Any]) -> list[Any]:
    """The values of ``changes`` as stored, in the order of ``update_sql``'s columns."""
    for name in changes:
        if name not in _COLUMNS_OF:
            raise TypeError(f"transition: an intent has no field {name!r} to change")
    return column_values(changes.items())


@functools.lru_cache(maxsize=256)
def update_sql(names: tuple[str, ...], allowed: int, fenced: bool) -> str:
    """``transition``'s statement for these changed fields, ``allowed`` expected states and
    with or without the fence (the lease ``intent_id`` held with the token, unexpired)."""
    sets = [f"{column} = ?" for name in names for column in _COLUMNS_OF[name]]
    sets.append("updated_at = ?")
    where = f"intent_id = ? AND state IN ({', '.join('?' * allowed)})"
    if fenced:
        where += (
            " AND EXISTS (SELECT 1 FROM leases WHERE name = ? AND token = ? AND expires_at > ?)"
        )
    return f"UPDATE intents SET {', '.join(sets)} WHERE {where} RETURNING {COLUMNS}"


def record_timeout(db: sqlite3.Connection, task_sid: str, reservation_sid: str, now: float) -> int:
    db.execute(
        "INSERT OR IGNORE INTO timeouts (reservation_sid, task_sid, at) VALUES (?, ?, ?)",
        (reservation_sid, task_sid, now),
    )
    row = db.execute("SELECT COUNT(*) FROM timeouts WHERE task_sid = ?", (task_sid,)).fetchone()
    return int(row[0]) if row else 0


def acquire_lease(
    db: sqlite3.Connection, name: str, owner: str, now: float, until: float
) -> int | None:
    row = db.execute(
        "SELECT owner, token, expires_at FROM leases WHERE name = ?", (name,)
    ).fetchone()
    if row is not None and row[2] > now:  # held
        if row[0] != owner:
            return None
        db.execute("UPDATE leases SET expires_at = ? WHERE name = ?", (until, name))
        return int(row[1])  # a renewal keeps its token
    # A new tenure: the next token of the journal-wide counter.
    token = int(
        db.execute(
            "UPDATE lease_tokens SET last = last + 1 WHERE id = 1 RETURNING last"
        ).fetchone()[0]
    )
    db.execute(
        "INSERT INTO leases (name, owner, token, expires_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, token = excluded.token, "
        "expires_at = excluded.expires_at",
        (name, owner, token, until),
    )
    return token


def release_lease(db: sqlite3.Connection, name: str, owner: str, now: float) -> None:
    db.execute(
        "UPDATE leases SET expires_at = ? WHERE name = ? AND owner = ? AND expires_at > ?",
        (now, name, owner, now),
    )


def submit_leased(
    db: sqlite3.Connection, intent: Intent, owner: str, now: float, until: float
) -> tuple[Intent, bool, int | None]:
    recorded, created = submit(db, intent)
    token = acquire_lease(db, recorded.intent_id, owner, now, until) if created else None
    return recorded, created, token


def inbox_take(
    db: sqlite3.Connection, owner: str, now: float, until: float, limit: int
) -> list[tuple[str, str]]:
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


def prune(db: sqlite3.Connection, before: float, now: float, limit: int) -> int:
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
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {where} LIMIT ?)",
            (*args, limit),
        ).rowcount
    return deleted
