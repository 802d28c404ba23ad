"""The shared fakes (``tests.support.fakes``) behave as the ports they stand for."""

from __future__ import annotations

from typing import Any

import pytest

from flex_bridge.domain.ops import RULES, rest_params
from flex_bridge.errors import (
    AmbiguousOutcomeError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PreconditionFailed,
    RejectedError,
    TransientUpstreamError,
)
from tests.support.fakes import (
    UNKNOWN_WORKER,
    WK,
    WR,
    WT,
    FakeChannel,
    FakeOffers,
    FakeReservations,
    FakeTaskRouter,
    FakeTasks,
    FakeTokens,
    op_of,
)

STATUSES = ("pending", "accepted", "rejected", "timeout", "canceled", "wrapping", "completed")
WR2 = "WR" + "b" * 32
WT2 = "WT" + "b" * 32


def params_for(op: str, accept: bool = False) -> dict[str, Any]:
    params: dict[str, Any] = {"task_sid": WT}
    if op in ("call", "dequeue"):
        params["from"] = "+15550100"
    if op in ("call", "redirect"):
        params.update(url="https://x.test/twiml", accept=accept)
    if op == "redirect":
        params["call_sid"] = "CA" + "a" * 32
    return params


# ----------------------------------------------------------------------------- reservations
@pytest.mark.parametrize("op", sorted(RULES))
@pytest.mark.parametrize("status", STATUSES)
async def test_a_reservation_moves_as_the_rules_say(op: str, status: str) -> None:
    fake = FakeReservations.holding(status)
    params = params_for(op, accept=True)
    form = rest_params(op, params)
    assert op_of(form) == op
    rule = RULES[op]
    if status in rule.requires:
        view = await fake.update_reservation(WT, WR, form)
        assert view.status == fake.status() == rule.leads_to_for(params)
        assert [u.outcome for u in fake.updates] == ["ok"]
    else:
        with pytest.raises(ConflictError) as caught:
            await fake.update_reservation(WT, WR, form)
        assert (caught.value.status, caught.value.code) == (400, 40136)
        assert fake.status() == status
        assert [u.outcome for u in fake.updates] == ["refused"]
    assert fake.forms == [form]


@pytest.mark.parametrize("op", ["call", "redirect"])
async def test_an_instruction_that_does_not_accept_leaves_the_reservation_pending(op: str) -> None:
    fake = FakeReservations.holding()
    view = await fake.update_reservation(WT, WR, rest_params(op, params_for(op, accept=False)))
    assert view.status == fake.status() == "pending"


async def test_a_reservation_is_fetched_as_it_is() -> None:
    fake = FakeReservations.holding("accepted")
    view = await fake.fetch_reservation(WT, WR)
    assert (view.sid, view.task_sid, view.worker_sid, view.status) == (WR, WT, WK, "accepted")
    fake.set_status("wrapping")
    assert (await fake.fetch_reservation(WT, WR)).status == "wrapping"
    assert fake.fetches == 2


async def test_an_unknown_reservation_is_not_found_unless_made_up() -> None:
    fake = FakeReservations.holding()
    with pytest.raises(NotFoundError):
        await fake.fetch_reservation(WT, WR2)
    with pytest.raises(NotFoundError):
        await fake.fetch_reservation(WT2, WR)  # on another task
    open_world = FakeReservations(create_unknown=True)
    view = await open_world.fetch_reservation(WT2, WR2)
    assert (view.task_sid, view.worker_sid, view.status) == (WT2, UNKNOWN_WORKER, "pending")


async def test_an_unsupported_form_is_refused_and_recorded() -> None:
    fake = FakeReservations.holding()
    with pytest.raises(RejectedError):
        await fake.update_reservation(WT, WR, {"ReservationStatus": "timeout"})
    assert fake.status() == "pending"
    assert [(u.op, u.outcome) for u in fake.updates] == [("", "error")]


