"""Flex plugin actions end to end: ``POST /flex/reservations/<WR>/<op>`` over real sockets.

The workflow defers every reservation (a policy with no rules), so each reservation stays
pending until the plugin acts. Ordering is proven from the emulator log's ``seq``.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from tests.e2e.conftest import OpenEnv
from tests.e2e.env import Env, assert_error
from tests.support.bridge import (
    ITEM_SCHEMA,
    item_writes,
    reservation_updates,
    settled_item,
    sweep_later,
    wait_until,
)

DEFER_ALL: dict[str, Any] = {}
SCHEMA = json.loads(ITEM_SCHEMA.read_text())


async def _pending(env: Env) -> tuple[Any, Any, str]:
    """A deferred reservation (the bridge has answered its callback) and its agent's token."""
    task, reservation = await env.create_task()
    await wait_until(lambda: env.assignment_callbacks(reservation.sid))
    token = await env.admin.token(reservation.worker_sid, ["agent"])
    return task, reservation, token


async def test_plugin_accept_is_announced_applied_then_settled(open_env: OpenEnv) -> None:
    env = await open_env(policy=DEFER_ALL)
    task, reservation, token = await _pending(env)
    assert env.journal_count() == {}  # deferred: nothing journaled by the callback

    status, body = await env.plugin(reservation.sid, "accept", {"task_sid": task.sid}, token=token)

    assert status == 200, body
    intent = body["intent"]
    assert intent["op"] == "accept"
    assert intent["source"] == "plugin"
    assert intent["state"] == "settled"
    assert intent["phase"] == "applied"
    assert intent["outcome"] == "applied"
    assert intent["reservation_status"] == "accepted"
    assert intent["error"] is None
    assert intent["reservation_sid"] == reservation.sid
    assert intent["task_sid"] == task.sid
    assert intent["worker_sid"] == reservation.worker_sid

    entries = await env.rest()
    writes = item_writes(entries, reservation.sid)
    updates = reservation_updates(entries, reservation.sid)
    assert [w["data"]["phase"] for w in writes] == ["pending", "applied"]
    assert len(updates) == 1 and updates[0]["form"]["ReservationStatus"] == "accepted"
    assert writes[0]["seq"] < updates[0]["seq"] < writes[1]["seq"]
    assert all(w["data"]["intent_id"] == intent["intent_id"] for w in writes)
    assert writes[1]["data"]["source"] == "plugin"
    assert writes[1]["data"]["reservation_status"] == "accepted"
    for write in writes:
        jsonschema.validate(write["data"], SCHEMA)
    fetched = await env.reservation(task.sid, reservation.sid)
    assert fetched.reservation_status == "accepted"


