"""TwilioTaskRouter against the emulator: views, ETags, and Twilio's errors translated."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from flex_bridge.adapters.http import BridgeHttpClient
from flex_bridge.adapters.taskrouter import TwilioTaskRouter, _kwarg
from flex_bridge.adapters.twilio_errors import translate
from flex_bridge.domain.ops import rest_params
from flex_bridge.errors import (
    AlreadyExistsError,
    AmbiguousOutcomeError,
    ConflictError,
    NotFoundError,
    PreconditionFailed,
    RateLimitedError,
    RejectedError,
    TransientUpstreamError,
)
from tests.support.emulator import Admin, RunningEmulator, twilio_client

MISSING_WT = "WT" + "0" * 32
MISSING_WR = "WR" + "0" * 32
URL = "https://example.com/twiml"


@pytest.fixture
async def tr(emulator: RunningEmulator) -> AsyncIterator[TwilioTaskRouter]:
    assert emulator.state is not None
    client = twilio_client(emulator)
    yield TwilioTaskRouter(client, emulator.state.workspace_sid)
    await client.http_client.close()


async def new_reservation(
    tr: TwilioTaskRouter, attributes: dict[str, Any] | None = None, *, voice: bool = False
) -> Any:
    """A task, reserved for a seeded worker: (task_sid, pending reservation)."""
    ws = tr._ws
    channel = {"task_channel": "voice"} if voice else {}
    task = await ws.tasks.create_async(
        attributes=json.dumps(attributes or {"type": "support"}), **channel
    )
    reservations = await ws.tasks(task.sid).reservations.list_async()
    assert len(reservations) == 1
    return task.sid, reservations[0]


def rest_gets(log: list[dict[str, Any]], fragment: str) -> int:
    return sum(1 for e in log if e["method"] == "GET" and fragment in e["path"])


# ------------------------------------------------------------------------------ reservations
async def test_fetch_and_accept_a_reservation(tr: TwilioTaskRouter) -> None:
    task_sid, reservation = await new_reservation(tr)
    view = await tr.fetch_reservation(task_sid, reservation.sid)
    assert (view.sid, view.task_sid, view.worker_sid) == (
        reservation.sid,
        task_sid,
        reservation.worker_sid,
    )
    assert view.status == "pending"
    assert isinstance(view.date_created, float)

    accepted = await tr.update_reservation(task_sid, reservation.sid, rest_params("accept", {}))
    assert accepted.status == "accepted"
    assert (await tr.fetch_reservation(task_sid, reservation.sid)).status == "accepted"
    task = await tr.fetch_task(task_sid)
    assert task.assignment_status == "assigned"


async def test_a_second_accept_is_a_conflict_with_20001(tr: TwilioTaskRouter) -> None:
    task_sid, reservation = await new_reservation(tr)
    form = rest_params("accept", {"task_sid": task_sid})
    await tr.update_reservation(task_sid, reservation.sid, form)
    with pytest.raises(ConflictError) as caught:
        await tr.update_reservation(task_sid, reservation.sid, form)
    assert (caught.value.status, caught.value.code) == (400, 20001)
    assert "accepted" in caught.value.message
    assert isinstance(caught.value.__cause__, TwilioRestException)


@pytest.mark.parametrize(("op", "code"), [("conference", 40136), ("dequeue", 40135)])
async def test_an_instruction_after_accept_is_a_conflict(
    tr: TwilioTaskRouter, op: str, code: int
) -> None:
    task_sid, reservation = await new_reservation(tr)
    await tr.update_reservation(task_sid, reservation.sid, rest_params("accept", {}))
    with pytest.raises(ConflictError) as caught:
        await tr.update_reservation(
            task_sid, reservation.sid, rest_params(op, {"from": "+15550100"})
        )
    assert caught.value.code == code


async def test_reject_wrapup_and_complete(tr: TwilioTaskRouter, emulator: RunningEmulator) -> None:
    assert emulator.state is not None
    offline = emulator.state.activities["Offline"]
    task_sid, first = await new_reservation(tr)
    rejected = await tr.update_reservation(
        task_sid, first.sid, rest_params("reject", {"activity_sid": offline})
    )
    assert rejected.status == "rejected"
    worker = await tr._ws.workers(first.worker_sid).fetch_async()
    assert worker.activity_sid == offline

    reservations = await tr._ws.tasks(task_sid).reservations.list_async()
    second = next(r for r in reservations if r.reservation_status == "pending")
    await tr.update_reservation(task_sid, second.sid, rest_params("accept", {}))
    wrapping = await tr.update_reservation(task_sid, second.sid, rest_params("wrapup", {}))
    assert wrapping.status == "wrapping"
    done = await tr.update_reservation(task_sid, second.sid, rest_params("complete", {}))
    assert done.status == "completed"
    assert (await tr.fetch_task(task_sid)).assignment_status == "completed"


@pytest.mark.parametrize(
    ("op", "params", "status"),
    [
        (
            "conference",
            {
                "from": "+15550100",
                "to": "client:alice",
                "timeout": 30,
                "record": True,
                "end_conference_on_exit": False,
                "status_callback": "https://example.com/status",
                "status_callback_event": ["initiated", "completed"],
                "conference_status_callback": "https://example.com/conference",
                "conference_status_callback_event": ["start", "end"],
            },
            "pending",  # taken: the agent's phone rings
        ),
        (
            "dequeue",
            {
                "from": "+15550100",
                "to": "client:alice",
                "record": "record-from-answer",
                "timeout": 20,
                "status_callback_event": ["initiated", "completed"],
            },
            "pending",
        ),
        (
            "call",
            {"from": "+15550100", "url": URL, "accept": True, "record": "do-not-record"},
            "accepted",  # accepts first, then rings
        ),
        ("call", {"from": "+15550100", "url": URL, "accept": False}, "pending"),
        ("redirect", {"call_sid": "CA" + "1" * 32, "url": URL, "accept": True}, "accepted"),
    ],
)
async def test_every_instruction_goes_through_the_official_client(
    tr: TwilioTaskRouter, op: str, params: dict[str, Any], status: str
) -> None:
    """rest_params' field names become the client's keywords and reach TaskRouter intact
    (voice instructions on a voice task, with the caller's call in its attributes)."""
    task_sid, reservation = await new_reservation(tr, {"call_sid": "CA" + "2" * 32}, voice=True)
    view = await tr.update_reservation(task_sid, reservation.sid, rest_params(op, params))
    assert view.status == status


async def test_a_missing_reservation_is_not_found(tr: TwilioTaskRouter) -> None:
    task_sid, _ = await new_reservation(tr)
    with pytest.raises(NotFoundError) as caught:
        await tr.fetch_reservation(task_sid, MISSING_WR)
    assert (caught.value.status, caught.value.code) == (404, 20404)
    with pytest.raises(NotFoundError):
        await tr.update_reservation(task_sid, MISSING_WR, rest_params("accept", {}))


async def test_a_timed_out_reservation_refuses_an_accept(
    tr: TwilioTaskRouter, admin: Admin
) -> None:
    task_sid, reservation = await new_reservation(tr)
    await admin.advance(121)
    assert (await tr.fetch_reservation(task_sid, reservation.sid)).status == "timeout"
    with pytest.raises(ConflictError) as caught:
        await tr.update_reservation(task_sid, reservation.sid, rest_params("accept", {}))
    assert caught.value.code == 20001


async def test_transport_faults_come_through_untouched(tr: TwilioTaskRouter, admin: Admin) -> None:
    task_sid, reservation = await new_reservation(tr)
    await admin.faults([{"method": "POST", "path": "/Reservations/", "lose_after_commit": 1.0}])
    with pytest.raises(AmbiguousOutcomeError):
        await tr.update_reservation(task_sid, reservation.sid, rest_params("accept", {}))
    await admin.faults([{"method": "GET", "error_rates": {"429": 1.0}}])
    with pytest.raises(RateLimitedError):
        await tr.fetch_reservation(task_sid, reservation.sid)
    await admin.faults([])
    # The lost answer hid an applied change.
    assert (await tr.fetch_reservation(task_sid, reservation.sid)).status == "accepted"


# ------------------------------------------------------------------------------ tasks
async def test_fetch_task_returns_the_etag(tr: TwilioTaskRouter, emulator: RunningEmulator) -> None:
    assert emulator.state is not None
    task_sid, _ = await new_reservation(tr, {"type": "support", "crm": {"id": 7}})
    task = await tr.fetch_task(task_sid)
    assert task.sid == task_sid
    assert json.loads(task.attributes) == {"type": "support", "crm": {"id": 7}}
    assert task.assignment_status == "reserved"
    assert task.etag
    assert task.workflow_sid == emulator.state.workflow_sid
    assert task.task_queue_sid == emulator.state.task_queue_sid
    assert task.priority == 0
    assert (await tr.fetch_task(task_sid)).etag == task.etag  # unchanged task, same ETag


async def test_update_task_with_the_current_etag(tr: TwilioTaskRouter) -> None:
    task_sid, _ = await new_reservation(tr)
    before = await tr.fetch_task(task_sid)
    updated = await tr.update_task(
        task_sid, if_match=before.etag, attributes=json.dumps({"enriched": True}), priority=3
    )
    assert json.loads(updated.attributes) == {"enriched": True}
    assert updated.priority == 3
    assert updated.etag and updated.etag != before.etag
    assert (await tr.fetch_task(task_sid)).etag == updated.etag


async def test_update_task_with_a_stale_etag_is_precondition_failed(tr: TwilioTaskRouter) -> None:
    task_sid, _ = await new_reservation(tr, {"v": 0})
    stale = await tr.fetch_task(task_sid)
    await tr.update_task(task_sid, if_match=stale.etag, attributes=json.dumps({"v": 1}))
    with pytest.raises(PreconditionFailed) as caught:
        await tr.update_task(task_sid, if_match=stale.etag, attributes=json.dumps({"v": 2}))
    assert (caught.value.status, caught.value.code) == (412, 20412)
    assert isinstance(caught.value, RejectedError)
    assert json.loads((await tr.fetch_task(task_sid)).attributes) == {"v": 1}


async def test_update_task_without_if_match_is_unconditional(tr: TwilioTaskRouter) -> None:
    task_sid, _ = await new_reservation(tr)
    stale = await tr.fetch_task(task_sid)
    await tr.update_task(task_sid, if_match=stale.etag, attributes="{}")
    updated = await tr.update_task(task_sid, if_match=None, priority=9)
    assert updated.priority == 9


async def test_a_missing_task_is_not_found(tr: TwilioTaskRouter) -> None:
    with pytest.raises(NotFoundError) as caught:
        await tr.fetch_task(MISSING_WT)
    assert caught.value.code == 20404
    with pytest.raises(NotFoundError):
        await tr.update_task(MISSING_WT, if_match=None, attributes="{}")


# ------------------------------------------------------------------------------ workflows
async def test_reservation_timeout_is_fetched_once(
    tr: TwilioTaskRouter, emulator: RunningEmulator, admin: Admin
) -> None:
    assert emulator.state is not None
    workflow = emulator.state.workflow_sid
    assert await tr.reservation_timeout(workflow) == 120
    assert await tr.reservation_timeout(workflow) == 120
    assert await tr.reservation_timeout(workflow) == 120
    assert rest_gets(await admin.log("rest"), f"/Workflows/{workflow}") == 1


async def test_reservation_timeout_of_a_missing_workflow(tr: TwilioTaskRouter) -> None:
    with pytest.raises(NotFoundError):
        await tr.reservation_timeout("WW" + "0" * 32)


async def test_ping(tr: TwilioTaskRouter, admin: Admin) -> None:
    await tr.ping()
    await admin.faults([{"method": "GET", "error_rates": {"503": 1.0}}])
    with pytest.raises(TransientUpstreamError):
        await tr.ping()


async def test_ping_of_a_missing_workspace(emulator: RunningEmulator) -> None:
    client = twilio_client(emulator)
    try:
        with pytest.raises(NotFoundError):
            await TwilioTaskRouter(client, "WS" + "0" * 32).ping()
    finally:
        await client.http_client.close()


async def test_wrong_credentials_are_rejected(emulator: RunningEmulator) -> None:
    assert emulator.state is not None
    http = BridgeHttpClient(emulator.url)
    client = Client(emulator.config.account_sid, "wrong", http_client=http)
    try:
        with pytest.raises(RejectedError) as caught:
            await TwilioTaskRouter(client, emulator.state.workspace_sid).ping()
        assert (caught.value.status, caught.value.code) == (401, 20003)
    finally:
        await client.http_client.close()


# ------------------------------------------------------------------------------ pure helpers
@pytest.mark.parametrize(
    ("field", "kwarg"),
    [
        ("ReservationStatus", "reservation_status"),
        ("WorkerActivitySid", "worker_activity_sid"),
        ("Instruction", "instruction"),
        ("From", "from_"),
        ("To", "to"),
        ("CallUrl", "call_url"),
        ("DequeueFrom", "dequeue_from"),
        ("RedirectCallSid", "redirect_call_sid"),
        ("DequeuePostWorkActivitySid", "dequeue_post_work_activity_sid"),
        ("EndConferenceOnExit", "end_conference_on_exit"),
        ("StatusCallbackEvent", "status_callback_event"),
    ],
)
def test_kwarg(field: str, kwarg: str) -> None:
    assert _kwarg(field) == kwarg


def rest_error(status: int, code: int | None, msg: str = "m") -> TwilioRestException:
    return TwilioRestException(status, "https://taskrouter.twilio.com/v1/x", msg=msg, code=code)


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (404, 20404, NotFoundError),
        (412, 20412, PreconditionFailed),
        (412, 54205, PreconditionFailed),
        (429, 20429, RateLimitedError),
        (500, 20500, TransientUpstreamError),
        (503, None, TransientUpstreamError),
        (400, 20001, ConflictError),
        (400, 40114, ConflictError),
        (400, 40135, ConflictError),
        (400, 40136, ConflictError),
        (400, 20003, RejectedError),
        (401, 20003, RejectedError),
        (409, 54208, AlreadyExistsError),
    ],
)
def test_translate(status: int, code: int | None, kind: type[Exception]) -> None:
    error = translate(rest_error(status, code))
    assert type(error) is kind
    assert isinstance(error, RejectedError | TransientUpstreamError)
    assert (error.status, error.code) == (status, code)


async def test_listing_the_reservations_of_an_unknown_task_is_not_found(
    client: Any, emulator: RunningEmulator
) -> None:
    assert emulator.state is not None
    port = TwilioTaskRouter(client, emulator.state.workspace_sid)
    with pytest.raises(NotFoundError) as caught:
        await port.list_reservations("WT" + "0" * 32)
    assert caught.value.status == 404
    assert caught.value.code == 20404
