"""Reservation timeouts and escalation end to end, on the emulator's clock.

One agent (Alice) who never answers, a supervisor (Sam) in a supervisor queue, and a workflow
whose filter ``route == 'supervisor'`` sends a task there (everything else goes to the seeded
support queue), all built through the official client. Reservations time out when the test
advances the emulator's clock past the workflow's reservation timeout (120 s).
The policy defers every reservation (no assignment rules), so nobody accepts anything.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import asyncpg
import jsonschema

from flex_bridge.adapters.journal import is_postgres_url
from tests.e2e.conftest import OpenEnv
from tests.e2e.env import Env
from tests.support.bridge import ITEM_SCHEMA, item_writes, reservation_updates, wait_until
from tests.support.postgres import blocking

RESERVATION_TIMEOUT = 120
ESCALATE = {
    "timeout": {
        "action": "escalate",
        "escalate_after": 2,
        "priority_step": 10,
        "routing": {"route": "supervisor"},
    }
}
ONE_AGENT = {"workers": ("Alice",)}
SCHEMA = json.loads(ITEM_SCHEMA.read_text())


# ---------------------------------------------------------------------------------- helpers


@dataclass
class Routing:
    queue_sid: str
    supervisor_sid: str
    agent_sid: str


async def build_supervisor_routing(env: Env) -> Routing:
    """A supervisor queue and worker, and a workflow filter that sends escalated tasks there."""
    queue = await env.ws.task_queues.create_async(
        friendly_name="Supervisors", target_workers="skills HAS 'supervisor'"
    )
    sam = await env.ws.workers.create_async(
        friendly_name="Sam",
        attributes=json.dumps({"skills": ["supervisor"], "contact_uri": "client:sam"}),
        activity_sid=env.state.activities["Available"],
    )
    configuration = {
        "task_routing": {
            "filters": [
                {
                    "filter_friendly_name": "Escalated",
                    "expression": "route == 'supervisor'",
                    "targets": [{"queue": queue.sid}],
                }
            ],
            "default_filter": {"queue": env.state.task_queue_sid},
        }
    }
    await env.ws.workflows(env.state.workflow_sid).update_async(
        configuration=json.dumps(configuration)
    )
    [agent] = env.worker_sids()
    return Routing(queue.sid, sam.sid, agent)


async def raw_attributes(env: Env, task_sid: str) -> str:
    return str((await env.ws.tasks(task_sid).fetch_async()).attributes)


def task_writes(entries: list[dict[str, Any]], task_sid: str) -> list[dict[str, Any]]:
    return [
        e
        for e in entries
        if e.get("product") == "taskrouter"
        and e.get("method") == "POST"
        and e.get("path", "").endswith(f"/Tasks/{task_sid}")
    ]


def task_reads(entries: list[dict[str, Any]], task_sid: str) -> list[dict[str, Any]]:
    return [
        e
        for e in entries
        if e.get("product") == "taskrouter"
        and e.get("method") == "GET"
        and e.get("path", "").endswith(f"/Tasks/{task_sid}")
    ]


def drain(env: Env) -> None:
    """Wait until every event handler the bridge has dispatched has finished."""
    env.bridge.call(lambda svc: svc.inbox.idle())


async def delivered(env: Env, event_type: str, resource_sid: str) -> list[dict[str, Any]]:
    """Event callbacks the bridge took (204), from the emulator's log."""
    return [e for e in await env.events_sent(event_type, resource_sid) if e["status"] == 204]


async def time_out(env: Env, reservation_sid: str) -> dict[str, Any]:
    """Advance the clock past the reservation timeout; wait until the bridge has handled
    the ``reservation.timeout`` event. Returns that event's delivery, from the log."""
    answer = await env.admin.advance(RESERVATION_TIMEOUT + 1)
    assert answer["fired"], answer
    deliveries = await wait_until(lambda: delivered(env, "reservation.timeout", reservation_sid))
    drain(env)
    [delivery] = deliveries
    return delivery  # type: ignore[no-any-return]


async def make_available(env: Env, worker_sid: str) -> None:
    await env.ws.workers(worker_sid).update_async(activity_sid=env.state.activities["Available"])


async def pending_reservation(env: Env, task_sid: str, worker_sid: str) -> Any:
    async def find() -> Any:
        for r in await env.ws.tasks(task_sid).reservations.list_async():
            if r.worker_sid == worker_sid and r.reservation_status == "pending":
                return r
        return None

    return await wait_until(find)


TIMEOUTS = "SELECT task_sid, reservation_sid FROM timeouts ORDER BY at"


