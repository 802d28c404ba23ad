"""Sync down: ``strict`` makes no REST change without an announcement; ``degrade`` goes ahead
after a bounded wait and the channel converges once Sync is back (rule 7).

Sync is taken down by fault injection (every Sync request answers 503); the recovery loop
runs every 0.2 s, so the intent settles soon after Sync comes back.
"""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import OpenEnv
from tests.e2e.env import Env
from tests.support.bridge import item_writes, reservation_updates, settled_item, wait_until

RULES = {"rules": [{"name": "all", "op": "accept"}]}
SYNC_DOWN = {"product": "sync", "error_rates": {"503": 1}}


async def _sync_back(env: Env) -> None:
    status, body, _ = await env.admin.request("DELETE", "/_emulator/faults")
    assert status == 200, body


async def _settled(env: Env, reservation_sid: str) -> Any:
    latest = env.latest_for(reservation_sid)
    return latest is not None and latest.settled and latest


def _sync_attempts(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e["product"] == "sync"]


def _sync_writes_applied(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sync changes that went through (the start-up check's read of the service may, before
    the outage begins)."""
    return [e for e in _sync_attempts(entries) if e.get("applied") and e["method"] != "GET"]


async def test_strict_makes_no_rest_change_and_settles_failed(open_env: OpenEnv) -> None:
    env = await open_env(
        policy={"assignment": RULES, "sync": {"mode": "strict"}, "recovery": {"interval": 0.2}}
    )
    await env.admin.faults([SYNC_DOWN])
    task, reservation = await env.create_task()

    async def refused() -> Any:
        latest = env.latest_for(reservation.sid)
        return latest is not None and latest.state == "refused" and latest

    intent: Any = await wait_until(refused)
    assert intent.error is not None and "strict" in intent.error.message
    # Recovery keeps trying to settle while Sync is down, and never touches TaskRouter.
    seen = len(_sync_attempts(await env.rest()))

    async def more_sync_attempts() -> bool:
        return len(_sync_attempts(await env.rest())) > seen + 5

    await wait_until(more_sync_attempts)
    assert env.latest_for(reservation.sid).state == "refused"
    assert not reservation_updates(await env.rest(), reservation.sid)
    assert not _sync_writes_applied(await env.rest())

    await _sync_back(env)

    item: Any = await wait_until(lambda: settled_item(env.admin, reservation.sid))
    assert item["phase"] == "failed"
    assert item["op"] == "accept"
    assert item["intent_id"] == intent.intent_id
    assert item["error"]["message"]
    # The journal records the settle just after the item is written: wait for it.
    latest: Any = await wait_until(lambda: _settled(env, reservation.sid))
    assert latest.settled and latest.outcome == "failed"
    entries = await env.rest()
    assert not reservation_updates(entries, reservation.sid)
    assert [w["data"]["phase"] for w in item_writes(entries, reservation.sid)] == ["failed"]
    assert (await env.reservation(task.sid, reservation.sid)).reservation_status == "pending"


async def test_degrade_accepts_after_the_bounded_wait_and_converges(open_env: OpenEnv) -> None:
    env = await open_env(
        policy={
            "assignment": RULES,
            "sync": {"mode": "degrade", "announce_timeout": 0.3},
            "recovery": {"interval": 0.2},
        }
    )
    # The first item write hangs for far longer than the announce may take; every one fails.
    await env.admin.faults(
        [
            {"product": "sync", "method": "POST", "path": "/Items", "latency_ms": 3000, "count": 1},
            SYNC_DOWN,
        ]
    )
    task, reservation = await env.create_task()

    async def accepted() -> Any:
        updates = [
            u for u in reservation_updates(await env.rest(), reservation.sid) if u["applied"]
        ]
        return updates

    [accept] = await wait_until(accepted)
    assert accept["form"]["ReservationStatus"] == "accepted"
    entries = await env.rest()
    # The change was made while Sync was still down: no Sync write had gone through.
    assert not _sync_writes_applied(entries)
    intent = env.latest_for(reservation.sid)
    assert intent.late_announce
    assert not intent.settled

    await _sync_back(env)

    item: Any = await wait_until(lambda: settled_item(env.admin, reservation.sid))
    assert item["phase"] == "applied"
    assert item["reservation_status"] == "accepted"
    assert item["intent_id"] == intent.intent_id
    entries = await env.rest()
    writes = item_writes(entries, reservation.sid)
    # The channel converged: the item's only writes come after the accept, and none of them
    # shows "pending" for a change that has already happened.
    assert all(w["seq"] > accept["seq"] for w in writes)
    assert [w["data"]["phase"] for w in writes] == ["applied"]
    assert len([u for u in reservation_updates(entries, reservation.sid) if u["applied"]]) == 1
    # The journal records the settle just after the item is written: wait for it.
    latest: Any = await wait_until(lambda: _settled(env, reservation.sid))
    assert latest.settled and latest.outcome == "applied"
    assert (await env.reservation(task.sid, reservation.sid)).reservation_status == "accepted"


async def test_strict_plugin_accept_is_503_while_sync_is_down(open_env: OpenEnv) -> None:
    env = await open_env(policy={"sync": {"mode": "strict"}, "recovery": {"interval": 0.2}})
    task, reservation = await env.create_task()
    await wait_until(lambda: env.assignment_callbacks(reservation.sid))
    token = await env.admin.token(reservation.worker_sid, ["agent"])
    await env.admin.faults([SYNC_DOWN])

    status, body = await env.plugin(reservation.sid, "accept", {"task_sid": task.sid}, token=token)

    assert status == 503, body
    assert body["error"]["message"]
    assert body["intent"]["phase"] == "failed"
    assert not reservation_updates(await env.rest(), reservation.sid)

    await _sync_back(env)
    item: Any = await wait_until(lambda: settled_item(env.admin, reservation.sid))
    assert item["phase"] == "failed"
    assert item["intent_id"] == body["intent"]["intent_id"]
    # Sync is back: the agent may accept now, announced first as always.
    status, body = await env.plugin(reservation.sid, "accept", {"task_sid": task.sid}, token=token)
    assert status == 200, body
    assert body["intent"]["reservation_status"] == "accepted"
    entries = await env.rest()
    [update] = reservation_updates(entries, reservation.sid)
    pending = [w for w in item_writes(entries, reservation.sid) if w["data"]["phase"] == "pending"]
    assert pending and pending[-1]["seq"] < update["seq"]


async def test_a_change_made_elsewhere_during_the_outage_reaches_the_channel(
    open_env: OpenEnv,
) -> None:
    env = await open_env(
        policy={"assignment": RULES, "sync": {"mode": "strict"}, "recovery": {"interval": 0.2}}
    )
    await env.admin.faults([SYNC_DOWN])
    task, reservation = await env.create_task()

    async def refused() -> Any:
        latest = env.latest_for(reservation.sid)
        return latest is not None and latest.state == "refused" and latest

    await wait_until(refused)
    # While Sync is down (and the bridge's intent is refused but not yet settled), the agent
    # accepts in Flex itself.
    await (
        env.ws.tasks(task.sid)
        .reservations(reservation.sid)
        .update_async(reservation_status="accepted")
    )
    [event] = await wait_until(lambda: env.events_sent("reservation.accepted", reservation.sid))
    assert event["status"] == 204

    await _sync_back(env)

    # Rule 6: once Sync is back, the channel ends on TaskRouter's truth.
    async def shows_accepted() -> Any:
        item = await settled_item(env.admin, reservation.sid)
        return item if item and item["reservation_status"] == "accepted" else None

    item: Any = await wait_until(shows_accepted)
    assert item["phase"] == "applied"
    assert item["error"] is None
    env.idle()
    entries = await env.rest()
    assert [u["applied"] for u in reservation_updates(entries, reservation.sid)] == [True]
    final = item_writes(entries, reservation.sid)[-1]["data"]
    assert final["reservation_status"] == "accepted"


async def test_strict_with_slow_sync_answers_the_callback_with_no_instruction(
    open_env: OpenEnv,
) -> None:
    """An instruction rule in strict mode, Sync slow (not failing): the announce cannot finish
    within the callback's budget, so the reply carries no instruction. No announce, no change:
    the reservation stays pending for the agent, and the item, once written, says failed."""
    env = await open_env(
        policy={
            "assignment": {"rules": [{"name": "all", "op": "accept", "via": "instruction"}]},
            "sync": {"mode": "strict", "announce_timeout": 0.3},
            "recovery": {"interval": 0.2},
        }
    )
    await env.admin.faults(
        [{"product": "sync", "method": "POST", "path": "/Items", "latency_ms": 2000, "count": 1}]
    )
    task, reservation = await env.create_task()

    async def answered() -> Any:
        return await env.assignment_callbacks(reservation.sid)

    [callback] = await wait_until(answered)
    assert callback["status"] == 200
    item: Any = await wait_until(lambda: settled_item(env.admin, reservation.sid))
    assert item["phase"] == "failed"
    assert item["error"]["code"] is None and "strict" in item["error"]["message"]
    assert (await env.reservation(task.sid, reservation.sid)).reservation_status == "pending"
    entries = await env.rest()
    assert not reservation_updates(entries, reservation.sid)
    # Nothing on the channel ever said the accept was happening, let alone done.
    assert [w["data"]["phase"] for w in item_writes(entries, reservation.sid)] == ["failed"]
    # The journal records the settle just after the item is written: wait for it.
    latest: Any = await wait_until(lambda: _settled(env, reservation.sid))
    assert latest.settled and latest.outcome == "failed" and latest.via == "instruction"
