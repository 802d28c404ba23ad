"""Issue 13: offers that ended by themselves are counted apart from refused changes, and
going ahead without Sync is counted and logged on every path."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from flex_bridge.app.coordinator import Coordinator
from flex_bridge.domain import protocol
from flex_bridge.domain.intents import Intent
from flex_bridge.domain.policy import parse_policy
from flex_bridge.errors import TransientUpstreamError
from tests.support.coordinators import make_coordinator, submit
from tests.support.fakes import FakeChannel, FakeReservations


@pytest.mark.parametrize(
    ("outcome", "status", "label"),
    [
        ("applied", "accepted", "applied"),
        ("failed", "timeout", "timeout"),
        ("failed", "canceled", "canceled"),
        ("failed", "rescinded", "rescinded"),
        ("failed", "pending", "failed"),  # TaskRouter refused: a failure
        ("failed", "accepted", "failed"),  # another op on an accepted reservation
        ("failed", None, "failed"),
        (None, None, "unknown"),
    ],
)
def test_metric_outcome(outcome: str | None, status: str | None, label: str) -> None:
    assert protocol.metric_outcome(outcome, status) == label


async def coordinator(
    status: str, mode: str = "strict"
) -> tuple[Coordinator, FakeReservations, FakeChannel]:
    policy = parse_policy({"sync": {"mode": mode, "announce_timeout": 0.05}})
    coord, tr, channel, _ = await make_coordinator(status, policy)
    return coord, tr, channel


def sample(coord: Coordinator, name: str, **labels: str) -> float:
    value = coord.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def accept(coord: Coordinator) -> None:
    await submit(coord)
    await coord.idle()


async def test_an_accept_whose_offer_timed_out_is_counted_as_timeout_not_failed() -> None:
    coord, _, _ = await coordinator("timeout")
    await accept(coord)
    counted = {"op": "accept", "source": "policy"}
    assert sample(coord, "flex_bridge_intents_total", **counted, outcome="timeout") == 1
    assert sample(coord, "flex_bridge_intents_total", **counted, outcome="failed") == 0
    await coord.close()
    await coord.journal.close()


@pytest.mark.parametrize(("mode", "went_ahead"), [("degrade", 1), ("strict", 0)])
async def test_an_announce_that_failed_is_counted_and_logged(
    mode: str, went_ahead: int, caplog: pytest.LogCaptureFixture
) -> None:
    coord, tr, channel = await coordinator("pending", mode)
    channel.errors = [TransientUpstreamError("Sync down")] * 50
    with caplog.at_level(logging.WARNING, logger="flex_bridge.coordinator"):
        await accept(coord)
    writes = "flex_bridge_sync_writes_total"
    assert sample(coord, writes, outcome="announce_failed") == 1
    assert sample(coord, writes, outcome="went_ahead_unannounced") == went_ahead
    assert len(tr.forms) == went_ahead  # degrade went ahead; strict changed nothing
    assert any("Sync unavailable" in r.getMessage() for r in caplog.records)
    await coord.close()
    await coord.journal.close()


async def test_an_instruction_reply_whose_announce_timed_out_is_counted_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    coord, _, channel = await coordinator("pending", "degrade")
    channel.errors = [TransientUpstreamError("Sync down")] * 50
    intent, _ = await submit(coord, via="instruction")
    with caplog.at_level(logging.WARNING, logger="flex_bridge.coordinator"):
        announced = await coord.announce_only(intent, 0.0)
    assert announced.state == "announced" and announced.late_announce
    assert sample(coord, "flex_bridge_sync_writes_total", outcome="went_ahead_unannounced") == 1
    assert [r.levelno for r in caplog.records if "Sync unavailable" in r.getMessage()] == [
        logging.WARNING
    ]
    await coord.close()
    await coord.journal.close()


async def test_an_instruction_reply_whose_announce_failed_late_is_counted_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The announce's own window (0.05 s) runs out before the reply's (0.1 s), and the
    journal is slow to record it: the reply's window ends while the failure is being
    recorded, and the failure is still counted, logged and recorded once."""
    coord, _, channel = await coordinator("pending", "degrade")
    channel.errors = [TransientUpstreamError("Sync down")] * 50
    intent, _ = await submit(coord, via="instruction")
    transition = coord.journal.transition

    async def slow(*args: Any, **kwargs: Any) -> Intent | None:
        await asyncio.sleep(0.2)
        return await transition(*args, **kwargs)

    monkeypatch.setattr(coord.journal, "transition", slow)
    with caplog.at_level(logging.WARNING, logger="flex_bridge.coordinator"):
        announced = await coord.announce_only(intent, 0.1)
    assert announced.state == "announced" and announced.late_announce
    writes = "flex_bridge_sync_writes_total"
    assert sample(coord, writes, outcome="announce_failed") == 1
    assert sample(coord, writes, outcome="went_ahead_unannounced") == 1
    assert len([r for r in caplog.records if "Sync unavailable" in r.getMessage()]) == 1
    await coord.close()
    await coord.journal.close()
