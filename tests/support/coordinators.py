"""A coordinator over the in-memory ports and a real SQLite journal, and its most common
call: one intent for the fakes' reservation (``WR`` of ``WT``, offered to ``WK``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flex_bridge.adapters.journal import SqliteJournal
from flex_bridge.app.coordinator import Coordinator
from flex_bridge.domain.intents import Intent
from flex_bridge.domain.policy import Policy
from flex_bridge.domain.types import Op, Source, Via
from tests.support.clock import Clock
from tests.support.fakes import WK, WR, WT, FakeChannel, FakeReservations

T0 = 1_700_000_000.0


async def make_coordinator(
    status: str = "pending",
    policy: Policy | None = None,
    journal_path: str | Path = ":memory:",
    owner: str | None = None,
) -> tuple[Coordinator, FakeReservations, FakeChannel, Clock]:
    """A coordinator whose reservation holds ``status``; the journal is open (the caller
    closes it: ``coord.journal.close()``)."""
    clock = Clock(T0)
    journal = SqliteJournal(journal_path, clock=clock)
    await journal.open()
    tr, channel = FakeReservations.holding(status), FakeChannel()
    coord = Coordinator(journal, channel, tr, policy or Policy(), clock=clock, owner=owner)
    return coord, tr, channel, clock


async def submit(
    coord: Coordinator,
    op: Op = "accept",
    *,
    source: Source = "policy",
    params: dict[str, Any] | None = None,
    via: Via = "rest",
) -> tuple[Intent, bool]:
    """``coord.submit`` for the fakes' reservation, with no deadline."""
    return await coord.submit(
        op=op,
        reservation_sid=WR,
        task_sid=WT,
        worker_sid=WK,
        source=source,
        params=params or {},
        deadline=None,
        via=via,
    )
