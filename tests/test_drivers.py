"""``app.drivers``: at most ``limit`` intents driven at once, the others waiting in order as
ids (issue 12: an in-flight intent is a journal row, not a coroutine), and the coordinator's
journal writes per accept."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flex_bridge.adapters.journal import SqliteJournal
from flex_bridge.app.drivers import Drivers, Handoff
from tests.support.coordinators import make_coordinator, submit
from tests.support.fakes import WK, WR, WT
from tests.support.intents import make_intent


class Rig:
    """Drivers whose drives wait until the test lets each one end."""

    def __init__(self, limit: int) -> None:
        self.started: list[tuple[str, Handoff | None]] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.counts: list[int] = []
        self.ended: list[str] = []
        self.drivers = Drivers(
            self.drive,
            limit=limit,
            on_count=self.counts.append,
            on_done=lambda i, t: self.ended.append(i),
        )

    async def drive(self, intent_id: str, handoff: Handoff | None) -> None:
        self.started.append((intent_id, handoff))
        gate = self.gates.setdefault(intent_id, asyncio.Event())
        await gate.wait()

    async def end(self, intent_id: str) -> None:
        self.gates.setdefault(intent_id, asyncio.Event()).set()
        for _ in range(3):
            await asyncio.sleep(0)

    def names(self) -> list[str]:
        return [name for name, _ in self.started]


async def test_beyond_the_limit_intents_wait_and_start_in_order_as_drivers_end() -> None:
    rig = Rig(limit=2)
    for name in ("a", "b", "c", "d"):
        rig.drivers.start(name)
    await asyncio.sleep(0)
    assert rig.names() == ["a", "b"]
    assert len(rig.drivers) == 4 and rig.drivers.driving == 2
    assert all(name in rig.drivers for name in "abcd")  # waiting counts as driven here
    rig.drivers.start("c")  # already waiting: not twice
    assert len(rig.drivers) == 4
    await rig.end("b")
    assert rig.names() == ["a", "b", "c"]
    await rig.end("a")
    await rig.end("c")
    await rig.end("d")
    assert rig.names() == ["a", "b", "c", "d"] and rig.ended == ["b", "a", "c", "d"]
    assert len(rig.drivers) == 0 and rig.counts[-1] == 0
    assert "a" not in rig.drivers


async def test_a_reserved_place_is_kept_for_the_submit_and_freed_if_unused() -> None:
    rig = Rig(limit=2)
    assert rig.drivers.reserve()
    rig.drivers.start("a")
    assert not rig.drivers.reserve()  # a and the reserved place
    rig.drivers.start("b")  # waits: the reserved place is not its
    await asyncio.sleep(0)
    assert rig.names() == ["a"]
    rig.drivers.unreserve()  # the submit joined another intent: b takes the place
    await asyncio.sleep(0)
    assert rig.names() == ["a", "b"]
    await rig.end("a")
    await rig.end("b")


async def test_a_handoff_starts_at_once_in_its_reserved_place() -> None:
    rig = Rig(limit=1)
    assert rig.drivers.reserve()
    intent = make_intent(at=1_700_000_000.0, reservation_sid=WR, task_sid=WT, worker_sid=WK)
    rig.drivers.start(intent.intent_id, (intent, 7))
    await asyncio.sleep(0)
    assert rig.started == [(intent.intent_id, (intent, 7))]
    await rig.end(intent.intent_id)
    assert rig.drivers.reserve()  # the place is free again
    rig.drivers.unreserve()


async def test_idle_waits_for_the_waiting_ones_too_and_cancel_drops_them() -> None:
    rig = Rig(limit=1)
    for name in ("a", "b"):
        rig.drivers.start(name)
    idle = asyncio.create_task(rig.drivers.idle())
    await rig.end("a")
    assert not idle.done()  # b started when a ended
    await rig.end("b")
    await asyncio.wait_for(idle, 1)
    for name in ("c", "d"):
        rig.drivers.start(name)
    await asyncio.sleep(0)
    await rig.drivers.cancel()
    assert len(rig.drivers) == 0 and rig.names()[-1] == "c"
    rig.drivers.start("e")  # closing: nothing starts
    assert "e" not in rig.drivers


@pytest.mark.parametrize("limit", [1, 500])
async def test_an_accept_takes_four_journal_commits_and_settles(tmp_path: Path, limit: int) -> None:
    """Submit with the lease; announced with the first attempt; applied; settled with the
    lease's release: four write transactions, however many drivers are free."""
    coord, tr, channel, _ = await make_coordinator(journal_path=tmp_path / "journal.db", owner="me")
    journal = coord.journal
    assert isinstance(journal, SqliteJournal)
    coord.drivers.limit = limit
    try:
        intent, created = await submit(coord)
        await coord.idle()
        assert created and journal.commits == 4
        done = await journal.get(intent.intent_id)
        assert done is not None and done.settled and done.outcome == "applied"
        assert done.attempts == 1 and tr.forms == [{"ReservationStatus": "accepted"}]
        assert [w["phase"] for w in channel.written] == ["pending", "applied"]
        # The lease went with the settle: another instance may take it at once.
        assert await journal.acquire_lease(intent.intent_id, "other", 15) is not None
    finally:
        await coord.close()
        await journal.close()


async def test_while_callbacks_are_answered_only_busy_limit_drivers_start() -> None:
    """Callbacks first: during a burst at most ``busy_limit`` drivers run; the others start
    as soon as no callback is being answered."""
    rig = Rig(limit=10)
    rig.drivers.busy_limit = 2
    with rig.drivers.ingress.answering():
        for name in ("a", "b", "c", "d"):
            rig.drivers.start(name)
        await asyncio.sleep(0)
        assert rig.names() == ["a", "b"] and len(rig.drivers) == 4
        with rig.drivers.ingress.answering():  # another callback, ending first
            pass
        await asyncio.sleep(0)
        assert rig.names() == ["a", "b"]
    await asyncio.sleep(0)  # the last callback answered: the waiting ones start
    assert rig.names() == ["a", "b", "c", "d"]
    for name in "abcd":
        await rig.end(name)
    assert len(rig.drivers) == 0
