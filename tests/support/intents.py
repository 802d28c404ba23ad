"""One way to build an Intent for tests: a plugin accept, changed as a test needs."""

from __future__ import annotations

from typing import Any

from flex_bridge.domain.intents import Intent, new_intent_id


def make_intent(
    *,
    at: float,
    reservation_sid: str,
    task_sid: str,
    worker_sid: str,
    state: str = "recorded",
    **changes: Any,
) -> Intent:
    base = Intent(
        intent_id=new_intent_id(at),
        op="accept",
        reservation_sid=reservation_sid,
        task_sid=task_sid,
        worker_sid=worker_sid,
        source="plugin",
        params={"task_sid": task_sid},
        state=state,  # type: ignore[arg-type]
        deadline=at + 120,
        created_at=at,
        updated_at=at,
    )
    return base.evolve(**changes)