async def test_staged_trouble_on_reservation_updates() -> None:
    fake = FakeReservations.holding()
    accept = rest_params("accept", {})
    injected = ConflictError("someone else", status=400, code=40135)
    fake.trouble = ["5xx", "lost_before", injected, "lost_after"]

    with pytest.raises(TransientUpstreamError):
        await fake.update_reservation(WT, WR, accept)
    with pytest.raises(AmbiguousOutcomeError):
        await fake.update_reservation(WT, WR, accept)
    with pytest.raises(ConflictError) as caught:
        await fake.update_reservation(WT, WR, accept)
    assert caught.value is injected
    assert fake.status() == "pending"  # none of these applied
    with pytest.raises(AmbiguousOutcomeError):
        await fake.update_reservation(WT, WR, accept)
    assert fake.status() == "accepted"  # this one did: only its answer was lost

    assert [u.outcome for u in fake.updates] == ["5xx", "lost_before", "error", "lost_after"]
    assert fake.applied == fake.updates[-1:]


async def test_staged_trouble_on_reservation_fetches() -> None:
    fake = FakeReservations.holding()
    fake.fetch_trouble = ["5xx", NotFoundError("gone", status=404)]
    with pytest.raises(TransientUpstreamError):
        await fake.fetch_reservation(WT, WR)
    with pytest.raises(NotFoundError):
        await fake.fetch_reservation(WT, WR)
    assert (await fake.fetch_reservation(WT, WR)).status == "pending"
    assert fake.fetches == 3


# ------------------------------------------------------------------------------------ tasks
async def test_a_write_with_a_stale_if_match_is_a_412_and_changes_nothing() -> None:
    fake = FakeTasks.holding({"a": 1})
    view = await fake.fetch_task(WT)
    assert view.etag == '"1"'
    written = await fake.update_task(WT, if_match='"1"', attributes='{"a":2}')
    assert written.etag == '"2"'
    with pytest.raises(PreconditionFailed):
        await fake.update_task(WT, if_match='"1"', attributes='{"a":3}')
    assert fake.stored() == {"a": 2}
    assert [w.outcome for w in fake.writes] == ["ok", "412"]


async def test_a_write_without_if_match_is_unconditional() -> None:
    fake = FakeTasks.holding({"a": 1}, priority=2)
    view = await fake.update_task(WT, if_match=None, priority=7)
    assert (view.priority, view.etag, fake.stored()) == (7, '"2"', {"a": 1})


async def test_a_raced_write_meets_the_other_writers_change() -> None:
    fake = FakeTasks.holding({"a": 1})
    fake.trouble = ["raced"]
    with pytest.raises(PreconditionFailed):
        await fake.update_task(WT, if_match='"1"', attributes='{"a":2}')
    assert fake.stored() == {"a": 1, "other_1": 1}
    assert fake.tasks[WT].version == 2


async def test_an_unknown_task_is_not_found_unless_made_up() -> None:
    fake = FakeTasks()
    with pytest.raises(NotFoundError):
        await fake.fetch_task(WT)
    with pytest.raises(NotFoundError):
        await fake.list_reservations(WT)
    made_up = await FakeTasks(create_unknown=True).fetch_task(WT)
    assert (made_up.attributes, made_up.assignment_status, made_up.etag) == (
        "{}",
        "reserved",
        '"1"',
    )


async def test_a_tasks_reservations_come_from_the_linked_reservations() -> None:
    reservations = FakeReservations()
    reservations.add(sid=WR, task_sid=WT)
    reservations.add("rejected", sid=WR2, task_sid=WT)
    reservations.add(sid="WR" + "c" * 32, task_sid=WT2)
    fake = FakeTasks(reservations=reservations)
    fake.add({}, sid=WT)
    listed = await fake.list_reservations(WT)
    assert [(r.sid, r.status) for r in listed] == [(WR, "pending"), (WR2, "rejected")]
    assert await FakeTasks.holding().list_reservations(WT) == []


