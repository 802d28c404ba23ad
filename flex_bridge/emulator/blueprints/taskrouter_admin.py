"""The admin API's TaskRouter knobs: how long workers take to answer, and task retention.

- ``GET /_emulator/ring``, ``POST /_emulator/ring`` ``{"seconds": N | "never"}``: how long a
  worker's phone rings before it is answered, for workers with no time of their own.
- ``GET /_emulator/workers/<WK>/ring``, ``POST`` ``{"seconds": N | "never" | null}``: one
  worker's (null: back to the default).
- ``GET /_emulator/tasks/retention``, ``POST`` ``{"finished": N, "assigned": N}``: seconds
  before the system deletes a completed or canceled task, and a task still assigned.

All times are on the emulator clock (``/_emulator/clock/advance`` moves them). docs/emulator.md
describes the behaviours they steer.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from flex_bridge.emulator.api import ApiError
from flex_bridge.emulator.blueprints.responses import (
    bad_request,
    json_body,
    json_response,
)
from flex_bridge.emulator.core import Emulator

NEVER = "never"
# Longer than any reservation can wait (86,400 s): a ring time past it is never answered.
MAX_RING = 86_400
MAX_RETENTION = 30 * 86_400
RETENTION_FIELDS = ("finished", "assigned")


def _ring_value(seconds: float | None) -> float | str:
    return NEVER if seconds is None else seconds


def _parse_ring(body: Any, allow_null: bool) -> tuple[bool, float | None] | str:
    """``(given, seconds)`` from ``{"seconds": ...}``, or the reason it is not valid."""
    if not isinstance(body, dict) or set(body) != {"seconds"}:
        return 'The body must be {"seconds": <seconds> | "never"}'
    value = body["seconds"]
    if value == NEVER:
        return True, None
    if value is None and allow_null:
        return False, None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 'seconds must be a number of seconds or "never"'
    if not 0 <= value <= MAX_RING:
        return f"seconds must be between 0 and {MAX_RING}"
    return True, float(value)


def register_taskrouter_admin(blueprint: Blueprint, emu: Emulator) -> None:
    """Add the TaskRouter knobs to the admin blueprint (``/_emulator``)."""
    phones = emu.taskrouter.phones
    retention = emu.taskrouter.retention

    def worker_view(sid: str) -> dict[str, Any]:
        return {
            "worker_sid": sid,
            "seconds": _ring_value(phones.ring_time(sid)),
            "default": sid not in phones.by_worker,
        }

    def known(sid: str) -> None:
        """404 for a worker the emulator does not have (answered by the app's ApiError handler)."""
        if emu.taskrouter.find_worker(sid) is None:
            raise ApiError(404, 20404, f"The requested resource Worker {sid} was not found")

    @blueprint.get("/ring")
    async def get_default_ring() -> Response:
        return json_response({"seconds": _ring_value(phones.default)})

    @blueprint.post("/ring")
    async def set_default_ring() -> Response:
        parsed = _parse_ring(await json_body(), allow_null=False)
        if isinstance(parsed, str):
            return bad_request(parsed)
        phones.default = parsed[1]
        return json_response({"seconds": _ring_value(phones.default)})

    @blueprint.get("/workers/<sid>/ring")
    async def get_worker_ring(sid: str) -> Response:
        known(sid)
        return json_response(worker_view(sid))

    @blueprint.post("/workers/<sid>/ring")
    async def set_worker_ring(sid: str) -> Response:
        known(sid)
        parsed = _parse_ring(await json_body(), allow_null=True)
        if isinstance(parsed, str):
            return bad_request(parsed)
        given, seconds = parsed
        if given:
            phones.set(sid, seconds)
        else:
            phones.reset(sid)
        return json_response(worker_view(sid))

    @blueprint.get("/tasks/retention")
    async def get_retention() -> Response:
        return json_response(retention.describe())

    @blueprint.post("/tasks/retention")
    async def set_retention() -> Response:
        body = await json_body()
        if not isinstance(body, dict) or not body or set(body) - set(RETENTION_FIELDS):
            return bad_request('The body must be {"finished": <seconds>, "assigned": <seconds>}')
        for name, value in body.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                return bad_request(f"{name} must be a number of seconds")
            if not 0 <= value <= MAX_RETENTION:
                return bad_request(f"{name} must be between 0 and {MAX_RETENTION} seconds")
        if "finished" in body:
            retention.finished = float(body["finished"])
        if "assigned" in body:
            retention.assigned = float(body["assigned"])
        return json_response(retention.describe())
