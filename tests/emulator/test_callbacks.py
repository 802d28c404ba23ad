"""Outgoing webhooks: TaskRouter event callbacks and the assignment callback.

A real callback server (the ``callbacks`` fixture) receives what the emulator sends; each
request is checked with the official ``RequestValidator``. Event callbacks are not retried
unless a test turns ``event_retry`` on; retries then run on a 0.01 s base so nothing waits
long.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from flex_bridge.emulator.seed import SeedOptions
from tests.support.emulator import (
    Admin,
    CallbackServer,
    Received,
    RunningEmulator,
    twilio_client,
    ws,
)

COMMON_FIELDS = {
    "EventType",
    "AccountSid",
    "WorkspaceSid",
    "WorkspaceName",
    "EventDescription",
    "ResourceType",
    "ResourceSid",
    "Timestamp",
}
TASK_FIELDS = {
    "TaskSid",
    "TaskAttributes",
    "TaskAge",
    "TaskPriority",
    "TaskAssignmentStatus",
    "TaskQueueSid",
    "WorkflowSid",
}
WORKER_FIELDS = {
    "WorkerSid",
    "WorkerName",
    "WorkerAttributes",
    "WorkerActivitySid",
    "WorkerActivityName",
}

Answer = Callable[[Received], Awaitable[web.StreamResponse]]


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``check`` every 10 ms until it holds; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.01)):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not reached within {timeout} s")


async def drained(running: RunningEmulator) -> None:
    """Wait until the emulator has no webhook delivery or assignment offer in flight."""

    def busy(emu: Any) -> int:
        return len(emu.sender._tasks) + len(emu.taskrouter._background)

    async def idle() -> bool:
        return bool(running.call(busy) == 0)

    await wait_until(idle)


async def drained_events(running: RunningEmulator) -> None:
    """Wait until no event callback delivery is in flight (assignment offers may be)."""

    async def idle() -> bool:
        return bool(running.call(lambda emu: len(emu.sender._tasks)) == 0)

    await wait_until(idle)


def events(server: CallbackServer, path: str = "/events") -> list[Received]:
    return server.on(path)


def of_type(server: CallbackServer, event_type: str, path: str = "/events") -> list[Received]:
    return [r for r in server.on(path) if r.form.get("EventType") == event_type]


def signed(running: RunningEmulator, got: Received, url: str) -> bool:
    validator = RequestValidator(running.config.auth_token)
    return bool(validator.validate(url, got.form, got.headers["X-Twilio-Signature"]))


@pytest.fixture
async def events_client(
    start_emulator: Callable[..., RunningEmulator], callbacks: CallbackServer
) -> AsyncIterator[tuple[RunningEmulator, Any]]:
    running = start_emulator(
        event_retry_base=0.01, options=SeedOptions(event_url=callbacks.url + "/events")
    )
    client = twilio_client(running)
    yield running, client
    await client.http_client.close()


# ---------------------------------------------------------------------------- event fields
async def test_event_callbacks_carry_documented_fields_and_are_signed(
    events_client: tuple[RunningEmulator, Any], callbacks: CallbackServer
) -> None:
    running, client = events_client
    assert running.state is not None
    workspace = ws(client, running)

    task = await workspace.tasks.create_async(attributes='{"topic": "billing"}', priority=5)
    res = (await workspace.tasks(task.sid).reservations.list_async())[0]
    await (
        workspace.tasks(task.sid).reservations(res.sid).update_async(reservation_status="accepted")
    )
    new_attributes = json.dumps({"skills": ["support"], "level": 3})
    await workspace.workers(res.worker_sid).update_async(attributes=new_attributes)
    await workspace.workers(res.worker_sid).update_async(
        activity_sid=running.state.activities["Unavailable"]
    )
    await workspace.tasks(task.sid).update_async(assignment_status="wrapping")
    await workspace.tasks(task.sid).update_async(assignment_status="completed", reason="done")
    other = await workspace.tasks.create_async(attributes="{}")
    await workspace.tasks(other.sid).update_async(assignment_status="canceled", reason="gone")

    wanted = {
        "task.created",
        "task.wrapup",
        "task.completed",
        "task.canceled",
        "reservation.created",
        "reservation.accepted",
        "reservation.wrapup",
        "reservation.completed",
        "reservation.canceled",
        "worker.activity.update",
        "worker.attributes.update",
    }
    await callbacks.wait_for(
        lambda got: wanted <= {r.form.get("EventType") for r in got}, timeout=10
    )
    url = callbacks.url + "/events"
    for got in events(callbacks):
        form = got.form
        assert set(form) >= COMMON_FIELDS, form["EventType"]
        assert form["AccountSid"] == running.config.account_sid
        assert form["WorkspaceSid"] == running.state.workspace_sid
        assert form["WorkspaceName"] == "flex-bridge"
        assert form["EventDescription"]
        assert form["Timestamp"].isdigit()
        assert got.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
        assert got.headers["I-Twilio-Idempotency-Token"]
        assert signed(running, got, url), form["EventType"]
        tampered = {**form, "EventType": "task.deleted"}
        assert not RequestValidator(running.config.auth_token).validate(
            url, tampered, got.headers["X-Twilio-Signature"]
        )

    created = of_type(callbacks, "task.created")[0].form
    assert set(created) >= TASK_FIELDS
    assert created["ResourceType"] == "task"
    assert created["ResourceSid"] == created["TaskSid"] == task.sid
    assert created["TaskAttributes"] == '{"topic": "billing"}'
    assert created["TaskPriority"] == "5"
    assert created["TaskQueueSid"] == running.state.task_queue_sid
    assert created["WorkflowSid"] == running.state.workflow_sid

    for kind in ("reservation.created", "reservation.accepted", "reservation.completed"):
        form = next(r.form for r in of_type(callbacks, kind) if r.form["TaskSid"] == task.sid)
        assert TASK_FIELDS | WORKER_FIELDS | {"ReservationSid"} <= set(form), kind
        assert form["ResourceType"] == "reservation"
        assert form["ResourceSid"] == form["ReservationSid"] == res.sid
        assert form["WorkerSid"] == res.worker_sid
    accepted = of_type(callbacks, "reservation.accepted")[0].form
    assert accepted["TaskAssignmentStatus"] == "assigned"

    attrs = of_type(callbacks, "worker.attributes.update")[0].form
    assert set(attrs) >= WORKER_FIELDS
    assert (attrs["ResourceType"], attrs["ResourceSid"]) == ("worker", res.worker_sid)
    assert attrs["WorkerAttributes"] == new_attributes

    moves = [
        r.form
        for r in of_type(callbacks, "worker.activity.update")
        if r.form["WorkerSid"] == res.worker_sid
    ]
    assert len(moves) == 1
    move = moves[0]
    assert WORKER_FIELDS | {"WorkerPreviousActivitySid"} <= set(move)
    assert move["ResourceType"] == "worker"
    assert move["WorkerActivitySid"] == running.state.activities["Unavailable"]
    assert move["WorkerActivityName"] == "Unavailable"
    assert move["WorkerPreviousActivitySid"] == running.state.activities["Available"]

    completed = of_type(callbacks, "task.completed")[0].form
    assert completed["TaskAssignmentStatus"] == "completed"
    assert completed["TaskCompletedReason"] == "done"
    canceled = of_type(callbacks, "task.canceled")[0].form
    assert canceled["TaskSid"] == other.sid
    assert canceled["TaskCanceledReason"] == "gone"


async def test_events_filter_limits_what_is_sent(
    events_client: tuple[RunningEmulator, Any], callbacks: CallbackServer, session: Any
) -> None:
    running, client = events_client
    workspace = ws(client, running)
    await drained(running)  # the seeded workers' worker.created events
    updated = await workspace.update_async(
        events_filter="task.created, task.canceled", event_callback_url=callbacks.url + "/only"
    )
    assert updated.events_filter == "task.created,task.canceled"
    assert updated.event_callback_url == callbacks.url + "/only"

    task = await workspace.tasks.create_async(attributes="{}")
    await workspace.tasks(task.sid).update_async(assignment_status="canceled")
    await callbacks.wait_for(lambda got: len([r for r in got if r.path == "/only"]) >= 2)
    await drained(running)

    sent = [r.form["EventType"] for r in callbacks.on("/only")]
    assert sorted(sent) == ["task.canceled", "task.created"]
    assert all(signed(running, r, callbacks.url + "/only") for r in callbacks.on("/only"))
    # The other events happened; the filter is what kept them from the callback.
    happened = {e.event_type for e in await workspace.events.list_async(task_sid=task.sid)}
    assert {"reservation.created", "reservation.canceled"} <= happened
    posted = [e for e in await Admin(running, session).log("webhook") if e["url"].endswith("/only")]
    assert sorted(e["params"]["EventType"] for e in posted) == sorted(sent)

    # Clearing the filter sends everything again.
    await workspace.update_async(events_filter="")
    second = await workspace.tasks.create_async(attributes="{}")
    await callbacks.wait_for(
        lambda got: any(
            r.path == "/only"
            and r.form["EventType"] == "reservation.created"
            and r.form["TaskSid"] == second.sid
            for r in got
        )
    )


# ---------------------------------------------------------------------------- event retries
def failing(statuses: dict[str, list[int]]) -> Answer:
    """Answer each listed EventType with the given statuses in turn, then 204."""
    seen: dict[str, int] = {}

    async def answer(got: Received) -> web.StreamResponse:
        kind = got.form.get("EventType", "")
        plan = statuses.get(kind, [])
        n = seen.get(kind, 0)
        seen[kind] = n + 1
        status = plan[n] if n < len(plan) else 204
        return web.Response(status=status, text="" if status == 204 else "no")

    return answer


@pytest.mark.parametrize(
    ("plan", "deliveries"),
    [([500], 2), ([429], 2), ([503, 502], 3), ([503, 503, 503], 3)],
)
async def test_failed_event_delivery_is_retried_with_the_same_idempotency_token(
    start_emulator: Callable[..., RunningEmulator],
    callbacks: CallbackServer,
    session: Any,
    plan: list[int],
    deliveries: int,
) -> None:
    callbacks.answer = failing({"task.created": plan})
    running = start_emulator(
        event_retry=True,
        event_retry_base=0.01,
        options=SeedOptions(event_url=callbacks.url + "/events"),
    )
    client = twilio_client(running)
    try:
        task = await ws(client, running).tasks.create_async(attributes="{}")
        await callbacks.wait_for(lambda _: len(of_type(callbacks, "task.created")) >= deliveries)
        await drained(running)
    finally:
        await client.http_client.close()

    got = of_type(callbacks, "task.created")
    assert len(got) == deliveries  # three attempts in all, never more
    tokens = {r.headers["I-Twilio-Idempotency-Token"] for r in got}
    assert len(tokens) == 1
    assert all(r.form == got[0].form and r.form["TaskSid"] == task.sid for r in got)
    assert all(signed(running, r, callbacks.url + "/events") for r in got)
    # Another event is another delivery, with its own token.
    other = of_type(callbacks, "reservation.created")
    assert len(other) == 1
    assert other[0].headers["I-Twilio-Idempotency-Token"] not in tokens

    log = [
        e
        for e in await Admin(running, session).log("webhook")
        if e["params"].get("EventType") == "task.created"
    ]
    assert [e["attempt"] for e in log] == list(range(1, deliveries + 1))
    expected = [*plan, 204][:deliveries]
    assert [e["status"] for e in log] == expected
    assert {e["idempotency_token"] for e in log} == tokens
    assert all(e["webhook"] == "event" for e in log)


@pytest.mark.parametrize("status", [400, 403, 404, 410])
async def test_a_refused_event_is_not_retried(
    start_emulator: Callable[..., RunningEmulator],
    callbacks: CallbackServer,
    session: Any,
    status: int,
) -> None:
    callbacks.answer = failing({"task.created": [status, status, status]})
    running = start_emulator(
        event_retry=True,
        event_retry_base=0.01,
        options=SeedOptions(event_url=callbacks.url + "/events"),
    )
    client = twilio_client(running)
    try:
        await ws(client, running).tasks.create_async(attributes="{}")
        await callbacks.wait_for(lambda _: len(of_type(callbacks, "reservation.created")) >= 1)
        await drained(running)
    finally:
        await client.http_client.close()
    assert len(of_type(callbacks, "task.created")) == 1
    log = [
        e
        for e in await Admin(running, session).log("webhook")
        if e["params"].get("EventType") == "task.created"
    ]
    assert [(e["attempt"], e["status"]) for e in log] == [(1, status)]


async def test_an_unreachable_event_url_is_retried_then_given_up(
    start_emulator: Callable[..., RunningEmulator], session: Any
) -> None:
    # A port held bound but not listening: every connection to it is refused.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{probe.getsockname()[1]}"
        running = start_emulator(
            event_retry=True,
            event_retry_base=0.01,
            options=SeedOptions(workers=("Ann",), event_url=gone + "/events"),
        )
        await drained(running)
    log = await Admin(running, session).log("webhook")
    assert [e["attempt"] for e in log] == [1, 2, 3]
    assert all(e["status"] is None and "ClientConnectorError" in e["error"] for e in log)
    assert len({e["idempotency_token"] for e in log}) == 1
    assert log[0]["params"]["EventType"] == "worker.created"


# ----------------------------------------------------------------------- assignment callback
def assignment_server(
    primary: Answer | None = None, fallback: Answer | None = None
) -> Callable[[Received], Awaitable[web.StreamResponse]]:
    async def default(_: Received) -> web.StreamResponse:
        return web.json_response({})

    async def answer(got: Received) -> web.StreamResponse:
        if got.path == "/assignment":
            return await (primary or default)(got)
        if got.path == "/fallback":
            return await (fallback or default)(got)
        return web.Response(status=204)

    return answer


def reply(status: int = 200, body: Any = None, content_type: str = "application/json") -> Answer:
    async def answer(_: Received) -> web.StreamResponse:
        text = json.dumps(body) if not isinstance(body, str) else body
        return web.Response(status=status, text=text, content_type=content_type)

    return answer


async def start_with_assignment(
    start_emulator: Callable[..., RunningEmulator],
    callbacks: CallbackServer,
    *,
    fallback: bool = True,
) -> RunningEmulator:
    return start_emulator(
        assignment_timeout=0.3,
        options=SeedOptions(
            assignment_url=callbacks.url + "/assignment",
            fallback_assignment_url=callbacks.url + "/fallback" if fallback else None,
        ),
    )


async def reservation_status(client: Any, running: RunningEmulator, task_sid: str) -> list[Any]:
    return list(await ws(client, running).tasks(task_sid).reservations.list_async())


async def test_fallback_is_called_when_the_primary_answers_500(
    start_emulator: Callable[..., RunningEmulator], callbacks: CallbackServer, session: Any
) -> None:
    callbacks.answer = assignment_server(
        primary=reply(500, {"error": "down"}), fallback=reply(200, {"instruction": "accept"})
    )
    running = await start_with_assignment(start_emulator, callbacks)
    client = twilio_client(running)
    try:
        task = await ws(client, running).tasks.create_async(attributes='{"k": 1}')

        async def accepted() -> bool:
            rows = await reservation_status(client, running, task.sid)
            return [r.reservation_status for r in rows] == ["accepted"]

        await wait_until(accepted)
        fetched = await ws(client, running).tasks(task.sid).fetch_async()
        assert fetched.assignment_status == "assigned"
    finally:
        await client.http_client.close()

    primary, fallback = callbacks.on("/assignment"), callbacks.on("/fallback")
    assert len(primary) == len(fallback) == 1
    assert primary[0].form == fallback[0].form
    assert signed(running, primary[0], callbacks.url + "/assignment")
    assert signed(running, fallback[0], callbacks.url + "/fallback")
    log = await Admin(running, session).log("webhook")
    assert [(e["webhook"], e["status"]) for e in log] == [
        ("assignment", 500),
        ("assignment_fallback", 200),
    ]
    assert log[0]["seq"] < log[1]["seq"]
    assert log[0]["params"]["ReservationSid"] == log[1]["params"]["ReservationSid"]


async def test_fallback_is_called_when_the_primary_does_not_answer_in_time(
    start_emulator: Callable[..., RunningEmulator], callbacks: CallbackServer, session: Any
) -> None:
    release = asyncio.Event()

    async def stall(_: Received) -> web.StreamResponse:
        # Far longer than the 0.3 s assignment timeout; released when the test ends.
        await asyncio.wait_for(release.wait(), 10)
        return web.json_response({"instruction": "reject"})

    callbacks.answer = assignment_server(
        primary=stall, fallback=reply(200, {"instruction": "accept"})
    )
    running = await start_with_assignment(start_emulator, callbacks)
    client = twilio_client(running)
    try:
        task = await ws(client, running).tasks.create_async(attributes="{}")

        async def accepted() -> bool:
            rows = await reservation_status(client, running, task.sid)
            return [r.reservation_status for r in rows] == ["accepted"]

        await wait_until(accepted)
        log = await Admin(running, session).log("webhook")
    finally:
        release.set()
        await client.http_client.close()
    assert [(e["webhook"], e["status"]) for e in log] == [
        ("assignment", None),
        ("assignment_fallback", 200),
    ]
    assert "no answer within 0.3 s" in log[0]["error"]


@pytest.mark.parametrize(("body", "warned"), [({}, False), ({"note": "later"}, True)])
async def test_a_reply_without_instruction_defers(
    start_emulator: Callable[..., RunningEmulator],
    callbacks: CallbackServer,
    session: Any,
    body: dict[str, Any],
    warned: bool,
) -> None:
    callbacks.answer = assignment_server(
        primary=reply(200, body), fallback=reply(200, {"instruction": "accept"})
    )
    running = await start_with_assignment(start_emulator, callbacks)
    admin = Admin(running, session)
    client = twilio_client(running)
    try:
        task = await ws(client, running).tasks.create_async(attributes="{}")
        await callbacks.wait_for(lambda _: len(callbacks.on("/assignment")) == 1)
        await drained(running)
        rows = await reservation_status(client, running, task.sid)
        assert [r.reservation_status for r in rows] == ["pending"]
        assert (await ws(client, running).tasks(task.sid).fetch_async()).assignment_status == (
            "reserved"
        )
        # Deferred means "answer later over REST".
        res = (
            await ws(client, running)
            .tasks(task.sid)
            .reservations(rows[0].sid)
            .update_async(reservation_status="accepted")
        )
        assert res.reservation_status == "accepted"
    finally:
        await client.http_client.close()
    assert callbacks.on("/fallback") == []  # a valid reply: the fallback is not called
    log = await admin.log("webhook")
    assert [(e["webhook"], e["status"]) for e in log] == [("assignment", 200)]
    notes = [e for e in await admin.log("note") if e.get("code") == 40005]
    assert len(notes) == (1 if warned else 0)


async def test_a_reject_reply_reoffers_the_task_to_another_worker(
    start_emulator: Callable[..., RunningEmulator], callbacks: CallbackServer, session: Any
) -> None:
    answered: list[str] = []

    async def reject_first(got: Received) -> web.StreamResponse:
        answered.append(got.form["WorkerSid"])
        if len(answered) == 1:
            return web.json_response({"instruction": "reject"})
        return web.json_response({})

    callbacks.answer = assignment_server(primary=reject_first)
    running = await start_with_assignment(start_emulator, callbacks, fallback=False)
    client = twilio_client(running)
    try:
        task = await ws(client, running).tasks.create_async(attributes="{}")
        await callbacks.wait_for(lambda _: len(callbacks.on("/assignment")) == 2)
        await drained(running)
        rows = await reservation_status(client, running, task.sid)
    finally:
        await client.http_client.close()
    by_status = {r.reservation_status: r for r in rows}
    assert sorted(by_status) == ["pending", "rejected"]
    assert by_status["rejected"].worker_sid == answered[0]
    assert by_status["pending"].worker_sid == answered[1]
    assert answered[0] != answered[1]
    offers = callbacks.on("/assignment")
    assert offers[0].form["TaskSid"] == offers[1].form["TaskSid"] == task.sid
    assert offers[1].form["ReservationSid"] == by_status["pending"].sid
    log = await Admin(running, session).log("webhook")
    assert [e["params"]["WorkerSid"] for e in log] == answered


@pytest.mark.parametrize(
    ("primary", "fallback"),
    [
        (reply(500, {"instruction": "accept"}), reply(503, {"instruction": "accept"})),
        (
            reply(200, '{"instruction": "accept"}', "text/plain"),
            reply(200, "<Response/>", "text/xml"),
        ),
        (reply(200, "not json"), reply(200, '["accept"]')),
        (reply(204, ""), reply(302, "")),
    ],
)
async def test_no_valid_reply_from_either_url_leaves_the_reservation_pending(
    start_emulator: Callable[..., RunningEmulator],
    callbacks: CallbackServer,
    session: Any,
    primary: Answer,
    fallback: Answer,
) -> None:
    callbacks.answer = assignment_server(primary=primary, fallback=fallback)
    running = await start_with_assignment(start_emulator, callbacks)
    admin = Admin(running, session)
    client = twilio_client(running)
    try:
        task = await ws(client, running).tasks.create_async(attributes="{}")

        async def noted() -> bool:
            return any("left pending" in e["message"] for e in await admin.log("note"))

        await wait_until(noted)
        rows = await reservation_status(client, running, task.sid)
    finally:
        await client.http_client.close()
    assert [r.reservation_status for r in rows] == ["pending"]
    assert len(callbacks.on("/assignment")) == len(callbacks.on("/fallback")) == 1
    log = await admin.log("webhook")
    assert [e["webhook"] for e in log] == ["assignment", "assignment_fallback"]
    note = [e for e in await admin.log("note") if "left pending" in e["message"]]
    assert note[0]["reservation_sid"] == rows[0].sid
    assert note[0]["seq"] > log[1]["seq"]


async def test_nothing_is_sent_once_the_sender_is_closed(
    start_emulator: Callable[..., RunningEmulator], callbacks: CallbackServer, session: Any
) -> None:
    """Shutting down with an offer in flight must not open a new session for the fallback."""
    release = asyncio.Event()

    async def stall(_: Received) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), 10)
        return web.json_response({"instruction": "accept"})

    callbacks.answer = assignment_server(
        primary=stall, fallback=reply(200, {"instruction": "accept"})
    )
    running = start_emulator(
        assignment_timeout=5,
        options=SeedOptions(
            assignment_url=callbacks.url + "/assignment",
            fallback_assignment_url=callbacks.url + "/fallback",
            event_url=callbacks.url + "/events",
        ),
    )
    admin = Admin(running, session)
    client = twilio_client(running)
    try:
        task = await ws(client, running).tasks.create_async(attributes="{}")
        await callbacks.wait_for(lambda _: len(callbacks.on("/assignment")) == 1)
        await drained_events(running)
        assert running.emu is not None and running.server.loop is not None
        sender = running.emu.sender
        closing = asyncio.run_coroutine_threadsafe(sender.close(), running.server.loop)
        await asyncio.wrap_future(closing)

        async def offer_over() -> bool:
            return bool(running.call(lambda emu: len(emu.taskrouter._background)) == 0)

        await wait_until(offer_over)
        # Events raised after the close are not sent either.
        assert running.state is not None
        worker_sid = running.state.workers[0]["sid"]
        await ws(client, running).workers(worker_sid).update_async(attributes='{"late": 1}')
        log = await admin.log("webhook")
        rows = await reservation_status(client, running, task.sid)
        assert [r.reservation_status for r in rows] == ["pending"]  # no reply was applied
    finally:
        release.set()
        await client.http_client.close()
    assert callbacks.on("/fallback") == []
    late = [r for r in callbacks.on("/events") if r.form["EventType"] == "worker.attributes.update"]
    assert late == []
    offers = [e for e in log if e["webhook"] != "event"]
    assert [e["webhook"] for e in offers] == ["assignment", "assignment_fallback"]
    assert offers[0]["status"] is None
    assert offers[1]["error"] == "not sent: the emulator is shutting down"
    closed = running.call(
        lambda emu: emu.sender._session is not None and emu.sender._session.closed
    )
    assert closed is True
