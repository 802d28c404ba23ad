"""A callback the journal cannot record is answered 503, never acknowledged as handled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart.typing import TestClientProtocol as Client

from flex_bridge.adapters.journal import SqliteJournal
from flex_bridge.app.metrics import Metrics
from flex_bridge.app.services import Services
from flex_bridge.domain.intents import Intent
from flex_bridge.errors import JournalError
from flex_bridge.settings import Settings
from flex_bridge.web import create_app
from tests.support.clock import Clock
from tests.support.fakes import WK, WR, WT, FakeChannel, FakeTaskRouter
from tests.test_reconcile import services, signed_post


class BrokenJournal(SqliteJournal):
    """Opens, then cannot record anything (read-only, locked, the database gone)."""

    async def submit(self, intent: Intent) -> tuple[Intent, bool]:
        raise JournalError("the journal at journal.db is read-only")

    async def submit_leased(
        self, intent: Intent, owner: str, ttl: float
    ) -> tuple[Intent, bool, int | None]:
        raise JournalError("the journal at journal.db is read-only")

    async def inbox_put(self, key: str, body: dict[str, str]) -> bool:
        raise JournalError("the journal at journal.db is read-only")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    journal = BrokenJournal(tmp_path / "journal.db", clock=Clock())
    await journal.open()
    policy: dict[str, object] = {"assignment": {"rules": [{"name": "all", "op": "accept"}]}}
    built = services(journal, FakeTaskRouter(), FakeChannel(), Clock(), policy)

    async def factory(settings: Settings, metrics: Metrics) -> Services:
        return built

    app = create_app(built.settings, services=factory)
    async with app.test_app() as running:
        yield running.test_client()
    await journal.close()


async def test_an_assignment_callback_that_cannot_be_recorded_is_503(
    client: Client,
) -> None:
    form = {"ReservationSid": WR, "TaskSid": WT, "WorkerSid": WK, "TaskAttributes": "{}"}
    status, body = await signed_post(client, "/taskrouter/assignment", form)
    assert status == 503, body
    assert body["error"]["code"] == "journal_unavailable"


async def test_an_event_that_cannot_be_recorded_is_503(client: Client) -> None:
    event = {"EventType": "reservation.accepted", "ResourceSid": WR, "Timestamp": "1700000000"}
    status, body = await signed_post(client, "/taskrouter/events", event)
    assert status == 503, body
    assert body["error"]["code"] == "journal_unavailable"
