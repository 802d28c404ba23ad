"""The journal: intents, webhook dedupe keys and the single-flight claim per reservation.

``Journal`` is the seam, with two implementations:

- ``SqliteJournal`` (``sqlite.py``): one file, one process; the embedded default.
- ``PostgresJournal`` (``postgres.py``): one database, several instances.

Every method is one atomic operation (a transaction of its own on PostgreSQL; on SQLite a
savepoint inside a group commit, which answers nobody before its COMMIT returned), so two
requests, two tasks or two instances can never both claim one reservation or both move one
intent. ``open_journal``
picks the implementation from ``FLEX_BRIDGE_JOURNAL``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flex_bridge.adapters.journal.base import (
    COLUMNS,
    FIELDS,
    Journal,
    is_postgres_url,
    journal_path,
    journal_setting,
    postgres_name,
)
from flex_bridge.adapters.journal.postgres import PostgresJournal
from flex_bridge.adapters.journal.sqlite import SqliteJournal

__all__ = [
    "COLUMNS",
    "FIELDS",
    "Journal",
    "PostgresJournal",
    "SqliteJournal",
    "is_postgres_url",
    "journal_path",
    "journal_setting",
    "open_journal",
    "postgres_name",
]


def open_journal(setting: str, *, clock: Callable[[], float] = time.time) -> Journal:
    """The journal ``setting`` names (``Settings.journal``), not yet opened: ``await
    journal.open()`` connects and creates or migrates its schema.

    A ``postgresql://`` or ``postgres://`` URL gives a ``PostgresJournal``; anything else is
    a SQLite path (``:memory:``, a path, or ``sqlite:///path``).
    """
    if is_postgres_url(setting):
        return PostgresJournal(setting, clock=clock)
    return SqliteJournal(journal_path(setting), clock=clock)
