"""A plugin accept that comes after the reservation timed out: a failed item and a 409.

The reservation times out on the emulator clock (``admin.advance`` past the workflow's
``TaskReservationTimeout``, 120 s by default). Either the bridge has already heard
``reservation.timeout`` (rule 6), or it has not and TaskRouter refuses the accept with 20001.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from tests.e2e.conftest import OpenEnv
from tests.e2e.env import Env, assert_error
from tests.support.bridge import ITEM_SCHEMA, item_writes, reservation_updates, wait_until

SCHEMA = json.loads(ITEM_SCHEMA.read_text())


async def _timed_out(env: Env) -> tuple[Any, Any, str]:
    task, reservation = await env.create_task()
    await wait_until(lambda: env.assignment_callbacks(reservation.sid))
    token = await env.admin.token(reservation.worker_sid, ["agent"], ttl=86_400)
    fired = await env.admin.advance(121)
    assert fired["fired"], fired
    fetched = await env.reservation(task.sid, reservation.sid)
    assert fetched.reservation_status == "timeout"
    return task, reservation, token


async def _assert_late_accept_refused(env: Env, task: Any, reservation: Any, token: str) -> None:
    since = await env.last_seq()

    status, body = await env.plugin(reservation.sid, "accept", {"task_sid": task.sid}, token=token)

    assert status == 409, body
    err = body["error"]
    assert set(err) == {"code", "message"}
    assert err["code"] == 20001
    assert "timeout" in err["message"]  # names the reservation's current status
    intent = body["intent"]
    assert intent["state"] == "settled"
    assert intent["phase"] == "failed"
    assert intent["reservation_status"] == "timeout"
    assert intent["error"]["code"] == 20001

    entries = await env.rest(since)
    writes = [w for w in item_writes(entries, reservation.sid) if w["data"]["source"] == "plugin"]
    assert [w["data"]["phase"] for w in writes] == ["pending", "failed"]
    final = writes[-1]["data"]
    assert final["intent_id"] == intent["intent_id"]
    assert final["op"] == "accept"
    assert final["reservation_status"] == "timeout"
    assert final["error"]["code"] == 20001
    assert "timeout" in final["error"]["message"]
    for write in writes:
        jsonschema.validate(write["data"], SCHEMA)
    # Nothing reached TaskRouter before the announcement, and nothing changed there.
    updates = reservation_updates(entries, reservation.sid)
    assert all(writes[0]["seq"] < u["seq"] < writes[1]["seq"] for u in updates)
    assert not [u for u in updates if u["applied"]]
    assert (await env.reservation(task.sid, reservation.sid)).reservation_status == "timeout"

    # Asking again gives the same answer and changes nothing.
    status, again = await env.plugin(reservation.sid, "accept", {"task_sid": task.sid}, token=token)
    assert status == 409, again
    assert_error({"error": again["error"]})
    assert "timeout" in again["error"]["message"]
    assert not [
        u for u in reservation_updates(await env.rest(since), reservation.sid) if u["applied"]
    ]


async def test_accept_after_the_timeout_event_was_seen(open_env: OpenEnv) -> None:
    env = await open_env(policy={})
    task, reservation, token = await _timed_out(env)

    async def observed() -> Any:
        latest = env.latest_for(reservation.sid)
        return latest is not None and latest.settled and latest

    # Rule 6: the bridge heard reservation.timeout and settled an item saying so.
    latest: Any = await wait_until(observed)
    assert latest.reservation_status == "timeout"
    [item] = [w["data"] for w in item_writes(await env.rest(), reservation.sid)]
    assert item["phase"] == "failed" and item["reservation_status"] == "timeout"

    await _assert_late_accept_refused(env, task, reservation, token)


async def test_accept_refused_by_taskrouter_when_no_event_came(open_env: OpenEnv) -> None:
    env = await open_env(policy={})
    # The bridge does not hear about reservation timeouts: only TaskRouter can tell it.
    await env.ws.update_async(events_filter="task.created")
    task, reservation, token = await _timed_out(env)
    since = await env.last_seq()

    await _assert_late_accept_refused(env, task, reservation, token)

    # TaskRouter itself refused the accept, with its code.
    [refused, *_] = reservation_updates(await env.rest(since), reservation.sid)
    assert refused["form"]["ReservationStatus"] == "accepted"
    assert refused["status"] == 400
    assert refused["code"] == 20001
    assert not refused["applied"]
