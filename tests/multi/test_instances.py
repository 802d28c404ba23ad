"""Rule 9 across processes: three bridges on one PostgreSQL journal behind a round-robin proxy.

TaskRouter (the emulator) calls the proxy; every instance checks signatures against the
proxy's URL (``FLEX_BRIDGE_PUBLIC_URL``). Each test asserts from the emulator's REST and
webhook log and from the journal; the waits are generous bounds, never what is asserted.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from tests.multi.conftest import ACCEPT_ALL, DEFER_ALL, Rig, StartRig
from tests.support.bridge import applied_changes, item_writes, reservation_updates, settled_item
from tests.support.instances import eventually

pytestmark = pytest.mark.slow

TAKEOVER_BOUND = 60.0  # a dead driver's lease (15 s) plus sweeps, with a wide margin


def hold_reservation_post(ms: int) -> dict[str, Any]:
    """An emulator fault holding the next reservation change ``ms`` milliseconds."""
    return {
        "product": "taskrouter",
        "method": "POST",
        "path": "/Reservations/",
        "latency_ms": ms,
        "count": 1,
    }


async def first_reservation(rig: Rig) -> tuple[Any, Any]:
    task = await rig.create_task()
    reservations = await eventually(
        lambda: rig.reservations(task.sid), "the task's reservation", rig.output
    )
    return task, reservations[0]


async def answered_callback(rig: Rig, reservation_sid: str) -> dict[str, Any]:
    """The emulator's assignment callback attempt for the reservation, once answered."""
    attempts: list[dict[str, Any]] = await eventually(
        lambda: rig.webhooks("assignment", reservation_sid),
        f"the assignment callback of {reservation_sid}",
        rig.output,
    )
    assert attempts[0]["status"] == 200, attempts[0]
    return attempts[0]


async def settled(rig: Rig, reservation_sid: str, timeout: float = 30.0) -> dict[str, Any]:
    item: dict[str, Any] = await eventually(
        lambda: settled_item(rig.admin, reservation_sid),
        f"the Sync item of {reservation_sid} to settle",
        rig.output,
        timeout=timeout,
    )
    return item


async def intent_rows(rig: Rig, reservation_sid: str) -> list[Any]:
    return await rig.sql(
        "SELECT intent_id, state, op, source FROM intents WHERE reservation_sid = $1",
        reservation_sid,
    )


async def unsettled(rig: Rig) -> list[Any]:
    return await rig.sql("SELECT intent_id, state FROM intents WHERE state <> 'settled'")


# ------------------------------------------------------------------ 1. one callback, three times
async def test_one_assignment_callback_on_every_instance_changes_the_reservation_once(
    start_rig: StartRig,
) -> None:
    rig = await start_rig(ACCEPT_ALL)
    # The first accept is held, so that the copies arrive while it is in flight.
    await rig.admin.faults([hold_reservation_post(1500)])
    _task, reservation = await first_reservation(rig)
    callback = await answered_callback(rig, reservation.sid)
    assert callback["url"] == rig.proxy.url + "/taskrouter/assignment", callback

    # The same callback, as TaskRouter signed it (for the proxy's URL), to each instance.
    params: dict[str, str] = callback["params"]
    signature = rig.validator.compute_signature(callback["url"], params)

    async def deliver(url: str) -> tuple[int, Any]:
        async with rig.session.post(
            url + "/taskrouter/assignment", data=params, headers={"X-Twilio-Signature": signature}
        ) as answer:
            return answer.status, await answer.json(content_type=None)

    answers = await asyncio.gather(*(deliver(url) for url in rig.instances.urls))
    assert answers == [(200, {})] * 3, answers

    item = await settled(rig, reservation.sid)
    assert (item["phase"], item["reservation_status"], item["op"]) == (
        "applied",
        "accepted",
        "accept",
    )
    entries = await rig.admin.log("rest")
    [accept] = applied_changes(entries, reservation.sid)
    assert len(reservation_updates(entries, reservation.sid)) == 1, "a change was sent again"
    assert accept["form"]["ReservationStatus"] == "accepted"
    writes = item_writes(entries, reservation.sid)
    assert [w["data"]["phase"] for w in writes] == ["pending", "applied"]
    [row] = await intent_rows(rig, reservation.sid)
    assert (row["intent_id"], row["state"]) == (item["intent_id"], "settled")
    assert await unsettled(rig) == []