# ----------------------------------------------------------------------------------- offers
async def test_offers_are_listed_per_task_up_to_the_limit() -> None:
    reservations = FakeReservations()
    fake = FakeOffers(reservations=reservations, default_timeout=90)
    fake.timeouts["WW1"] = 30
    first = reservations.add(sid=WR, task_sid=WT)
    second = reservations.add(sid=WR2, task_sid=WT)
    other = reservations.add(sid="WR" + "c" * 32, task_sid=WT2)
    for stored in (first, second, other):
        fake.offer(stored, workflow_sid="WW1", task_attributes='{"type":"support"}')

    assert [o.reservation.sid for o in await fake.pending_offers()] == [
        first.sid,
        second.sid,
        other.sid,
    ]
    assert [o.reservation.sid for o in await fake.pending_offers(limit=1)] == [WR, WR2]
    reservations.set_status("accepted", WR)  # no longer an offer
    assert [o.reservation.sid for o in await fake.pending_offers()] == [WR2, other.sid]
    assert fake.listings == [1000, 1, 1000]
    assert (await fake.reservation_timeout("WW1"), await fake.reservation_timeout("WW2")) == (
        30,
        90,
    )


# ---------------------------------------------------------------------------------- channel
def item(intent_id: str, phase: str) -> dict[str, Any]:
    return {"v": 1, "intent_id": intent_id, "phase": phase}


async def test_the_channel_never_moves_an_item_backwards() -> None:
    channel = FakeChannel()
    assert await channel.publish(WK, WR, item("in_2", "pending"))
    assert await channel.publish(WK, WR, item("in_2", "applied"))
    assert not await channel.publish(WK, WR, item("in_2", "pending"))  # a later phase stays
    assert not await channel.publish(WK, WR, item("in_1", "applied"))  # a newer intent stays
    assert await channel.publish(WK, WR, item("in_2", "applied"))  # the same: nothing written
    assert await channel.read(WK, WR) == item("in_2", "applied")
    assert await channel.read(WK, WR2) is None
    assert [p.outcome for p in channel.publishes] == [
        "written",
        "written",
        "skipped_behind",
        "skipped_behind",
        "unchanged",
    ]
    assert channel.written == [item("in_2", "pending"), item("in_2", "applied")]


async def test_the_channel_fails_as_told() -> None:
    channel = FakeChannel()
    channel.errors = [TransientUpstreamError("503", status=503)]
    with pytest.raises(TransientUpstreamError):
        await channel.publish(WK, WR, item("in_1", "pending"))
    assert channel.item(WK, WR) is None
    channel.outage = TransientUpstreamError("down")
    for call in (channel.publish(WK, WR, item("in_1", "pending")), channel.read(WK, WR)):
        with pytest.raises(TransientUpstreamError):
            await call
    with pytest.raises(TransientUpstreamError):
        await channel.ping()
    channel.outage = None
    assert await channel.publish(WK, WR, item("in_1", "pending"))
    assert [p.outcome for p in channel.publishes] == ["error", "error", "written"]


# ----------------------------------------------------------------------------------- tokens
async def test_only_known_tokens_are_valid() -> None:
    tokens = FakeTokens()
    agent = tokens.add("agent-token", worker_sid=WK)
    supervisor = tokens.add("sup-token", "sup@example.com", worker_sid=None, roles=("supervisor",))
    assert await tokens.validate("agent-token") == agent
    assert (await tokens.validate("sup-token")).is_supervisor
    assert supervisor.worker_sid is None
    for bad in ("", "forged"):
        with pytest.raises(AuthenticationError):
            await tokens.validate(bad)
    tokens.error = TransientUpstreamError("IAM down")
    with pytest.raises(TransientUpstreamError):
        await tokens.validate("agent-token")
    assert tokens.seen == ["agent-token", "sup-token", "", "forged", "agent-token"]


# ------------------------------------------------------------------------------- taskrouter
async def test_the_taskrouter_counts_its_reads_and_changes() -> None:
    tr = FakeTaskRouter()
    tr.reservations.add()
    tr.tasks.add({})
    await tr.fetch_reservation(WT, WR)
    await tr.fetch_task(WT)
    assert [r.sid for r in await tr.list_reservations(WT)] == [WR]
    await tr.update_reservation(WT, WR, rest_params("accept", {}))
    await tr.update_task(WT, if_match='"1"', attributes='{"a":1}')
    assert (tr.reads, tr.changes) == (3, 2)
    assert await tr.pending_offers() == []
    assert await tr.reservation_timeout("WW1") == 120
    await tr.ping()
    tr.ping_error = TransientUpstreamError("down")
    with pytest.raises(TransientUpstreamError):
        await tr.ping()
    assert tr.pings == 2
