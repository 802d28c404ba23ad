"""What every journal shares: the ``Journal`` seam, the intent row and the setting's forms."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from flex_bridge.domain.intents import IN_FLIGHT, UNSETTLED, ErrorInfo, Intent, ordered_after
from flex_bridge.errors import ConfigError


class Journal(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Prove the journal can be written: one write to the one-row ``health`` table, in a
        transaction, within a bound (about 2 s of waiting for a lock). Raises ``JournalError``
        saying why not: closed, deleted, replaced, read-only, locked, unreachable, failing.
        """
        ...

    async def submit(self, intent: Intent) -> tuple[Intent, bool]:
        """Record ``intent`` unless the reservation already has one that it should join.

        Returns ``(intent, True)`` when recorded, or ``(existing, False)`` when an intent in
        flight (recorded, announced, instructed) holds the reservation (any op), when a
        decided intent awaiting its settle has the same op and params, or when an intent with
        the same op and params already settled applied on it (a replay of a change already
        made). A decided intent awaiting its settle does not block another op.
        """
        ...

    async def submit_leased(
        self, intent: Intent, owner: str, ttl: float
    ) -> tuple[Intent, bool, int | None]:
        """``submit``, and when ``intent`` is recorded, take the lease named by its id for
        ``owner`` (as ``acquire_lease``) in the same transaction: ``(intent, True, token)``,
        or ``(existing, False, None)`` when it joined another intent (no lease taken)."""
        ...

    async def get(self, intent_id: str) -> Intent | None: ...

    async def latest_for_reservation(self, reservation_sid: str) -> Intent | None: ...

    async def transition(
        self,
        intent_id: str,
        expected: Iterable[str],
        *,
        fence: int | None = None,
        release: str | None = None,
        **changes: Any,
    ) -> Intent | None:
        """Apply ``changes`` if the intent's state is one of ``expected``; else None.

        With ``fence``, only while the lease named ``intent_id`` exists with that token and
        is unexpired (checked in the same transaction): a late write of an owner whose lease
        expired or changed hands is refused (None).

        With ``release``, a change that was made also releases the lease named ``intent_id``
        if ``release`` holds it (as ``release_lease``), in the same transaction.
        """
        ...

    async def unsettled(self, limit: int = 1000) -> list[Intent]: ...

    async def recent(self, limit: int = 100) -> list[Intent]:
        """The newest intents first."""
        ...

    async def active_reservations(self, since: float, limit: int) -> list[Intent]:
        """Each reservation's newest intent (by ``intent_id``), when it was updated at
        ``since`` or later and its ``reservation_status`` is not final (``FINAL_STATUSES``;
        None counts as active): the oldest ``updated_at`` first, at most ``limit``."""
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

    # -------------------------------------------------------------------------- leases
    async def acquire_lease(self, name: str, owner: str, ttl: float) -> int | None:
        """Take the lease ``name`` for ``owner`` until now + ``ttl``, or renew it if ``owner``
        holds it unexpired; returns its fencing token, or None while another owner holds it.

        A renewal keeps the token; every new tenure (another owner, or the same one after
        its lease expired or was released) gets a new token, greater than any token the
        journal gave before (one counter for all leases, so tokens never repeat, even after
        ``prune`` dropped a lease's row).
        """
        ...

    async def release_lease(self, name: str, owner: str) -> None:
        """Expire the lease at once if ``owner`` holds it (the row stays); else nothing."""
        ...

    # -------------------------------------------------------------------------- inbox
    async def inbox_put(self, key: str, body: dict[str, str]) -> bool:
        """Record one webhook delivery under its dedupe ``key``, durably: True when new,
        False when ``key`` is there already (a redelivery: nothing changes)."""
        ...

    async def inbox_take(
        self, owner: str, lease: float, limit: int
    ) -> list[tuple[str, dict[str, str]]]:
        """Claim up to ``limit`` entries not done whose lease is free or expired, the oldest
        first, leasing them to ``owner`` for ``lease`` seconds; returns ``(key, body)``
        pairs. Two takers never get one entry while its lease holds."""
        ...

    async def inbox_done(self, key: str) -> None:
        """Mark the entry applied: it is never taken again (``prune`` drops it later)."""
        ...

    # -------------------------------------------------------------------------- retention
    async def prune(self, before: float, limit: int) -> int:
        """Delete, at most ``limit`` rows per table: settled intents updated before
        ``before`` (and the claims pointing at them), expired dedupe keys, inbox entries
        done before ``before``, timeouts recorded before ``before``, and leases expired
        before ``before``. Returns how many rows went. Unsettled intents are never deleted.
        """
        ...


# TaskRouter's final reservation statuses: nothing left to reconcile.
FINAL_STATUSES: Final = frozenset({"completed", "canceled", "timeout", "rescinded", "rejected"})


def dump_body(body: dict[str, str]) -> str:
    """An inbox body as stored (JSON text)."""
    return json.dumps(body)


def load_body(text: str) -> dict[str, str]:
    loaded = json.loads(text)
    return {str(k): str(v) for k, v in loaded.items()}


# ------------------------------------------------------------------------------ the intent row
# The columns of ``intents``, in the order of ``intent_values`` and ``row_to_intent``.
FIELDS = (
    "intent_id",
    "reservation_sid",
    "task_sid",
    "worker_sid",
    "op",
    "source",
    "via",
    "params",
    "state",
    "deadline",
    "attempts",
    "reservation_status",
    "error_code",
    "error_message",
    "late_announce",
    "extra",
    "created_at",
    "updated_at",
)
COLUMNS = ", ".join(FIELDS)


