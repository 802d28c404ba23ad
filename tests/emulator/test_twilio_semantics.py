"""Twilio behaviours a lenient emulator would hide: lists without attributes, tasks the system
deletes, the two-week task timeout, and the Max Assignment Count. Through the official client.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException

from tests.support.emulator import Admin, RunningEmulator, ws

ATTRIBUTES = json.dumps({"type": "support", "customer": "c-1"})


async def pending(client: Any, running: RunningEmulator, task_sid: str) -> Any:
    [res] = (
        await ws(client, running)
        .tasks(task_sid)
        .reservations.list_async(reservation_status="pending")
    )
    return res


async def not_found(call: Any) -> None:
    with pytest.raises(TwilioRestException) as caught:
        await call
    assert (caught.value.status, caught.value.code) == (404, 20404)


async def events_of(client: Any, running: RunningEmulator, **filters: Any) -> list[Any]:
    events: list[Any] = await ws(client, running).events.list_async(**filters)
    return events


# ----------------------------------------------------------------- lists carry no attributes


async def test_lists_of_tasks_and_workers_carry_no_attributes(
    client: Any, emulator: RunningEmulator
) -> None:
    api = ws(client, emulator)
    created = await api.tasks.create_async(attributes=ATTRIBUTES)
    assert created.attributes == ATTRIBUTES  # create answers one task: attributes shown
    updated = await api.tasks(created.sid).update_async(attributes=ATTRIBUTES)
    assert updated.attributes == ATTRIBUTES
    for listed in (
        await api.tasks.list_async(),
        await api.tasks.list_async(assignment_status=["reserved"]),
        await api.tasks.list_async(evaluate_task_attributes="type == 'support'"),
    ):
        assert [t.sid for t in listed] == [created.sid]
        assert listed[0].attributes is None
    assert (await api.tasks(created.sid).fetch_async()).attributes == ATTRIBUTES

    workers = await api.workers.list_async()
    assert workers and all(w.attributes is None for w in workers)
    available = await api.workers.list_async(available="true")
    assert available and all(w.attributes is None for w in available)
    fetched = await api.workers(workers[0].sid).fetch_async()
    assert json.loads(fetched.attributes)["skills"] == ["support"]


# --------------------------------------------------------------- tasks the system deletes


async def test_a_completed_task_is_deleted_after_five_minutes(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    api = ws(client, emulator)
    task = await api.tasks.create_async(attributes=ATTRIBUTES)
    res = await pending(client, emulator, task.sid)
    await api.tasks(task.sid).reservations(res.sid).update_async(reservation_status="accepted")
    await api.tasks(task.sid).update_async(assignment_status="completed", reason="done")
    await admin.advance(299)
    assert (await api.tasks(task.sid).fetch_async()).assignment_status == "completed"
    await admin.advance(1.1)
    await not_found(api.tasks(task.sid).fetch_async())
    await not_found(api.tasks(task.sid).reservations(res.sid).fetch_async())
    await not_found(api.workers(res.worker_sid).reservations(res.sid).fetch_async())
    assert res.sid not in [
        r.sid for r in await api.workers(res.worker_sid).reservations.list_async()
    ]
    assert task.sid not in [t.sid for t in await api.tasks.list_async()]
    [deleted] = await events_of(client, emulator, event_type="task.deleted")
    assert deleted.resource_sid == task.sid
    assert deleted.event_data["TaskAssignmentStatus"] == "completed"


async def test_a_canceled_task_is_deleted_after_the_retention_set_by_the_admin_api(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    status, body, _ = await admin.request(
        "POST", "/_emulator/tasks/retention", json_body={"finished": 60}
    )
    assert (status, body) == (200, {"finished": 60.0, "assigned": 86_400.0})
    api = ws(client, emulator)
    task = await api.tasks.create_async(attributes=ATTRIBUTES)
    await api.tasks(task.sid).update_async(assignment_status="canceled", reason="gone")
    await admin.advance(59)
    assert (await api.tasks(task.sid).fetch_async()).reason == "gone"
    await admin.advance(1.1)
    await not_found(api.tasks(task.sid).fetch_async())
    for bad in ({"finished": -1}, {"later": 1}, {}, {"assigned": "1"}):
        status, _, _ = await admin.request("POST", "/_emulator/tasks/retention", json_body=bad)
        assert status == 400, bad


async def test_a_task_still_assigned_after_24_hours_is_deleted_by_the_system(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    api = ws(client, emulator)
    task = await api.tasks.create_async(attributes=ATTRIBUTES, timeout=3600)
    res = await pending(client, emulator, task.sid)
    await admin.advance(100)
    await api.tasks(task.sid).reservations(res.sid).update_async(reservation_status="accepted")
    # The task's TTL runs only until it is assigned: an assigned task is not canceled.
    await admin.advance(3600)
    assert (await api.tasks(task.sid).fetch_async()).assignment_status == "assigned"
    await api.tasks(task.sid).update_async(assignment_status="wrapping")
    await admin.advance(86_400 - 3600 - 1)
    assert (await api.tasks(task.sid).fetch_async()).assignment_status == "wrapping"
    await admin.advance(1.1)
    await not_found(api.tasks(task.sid).fetch_async())
    [deleted] = await events_of(client, emulator, event_type="task.system-deleted")
    assert deleted.resource_sid == task.sid
    assert not await events_of(client, emulator, event_type="task.deleted")
    # Its worker holds no reservation any more: it can be offered the next task.
    held = emulator.call(
        lambda emu: emu.taskrouter.workspaces[res.workspace_sid].worker_active[res.worker_sid]
    )
    assert held == set()


async def test_a_task_timeout_is_at_most_two_weeks(client: Any, emulator: RunningEmulator) -> None:
    api = ws(client, emulator)
    task = await api.tasks.create_async(attributes=ATTRIBUTES, timeout=1_209_600)
    assert task.timeout == 1_209_600
    with pytest.raises(TwilioRestException) as caught:
        await api.tasks.create_async(attributes=ATTRIBUTES, timeout=1_209_601)
    assert (caught.value.status, caught.value.code) == (400, 20001)
    assert "two weeks" in caught.value.msg


# ---------------------------------------------------------------- the Max Assignment Count


async def test_a_task_reserved_1000_times_is_canceled(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    api = ws(client, emulator)
    task = await api.tasks.create_async(attributes=ATTRIBUTES)
    first = await pending(client, emulator, task.sid)
    # As if this reservation were the task's 999th (998 rejected or timed out before).
    emulator.call(
        lambda emu: setattr(
            emu.taskrouter.workspaces[first.workspace_sid].tasks[task.sid], "assignments", 999
        )
    )
    # The 999th reservation is rejected: the task waits again and is reserved a 1000th time.
    await api.tasks(task.sid).reservations(first.sid).update_async(reservation_status="rejected")
    second = await pending(client, emulator, task.sid)
    assert second.worker_sid != first.worker_sid
    # The 1000th times out (a timeout counts as well as a rejection): the task is canceled.
    await admin.advance(120.1)
    canceled = await api.tasks(task.sid).fetch_async()
    assert canceled.assignment_status == "canceled"
    assert canceled.reason == "Task reached the Max Assignment Count (1000)"
    [event] = await events_of(client, emulator, event_type="task.canceled")
    assert event.event_data["TaskCanceledReason"] == canceled.reason
    types = [e.event_type for e in reversed(await events_of(client, emulator, task_sid=task.sid))]
    assert types[-2:] == ["reservation.timeout", "task.canceled"]
    assert not await api.tasks(task.sid).reservations.list_async(reservation_status="pending")


async def test_a_deleted_task_takes_its_reservations_along(
    client: Any, emulator: RunningEmulator
) -> None:
    api = ws(client, emulator)
    task = await api.tasks.create_async(attributes=ATTRIBUTES)
    res = await pending(client, emulator, task.sid)
    assert await api.tasks(task.sid).delete_async() is True
    await not_found(api.tasks(task.sid).reservations(res.sid).fetch_async())
    await not_found(api.workers(res.worker_sid).reservations(res.sid).fetch_async())
    [canceled] = await events_of(client, emulator, event_type="reservation.canceled")
    assert canceled.resource_sid == res.sid
