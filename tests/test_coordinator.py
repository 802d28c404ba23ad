"""The coordinator over in-memory ports: paths the emulator cannot stage on demand."""

from __future__ import annotations

import contextvars
from typing import Any

from flex_bridge.app.coordinator import Coordinator
from flex_bridge.app.recovery import Recovery
from flex_bridge.domain.protocol import INSTRUCTION_GRACE
from flex_bridge.domain.types import Op
from tests.support.clock import Clock
from tests.support.coordinators import make_coordinator
from tests.support.fakes import WK, WR, WT, FakeChannel, FakeReservations


async def make(
    status: str = "pending",
) -> tuple[Coordinator, FakeReservations, FakeChannel, Clock]:
    return await make_coordinator(status)


async def instructed(coord: Coordinator, op: Op, params: dict[str, Any]) -> str:
    intent, created = await coord.submit(
        op=op,
        reservation_sid=WR,
        task_sid=WT,
        worker_sid=WK,
        source="policy",
        params=params,
        deadline=None,
        via="instruction",
    )
    assert created
    intent = await coord.announce_only(intent, 1.0)
    intent = await coord.mark_instructed(intent)
    assert intent.state == "instructed"
    return intent.intent_id


async def test_an_instruction_reply_is_never_resent_and_settles_when_the_offer_ends() -> None:
    """Rule 8: a reply that went out is never sent again over REST. If TaskRouter never got
    it, the reservation times out; recovery (its event lost) then settles the item failed."""
    coord, tr, channel, clock = await make()
    intent_id = await instructed(coord, "accept", {})
    for _ in range(3):  # within the grace, and long after it: nothing is sent
        await Recovery(coord).sweep()
        await coord.idle()
        clock.now += INSTRUCTION_GRACE + 1
    assert tr.forms == []
    waiting = await coord.journal.get(intent_id)
    assert waiting is not None and waiting.state == "instructed"
    tr.set_status("timeout")  # the offer ended; its event was lost
    await Recovery(coord).sweep()
    await coord.idle()
    assert tr.forms == []
    settled = await coord.journal.get(intent_id)
    assert settled is not None and settled.state == "settled" and settled.outcome == "failed"
    assert channel.written[-1]["phase"] == "failed"
    assert channel.written[-1]["reservation_status"] == "timeout"
    await coord.journal.close()


async def submit_conference(coord: Coordinator) -> str:
    intent, created = await coord.submit(
        op="conference",
        reservation_sid=WR,
        task_sid=WT,
        worker_sid=WK,
        source="plugin",
        params={"from": "+15550100"},
        deadline=None,
    )
    assert created
    await coord.idle()
    return intent.intent_id


async def test_a_ringing_conference_stays_pending_until_taskrouter_says_accepted() -> None:
    coord, tr, channel, clock = await make()
    tr.voice_rings = True  # TaskRouter takes the conference; the agent's leg rings
    intent_id = await submit_conference(coord)
    ringing = await coord.journal.get(intent_id)
    assert ringing is not None and ringing.state == "instructed"
    assert [w["phase"] for w in channel.written] == ["pending"]
    for _ in range(3):  # recovery sweeps, long after the grace: never a second conference
        clock.now += INSTRUCTION_GRACE + 1
        await Recovery(coord).sweep()
        await coord.idle()
    assert [f.get("Instruction") for f in tr.forms] == ["conference"]
    assert [w["phase"] for w in channel.written] == ["pending"]
    tr.set_status("accepted")  # the agent answered
    await coord.follow("accepted", reservation_sid=WR, task_sid=WT, worker_sid=WK)
    await coord.idle()
    settled = await coord.journal.get(intent_id)
    assert settled is not None and settled.outcome == "applied"
    assert channel.written[-1]["phase"] == "applied"
    assert channel.written[-1]["reservation_status"] == "accepted"
    await coord.journal.close()


async def test_a_conference_nobody_answers_settles_failed_on_the_timeout() -> None:
    coord, tr, channel, _ = await make()
    tr.voice_rings = True
    intent_id = await submit_conference(coord)
    tr.set_status("timeout")
    await coord.follow("timeout", reservation_sid=WR, task_sid=WT, worker_sid=WK)
    await coord.idle()
    settled = await coord.journal.get(intent_id)
    assert settled is not None and settled.outcome == "failed"
    assert channel.written[-1]["phase"] == "failed"
    assert [f.get("Instruction") for f in tr.forms] == ["conference"]
    await coord.journal.close()


async def test_a_call_instruction_without_accept_is_never_resent() -> None:
    """A call that does not accept leaves the reservation pending: the item stays pending
    (the call is out; TaskRouter's word settles it), and the call is never made again."""
    coord, tr, channel, clock = await make()
    intent_id = await instructed(coord, "call", {"from": "+15550100", "url": "https://x.test/t"})
    clock.now += INSTRUCTION_GRACE + 1
    await Recovery(coord).sweep()
    await coord.idle()
    assert tr.forms == []
    waiting = await coord.journal.get(intent_id)
    assert waiting is not None and waiting.state == "instructed"
    assert [w["phase"] for w in channel.written] == ["pending"]
    await coord.journal.close()


async def test_a_refused_conference_is_not_reported_applied_when_someone_else_accepted() -> None:
    coord, _, channel, _ = await make(status="accepted")
    intent, _ = await coord.submit(
        op="conference",
        reservation_sid=WR,
        task_sid=WT,
        worker_sid=WK,
        source="plugin",
        params={},
        deadline=None,
    )
    await coord.idle()
    settled = await coord.journal.get(intent.intent_id)
    assert settled is not None
    assert settled.outcome == "failed"
    assert settled.error is not None and settled.error.code == 40136
    assert channel.written[-1]["phase"] == "failed"
    await coord.journal.close()


async def test_an_intent_driver_does_not_keep_its_callers_context() -> None:
    """Started from a request handler, the driver (and its done callback) must not hold the
    handler's context: it would keep the request and its connection alive while in flight."""
    coord, tr, channel, _clock = await make()

    class Held:
        pass

    var: contextvars.ContextVar[Held] = contextvars.ContextVar("request")
    seen: list[Held | None] = []
    publish = channel.publish

    async def recording_publish(worker_sid: str, key: str, data: dict[str, Any]) -> bool:
        seen.append(var.get(None))
        return await publish(worker_sid, key, data)

    channel.publish = recording_publish  # type: ignore[method-assign]
    held = Held()
    var.set(held)
    await coord.submit(
        op="accept",
        reservation_sid=WR,
        task_sid=WT,
        worker_sid=WK,
        source="policy",
        params={},
        deadline=None,
    )
    await coord.idle()
    assert seen and all(s is None for s in seen)
    assert tr.forms == [{"ReservationStatus": "accepted"}]


async def test_a_late_complete_on_a_deleted_task_settles_applied() -> None:
    """Twilio deletes a completed (or canceled) task after a short retention: a complete
    resumed after that meets 404 / 20404, and the agent has nothing left to do."""
    coord, tr, channel, _ = await make("wrapping")
    del tr.reservations[WR]  # the task and its reservations are gone
    intent, _ = await coord.submit(
        op="complete",
        reservation_sid=WR,
        task_sid=WT,
        worker_sid=WK,
        source="plugin",
        params={},
        deadline=None,
    )
    await coord.idle()
    settled = await coord.journal.get(intent.intent_id)
    assert settled is not None and settled.outcome == "applied" and settled.error is None
    assert channel.written[-1]["phase"] == "applied"
    await coord.journal.close()
