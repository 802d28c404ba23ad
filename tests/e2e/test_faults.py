"""Injected TaskRouter faults under a policy accept: retried when safe, fetched when ambiguous.

Retry waits are off in tests (``set_testing``), so these run fast; the attempt cap and the
ordering still apply, and the emulator's log shows every attempt with the fault it got.
"""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import OpenEnv
from tests.e2e.env import Env
from tests.support.bridge import (
    ACCEPT_ALL,
    item_writes,
    reservation_updates,
    settled_item,
    wait_until,
)


def _on_reservation_post(**fault: Any) -> dict[str, Any]:
    return {"product": "taskrouter", "method": "POST", "path": "/Reservations/", **fault}


async def _accepted(env: Env) -> tuple[Any, Any, list[dict[str, Any]]]:
    """Create a task; wait for its item to settle; the reservation's REST log entries."""
    task, reservation = await env.create_task()
    item: Any = await wait_until(lambda: settled_item(env.admin, reservation.sid))
    assert item["phase"] == "applied", item
    assert item["reservation_status"] == "accepted"
    assert item["error"] is None
    env.idle()
    entries = [
        e
        for e in await env.rest()
        if e["product"] == "taskrouter" and f"/Reservations/{reservation.sid}" in e["path"]
    ]
    fetched = await env.reservation(task.sid, reservation.sid)
    assert fetched.reservation_status == "accepted"
    return task, reservation, entries


def _assert_announced_first(entries: list[dict[str, Any]], reservation_sid: str) -> None:
    writes = item_writes(entries, reservation_sid)
    updates = reservation_updates(entries, reservation_sid)
    assert [w["data"]["phase"] for w in writes] == ["pending", "applied"]
    assert writes[0]["seq"] < min(u["seq"] for u in updates)
    assert max(u["seq"] for u in updates) < writes[1]["seq"]


async def test_429s_are_retried_and_the_accept_lands_once(open_env: OpenEnv) -> None:
    env = await open_env(policy=ACCEPT_ALL)
    await env.admin.faults([_on_reservation_post(error_rates={"429": 1}, retry_after=2, count=2)])

    _, reservation, entries = await _accepted(env)

    posts = [e for e in entries if e["method"] == "POST"]
    assert [(p["status"], p["applied"]) for p in posts] == [
        (429, False),
        (429, False),
        (200, True),
    ]
    assert [p["fault"] for p in posts] == ["error_429", "error_429", None]
    # A 429 was not processed: there is nothing to resolve, so no fetch is needed.
    assert not [e for e in entries if e["method"] == "GET"]
    _assert_announced_first(await env.rest(), reservation.sid)
    metrics = env.bridge.call(_metrics_text)
    assert 'flex_bridge_upstream_429_total{system="taskrouter"} 2.0' in metrics
    assert 'flex_bridge_upstream_retries_total{reason="429",system="taskrouter"} 2.0' in metrics


async def _metrics_text(svc: Any) -> str:
    return str(svc.metrics.render().decode())


async def test_503s_are_retried_after_a_fetch_and_the_accept_lands_once(
    open_env: OpenEnv,
) -> None:
    env = await open_env(policy=ACCEPT_ALL)
    await env.admin.faults([_on_reservation_post(error_rates={"503": 1}, count=2)])

    _, reservation, entries = await _accepted(env)

    posts = [e for e in entries if e["method"] == "POST"]
    assert [(p["status"], p["applied"]) for p in posts] == [
        (503, False),
        (503, False),
        (200, True),
    ]
    # A 5xx on a write is ambiguous: before each new POST the bridge fetched the reservation
    # and saw it still pending.
    methods = [e["method"] for e in entries]
    assert methods == ["POST", "GET", "POST", "GET", "POST"], methods
    _assert_announced_first(await env.rest(), reservation.sid)


async def test_a_lost_response_after_commit_is_resolved_by_a_fetch(open_env: OpenEnv) -> None:
    env = await open_env(policy=ACCEPT_ALL)
    await env.admin.faults([_on_reservation_post(lose_after_commit=1, lose_mode="drop", count=1)])

    _task, reservation, entries = await _accepted(env)

    posts = [e for e in entries if e["method"] == "POST"]
    assert len(posts) == 1, posts  # never sent again
    [post] = posts
    assert post["applied"] and post["fault"] == "lose_drop"
    gets = [e for e in entries if e["method"] == "GET" and e["seq"] > post["seq"]]
    assert gets, "the ambiguous outcome was not resolved by a fetch"
    assert gets[0]["status"] == 200
    all_entries = await env.rest()
    _assert_announced_first(all_entries, reservation.sid)
    settle = item_writes(all_entries, reservation.sid)[-1]
    assert gets[0]["seq"] < settle["seq"]
    env.idle()  # the journal records the settle just after the item is written
    latest = env.latest_for(reservation.sid)
    assert latest.settled and latest.error is None
    assert latest.attempts == 1


async def test_a_504_after_commit_is_resolved_by_a_fetch(open_env: OpenEnv) -> None:
    env = await open_env(policy=ACCEPT_ALL)
    await env.admin.faults([_on_reservation_post(lose_after_commit=1, lose_mode="504", count=1)])

    _, reservation, entries = await _accepted(env)

    posts = [e for e in entries if e["method"] == "POST"]
    assert len(posts) == 1 and posts[0]["applied"] and posts[0]["fault"] == "lose_504"
    assert [e["method"] for e in entries] == ["POST", "GET"]
    _assert_announced_first(await env.rest(), reservation.sid)


async def test_persistent_503s_stop_at_the_attempt_cap(open_env: OpenEnv) -> None:
    env = await open_env(
        policy={**ACCEPT_ALL, "retry": {"max_attempts": 3}},
    )
    await env.admin.faults([_on_reservation_post(error_rates={"503": 1})])

    task, reservation = await env.create_task()
    item: Any = await wait_until(lambda: settled_item(env.admin, reservation.sid))

    assert item["phase"] == "failed"
    assert item["reservation_status"] == "pending"  # the last fetch still saw it pending
    assert item["error"]["code"] == 20503
    env.idle()
    posts = [e for e in reservation_updates(await env.rest(), reservation.sid)]
    assert len(posts) == 3
    assert not [p for p in posts if p["applied"]]
    assert (await env.reservation(task.sid, reservation.sid)).reservation_status == "pending"
