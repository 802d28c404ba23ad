"""TaskRouter lifecycles through the official client: reservations, timeouts, callbacks."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from flex_bridge.emulator.seed import SeedOptions
from tests.support.emulator import Admin, CallbackServer, RunningEmulator, twilio_client, ws


async def pending_reservation(client: Any, running: RunningEmulator, task_sid: str) -> Any:
    reservations = await ws(client, running).tasks(task_sid).reservations.list_async()
    assert len(reservations) == 1
    return reservations[0]


async def test_task_is_reserved_accepted_wrapped_and_completed(
    client: Any, emulator: RunningEmulator
) -> None:
    task = await ws(client, emulator).tasks.create_async(attributes=json.dumps({"type": "x"}))
    fetched = await ws(client, emulator).tasks(task.sid).fetch_async()
    assert fetched.assignment_status == "reserved"
    res = await pending_reservation(client, emulator, task.sid)
    assert res.reservation_status == "pending"
    res = (
        await ws(client, emulator)
        .tasks(task.sid)
        .reservations(res.sid)
        .update_async(reservation_status="accepted")
    )
    assert res.reservation_status == "accepted"
    assert (await ws(client, emulator).tasks(task.sid).fetch_async()).assignment_status == (
        "assigned"
    )
    res = (
        await ws(client, emulator)
        .workers(res.worker_sid)
        .reservations(res.sid)
        .update_async(reservation_status="wrapping")
    )
    assert res.reservation_status == "wrapping"
    res = (
        await ws(client, emulator)
        .tasks(task.sid)
        .reservations(res.sid)
        .update_async(reservation_status="completed")
    )
    assert res.reservation_status == "completed"
    done = await ws(client, emulator).tasks(task.sid).fetch_async()
    assert done.assignment_status == "completed"


async def test_second_accept_is_refused_with_20001(client: Any, emulator: RunningEmulator) -> None:
    task = await ws(client, emulator).tasks.create_async(attributes="{}")
    res = await pending_reservation(client, emulator, task.sid)
    await (
        ws(client, emulator)
        .tasks(task.sid)
        .reservations(res.sid)
        .update_async(reservation_status="accepted")
    )
    with pytest.raises(TwilioRestException) as caught:
        await (
            ws(client, emulator)
            .tasks(task.sid)
            .reservations(res.sid)
            .update_async(reservation_status="accepted")
        )
    assert caught.value.status == 400
    assert caught.value.code == 20001
    assert "accepted" in caught.value.msg


@pytest.mark.parametrize(
    ("instruction", "code"), [("conference", 40136), ("dequeue", 40135), ("call", 40114)]
)
async def test_instruction_after_accept_is_refused(
    client: Any, emulator: RunningEmulator, instruction: str, code: int
) -> None:
    task = await ws(client, emulator).tasks.create_async(attributes="{}")
    res = await pending_reservation(client, emulator, task.sid)
    await (
        ws(client, emulator)
        .tasks(task.sid)
        .reservations(res.sid)
        .update_async(reservation_status="accepted")
    )
    with pytest.raises(TwilioRestException) as caught:
        await (
            ws(client, emulator)
            .tasks(task.sid)
            .reservations(res.sid)
            .update_async(
                instruction=instruction, call_url="https://example.com/twiml", call_from="+15550100"
            )
        )
    assert caught.value.status == 400
    assert caught.value.code == code


async def test_conference_instruction_is_recorded_and_accepts_once_answered(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    task = await ws(client, emulator).tasks.create_async(
        attributes='{"call_sid": "CA' + "0" * 32 + '"}', task_channel="voice"
    )
    res = await pending_reservation(client, emulator, task.sid)
    res = (
        await ws(client, emulator)
        .tasks(task.sid)
        .reservations(res.sid)
        .update_async(instruction="conference", from_="+15550100")
    )
    assert res.reservation_status == "pending"  # the worker's leg rings (5 s by default)
    await admin.advance(5)
    res = await ws(client, emulator).tasks(task.sid).reservations(res.sid).fetch_async()
    assert res.reservation_status == "accepted"
    recorded = emulator.call(
        lambda emu: emu.taskrouter.workspaces[res.workspace_sid].reservations[res.sid].instructions
    )
    assert recorded[0]["instruction"] == "conference"


async def test_reject_reoffers_to_another_worker(client: Any, emulator: RunningEmulator) -> None:
    task = await ws(client, emulator).tasks.create_async(attributes="{}")
    first = await pending_reservation(client, emulator, task.sid)
    await (
        ws(client, emulator)
        .tasks(task.sid)
        .reservations(first.sid)
        .update_async(reservation_status="rejected")
    )
    reservations = await ws(client, emulator).tasks(task.sid).reservations.list_async()
    statuses = sorted((r.reservation_status, r.worker_sid) for r in reservations)
    assert [s for s, _ in statuses] == ["pending", "rejected"]
    assert statuses[0][1] != statuses[1][1]


async def test_reservation_times_out_on_the_clock(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    task = await ws(client, emulator).tasks.create_async(attributes="{}")
    res = await pending_reservation(client, emulator, task.sid)
    await admin.advance(119)
    res = await ws(client, emulator).tasks(task.sid).reservations(res.sid).fetch_async()
    assert res.reservation_status == "pending"
    await admin.advance(1.5)
    res = await ws(client, emulator).tasks(task.sid).reservations(res.sid).fetch_async()
    assert res.reservation_status == "timeout"
    worker = await ws(client, emulator).workers(res.worker_sid).fetch_async()
    assert worker.activity_name == "Offline"
    # The task went back and was offered to the next worker.
    reservations = await ws(client, emulator).tasks(task.sid).reservations.list_async()
    assert sorted(r.reservation_status for r in reservations) == ["pending", "timeout"]
    with pytest.raises(TwilioRestException) as caught:
        await (
            ws(client, emulator)
            .tasks(task.sid)
            .reservations(res.sid)
            .update_async(reservation_status="accepted")
        )
    assert caught.value.status == 400
    assert "timeout" in caught.value.msg


async def test_assignment_callback_is_signed_and_accept_honoured(
    start_emulator: Callable[..., RunningEmulator], callbacks: CallbackServer
) -> None:
    async def accept(_: Any) -> web.StreamResponse:
        return web.json_response({"instruction": "accept"})

    callbacks.answer = accept
    running = start_emulator(options=SeedOptions(assignment_url=callbacks.url + "/assignment"))
    client = twilio_client(running)
    try:
        task = await ws(client, running).tasks.create_async(attributes='{"from":"x"}')
        await callbacks.wait_for(lambda got: len(got) >= 1)
        got = callbacks.received[0]
        assert set(got.form) == {
            "Timestamp",
            "AccountSid",
            "WorkspaceSid",
            "WorkflowSid",
            "TaskQueueSid",
            "WorkerSid",
            "WorkerAttributes",
            "TaskSid",
            "TaskAttributes",
            "TaskAge",
            "TaskPriority",
            "ReservationSid",
        }
        validator = RequestValidator(running.config.auth_token)
        assert validator.validate(
            callbacks.url + "/assignment", got.form, got.headers["X-Twilio-Signature"]
        )
        for _ in range(100):
            res = (
                await ws(client, running)
                .tasks(task.sid)
                .reservations(got.form["ReservationSid"])
                .fetch_async()
            )
            if res.reservation_status == "accepted":
                break
            import asyncio

            await asyncio.sleep(0.02)
        assert res.reservation_status == "accepted"
    finally:
        await client.http_client.close()