def journal_timeouts(env: Env) -> list[tuple[str, str]]:
    """The journal's timeout records (no ``Journal`` method lists them), read once the bridge
    stopped: from its SQLite file, read-only, or from its PostgreSQL schema."""
    env.bridge.stop()
    assert env.bridge.settings is not None
    setting = env.bridge.settings.journal
    rows: list[tuple[Any, Any]]
    if is_postgres_url(setting):
        rows = blocking(_postgres_rows(setting, TIMEOUTS))
    else:
        uri = f"file:{setting}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as db:
            rows = db.execute(TIMEOUTS).fetchall()
    return [(str(t), str(r)) for t, r in rows]


async def _postgres_rows(dsn: str, query: str) -> list[tuple[Any, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await conn.fetch(query)]
    finally:
        await conn.close()


def metric(env: Env, sample: str) -> float:
    """One sample of the bridge's metrics, e.g. ``name{label="value"}`` (0 when absent)."""

    async def render(svc: Any) -> str:
        return str(svc.metrics.render().decode())

    for line in env.bridge.call(render).splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def escalations_metric(env: Env, level: int) -> float:
    return metric(env, f'flex_bridge_escalations_total{{level="{level}"}}')


def handler_failures(env: Env, event_type: str) -> float:
    return metric(env, f'flex_bridge_event_handler_failures_total{{event_type="{event_type}"}}')


@dataclass
class Escalated:
    env: Env
    routing: Routing
    task_sid: str
    first: Any  # Alice's first reservation
    second: Any  # Alice's second reservation
    second_timeout: dict[str, Any]  # the delivery of its reservation.timeout event
    before_second: int  # the log's seq just before the second timeout


async def two_timeouts(open_env: OpenEnv, policy: dict[str, Any]) -> Escalated:
    env = await open_env(policy=policy, seed=ONE_AGENT)
    routing = await build_supervisor_routing(env)
    task, first = await env.create_task({"type": "support"})
    assert first.worker_sid == routing.agent_sid

    await time_out(env, first.sid)
    await make_available(env, routing.agent_sid)  # Alice comes back, and is offered it again
    second = await pending_reservation(env, task.sid, routing.agent_sid)
    assert second.sid != first.sid
    before = await env.last_seq()
    delivery = await time_out(env, second.sid)
    return Escalated(env, routing, task.sid, first, second, delivery, before)


# ---------------------------------------------------------------------------- escalation


async def test_the_second_timeout_escalates_to_the_supervisor(open_env: OpenEnv) -> None:
    env = await open_env(policy=ESCALATE, seed=ONE_AGENT)
    routing = await build_supervisor_routing(env)
    task, first = await env.create_task({"type": "support"})
    assert first.worker_sid == routing.agent_sid
    original = await raw_attributes(env, task.sid)

    # The first timeout is only counted: below escalate_after, the task is left to TaskRouter.
    await time_out(env, first.sid)
    assert await raw_attributes(env, task.sid) == original
    assert task_writes(await env.rest(), task.sid) == []
    fetched = await env.ws.tasks(task.sid).fetch_async()
    assert (fetched.priority, fetched.assignment_status) == (0, "pending")
    assert fetched.task_queue_sid == env.state.task_queue_sid

    # Alice comes back, is offered the task again, and lets it time out again.
    await make_available(env, routing.agent_sid)
    second = await pending_reservation(env, task.sid, routing.agent_sid)
    before = await env.last_seq()
    await time_out(env, second.sid)

    escalated = json.loads(await raw_attributes(env, task.sid))
    assert escalated == {
        "type": "support",
        "route": "supervisor",
        "escalation": {"level": 1, "reason": "reservation_timeout", "timeouts": 2},
    }
    fetched = await env.ws.tasks(task.sid).fetch_async()
    assert fetched.priority == 10
    assert fetched.task_queue_sid == routing.queue_sid  # the workflow's filter re-routed it
    # One conditional write carried both the attributes and the priority.
    [write] = task_writes(await env.rest(before), task.sid)
    assert write["if_match"]
    assert write["applied"] and write["status"] == 200
    assert write["form"]["Priority"] == 10
    assert json.loads(write["form"]["Attributes"]) == escalated
    assert escalations_metric(env, 1) == 1

    # The re-routed task is offered to the supervisor, after (and because of) the write.
    offered = await pending_reservation(env, task.sid, routing.supervisor_sid)
    [callback] = await wait_until(lambda: env.assignment_callbacks(offered.sid))
    assert callback["seq"] > write["seq"]
    assert json.loads(callback["params"]["TaskAttributes"])["escalation"]["level"] == 1
    assert callback["params"]["TaskQueueSid"] == routing.queue_sid
    assert callback["params"]["TaskPriority"] == "10"

    # Sam does not answer either: a third timeout is a second level, one more step up.
    before = await env.last_seq()
    await time_out(env, offered.sid)
    again = json.loads(await raw_attributes(env, task.sid))
    assert again["escalation"] == {"level": 2, "reason": "reservation_timeout", "timeouts": 3}
    assert again["route"] == "supervisor"
    assert (await env.ws.tasks(task.sid).fetch_async()).priority == 20
    assert len(task_writes(await env.rest(before), task.sid)) == 1
    assert escalations_metric(env, 2) == 1

    # The counts live in the journal, one row per timed-out reservation.
    assert journal_timeouts(env) == [
        (task.sid, first.sid),
        (task.sid, second.sid),
        (task.sid, offered.sid),
    ]


async def test_escalation_is_idempotent_under_event_retries(open_env: OpenEnv) -> None:
    run = await two_timeouts(open_env, ESCALATE)
    env = run.env
    escalated = await raw_attributes(env, run.task_sid)
    assert json.loads(escalated)["escalation"]["level"] == 1
    assert (await env.ws.tasks(run.task_sid).fetch_async()).priority == 10
    params: dict[str, str] = run.second_timeout["params"]
    assert params["EventType"] == "reservation.timeout"
    assert params["TaskSid"] == run.task_sid

    # TaskRouter's own retry of that delivery: same token, same event.
    since = await env.last_seq()
    headers = {"I-Twilio-Idempotency-Token": run.second_timeout["idempotency_token"]}
    status, body = await env.post_webhook("/taskrouter/events", params, headers=headers)
    assert status == 204, body
    drain(env)
    assert task_reads(await env.rest(since), run.task_sid) == []  # recognised as a duplicate

    # A redelivery the dedupe cannot recognise (another timestamp, no token): the handler
    # runs, reads the task, finds the level already there, and writes nothing.
    later = {**params, "TimestampMs": str(int(params["TimestampMs"]) + 1)}
    for _ in range(2):
        status, body = await env.post_webhook("/taskrouter/events", later)
        assert status == 204, body
        drain(env)
        later = {**later, "TimestampMs": str(int(later["TimestampMs"]) + 1)}
    entries = await env.rest(since)
    assert len(task_reads(entries, run.task_sid)) == 2  # the handler really ran, twice
    assert task_writes(entries, run.task_sid) == []
    assert await raw_attributes(env, run.task_sid) == escalated  # byte-identical
    assert (await env.ws.tasks(run.task_sid).fetch_async()).priority == 10  # not raised twice
    assert escalations_metric(env, 1) == 1
    assert escalations_metric(env, 2) == 0

    # The journal still counts two timeouts: a reservation is counted once.
    assert journal_timeouts(env) == [
        (run.task_sid, run.first.sid),
        (run.task_sid, run.second.sid),
    ]


async def test_an_escalation_taskrouter_refused_is_made_on_the_next_delivery(
    open_env: OpenEnv,
) -> None:
    env = await open_env(policy=ESCALATE, seed=ONE_AGENT)
    routing = await build_supervisor_routing(env)
    task, first = await env.create_task({"type": "support"})
    await time_out(env, first.sid)
    await make_available(env, routing.agent_sid)
    second = await pending_reservation(env, task.sid, routing.agent_sid)
    original = await raw_attributes(env, task.sid)
    # TaskRouter refuses every task update while the second timeout is handled.
    await env.admin.faults(
        [
            {
                "product": "taskrouter",
                "method": "POST",
                "path": f"/Tasks/{task.sid}$",
                "error_rates": {"503": 1},
            }
        ]
    )

    delivery = await time_out(env, second.sid)

    await env.admin.faults([])
    assert await raw_attributes(env, task.sid) == original
    assert (await env.ws.tasks(task.sid).fetch_async()).priority == 0
    assert escalations_metric(env, 1) == 0
    assert handler_failures(env, "reservation.timeout") == 1
    # The other handlers were not stopped: the channel item shows the timeout.
    item = item_writes(await env.rest(), second.sid)[-1]["data"]
    assert (item["phase"], item["reservation_status"]) == ("failed", "timeout")

    # The event delivered again (the dedupe does not know it: another timestamp): the
    # handler decides again from the journal's count and the task, and escalates, once.
    params = delivery["params"]
    status, body = await env.post_webhook(
        "/taskrouter/events", {**params, "TimestampMs": str(int(params["TimestampMs"]) + 1)}
    )
    assert status == 204, body
    drain(env)
    escalated = json.loads(await raw_attributes(env, task.sid))
    assert escalated["escalation"] == {"level": 1, "reason": "reservation_timeout", "timeouts": 2}
    assert (await env.ws.tasks(task.sid).fetch_async()).priority == 10
    assert escalations_metric(env, 1) == 1
    assert len(journal_timeouts(env)) == 2


async def test_requeue_by_default_changes_nothing_in_the_task(open_env: OpenEnv) -> None:
    run = await two_timeouts(open_env, {})
    env = run.env

    # The bridge never wrote the task: it did not even read it (the test has not either, yet).
    entries = await env.rest()
    assert task_writes(entries, run.task_sid) == []
    assert task_reads(entries, run.task_sid) == []
    assert await raw_attributes(env, run.task_sid) == json.dumps({"type": "support"})
    task = await env.ws.tasks(run.task_sid).fetch_async()
    assert task.priority == 0
    assert task.task_queue_sid == env.state.task_queue_sid
    assert task.assignment_status == "pending"
    # Nobody else is offered it: the supervisor is not in the support queue.
    reservations = await env.ws.tasks(run.task_sid).reservations.list_async()
    assert {r.worker_sid for r in reservations} == {run.routing.agent_sid}
    assert escalations_metric(env, 1) == 0
    # ...but the timeouts were counted all the same.
    assert journal_timeouts(env) == [
        (run.task_sid, run.first.sid),
        (run.task_sid, run.second.sid),
    ]


async def test_the_workers_channel_item_shows_each_timeout(open_env: OpenEnv) -> None:
    run = await two_timeouts(open_env, ESCALATE)
    env = run.env

    entries = await env.rest()
    for reservation in (run.first, run.second):
        writes = item_writes(entries, reservation.sid)
        assert writes, reservation.sid
        item = writes[-1]["data"]
        jsonschema.validate(item, SCHEMA)
        assert item["phase"] == "failed"
        assert item["reservation_status"] == "timeout"
        assert item["source"] == "taskrouter"  # observed, not requested (issue 9)
        assert item["reservation_sid"] == reservation.sid
        assert item["task_sid"] == run.task_sid
        assert item["worker_sid"] == run.routing.agent_sid
        assert item["error"] is not None and "timeout" in item["error"]["message"]
    # The second item was written once the clock had moved past that reservation's timeout.
    assert item_writes(entries, run.second.sid)[-1]["seq"] > run.before_second


# ------------------------------------------------------------------ an intent in flight


async def test_an_intent_in_flight_when_its_reservation_times_out_settles_failed(
    open_env: OpenEnv,
) -> None:
    env = await open_env(policy={}, seed=ONE_AGENT)
    task, reservation = await env.create_task({"type": "support"})
    await wait_until(lambda: env.assignment_callbacks(reservation.sid))
    token = await env.admin.token(reservation.worker_sid, ["agent"])
    # The accept reaches TaskRouter, which holds it a while before handling it.
    await env.admin.faults(
        [
            {
                "product": "taskrouter",
                "method": "POST",
                "path": "/Reservations/",
                "latency_ms": 1500,
                "count": 1,
            }
        ]
    )

    status, body = await env.plugin(
        reservation.sid, "accept", {"task_sid": task.sid}, token=token, wait=0
    )
    assert status == 202, body
    intent_id = body["intent_id"]

    async def accept_arrived() -> bool:
        status, faults, _ = await env.admin.request("GET", "/_emulator/faults")
        assert status == 200
        return bool(faults["rules"][0]["hits"] == 1)

    await wait_until(accept_arrived)  # the accept is in flight, held at the emulator
    await env.admin.advance(RESERVATION_TIMEOUT + 1)  # meanwhile the reservation times out

    settled = await wait_until(lambda: env.settled_intent(intent_id, token))
    assert settled["phase"] == "failed"
    assert settled["outcome"] == "failed"
    assert settled["reservation_status"] == "timeout"
    assert settled["error"]["code"] == 20001
    assert "timeout" in settled["error"]["message"]

    [accept] = reservation_updates(await env.rest(), reservation.sid)
    assert accept["form"]["ReservationStatus"] == "accepted"
    assert accept["status"] == 400 and not accept["applied"]  # it came too late
    assert (await env.reservation(task.sid, reservation.sid)).reservation_status == "timeout"
    await wait_until(lambda: delivered(env, "reservation.timeout", reservation.sid))
    drain(env)

    # The channel item ends failed, with the reason, after the refused accept.
    entries = await env.rest()
    writes = item_writes(entries, reservation.sid)
    mine = [w for w in writes if w["data"]["intent_id"] == intent_id]
    assert [w["data"]["phase"] for w in mine] == ["pending", "failed"]
    assert mine[0]["seq"] < accept["seq"] < mine[1]["seq"]
    final = writes[-1]["data"]
    jsonschema.validate(final, SCHEMA)
    assert final["phase"] == "failed"
    assert final["reservation_status"] == "timeout"
    assert final["error"]["code"] == 20001
    assert "timeout" in final["error"]["message"]
    # And it was counted as a timeout like any other.
    assert journal_timeouts(env) == [(task.sid, reservation.sid)]
