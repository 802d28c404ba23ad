"""Duplicates never become a second REST call: double clicks and re-delivered callbacks."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.e2e.conftest import OpenEnv
from tests.e2e.env import Env
from tests.support.bridge import ACCEPT_ALL, item_writes, settled_item, wait_until

SLOW_RESERVATION_POST = {
    "product": "taskrouter",
    "method": "POST",
    "path": "/Reservations/",
    "latency_ms": 500,
    "count": 1,
}


async def test_double_click_gives_one_rest_accept_and_one_intent(open_env: OpenEnv) -> None:
    env = await open_env(policy={})
    task, reservation = await env.create_task()
    await wait_until(lambda: env.assignment_callbacks(reservation.sid))
    token = await env.admin.token(reservation.worker_sid, ["agent"])

    answers = await asyncio.gather(
        env.plugin(reservation.sid, "accept", {"task_sid": task.sid}, token=token),
        env.plugin(reservation.sid, "accept", {"task_sid": task.sid}, token=token),
    )

    statuses = [status for status, _ in answers]
    assert statuses == [200, 200], answers
    ids = {body["intent"]["intent_id"] for _, body in answers}
    assert len(ids) == 1, answers
    for _, body in answers:
        assert body["intent"]["phase"] == "applied"
        assert body["intent"]["reservation_status"] == "accepted"
    assert len(await env.accepts(reservation.sid)) == 1
    assert env.journal_count() == {"settled": 1}
    writes = item_writes(await env.rest(), reservation.sid)
    assert [w["data"]["phase"] for w in writes] == ["pending", "applied"]


async def test_a_burst_of_clicks_while_the_accept_is_slow(open_env: OpenEnv) -> None:
    env = await open_env(policy={})
    task, reservation = await env.create_task()
    await wait_until(lambda: env.assignment_callbacks(reservation.sid))
    token = await env.admin.token(reservation.worker_sid, ["agent"])
    await env.admin.faults([SLOW_RESERVATION_POST])

    # Callers that wait (wait=30) are all woken when the intent settles, however many there
    # are and whichever way the ones that do not wait (wait=0) come and go: the bound below
    # is liveness only (far above the 0.5 s the slow POST takes), not an ordering proof.
    waits = (0, 30, 0, 30, 30)
    answers = await asyncio.wait_for(
        asyncio.gather(
            *(
                env.plugin(reservation.sid, "accept", {"task_sid": task.sid}, token=token, wait=w)
                for w in waits
            )
        ),
        10,
    )

    for w, (status, body) in zip(waits, answers, strict=True):
        assert status == (202 if w == 0 else 200), (w, body)
    ids = {body["intent"]["intent_id"] for _, body in answers}
    assert len(ids) == 1, answers
    [intent_id] = ids
    settled: Any = await wait_until(lambda: env.settled_intent(intent_id, token))
    assert settled["phase"] == "applied"
    assert len(await env.accepts(reservation.sid)) == 1
    assert env.journal_count() == {"settled": 1}


async def _replay(env: Env, reservation_sid: str) -> tuple[int, Any]:
    """Send the assignment callback again, exactly as the emulator signed and sent it."""
    [first] = await env.assignment_callbacks(reservation_sid)
    return await env.post_webhook(
        "/taskrouter/assignment", first["params"], signature=env.sign(first["url"], first["params"])
    )


async def test_the_same_callback_delivered_twice_gives_one_rest_accept(open_env: OpenEnv) -> None:
    env = await open_env(policy=ACCEPT_ALL)
    task, reservation = await env.create_task()
    item: Any = await wait_until(lambda: settled_item(env.admin, reservation.sid))
    assert item["phase"] == "applied"

    answers = await asyncio.gather(_replay(env, reservation.sid), _replay(env, reservation.sid))

    assert list(answers) == [(200, {}), (200, {})]
    env.idle()
    assert len(await env.accepts(reservation.sid)) == 1
    assert env.journal_count() == {"settled": 1}
    writes = item_writes(await env.rest(), reservation.sid)
    assert [w["data"]["phase"] for w in writes] == ["pending", "applied"]
    assert (await env.reservation(task.sid, reservation.sid)).reservation_status == "accepted"


async def test_a_callback_redelivered_while_the_accept_is_in_flight(open_env: OpenEnv) -> None:
    env = await open_env(policy=ACCEPT_ALL)
    await env.admin.faults([SLOW_RESERVATION_POST])
    _task, reservation = await env.create_task()
    await wait_until(lambda: env.assignment_callbacks(reservation.sid))
    latest = env.latest_for(reservation.sid)
    assert latest is not None and not latest.settled  # still in flight

    status, body = await _replay(env, reservation.sid)

    assert (status, body) == (200, {})
    item: Any = await wait_until(lambda: settled_item(env.admin, reservation.sid))
    assert item["phase"] == "applied"
    assert item["intent_id"] == latest.intent_id
    env.idle()
    assert len(await env.accepts(reservation.sid)) == 1
    assert env.journal_count() == {"settled": 1}
