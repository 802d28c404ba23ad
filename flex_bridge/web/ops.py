"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from quart import Blueprint, Response, jsonify

from flex_bridge.errors import FlexBridgeError
from flex_bridge.web.context import services

bp = Blueprint("ops", __name__)
CHECK_TIMEOUT = 3.0


@bp.get("/healthz")
async def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
async def readyz() -> Response:
    svc = services()
    checks = {
        "journal": svc.journal.ping,
        "taskrouter": svc.taskrouter.ping,
        "sync": svc.channel.ping,
    }

    async def run(check: Callable[[], Awaitable[None]]) -> str:
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT)
        except TimeoutError:
            return "failing: no answer in time"
        except FlexBridgeError as exc:
            return f"failing: {exc}" if str(exc) else f"failing: {type(exc).__name__}"
        return "ok"

    # Concurrently: one hanging upstream must not hold up the others' answers.
    outcomes = await asyncio.gather(*(run(check) for check in checks.values()))
    results = dict(zip(checks, outcomes, strict=True))
    ready = all(v == "ok" for v in results.values())
    response = jsonify({"status": "ready" if ready else "not_ready", "checks": results})
    response.status_code = 200 if ready else 503
    return response


@bp.get("/metrics")
async def metrics() -> Response:
    return Response(
        services().metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8"
    )