# -------------------------------------------------------------- 2. a double click, two instances
async def test_a_double_click_on_two_instances_sends_one_change(start_rig: StartRig) -> None:
    rig = await start_rig(DEFER_ALL)
    task, reservation = await first_reservation(rig)
    await answered_callback(rig, reservation.sid)  # deferred: {}
    token = await rig.admin.token(reservation.worker_sid, ["agent"])

    async def click(url: str) -> tuple[int, Any]:
        async with rig.session.post(
            f"{url}/flex/reservations/{reservation.sid}/accept?wait=30",
            json={"task_sid": task.sid},
            headers={"Authorization": f"Bearer {token}"},
        ) as answer:
            return answer.status, await answer.json()

    answers = await asyncio.gather(click(rig.instances[0].url), click(rig.instances[1].url))

    assert [status for status, _ in answers] == [200, 200], answers
    intents = {body["intent"]["intent_id"] for _, body in answers}
    assert len(intents) == 1, answers
    for _, body in answers:
        assert body["intent"]["phase"] == "applied", body
        assert body["intent"]["reservation_status"] == "accepted", body
    entries = await rig.admin.log("rest")
    [accept] = applied_changes(entries, reservation.sid)
    assert len(reservation_updates(entries, reservation.sid)) == 1, "a change was sent again"
    assert accept["form"]["ReservationStatus"] == "accepted"
    [row] = await intent_rows(rig, reservation.sid)
    assert (row["intent_id"], row["state"]) == (intents.pop(), "settled")
    assert (await rig.reservation(task.sid, reservation.sid)).reservation_status == "accepted"


# ------------------------------------------------------- 3. the driver killed mid-REST call
async def test_the_driver_killed_during_its_rest_call_another_settles_without_a_second_change(
    start_rig: StartRig,
) -> None:
    rig = await start_rig(ACCEPT_ALL)
    await rig.admin.faults([hold_reservation_post(5000)])
    task, reservation = await first_reservation(rig)

    async def driver() -> Any:
        rows = await rig.sql(
            "SELECT i.intent_id, i.state, l.owner FROM intents i "
            "JOIN leases l ON l.name = i.intent_id "
            "WHERE i.reservation_sid = $1 AND l.expires_at > extract(epoch FROM now())",
            reservation.sid,
        )
        return rows[0] if rows and rows[0]["state"] == "announced" else None

    async def held() -> bool:  # the accept has reached the emulator, which holds it
        _, body, _ = await rig.admin.request("GET", "/_emulator/faults")
        return bool(body["rules"][0]["hits"] == 1)

    row = await eventually(driver, "an instance driving the intent", rig.output)
    await eventually(held, "the accept to be held by the emulator", rig.output)
    victim = rig.instances.named(row["owner"])
    mark = (await rig.admin.log())[-1]["seq"]
    victim.kill()
    assert victim.proc is not None and victim.proc.returncode == -signal.SIGKILL

    item = await settled(rig, reservation.sid, timeout=TAKEOVER_BOUND)
    assert not victim.alive
    assert item["intent_id"] == row["intent_id"], item
    assert (item["phase"], item["reservation_status"]) == ("applied", "accepted"), item
    entries = await rig.admin.log("rest")
    applied = applied_changes(entries, reservation.sid)
    assert len(applied) == 1, f"{len(applied)} applied changes: {applied}"
    # The new owner fetched the reservation (rule 3) after the kill.
    fetches = [
        e
        for e in entries
        if e["seq"] > mark
        and e.get("method") == "GET"
        and e.get("path", "").endswith(f"/Reservations/{reservation.sid}")
    ]
    assert fetches, "the reservation was not fetched after the driver died"
    if applied[0]["seq"] < fetches[0]["seq"]:  # the held accept went through: never sent again
        assert len(reservation_updates(entries, reservation.sid)) == 1
    [intent] = await intent_rows(rig, reservation.sid)
    assert intent["state"] == "settled"
    assert await unsettled(rig) == []
    assert (await rig.reservation(task.sid, reservation.sid)).reservation_status == "accepted"


# ---------------------------------------------------- 4. killed right after an event's 204
async def test_an_event_acknowledged_by_an_instance_killed_before_applying_it_reaches_the_channel(
    start_rig: StartRig,
) -> None:
    event = "reservation.accepted"
    rig = await start_rig(DEFER_ALL, {0: f"inbox:{event}"})
    victim = rig.instances[0]
    task, reservation = await first_reservation(rig)
    await answered_callback(rig, reservation.sid)  # deferred: no intent of the bridge's

    # Accepted in Flex itself (not through the bridge); its event goes to the victim.
    rig.proxy.prefer(victim.url)
    await (
        rig.ws.tasks(task.sid)
        .reservations(reservation.sid)
        .update_async(reservation_status="accepted")
    )
    assert await victim.exited() == -signal.SIGKILL, victim.output()
    rig.proxy.prefer(None)

    deliveries = [
        e for e in await rig.webhooks("event", reservation.sid) if e["params"]["EventType"] == event
    ]
    assert [d["status"] for d in deliveries] == [204], deliveries
    item = await settled(rig, reservation.sid)
    assert (item["source"], item["reservation_status"], item["phase"]) == (
        "taskrouter",
        "accepted",
        "applied",
    ), item
    [inbox] = await rig.sql(
        "SELECT lease_owner, done_at FROM inbox WHERE key LIKE $1",
        f"event:{event}:{reservation.sid}:%",
    )
    assert inbox["done_at"] is not None
    assert inbox["lease_owner"] in {i.name for i in rig.instances.all} - {victim.name}, inbox
    # The only change is the test's own accept: the bridge made none.
    assert len(reservation_updates(await rig.admin.log("rest"), reservation.sid)) == 1
    assert await intent_rows(rig, reservation.sid) != []  # the observation, journaled
