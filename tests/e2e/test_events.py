"""``POST /taskrouter/events``: deduplication, user handlers, and rule 6 (TaskRouter's word
settles the channel, whoever made the change)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import jsonschema

from tests.e2e import handlers_fixture
from tests.e2e.conftest import OpenEnv
from tests.e2e.env import Env
from tests.support.bridge import (
    ITEM_SCHEMA,
    item_writes,
    reservation_updates,
    sweep_later,
    wait_until,
)

HANDLER = "tests.e2e.handlers_fixture"
SCHEMA = json.loads(ITEM_SCHEMA.read_text())


def _policy(*paths: str) -> dict[str, Any]:
    return {"events": {"handlers": {"task.canceled": list(paths)}}}


def _drain(env: Env) -> None:
    """Wait until every dispatched handler has finished."""
    env.bridge.call(lambda svc: svc.inbox.idle())


def _metric(env: Env, line_start: str) -> float:
    async def render(svc: Any) -> str:
        return str(svc.metrics.render().decode())

    for line in env.bridge.call(render).splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


async def test_events_are_deduplicated_by_token_and_by_key(open_env: OpenEnv) -> None:
    env = await open_env(policy=_policy(f"{HANDLER}:record"))
    # A SID of its own: RECORDED outlives the test (which runs once per journal backend).
    task_sid = "WT" + uuid.uuid4().hex
    event = {
        "EventType": "task.canceled",
        "AccountSid": env.state.account_sid,
        "WorkspaceSid": env.state.workspace_sid,
        "ResourceType": "task",
        "ResourceSid": task_sid,
        "TaskSid": task_sid,
        "Timestamp": "1700000000",
    }

    async def send(params: dict[str, str], token: str | None) -> None:
        headers = {"I-Twilio-Idempotency-Token": token} if token else {}
        status, body = await env.post_webhook("/taskrouter/events", params, headers=headers)
        assert status == 204, body

    await send(event, "token-1")
    await send(event, "token-1")  # a retry of the same delivery
    await send({**event, "Timestamp": "1700000005"}, "token-1")  # same token: a retry
    await send(event, "token-2")  # another token, same (EventType, ResourceSid, Timestamp)
    await send(event, None)  # no token at all, same key
    _drain(env)
    assert [e["Timestamp"] for e in handlers_fixture.recorded(task_sid)] == ["1700000000"]

    await send({**event, "Timestamp": "1700000001"}, "token-3")  # a new event
    await send({**event, "EventType": "task.updated"}, "token-4")  # another type: no handler
    _drain(env)
    assert [e["Timestamp"] for e in handlers_fixture.recorded(task_sid)] == [
        "1700000000",
        "1700000001",
    ]
    assert _metric(env, 'flex_bridge_webhooks_total{endpoint="events",result="duplicate"}') == 4
    assert env.journal_count() == {}


async def test_user_handlers_run_and_a_failing_one_breaks_nothing(open_env: OpenEnv) -> None:
    env = await open_env(policy=_policy(f"{HANDLER}:boom", f"{HANDLER}:record", f"{HANDLER}:boom"))
    task, _ = await env.create_task()

    await env.ws.tasks(task.sid).update_async(
        assignment_status="canceled", reason="the customer hung up"
    )

    recorded: Any = await wait_until(lambda: _recorded(task.sid))
    [event] = recorded
    assert event["EventType"] == "task.canceled"
    assert event["TaskSid"] == task.sid
    assert event["TaskCanceledReason"] == "the customer hung up"
    [delivery] = await env.events_sent("task.canceled", task.sid)
    assert delivery["status"] == 204
    assert delivery["attempt"] == 1
    _drain(env)
    failures = 'flex_bridge_event_handler_failures_total{event_type="task.canceled"}'
    assert _metric(env, failures) == 2
    # The built-in handlers kept working too: every event of the task was answered 204.
    assert all(
        e["status"] == 204
        for e in await env.admin.log("webhook")
        if e["webhook"] == "event" and e["params"].get("TaskSid") == task.sid
    )


async def _recorded(resource_sid: str) -> list[dict[str, str]]:
    return handlers_fixture.recorded(resource_sid)


async def _observed_item(env: Env, reservation_sid: str, status: str) -> Any:
    writes = item_writes(await env.rest(), reservation_sid)
    if writes and writes[-1]["data"]["reservation_status"] == status:
        return writes[-1]
    return None


async def test_an_accept_made_by_someone_else_is_shown_on_the_channel(open_env: OpenEnv) -> None:
    env = await open_env(policy={})
    task, reservation = await env.create_task()
    await wait_until(lambda: env.assignment_callbacks(reservation.sid))

    # Flex (or anyone) accepts directly over REST: the bridge has no intent for it.
    await (
        env.ws.tasks(task.sid)
        .reservations(reservation.sid)
        .update_async(reservation_status="accepted")
    )

    write: Any = await wait_until(lambda: _observed_item(env, reservation.sid, "accepted"))
    item = write["data"]
    assert item["phase"] == "applied"
    assert item["op"] == "accept"
    assert item["reservation_status"] == "accepted"
    assert item["error"] is None
    assert item["worker_sid"] == reservation.worker_sid
    assert item["task_sid"] == task.sid
    jsonschema.validate(item, SCHEMA)
    env.idle()
    entries = await env.rest()
    [accept] = reservation_updates(entries, reservation.sid)  # ours; the bridge made none
    assert accept["seq"] < write["seq"]
    assert [w["data"]["phase"] for w in item_writes(entries, reservation.sid)] == ["applied"]

    # Then the agent wraps up and completes in Flex: the item follows each step.
    context = env.ws.tasks(task.sid).reservations(reservation.sid)
    await context.update_async(reservation_status="wrapping")
    await wait_until(lambda: _observed_item(env, reservation.sid, "wrapping"))
    await context.update_async(reservation_status="completed")
    write = await wait_until(lambda: _observed_item(env, reservation.sid, "completed"))
    assert write["data"]["op"] == "complete"
    assert write["data"]["phase"] == "applied"
    env.idle()
    assert len(reservation_updates(await env.rest(), reservation.sid)) == 3


async def test_a_reject_made_by_someone_else_is_shown_on_the_channel(open_env: OpenEnv) -> None:
    env = await open_env(policy={})
    task, reservation = await env.create_task()
    await wait_until(lambda: env.assignment_callbacks(reservation.sid))

    await (
        env.ws.tasks(task.sid)
        .reservations(reservation.sid)
        .update_async(reservation_status="rejected")
    )

    write: Any = await wait_until(lambda: _observed_item(env, reservation.sid, "rejected"))
    assert write["data"]["op"] == "reject"
    assert write["data"]["phase"] == "applied"
    jsonschema.validate(write["data"], SCHEMA)


async def test_an_instruction_reply_is_settled_by_taskrouters_event(open_env: OpenEnv) -> None:
    env = await open_env(
        policy={"assignment": {"rules": [{"name": "all", "op": "accept", "via": "instruction"}]}}
    )
    task, reservation = await env.create_task()

    write: Any = await wait_until(lambda: _observed_item(env, reservation.sid, "accepted"))

    item = write["data"]
    assert item["phase"] == "applied"
    assert item["source"] == "policy"
    entries = await env.rest()
    # The bridge made no REST change: TaskRouter acted on the callback's reply.
    assert not reservation_updates(entries, reservation.sid)
    writes = item_writes(entries, reservation.sid)
    assert [w["data"]["phase"] for w in writes] == ["pending", "applied"]
    assert {w["data"]["intent_id"] for w in writes} == {item["intent_id"]}
    [callback] = await env.assignment_callbacks(reservation.sid)
    [accepted] = await env.events_sent("reservation.accepted", reservation.sid)
    # Announced before the reply went out (the callback is logged once answered), settled after
    # TaskRouter's event.
    assert writes[0]["seq"] < callback["seq"] < accepted["seq"] < writes[1]["seq"]
    env.idle()
    latest = env.latest_for(reservation.sid)
    assert latest.settled and latest.via == "instruction"
    assert (await env.reservation(task.sid, reservation.sid)).reservation_status == "accepted"


async def test_an_accept_that_failed_then_happened_elsewhere_converges(
    open_env: OpenEnv,
) -> None:
    env = await open_env(
        policy={
            "assignment": {"rules": [{"name": "all", "op": "accept"}]},
            "retry": {"max_attempts": 2},
        }
    )
    await env.admin.faults(
        [
            {
                "product": "taskrouter",
                "method": "POST",
                "path": "/Reservations/",
                "error_rates": {"503": 1},
            }
        ]
    )
    task, reservation = await env.create_task()
    failed: Any = await wait_until(lambda: _observed_item(env, reservation.sid, "pending"))
    assert failed["data"]["phase"] == "failed"
    env.idle()

    # TaskRouter recovers and the agent accepts in Flex.
    await env.admin.faults([])
    await (
        env.ws.tasks(task.sid)
        .reservations(reservation.sid)
        .update_async(reservation_status="accepted")
    )

    # Rule 6: the channel shows TaskRouter's truth, not the bridge's failed attempt.
    write: Any = await wait_until(lambda: _observed_item(env, reservation.sid, "accepted"))
    assert write["data"]["phase"] == "applied"
    assert write["data"]["error"] is None
    assert write["seq"] > failed["seq"]
    jsonschema.validate(write["data"], SCHEMA)


async def _instructed(env: Env, reservation_sid: str) -> bool:
    intent = env.latest_for(reservation_sid)
    return intent is not None and intent.state in ("instructed", "applied", "settled")


async def test_a_late_event_does_not_move_the_channel_back(open_env: OpenEnv) -> None:
    env = await open_env(policy={})
    task, reservation = await env.create_task(voice=True)
    await wait_until(lambda: env.assignment_callbacks(reservation.sid))
    token = await env.admin.token(reservation.worker_sid, ["agent"])
    # Accepted by a conference instruction (so no accept intent exists): the agent's phone
    # rings, and answers (the emulator's ring time passes); then wrapped up.
    status, body = await env.plugin(
        reservation.sid, "conference", {"task_sid": task.sid, "from": "+15550100"}, token=token
    )
    assert status in (200, 202), body
    await wait_until(lambda: _instructed(env, reservation.sid))
    await env.admin.advance(10)
    await wait_until(lambda: env.events_sent("reservation.accepted", reservation.sid))
    env.idle()
    status, body = await env.plugin(reservation.sid, "wrapup", {"task_sid": task.sid}, token=token)
    assert status == 200, body
    await wait_until(lambda: env.events_sent("reservation.wrapup", reservation.sid))
    env.idle()
    _drain(env)
    env.idle()
    before = item_writes(await env.rest(), reservation.sid)
    assert before[-1]["data"]["reservation_status"] == "wrapping"

    # A reservation.accepted delivery that comes only now (delayed on the way, say).
    late = {
        "EventType": "reservation.accepted",
        "AccountSid": env.state.account_sid,
        "WorkspaceSid": env.state.workspace_sid,
        "ResourceType": "reservation",
        "ResourceSid": reservation.sid,
        "ReservationSid": reservation.sid,
        "TaskSid": task.sid,
        "WorkerSid": reservation.worker_sid,
        "Timestamp": "1700000000",
    }
    status, _ = await env.post_webhook(
        "/taskrouter/events", late, headers={"I-Twilio-Idempotency-Token": "late-1"}
    )
    assert status == 204
    _drain(env)
    env.idle()

    after = item_writes(await env.rest(), reservation.sid)
    assert after == before
    assert env.latest_for(reservation.sid).op == "wrapup"


async def test_a_conference_in_the_callback_reply_rings_and_is_never_resent(
    open_env: OpenEnv,
) -> None:
    """The instruction path of a ringing conference: answered in the assignment callback, the
    item pending while the agent's phone rings, recovery sweeps long after the grace send
    nothing over REST, and TaskRouter's accepted event settles it applied."""
    rule = {"name": "all", "op": "conference", "via": "instruction", "params": {"from": "+1555"}}
    env = await open_env(policy={"assignment": {"rules": [rule]}})
    for sid in env.worker_sids():
        await env.admin.request("POST", f"/_emulator/workers/{sid}/ring", json_body={"seconds": 30})
    task, reservation = await env.create_task(voice=True)
    await wait_until(lambda: _instructed(env, reservation.sid))

    # Recovery, as if long past the grace, several times: it looks, and sends nothing.
    for _ in range(3):
        env.bridge.call(sweep_later)
    env.idle()
    entries = await env.rest()
    assert not reservation_updates(entries, reservation.sid)  # never over REST
    assert [w["data"]["phase"] for w in item_writes(entries, reservation.sid)] == ["pending"]
    assert (await env.reservation(task.sid, reservation.sid)).reservation_status == "pending"

    await env.admin.advance(31)
    write: Any = await wait_until(lambda: _observed_item(env, reservation.sid, "accepted"))
    assert write["data"]["phase"] == "applied" and write["data"]["op"] == "conference"
    assert not reservation_updates(await env.rest(), reservation.sid)