async def test_wait_zero_answers_202_and_the_intent_settles(open_env: OpenEnv) -> None:
    env = await open_env(policy=DEFER_ALL)
    task, reservation, token = await _pending(env)

    status, body = await env.plugin(
        reservation.sid, "accept", {"task_sid": task.sid}, token=token, wait=0
    )

    assert status == 202, body
    intent_id = body["intent_id"]
    assert body["status_url"] == f"/flex/intents/{intent_id}"
    assert body["intent"]["intent_id"] == intent_id
    assert body["intent"]["phase"] == "pending"

    settled: Any = await wait_until(lambda: env.settled_intent(intent_id, token))
    assert settled["phase"] == "applied"
    assert settled["reservation_status"] == "accepted"
    status, got, _ = await env.request(
        "GET", body["status_url"], headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200
    assert got["intent"]["intent_id"] == intent_id
    assert len(await env.accepts(reservation.sid)) == 1


async def test_token_in_a_body_field(open_env: OpenEnv) -> None:
    env = await open_env(policy=DEFER_ALL)
    task, reservation, token = await _pending(env)

    status, body = await env.plugin(
        reservation.sid, "accept", {"task_sid": task.sid, "Token": token}
    )

    assert status == 200, body
    assert body["intent"]["phase"] == "applied"
    assert body["intent"]["reservation_status"] == "accepted"
    # The token is a credential, not a parameter: it reaches neither TaskRouter nor Sync.
    for entry in await env.rest():
        assert token not in json.dumps(entry)


async def test_bad_params_are_400(open_env: OpenEnv) -> None:
    env = await open_env(policy=DEFER_ALL)
    task, reservation, token = await _pending(env)
    before = await env.last_seq()

    bad_bodies: list[Any] = [
        {"task_sid": task.sid, "surprise": 1},  # an unknown field
        {},  # no task_sid
        {"task_sid": "WTnot-a-sid"},
        {"task_sid": task.sid, "activity_sid": "WA" + "0" * 32},  # a reject field on accept
    ]
    for bad in bad_bodies:
        status, body = await env.plugin(reservation.sid, "accept", bad, token=token)
        assert status == 400, (bad, body)
        assert_error(body, "invalid_params")
    for wait in ("abc", "-1", "31", "nan"):
        status, body = await env.plugin(
            reservation.sid, "accept", {"task_sid": task.sid}, token=token, wait=wait
        )
        assert status == 400, (wait, body)
        assert_error(body, "invalid_wait")
    status, _, _ = await env.request(
        "POST",
        f"/flex/reservations/{reservation.sid}/accept",
        data="[1, 2]",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert status == 400
    status, body = await env.plugin(
        reservation.sid, "transfer", {"task_sid": task.sid}, token=token
    )
    assert status == 400, body
    assert_error(body)

    assert env.journal_count() == {}
    assert not [e for e in await env.rest(before) if e["product"] == "taskrouter"]
    assert (await env.reservation(task.sid, reservation.sid)).reservation_status == "pending"


async def test_missing_invalid_and_expired_tokens_are_401(open_env: OpenEnv) -> None:
    env = await open_env(policy=DEFER_ALL)
    task, reservation, _ = await _pending(env)
    body_ok = {"task_sid": task.sid}

    status, body = await env.plugin(reservation.sid, "accept", body_ok)
    assert status == 401
    assert_error(body)
    status, body = await env.plugin(reservation.sid, "accept", body_ok, token="not-a-token")
    assert status == 401
    assert_error(body)
    status, body, _ = await env.request(
        "POST",
        f"/flex/reservations/{reservation.sid}/accept",
        json_body=body_ok,
        headers={"Authorization": "Basic abc"},
    )
    assert status == 401
    assert_error(body)

    # Valid now (an unknown field gives 400, which is only checked once the token is valid),
    # then aged past its expiry on the emulator clock.
    short = await env.admin.token(reservation.worker_sid, ["agent"], ttl=10)
    status, body = await env.plugin(reservation.sid, "accept", {**body_ok, "x": 1}, token=short)
    assert status == 400, body
    await env.admin.advance(11)
    status, body = await env.plugin(reservation.sid, "accept", body_ok, token=short)
    assert status == 401, body
    assert "expired" in assert_error(body)["message"].lower()

    assert env.journal_count() == {}
    assert not await env.accepts(reservation.sid)


@pytest.mark.parametrize("refusal", [400, 401, 403])
async def test_a_token_iam_refuses_with_4xx_is_401_and_an_outage_is_503(
    open_env: OpenEnv, refusal: int
) -> None:
    """Twilio's validation answers 4xx when the request or the token is bad: the caller gets
    401. Only 5xx, 429 and timeouts mean Twilio is unavailable (503)."""
    env = await open_env(policy=DEFER_ALL)
    task, reservation, token = await _pending(env)
    body_ok = {"task_sid": task.sid}
    rule = {"product": "iam", "error_rates": {str(refusal): 1}, "count": 1}
    await env.admin.faults([rule])
    status, body = await env.plugin(reservation.sid, "accept", body_ok, token=token)
    assert status == 401, body
    assert assert_error(body)["code"] == "invalid_token"
    other = await env.admin.token(reservation.worker_sid, ["agent"])  # not cached as refused
    await env.admin.faults([{"product": "iam", "error_rates": {"503": 1}, "count": 1}])
    status, body = await env.plugin(reservation.sid, "accept", body_ok, token=other)
    assert status == 503, body
    assert "iam" not in assert_error(body)["message"].lower()  # no internal URL
    assert env.journal_count() == {}


async def test_agent_may_not_act_on_another_workers_reservation(open_env: OpenEnv) -> None:
    env = await open_env(policy=DEFER_ALL)
    task, reservation, _ = await _pending(env)
    other = next(sid for sid in env.worker_sids() if sid != reservation.worker_sid)
    stranger = await env.admin.token(other, ["agent"])

    status, body = await env.plugin(
        reservation.sid, "accept", {"task_sid": task.sid}, token=stranger
    )

    assert status == 403, body
    assert_error(body, "forbidden")
    assert env.journal_count() == {}
    assert not await env.accepts(reservation.sid)

    supervisor = await env.admin.token(other, ["supervisor"])
    status, body = await env.plugin(
        reservation.sid, "accept", {"task_sid": task.sid}, token=supervisor
    )
    assert status == 200, body
    assert body["intent"]["phase"] == "applied"
    assert body["intent"]["worker_sid"] == reservation.worker_sid  # the reservation's worker

    # The intent itself is the worker's: the stranger may not read it either.
    status, body = await env.intent(body["intent"]["intent_id"], stranger)
    assert status == 403
    assert_error(body, "forbidden")


async def test_unknown_reservation_is_404(open_env: OpenEnv) -> None:
    env = await open_env(policy=DEFER_ALL)
    task, reservation, token = await _pending(env)

    unknown = "WR" + "0123456789abcdef" * 2
    status, body = await env.plugin(unknown, "accept", {"task_sid": task.sid}, token=token)
    assert status == 404, body
    assert_error(body, 20404)
    status, body = await env.plugin("WRnope", "accept", {"task_sid": task.sid}, token=token)
    assert status == 404, body
    assert_error(body)
    other_task = "WT" + "0123456789abcdef" * 2
    status, body = await env.plugin(
        reservation.sid, "accept", {"task_sid": other_task}, token=token
    )
    assert status == 404, body
    assert_error(body, 20404)
    status, body = await env.intent("in_" + "0" * 22, token)
    assert status == 404, body
    assert_error(body)

    assert env.journal_count() == {}


async def test_a_different_op_while_one_is_in_flight_is_409(open_env: OpenEnv) -> None:
    env = await open_env(policy=DEFER_ALL)
    task, reservation, token = await _pending(env)
    # Hold the accept in flight: the reservation POST takes a while to answer.
    await env.admin.faults(
        [
            {
                "product": "taskrouter",
                "method": "POST",
                "path": "/Reservations/",
                "latency_ms": 800,
                "count": 1,
            }
        ]
    )

    status, first = await env.plugin(
        reservation.sid, "accept", {"task_sid": task.sid}, token=token, wait=0
    )
    assert status == 202, first
    status, body = await env.plugin(reservation.sid, "reject", {"task_sid": task.sid}, token=token)
    assert status == 409, body
    err = assert_error(body, "intent_in_flight")
    assert "accept" in err["message"]

    # The same op joins the intent in flight instead.
    status, joined = await env.plugin(
        reservation.sid, "accept", {"task_sid": task.sid}, token=token
    )
    assert status == 200, joined
    assert joined["intent"]["intent_id"] == first["intent_id"]
    assert joined["intent"]["phase"] == "applied"

    updates = reservation_updates(await env.rest(), reservation.sid)
    assert [u["form"].get("ReservationStatus") for u in updates] == ["accepted"]


async def test_wrapup_and_complete_after_accept(open_env: OpenEnv) -> None:
    env = await open_env(policy=DEFER_ALL)
    task, reservation, token = await _pending(env)

    results = {}
    for op, status_after in (
        ("accept", "accepted"),
        ("wrapup", "wrapping"),
        ("complete", "completed"),
    ):
        status, body = await env.plugin(reservation.sid, op, {"task_sid": task.sid}, token=token)
        assert status == 200, (op, body)
        assert body["intent"]["op"] == op
        assert body["intent"]["phase"] == "applied", body
        assert body["intent"]["reservation_status"] == status_after
        results[op] = body["intent"]["intent_id"]
    assert results["accept"] < results["wrapup"] < results["complete"]

    entries = await env.rest()
    updates = reservation_updates(entries, reservation.sid)
    assert [u["form"]["ReservationStatus"] for u in updates] == [
        "accepted",
        "wrapping",
        "completed",
    ]
    writes = item_writes(entries, reservation.sid)
    # Each op: pending strictly before its REST call, settle after it.
    for op, update in zip(("accept", "wrapup", "complete"), updates, strict=True):
        mine = [w for w in writes if w["data"]["intent_id"] == results[op]]
        assert [w["data"]["phase"] for w in mine] == ["pending", "applied"], op
        assert mine[0]["seq"] < update["seq"] < mine[1]["seq"]
    assert writes[-1]["data"]["op"] == "complete"
    assert writes[-1]["data"]["reservation_status"] == "completed"
    for write in writes:
        jsonschema.validate(write["data"], SCHEMA)
    fetched = await env.reservation(task.sid, reservation.sid)
    assert fetched.reservation_status == "completed"
    assert (await env.ws.tasks(task.sid).fetch_async()).assignment_status == "completed"


async def test_an_op_the_status_does_not_allow_is_409_naming_the_status(open_env: OpenEnv) -> None:
    env = await open_env(policy=DEFER_ALL)
    task, reservation, token = await _pending(env)

    status, body = await env.plugin(reservation.sid, "wrapup", {"task_sid": task.sid}, token=token)

    assert status == 409, body
    assert body["error"]["code"] == 20001
    assert "pending" in body["error"]["message"]
    assert body["intent"]["phase"] == "failed"
    assert body["intent"]["reservation_status"] == "pending"
    writes = item_writes(await env.rest(), reservation.sid)
    assert [w["data"]["phase"] for w in writes] == ["pending", "failed"]
    assert writes[-1]["data"]["error"]["code"] == 20001
    # The failed wrap-up left the reservation pending: the agent may still accept it.
    status, body = await env.plugin(reservation.sid, "accept", {"task_sid": task.sid}, token=token)
    assert status == 200, body
    assert body["intent"]["reservation_status"] == "accepted"


async def test_plugin_reject_with_an_activity(open_env: OpenEnv) -> None:
    env = await open_env(policy=DEFER_ALL)
    task, reservation, token = await _pending(env)
    offline = env.state.activities["Offline"]

    status, body = await env.plugin(
        reservation.sid, "reject", {"task_sid": task.sid, "activity_sid": offline}, token=token
    )

    assert status == 200, body
    assert body["intent"]["op"] == "reject"
    assert body["intent"]["phase"] == "applied"
    assert body["intent"]["reservation_status"] == "rejected"
    [update] = reservation_updates(await env.rest(), reservation.sid)
    assert update["form"] == {"ReservationStatus": "rejected", "WorkerActivitySid": offline}
    worker = await env.ws.workers(reservation.worker_sid).fetch_async()
    assert worker.activity_sid == offline
    # TaskRouter offers the task to another worker.
    reservations = await env.ws.tasks(task.sid).reservations.list_async()
    assert {r.worker_sid for r in reservations} - {reservation.worker_sid}


async def test_a_ringing_conference_is_sent_once_and_stays_pending_until_answered(
    open_env: OpenEnv,
) -> None:
    """TaskRouter takes the conference but the reservation stays pending while the agent's
    leg rings: the item stays pending (the plugin must not offer Accept), recovery sweeps
    long after the grace never send a second conference, and TaskRouter's accepted event
    settles it applied."""
    env = await open_env(policy=DEFER_ALL)
    task, reservation = await env.create_task(voice=True)
    await wait_until(lambda: env.assignment_callbacks(reservation.sid))
    token = await env.admin.token(reservation.worker_sid, ["agent"])
    await env.admin.request(
        "POST", f"/_emulator/workers/{reservation.worker_sid}/ring", json_body={"seconds": 30}
    )

    status, body = await env.plugin(
        reservation.sid,
        "conference",
        {"task_sid": task.sid, "from": "+15550100", "timeout": 40, "record": True},
        token=token,
        wait=1,
    )
    assert status == 202, body
    assert body["intent"]["phase"] == "pending"

    async def ringing() -> Any:
        intent = env.latest_for(reservation.sid)
        return intent is not None and intent.state == "instructed"

    await wait_until(ringing)  # TaskRouter took it: still pending while the phone rings
    entries = await env.rest()
    [update] = reservation_updates(entries, reservation.sid)
    assert update["form"]["Instruction"] == "conference"
    assert update["form"]["Timeout"] == 40
    assert update["form"]["Record"] is True
    assert update["form"]["From"] == "***"  # the emulator masks phone numbers in its log

    # Recovery, as if long past the grace, several times: it looks, and sends nothing.
    for _ in range(3):
        env.bridge.call(sweep_later)
    env.idle()
    entries = await env.rest()
    assert len(reservation_updates(entries, reservation.sid)) == 1
    assert [w["data"]["phase"] for w in item_writes(entries, reservation.sid)] == ["pending"]

    await env.admin.advance(31)  # the agent answers
    item: Any = await wait_until(lambda: settled_item(env.admin, reservation.sid))
    assert item["phase"] == "applied" and item["reservation_status"] == "accepted"
    assert item["op"] == "conference" and item["source"] == "plugin"
    entries = await env.rest()
    assert len(reservation_updates(entries, reservation.sid)) == 1
    for write in item_writes(entries, reservation.sid):
        jsonschema.validate(write["data"], SCHEMA)


async def test_a_conference_nobody_answers_settles_failed_without_a_second_call(
    open_env: OpenEnv,
) -> None:
    env = await open_env(policy=DEFER_ALL)
    task, reservation = await env.create_task(voice=True)
    await wait_until(lambda: env.assignment_callbacks(reservation.sid))
    token = await env.admin.token(reservation.worker_sid, ["agent"])
    await env.admin.request(
        "POST", f"/_emulator/workers/{reservation.worker_sid}/ring", json_body={"seconds": "never"}
    )
    status, body = await env.plugin(
        reservation.sid,
        "conference",
        {"task_sid": task.sid, "from": "+15550100", "timeout": 20},
        token=token,
        wait=0,
    )
    assert status == 202, body

    async def ringing() -> Any:
        intent = env.latest_for(reservation.sid)
        return intent is not None and intent.state == "instructed"

    await wait_until(ringing)  # TaskRouter took it: the agent's phone rings
    await env.admin.advance(21)  # the ring times out
    item: Any = await wait_until(lambda: settled_item(env.admin, reservation.sid))
    assert item["phase"] == "failed" and item["reservation_status"] == "timeout"
    assert len(reservation_updates(await env.rest(), reservation.sid)) == 1


async def test_a_voice_instruction_on_a_task_with_no_call_is_422(open_env: OpenEnv) -> None:
    """TaskRouter refuses a conference on a task that is not a voice call (40142): the
    plugin asked for what cannot be, so 422 with Twilio's code, not a bad gateway."""
    env = await open_env(policy=DEFER_ALL)
    task, reservation, token = await _pending(env)
    status, body = await env.plugin(
        reservation.sid, "conference", {"task_sid": task.sid, "from": "+15550100"}, token=token
    )
    assert status == 422, body
    assert body["error"]["code"] == 40142 and "voice" in body["error"]["message"]
    assert body["intent"]["phase"] == "failed"
    assert (await env.reservation(task.sid, reservation.sid)).reservation_status == "pending"


async def test_upstream_failures_are_503_with_twilios_code(open_env: OpenEnv) -> None:
    env = await open_env(policy={**DEFER_ALL, "retry": {"max_attempts": 2}})
    task, reservation, token = await _pending(env)
    body_ok = {"task_sid": task.sid}

    # Token validation cannot be done.
    await env.admin.faults([{"product": "iam", "error_rates": {"503": 1}}])
    status, body = await env.plugin(reservation.sid, "accept", body_ok, token=token)
    assert status == 503, body
    assert_error(body, 20503)

    # The reservation cannot be looked up.
    await env.admin.faults([{"product": "taskrouter", "method": "GET", "error_rates": {"503": 1}}])
    status, body = await env.plugin(reservation.sid, "accept", body_ok, token=token)
    assert status == 503, body
    assert_error(body, 20503)
    assert env.journal_count() == {}

    # TaskRouter keeps failing the change itself.
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
    status, body = await env.plugin(reservation.sid, "accept", body_ok, token=token)
    assert status == 503, body
    assert body["error"]["code"] == 20503
    assert body["intent"]["phase"] == "failed"
    assert body["intent"]["reservation_status"] == "pending"
    assert not [u for u in reservation_updates(await env.rest(), reservation.sid) if u["applied"]]

    # Once TaskRouter is back the agent may try again.
    await env.admin.faults([])
    status, body = await env.plugin(reservation.sid, "accept", body_ok, token=token)
    assert status == 200, body
    assert body["intent"]["reservation_status"] == "accepted"


async def test_every_flex_error_is_json(open_env: OpenEnv) -> None:
    env = await open_env(policy=DEFER_ALL)
    _, reservation, token = await _pending(env)
    auth = {"Authorization": f"Bearer {token}"}

    status, body, _ = await env.request(
        "GET", f"/flex/reservations/{reservation.sid}/accept", headers=auth
    )
    assert status == 405, body
    assert_error(body)
    status, body, _ = await env.request("POST", "/flex/reservations", headers=auth)
    assert status == 404, body
    assert_error(body)
    status, body, _ = await env.request(
        "POST",
        f"/flex/reservations/{reservation.sid}/accept",
        data=b"{" + b" " * (300 * 1024) + b"}",
        headers={**auth, "Content-Type": "application/json"},
    )
    assert status == 413, body
    assert_error(body)
    status, body, _ = await env.request(
        "POST",
        f"/flex/reservations/{reservation.sid}/accept",
        data="{not json",
        headers={**auth, "Content-Type": "application/json"},
    )
    assert status == 400, body
    assert_error(body)
    assert env.journal_count() == {}
    assert not await env.accepts(reservation.sid)
