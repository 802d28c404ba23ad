"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from quart import Blueprint, Response, current_app, jsonify

from flex_bridge.errors import FlexBridgeError
from flex_bridge.web.services import Services

bp = Blueprint("ops", __name__)


def services() -> Services:
    return current_app.config["services"]  # type: ignore[no-any-return]


@bp.get("/healthz")
async def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
async def readyz() -> Response:
    svc = services()
    checks = {
        "journal": svc.journal.ping(),
        "taskrouter": svc.taskrouter.ping(),
        "sync": svc.channel.ping(),
    }
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check, 3.0)
            results[name] = "ok"
        except (FlexBridgeError, TimeoutError) as exc:
            results[name] = f"failing: {exc}" if str(exc) else "failing: no answer in time"
    ready = all(v == "ok" for v in results.values())
    response = jsonify({"status": "ready" if ready else "not_ready", "checks": results})
    response.status_code = 200 if ready else 503
    return response


@bp.get("/metrics")
async def metrics() -> Response:
    return Response(
        services().metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8"
    )
