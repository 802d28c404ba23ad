"""Voice instructions as TaskRouter runs them: taken at once, settled when the worker answers.

Driven through the official client (REST) and assignment callback replies; the worker's ring
time is set through the admin API and the emulator clock is moved with ``/clock/advance``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException

from flex_bridge.emulator.seed import SeedOptions
from tests.support.emulator import (
    Admin,
    CallbackServer,
    RunningEmulator,
    twilio_client,
    ws,
)

CALL_SID = "CA" + "1" * 32
VOICE_ATTRIBUTES = json.dumps({"call_sid": CALL_SID, "from": "+15550111"})
FROM = "+15550100"


async def voice_task(
    client: Any, running: RunningEmulator, channel: str = "voice", attributes: str | None = None
) -> tuple[Any, Any]:
    """A task on ``channel`` and the pending reservation made for it."""
    task = await ws(client, running).tasks.create_async(
        attributes=VOICE_ATTRIBUTES if attributes is None else attributes, task_channel=channel
    )
    [res] = await ws(client, running).tasks(task.sid).reservations.list_async()
    assert res.reservation_status == "pending"
    return task, res


def reservation(client: Any, running: RunningEmulator, task: Any, res: Any) -> Any:
    return ws(client, running).tasks(task.sid).reservations(res.sid)


async def status_of(client: Any, running: RunningEmulator, task: Any, res: Any) -> str:
    fetched = await reservation(client, running, task, res).fetch_async()
    return str(fetched.reservation_status)


async def set_ring(admin: Admin, worker_sid: str, seconds: float | str | None) -> Any:
    status, body, _ = await admin.request(
        "POST", f"/_emulator/workers/{worker_sid}/ring", json_body={"seconds": seconds}
    )
    assert status == 200, body
    return body


async def refused(call: Any) -> tuple[int, int]:
    with pytest.raises(TwilioRestException) as caught:
        await call
    return caught.value.status, int(caught.value.code or 0)


def dumped(running: RunningEmulator, res_sid: str) -> dict[str, Any]:
    state: dict[str, Any] = running.call(lambda emu: emu.dump())
    for workspace in state["taskrouter"]["workspaces"]:
        for item in workspace["reservations"]:
            if item["sid"] == res_sid:
                return dict(item)
    raise AssertionError(f"{res_sid} not in the state dump")


async def event_types(client: Any, running: RunningEmulator, res_sid: str) -> list[str]:
    events = await ws(client, running).events.list_async(reservation_sid=res_sid)
    return [e.event_type for e in reversed(events)]


# ------------------------------------------------------------------------------ over REST


async def test_conference_rings_then_accepts_when_the_worker_answers(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    task, res = await voice_task(client, emulator)
    await set_ring(admin, res.worker_sid, 8)
    taken = await reservation(client, emulator, task, res).update_async(
        instruction="conference", from_=FROM, timeout=20
    )
    assert taken.reservation_status == "pending"
    ringing = dumped(emulator, res.sid)
    assert ringing["ringing"] == "conference"
    assert ringing["worker_call_sid"].startswith("CA") and len(ringing["worker_call_sid"]) == 34
    assert "reservation.accepted" not in await event_types(client, emulator, res.sid)

    await admin.advance(7.9)
    assert await status_of(client, emulator, task, res) == "pending"
    await admin.advance(0.2)
    assert await status_of(client, emulator, task, res) == "accepted"
    assert (await ws(client, emulator).tasks(task.sid).fetch_async()).assignment_status == (
        "assigned"
    )
    assert await event_types(client, emulator, res.sid) == [
        "reservation.created",
        "reservation.accepted",
    ]
    # Flex records the conference and the worker's call on the voice task.
    fetched = await ws(client, emulator).tasks(task.sid).fetch_async()
    conference = json.loads(fetched.attributes)["conference"]
    assert conference["sid"].startswith("CF")
    assert conference["participants"] == {
        "worker": ringing["worker_call_sid"],
        "customer": CALL_SID,
    }
    assert dumped(emulator, res.sid)["ringing"] is None


async def test_a_ringing_reservation_takes_no_other_instruction_nor_status(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    task, res = await voice_task(client, emulator)
    await set_ring(admin, res.worker_sid, "never")
    await reservation(client, emulator, task, res).update_async(
        instruction="conference", from_=FROM
    )
    target = reservation(client, emulator, task, res)
    assert await refused(target.update_async(instruction="conference", from_=FROM)) == (
        400,
        40136,
    )
    assert await refused(target.update_async(instruction="dequeue", dequeue_from=FROM)) == (
        400,
        40135,
    )
    assert await refused(
        target.update_async(instruction="call", call_from=FROM, call_url="https://x.test/t")
    ) == (400, 40114)
    assert await refused(
        target.update_async(
            instruction="redirect", redirect_call_sid=CALL_SID, redirect_url="https://x.test/t"
        )
    ) == (400, 40123)
    for status in ("accepted", "rejected"):
        with pytest.raises(TwilioRestException) as caught:
            await target.update_async(reservation_status=status)
        assert (caught.value.status, caught.value.code) == (400, 20001)
        assert "ringing" in caught.value.msg
    assert await status_of(client, emulator, task, res) == "pending"


async def test_an_unanswered_call_times_out_after_the_instructions_timeout(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    task, res = await voice_task(client, emulator)
    await set_ring(admin, res.worker_sid, "never")
    await reservation(client, emulator, task, res).update_async(
        instruction="dequeue", dequeue_from=FROM, dequeue_timeout=20
    )
    await admin.advance(19.9)
    assert await status_of(client, emulator, task, res) == "pending"
    await admin.advance(0.2)
    assert await status_of(client, emulator, task, res) == "timeout"
    worker = await ws(client, emulator).workers(res.worker_sid).fetch_async()
    assert worker.activity_name == "Offline"
    # The task went back and was offered to the next worker.
    reservations = await ws(client, emulator).tasks(task.sid).reservations.list_async()
    assert sorted(r.reservation_status for r in reservations) == ["pending", "timeout"]


async def test_the_ring_timeout_defaults_to_60_seconds(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    task, res = await voice_task(client, emulator)
    await set_ring(admin, res.worker_sid, 61)  # answers too late
    await reservation(client, emulator, task, res).update_async(
        instruction="conference", from_=FROM
    )
    await admin.advance(59.9)
    assert await status_of(client, emulator, task, res) == "pending"
    await admin.advance(0.2)
    assert await status_of(client, emulator, task, res) == "timeout"


async def test_the_reservation_timeout_ends_the_ringing_when_it_comes_first(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    task, res = await voice_task(client, emulator)
    await set_ring(admin, res.worker_sid, 30)
    await admin.advance(100)  # 20 s left of the workflow's 120 s
    await reservation(client, emulator, task, res).update_async(
        instruction="call", call_from=FROM, call_url="https://x.test/twiml", call_timeout=60
    )
    await admin.advance(19.9)
    assert await status_of(client, emulator, task, res) == "pending"
    await admin.advance(0.2)
    assert await status_of(client, emulator, task, res) == "timeout"
    assert dumped(emulator, res.sid)["ringing"] is None


async def test_call_with_accept_accepts_first_and_without_waits_for_its_twiml(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    task, res = await voice_task(client, emulator)
    accepted = await reservation(client, emulator, task, res).update_async(
        instruction="call",
        call_from=FROM,
        call_url="https://x.test/twiml",
        call_accept=True,
        call_record="record-from-answer",
    )
    assert accepted.reservation_status == "accepted"
    recorded = dumped(emulator, res.sid)
    assert recorded["worker_call_sid"].startswith("CA")
    assert recorded["instructions"][0]["CallRecord"] == "record-from-answer"

    other, res2 = await voice_task(client, emulator)
    await set_ring(admin, res2.worker_sid, 2)
    taken = await reservation(client, emulator, other, res2).update_async(
        instruction="call", call_from=FROM, call_url="https://x.test/twiml", call_record="false"
    )
    assert taken.reservation_status == "pending"
    await admin.advance(2)
    # Answered: the TwiML runs (not emulated); the reservation waits for it, or for REST.
    assert await status_of(client, emulator, other, res2) == "pending"
    assert dumped(emulator, res2.sid)["ringing"] is None
    assert await refused(
        reservation(client, emulator, other, res2).update_async(
            instruction="conference", from_=FROM
        )
    ) == (400, 40136)
    done = await reservation(client, emulator, other, res2).update_async(
        reservation_status="accepted"
    )
    assert done.reservation_status == "accepted"


async def test_redirect_stays_synchronous(client: Any, emulator: RunningEmulator) -> None:
    task, res = await voice_task(client, emulator)
    redirected = await reservation(client, emulator, task, res).update_async(
        instruction="redirect",
        redirect_call_sid=CALL_SID,
        redirect_url="https://x.test/twiml",
        redirect_accept=True,
    )
    assert redirected.reservation_status == "accepted"


@pytest.mark.parametrize(
    ("channel", "attributes", "instruction", "code"),
    [
        ("chat", VOICE_ATTRIBUTES, "conference", 40142),
        ("sms", VOICE_ATTRIBUTES, "dequeue", 40140),
        ("chat", VOICE_ATTRIBUTES, "call", 40151),
        ("default", VOICE_ATTRIBUTES, "conference", 40142),
        ("voice", '{"type": "support"}', "conference", 40142),
        ("voice", '{"outbound_to": "+15550123"}', "dequeue", 40140),
    ],
)
async def test_voice_instructions_need_a_voice_task_with_a_call(
    client: Any,
    emulator: RunningEmulator,
    channel: str,
    attributes: str,
    instruction: str,
    code: int,
) -> None:
    task, res = await voice_task(client, emulator, channel, attributes)
    fields = {
        "conference": {"from_": FROM},
        "dequeue": {"dequeue_from": FROM},
        "call": {"call_from": FROM, "call_url": "https://x.test/twiml"},
    }[instruction]
    target = reservation(client, emulator, task, res)
    assert await refused(target.update_async(instruction=instruction, **fields)) == (400, code)
    assert await status_of(client, emulator, task, res) == "pending"
    assert dumped(emulator, res.sid)["instructions"] == []


async def test_an_outbound_voice_task_can_be_conferenced(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    task, res = await voice_task(client, emulator, attributes='{"outbound_to": "+15550123"}')
    await set_ring(admin, res.worker_sid, 0)
    await reservation(client, emulator, task, res).update_async(
        instruction="conference", from_=FROM
    )
    await admin.advance(0)
    assert await status_of(client, emulator, task, res) == "accepted"


@pytest.mark.parametrize(
    ("instruction", "fields", "code"),
    [
        ("conference", {}, 40141),
        ("dequeue", {}, 40132),
        ("call", {"call_from": FROM}, 40112),
        ("conference", {"from_": FROM, "timeout": 1000}, 40145),
        ("dequeue", {"dequeue_from": FROM, "dequeue_status_callback_event": ["bogus"]}, 40134),
        ("conference", {"from_": FROM, "status_callback_event": ["bogus"]}, 20001),
    ],
)
async def test_instruction_fields_are_checked(
    client: Any, emulator: RunningEmulator, instruction: str, fields: dict[str, Any], code: int
) -> None:
    task, res = await voice_task(client, emulator)
    target = reservation(client, emulator, task, res)
    assert await refused(target.update_async(instruction=instruction, **fields)) == (400, code)


async def test_dequeue_status_callback_events_as_repeated_or_comma_separated_fields(
    client: Any, emulator: RunningEmulator
) -> None:
    task, res = await voice_task(client, emulator)
    await reservation(client, emulator, task, res).update_async(
        instruction="dequeue",
        dequeue_from=FROM,
        dequeue_status_callback_event=["initiated", "ringing,answered", "completed"],
    )
    recorded = dumped(emulator, res.sid)["instructions"][0]
    assert recorded["DequeueStatusCallbackEvent"] == ["initiated", "ringing,answered", "completed"]


async def test_a_worker_without_contact_uri_needs_a_to(
    client: Any, emulator: RunningEmulator
) -> None:
    task, res = await voice_task(client, emulator)
    await (
        ws(client, emulator)
        .workers(res.worker_sid)
        .update_async(attributes=json.dumps({"skills": ["support"]}))
    )
    target = reservation(client, emulator, task, res)
    assert await refused(target.update_async(instruction="dequeue", dequeue_from=FROM)) == (
        400,
        40131,
    )
    taken = await target.update_async(
        instruction="dequeue", dequeue_from=FROM, dequeue_to="client:alice"
    )
    assert taken.reservation_status == "pending"


async def test_canceling_the_task_hangs_up_with_40144(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    task, res = await voice_task(client, emulator)
    await set_ring(admin, res.worker_sid, "never")
    await reservation(client, emulator, task, res).update_async(
        instruction="conference", from_=FROM
    )
    await (
        ws(client, emulator)
        .tasks(task.sid)
        .update_async(assignment_status="canceled", reason="caller hung up")
    )
    assert await status_of(client, emulator, task, res) == "canceled"
    notes = [n for n in await admin.log("note") if n.get("reservation_sid") == res.sid]
    assert notes[-1]["code"] == 40144
    # A conference instruction on the canceled task is refused with the same code.
    assert await refused(
        reservation(client, emulator, task, res).update_async(instruction="conference", from_=FROM)
    ) == (400, 40144)
    assert await refused(
        reservation(client, emulator, task, res).update_async(
            instruction="dequeue", dequeue_from=FROM
        )
    ) == (400, 40135)


# ------------------------------------------------------------------ admin API: ring times


async def test_ring_times_through_the_admin_api(emulator: RunningEmulator, admin: Admin) -> None:
    assert emulator.state is not None
    worker = emulator.state.workers[0]["sid"]
    status, body, _ = await admin.request("GET", f"/_emulator/workers/{worker}/ring")
    assert (status, body) == (200, {"worker_sid": worker, "seconds": 5.0, "default": True})
    assert (await set_ring(admin, worker, "never"))["seconds"] == "never"
    assert (await set_ring(admin, worker, 1.5)) == {
        "worker_sid": worker,
        "seconds": 1.5,
        "default": False,
    }
    status, body, _ = await admin.request("POST", "/_emulator/ring", json_body={"seconds": "never"})
    assert (status, body) == (200, {"seconds": "never"})
    assert (await set_ring(admin, worker, None)) == {
        "worker_sid": worker,
        "seconds": "never",
        "default": True,
    }
    bodies: list[Any] = [{"seconds": -1}, {"seconds": True}, {"seconds": "soon"}, {"second": 1}, []]
    for bad in bodies:
        status, body, _ = await admin.request(
            "POST", f"/_emulator/workers/{worker}/ring", json_body=bad
        )
        assert status == 400, bad
    status, body, _ = await admin.request("POST", "/_emulator/ring", json_body={"seconds": None})
    assert status == 400
    status, body, _ = await admin.request(
        "POST", f"/_emulator/workers/WK{'0' * 32}/ring", json_body={"seconds": 1}
    )
    assert (status, body["code"]) == (404, 20404)


# ------------------------------------------------------------- in assignment callback replies


async def test_assignment_replies_ring_too_and_their_field_types_are_checked(
    start_emulator: Callable[..., RunningEmulator], callbacks: CallbackServer
) -> None:
    replies = [
        {"instruction": "conference", "from": FROM, "timeout": 30},
        {"instruction": "dequeue", "from": FROM, "status_callback_events": ["initiated"]},
        {"instruction": "call", "from": FROM, "url": "https://x.test/t", "record": True},
        {"instruction": "dequeue", "from": FROM, "status_callback_events": "initiated,bogus"},
        {"instruction": "dequeue", "from": FROM, "timeout": "20"},
        {
            "instruction": "dequeue",
            "from": FROM,
            "record": "record-from-answer",
            "status_callback_events": "initiated,completed",
        },
    ]

    async def answer(got: Any) -> web.StreamResponse:
        return web.json_response(replies.pop(0) if replies else {})

    callbacks.answer = answer
    running = start_emulator(
        options=SeedOptions(assignment_url=callbacks.url + "/assignment", workers=("A",))
    )
    client = twilio_client(running)
    try:
        expected = [None, 40134, 40113, 40134, 40133, None]
        for code in expected:
            task = await ws(client, running).tasks.create_async(
                attributes=VOICE_ATTRIBUTES, task_channel="voice"
            )
            [res] = await ws(client, running).tasks(task.sid).reservations.list_async()
            note = await _assignment_note(running, res.sid)
            assert note.get("code") == code, note
            assert await status_of(client, running, task, res) == "pending"
            taken = dumped(running, res.sid)
            assert (taken["ringing"] is not None) == (code is None)
            await ws(client, running).tasks(task.sid).update_async(assignment_status="canceled")
    finally:
        await client.http_client.close()


async def _assignment_note(running: RunningEmulator, res_sid: str) -> dict[str, Any]:
    """The log note about the assignment reply to ``res_sid`` (waits for it)."""
    for _ in range(200):
        notes = running.call(lambda emu: emu.log.entries(kind="note"))
        mine = [n for n in notes if n.get("reservation_sid") == res_sid]
        if mine:
            return dict(mine[0])
        await asyncio.sleep(0.02)
    raise AssertionError(f"no note about {res_sid}")