def dump_json(value: Any) -> str:
    """The one JSON form the journals store and compare (``params`` are matched by it)."""
    return json.dumps(value, sort_keys=True)


def row_to_intent(row: Sequence[Any]) -> Intent:
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


# The intent's fields in the order of their columns (``FIELDS``): ``error`` is two columns.
INTENT_FIELDS: Final = tuple(
    dict.fromkeys("error" if name.startswith("error_") else name for name in FIELDS)
)
JSON_FIELDS: Final = frozenset({"params", "extra"})


def column_values(fields: Iterable[tuple[str, Any]]) -> list[Any]:
    """Intent fields ``(name, value)`` as stored, column by column in the order given: the
    one encoding of every journal. ``error`` is two columns (``error_code``,
    ``error_message``), ``params`` and ``extra`` JSON text (``dump_json``), ``late_announce``
    a bool (1/0 in SQLite); the others as they are."""
    values: list[Any] = []
    for name, value in fields:
        if name == "error":
            values += (value.code, value.message) if value is not None else (None, None)
        elif name in JSON_FIELDS:
            values.append(dump_json(value))
        elif name == "late_announce":
            values.append(bool(value))
        else:
            values.append(value)
    return values


def intent_values(intent: Intent) -> tuple[Any, ...]:
    """The row of ``intent``, in ``FIELDS`` order."""
    return tuple(column_values((name, getattr(intent, name)) for name in INTENT_FIELDS))


def joins(existing: Intent | None, intent: Intent) -> bool:
    """Whether ``intent`` joins ``existing``, the intent holding the claim on its reservation.

    One in flight holds the reservation against any op; a decided one whose item is not yet
    settled (Sync down) is joined by the same request only: its REST change is done, so
    another op goes ahead, and a newer intent's item supersedes its late settle.
    """
    if existing is None:
        return False
    if existing.state in IN_FLIGHT:
        return True
    return (
        existing.state in UNSETTLED
        and existing.op == intent.op
        and existing.params == intent.params
    )


def after_claim(existing: Intent | None, intent: Intent) -> Intent:
    """``intent`` with an id that sorts after the claim's (``intents.ordered_after``)."""
    previous = existing.intent_id if existing is not None else None
    return intent.evolve(intent_id=ordered_after(intent.intent_id, previous))


# ------------------------------------------------------------------------------ the setting
POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres_url(value: str) -> bool:
    return value.split("://", 1)[0].lower() in POSTGRES_SCHEMES and "://" in value


MEMORY = ":memory:"


def journal_path(value: str) -> str:
    """A SQLite journal's file as SQLAlchemy reads its URLs: a path, ``sqlite:///rel/path``
    (relative), ``sqlite:////abs/path`` (absolute), or ``:memory:`` (``sqlite://:memory:``),
    which only the Python API may ask for (``journal_setting`` refuses it).

    ``sqlite:///`` names no file: refused, not an in-memory journal in disguise.
    """
    if value.startswith("sqlite:///"):
        path = value[len("sqlite:///") :]
        if not path:
            raise ConfigError(
                "FLEX_BRIDGE_JOURNAL: sqlite:/// names no file: give sqlite:///relative/path "
                "or sqlite:////absolute/path"
            )
        return path
    if value in ("sqlite://:memory:", MEMORY):
        return MEMORY
    if "://" in value:
        scheme = value.split("://", 1)[0]
        raise ConfigError(
            f"FLEX_BRIDGE_JOURNAL: {scheme}:// is not a journal: give a path, sqlite:///path "
            "or postgresql://user:password@host:port/database"
        )
    return value


def journal_setting(value: str) -> str:
    """``FLEX_BRIDGE_JOURNAL``, checked: a PostgreSQL URL kept whole, or a SQLite file's path.

    An in-memory journal keeps nothing across a restart: the setting refuses it (tests open
    one through ``open_journal(":memory:")`` or ``SqliteJournal(":memory:")``).
    """
    if is_postgres_url(value):
        postgres_name(value)  # raises ConfigError unless it names a host and a database
        return value
    path = journal_path(value)
    if path == MEMORY:
        raise ConfigError(
            "FLEX_BRIDGE_JOURNAL: an in-memory journal is not durable (every intent would be "
            "lost on restart): give a file's path or a postgresql:// URL"
        )
    return path


def postgres_name(url: str) -> str:
    """``url`` without its password (nor its query): how errors and logs name the journal.

    Raises ``ConfigError`` unless ``url`` names a host (or ``?host=`` a socket directory)
    and a database.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"FLEX_BRIDGE_JOURNAL: not a PostgreSQL URL: {exc}") from None
    query = parse_qs(parts.query)
    host = parts.hostname or (query.get("host") or [""])[0]
    database = unquote(parts.path.lstrip("/")) or (query.get("dbname") or [""])[0]
    user = unquote(parts.username or "") or (query.get("user") or [""])[0]
    where = f"{parts.hostname or ''}{f':{port}' if port else ''}"
    name = f"{parts.scheme}://{f'{user}@' if user else ''}{where}/{database}"
    if not host:
        raise ConfigError(f"FLEX_BRIDGE_JOURNAL={name}: the URL names no host")
    if not database:
        raise ConfigError(f"FLEX_BRIDGE_JOURNAL={name}: the URL names no database")
    return name
