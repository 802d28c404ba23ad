"""The reconciliation sweep over a real journal and the complete fakes: items follow
TaskRouter when its events were lost, old items are renewed, one instance sweeps at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from quart.typing import TestClientProtocol as Client
from twilio.request_validator import RequestValidator

from flex_bridge.adapters.journal import Journal, SqliteJournal
from flex_bridge.app.coordinator import Coordinator
from flex_bridge.app.events import HandlerRegistry
from flex_bridge.app.metrics import Metrics
from flex_bridge.app.reconcile import Reconciler, gone_status
from flex_bridge.app.services import Services
from flex_bridge.domain.policy import parse_policy
from flex_bridge.settings import Settings
from tests.support.clock import Clock
from tests.support.fakes import WK, WR, WT, FakeChannel, FakeTaskRouter, FakeTokens


@dataclass
class Rig:
    svc: Services
    tr: FakeTaskRouter
    channel: FakeChannel
    clock: Clock

    async def accepted_by_plugin(self, reservation_sid: str = WR) -> None:
        """An accept the bridge made and settled: the item shows accepted."""
        intent, _ = await self.svc.coordinator.submit(
            op="accept",
            reservation_sid=reservation_sid,
            task_sid=WT,
            worker_sid=WK,
            source="plugin",
            params={},
            deadline=None,
        )
        await self.svc.coordinator.idle()
        settled = await self.svc.journal.get(intent.intent_id)
        assert settled is not None and settled.outcome == "applied"


AUTH_TOKEN = "token"  # what ``services`` configures


async def signed_post(client: Client, path: str, form: dict[str, str]) -> tuple[int, Any]:
    """A TaskRouter callback to an app built over ``services``, signed with its token."""
    signature = RequestValidator(AUTH_TOKEN).compute_signature(f"http://localhost{path}", form)
    response = await client.post(
        path,
        data=urlencode(form),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
    )
    return response.status_code, await response.get_json()


def services(
    journal: Journal,
    tr: FakeTaskRouter,
    channel: FakeChannel,
    clock: Clock,
    policy: dict[str, object],
) -> Services:
    settings = Settings(
        account_sid="AC" + "f" * 32,
        auth_token=AUTH_TOKEN,
        workspace_sid="WS" + "f" * 32,
        sync_service_sid="IS" + "f" * 32,
        journal="journal.db",
        policy=parse_policy(policy),
    )
    metrics = Metrics()
    coordinator = Coordinator(journal, channel, tr, settings.policy, metrics=metrics, clock=clock)
    return Services(
        settings=settings,
        metrics=metrics,
        journal=journal,
        taskrouter=tr,
        channel=channel,
        tokens=FakeTokens(),
        coordinator=coordinator,
        handlers=HandlerRegistry(metrics),
    )


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = Clock()
    journal = SqliteJournal(tmp_path / "journal.db", clock=clock)
    await journal.open()
    tr, channel = FakeTaskRouter(), FakeChannel()
    tr.reservations.add("pending")
    yield Rig(services(journal, tr, channel, clock, {}), tr, channel, clock)
    await journal.close()


async def test_an_item_follows_taskrouter_when_its_event_was_lost(rig: Rig) -> None:
    await rig.accepted_by_plugin()
    rig.tr.reservations.set_status("wrapping")  # the agent wrapped up in Flex; event lost
    report = await Reconciler(rig.svc).sweep()
    assert report is not None and (report.checked, report.repaired) == (1, 1)
    await rig.svc.coordinator.idle()
    last = rig.channel.written[-1]
    assert (last["reservation_status"], last["phase"], last["source"]) == (
        "wrapping",
        "applied",
        "taskrouter",
    )
    assert rig.tr.reservations.forms == [{"ReservationStatus": "accepted"}]  # nothing sent


async def test_a_reservation_taskrouter_no_longer_knows_is_taken_as_ended(rig: Rig) -> None:
    await rig.accepted_by_plugin()
    del rig.tr.reservations.reservations[WR]  # finished, and deleted after the retention
    await Reconciler(rig.svc).sweep()
    await rig.svc.coordinator.idle()
    assert rig.channel.written[-1]["reservation_status"] == "completed"
    assert gone_status("pending") == "canceled" and gone_status(None) == "canceled"


async def test_an_item_in_step_with_taskrouter_is_left_alone(rig: Rig) -> None:
    await rig.accepted_by_plugin()
    writes = len(rig.channel.written)
    report = await Reconciler(rig.svc).sweep()
    assert report is not None and (report.checked, report.repaired, report.renewed) == (1, 0, 0)
    assert len(rig.channel.written) == writes


async def test_an_old_item_of_an_active_reservation_is_written_again(rig: Rig) -> None:
    await rig.accepted_by_plugin()
    writes = len(rig.channel.written)
    rig.clock.now += rig.svc.settings.policy.sync.item_ttl * 0.6  # more than half its TTL
    report = await Reconciler(rig.svc).sweep()
    assert report is not None and report.renewed == 1
    assert len(rig.channel.written) == writes + 1
    assert rig.channel.written[-1]["reservation_status"] == "accepted"
    report = await Reconciler(rig.svc).sweep()  # renewed: not again at once
    assert report is not None and report.renewed == 0


async def test_one_instance_sweeps_at_a_time(rig: Rig, tmp_path: Path) -> None:
    other = services(rig.svc.journal, rig.tr, rig.channel, rig.clock, {})
    assert other.coordinator.ownership.owner != rig.svc.coordinator.ownership.owner
    assert await Reconciler(rig.svc).sweep() is not None
    assert await Reconciler(other).sweep() is None  # the lease is held
    rig.clock.now += rig.svc.settings.policy.reconcile.interval * 2 + 1  # the holder died
    assert await Reconciler(other).sweep() is not None


async def test_the_sweeps_budget_bounds_its_fetches_and_it_goes_on_where_it_stopped(
    tmp_path: Path,
) -> None:
    clock = Clock()
    journal = SqliteJournal(tmp_path / "journal.db", clock=clock)
    await journal.open()
    tr, channel = FakeTaskRouter(), FakeChannel()
    svc = services(journal, tr, channel, clock, {"reconcile": {"budget": 2}})
    sids = [f"WR{n:032x}" for n in range(5)]
    for sid in sids:
        tr.reservations.add("pending", sid=sid)
        clock.now += 1
        rig = Rig(svc, tr, channel, clock)
        await rig.accepted_by_plugin(sid)
    reconciler = Reconciler(svc)
    before = tr.reservations.fetches
    seen = []
    for _ in range(3):
        report = await reconciler.sweep()
        assert report is not None and report.checked <= 2
        seen.append(report.checked)
    assert tr.reservations.fetches - before == sum(seen) == 5
    await journal.close()
