"""Operations endpoints: liveness, readiness and Prometheus metrics.

Readiness is cached: an answer serves every ``/readyz`` for ``READY_CACHE_SECONDS``, and while
the checks run, every caller waits for that one run (anonymous callers cannot spend the
bridge's Twilio budget: at most two upstream calls per ``READY_CACHE_SECONDS``). The journal's
ping shares the cache (one write per ``READY_CACHE_SECONDS`` at most, whoever asks).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from quart import Blueprint, Quart, Response, current_app, jsonify

from flex_bridge.app.metrics import Metrics
from flex_bridge.app.services import Services
from flex_bridge.errors import FlexBridgeError, UpstreamError
from flex_bridge.settings import Settings
from flex_bridge.web import errors
from flex_bridge.web.auth import bearer
from flex_bridge.web.context import services
from flex_bridge.web.errors import ApiProblem, error

bp = Blueprint("ops", __name__)
CHECK_TIMEOUT = 3.0
READY_CACHE_SECONDS = 5.0  # how long one readiness answer serves every /readyz
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
logger = logging.getLogger("flex_bridge.ops")

# What to check when the first upstream check fails at start-up, by HTTP status.
HINTS = {
    "taskrouter": {
        401: "check TWILIO_AUTH_TOKEN (and TWILIO_API_KEY/TWILIO_API_SECRET)",
        403: "check TWILIO_AUTH_TOKEN (and TWILIO_API_KEY/TWILIO_API_SECRET)",
        404: "check FLEX_BRIDGE_WORKSPACE_SID",
    },
    "sync": {
        401: "check TWILIO_AUTH_TOKEN (and TWILIO_API_KEY/TWILIO_API_SECRET)",
        403: "check TWILIO_AUTH_TOKEN (and TWILIO_API_KEY/TWILIO_API_SECRET)",
        404: "check FLEX_BRIDGE_SYNC_SERVICE_SID",
    },
}
WHAT = {"taskrouter": "TaskRouter workspace fetch", "sync": "Sync service fetch"}


class Readiness:
    """The checks behind ``/readyz``, cached for ``ttl`` seconds (``READY_CACHE_SECONDS``;
    tests change it), one run at a time."""

    def __init__(self, svc: Services, clock: Callable[[], float] = time.monotonic) -> None:
        self.checks: dict[str, Callable[[], Awaitable[None]]] = {
            "journal": svc.journal.ping,
            "taskrouter": svc.taskrouter.ping,
            "sync": svc.channel.ping,
        }
        self.ttl = READY_CACHE_SECONDS
        self.clock = clock
        self.metrics = svc.metrics
        for name in self.checks:  # exported before the first run, so alerts see every check
            self.metrics.ready.labels(name)
        self.runs = 0  # how many times the checks ran (tests)
        self._answer: tuple[float, dict[str, str], dict[str, BaseException]] | None = None
        self._running: asyncio.Future[tuple[dict[str, str], dict[str, BaseException]]] | None = None

    async def results(self) -> dict[str, str]:
        return (await self.run())[0]

    async def run(self) -> tuple[dict[str, str], dict[str, BaseException]]:
        """``(results, errors)``: each check's ``"ok"`` or ``"failing: why"``, and the error
        of each failing check (absent when it timed out)."""
        if self._answer is not None and self.clock() - self._answer[0] < self.ttl:
            return self._answer[1], self._answer[2]
        if self._running is None:
            self._running = asyncio.ensure_future(self._check())
            self._running.add_done_callback(self._done)
        # shield: a caller that goes away does not cancel the others' answer.
        return await asyncio.shield(self._running)

    def _done(
        self, running: asyncio.Future[tuple[dict[str, str], dict[str, BaseException]]]
    ) -> None:
        self._running = None
        if not running.cancelled() and running.exception() is None:
            results, errors = running.result()
            self._answer = (self.clock(), results, errors)

    async def _check(self) -> tuple[dict[str, str], dict[str, BaseException]]:
        self.runs += 1
        errors: dict[str, BaseException] = {}

        async def one(name: str, check: Callable[[], Awaitable[None]]) -> str:
            try:
                await asyncio.wait_for(check(), CHECK_TIMEOUT)
            except TimeoutError:
                return "failing: no answer in time"
            except FlexBridgeError as exc:
                errors[name] = exc
                return f"failing: {exc}" if str(exc) else f"failing: {type(exc).__name__}"
            return "ok"

        # Concurrently: one hanging upstream must not hold up the others' answers.
        outcomes = await asyncio.gather(*(one(n, c) for n, c in self.checks.items()))
        results = dict(zip(self.checks, outcomes, strict=True))
        for name, outcome in results.items():
            self.metrics.ready.labels(name).set(1 if outcome == "ok" else 0)
        self.metrics.ready_checked.set_to_current_time()
        return results, errors


async def first_check(readiness: Readiness) -> None:
    """Run the readiness checks once at start-up and say clearly what fails upstream: a
    wrong but well-formed SID or auth token would otherwise start silently."""
    results, errors = await readiness.run()
    for name in ("taskrouter", "sync"):
        if results[name] == "ok":
            continue
        exc = errors.get(name)
        status = exc.status if isinstance(exc, UpstreamError) else None
        hint = HINTS[name].get(status or 0, "check FLEX_BRIDGE_TWILIO_BASE_URL and the network")
        logger.warning(
            "start-up check: the %s failed (%s): %s; /readyz answers 503 until it passes",
            WHAT[name],
            f"HTTP {status}" if status else results[name].removeprefix("failing: "),
            hint,
        )


@bp.get("/healthz")
async def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
async def readyz() -> Response:
    readiness: Readiness = current_app.config["readiness"]
    results = await readiness.results()
    ready = all(v == "ok" for v in results.values())
    response = jsonify({"status": "ready" if ready else "not_ready", "checks": results})
    response.status_code = 200 if ready else 503
    return response


def metrics_answer(metrics: Metrics, token: str | None) -> Response:
    """``/metrics``: the registry's text, behind ``Authorization: Bearer <token>`` if set."""
    if token is not None:
        given = bearer()
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
            response = error(401, "unauthorized", "/metrics needs Authorization: Bearer <token>")
            response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return Response(metrics.render(), content_type=METRICS_CONTENT_TYPE)


@bp.get("/metrics")
async def metrics() -> Response:
    settings: Settings = current_app.config["settings"]
    if settings.metrics_port is not None:
        raise ApiProblem(
            404, "not_found", f"/metrics is served on port {settings.metrics_port}, not here"
        )
    return metrics_answer(services().metrics, settings.metrics_token)


def create_metrics_app(metrics: Metrics, token: str | None) -> Quart:
    """``/metrics`` alone, for its own port (``FLEX_BRIDGE_METRICS_PORT``)."""
    app = Quart("flex_bridge_metrics")
    errors.install(app)  # anything else: 404 or 405, in JSON

    @app.get("/metrics")
    async def metrics_only() -> Response:
        return metrics_answer(metrics, token)

    return app
