"""The HTTP layer: ``create_app(settings)`` and its blueprints (webhooks, /flex, ops)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Quart

from flex_bridge.app.assignment import adopt_at_startup
from flex_bridge.app.events import register_builtin_handlers
from flex_bridge.app.metrics import Metrics
from flex_bridge.app.services import Services, ServicesFactory, open_checked, open_services
from flex_bridge.settings import Settings
from flex_bridge.web import cors, errors

logger = logging.getLogger("flex_bridge.web")
access_logger = logging.getLogger("flex_bridge.access")

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


class AccessLog:
    """ASGI middleware: one INFO line per HTTP request on ``flex_bridge.access`` (method, path
    without its query string, status, duration in ms): no headers, no query, no body, so no
    token or phone number. The same for uvicorn and Hypercorn, through the process's logging
    (``FLEX_BRIDGE_LOG_FORMAT``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = int(message.get("status", 500))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            method, path = scope.get("method", "?"), scope.get("path", "?")
            access_logger.info(
                "%s %s %d %.1fms",
                method,
                path,
                status,
                duration_ms,
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": duration_ms,
                },
            )


async def open_app(app: Quart) -> Services:
    """Open the app's services now, before serving (``flex-bridge serve`` does, so that a
    journal that cannot be opened or user code that cannot be loaded stops start-up with one
    ``ConfigError`` line, before "listening"). ``before_serving`` then uses them."""
    svc: Services | None = app.config.get("services")
    if svc is None:
        opener: Callable[[], Awaitable[Services]] = app.config["open_services"]
        svc = await opener()
        app.config["services"] = svc
    return svc


def create_app(settings: Settings, *, services: ServicesFactory | None = None) -> Quart:
    from flex_bridge.web import flex, ops, tasks, webhooks

    app = Quart("flex_bridge")
    app.config["MAX_CONTENT_LENGTH"] = 256 * 1024
    app.config["settings"] = settings
    cors.configure(app, settings.cors_origins)
    metrics = Metrics()
    app.config["metrics"] = metrics
    factory = services or open_services

    async def opener() -> Services:
        return await open_checked(factory, settings, metrics)

    app.config["open_services"] = opener

    @app.before_serving
    async def startup() -> None:
        if settings.public_url is None:
            logger.warning(
                "FLEX_BRIDGE_PUBLIC_URL is unset (development): webhook signatures are "
                "checked against the request's Host header, which a caller chooses"
            )
        svc = await open_app(app)
        register_builtin_handlers(svc)
        readiness = ops.Readiness(svc)
        app.config["readiness"] = readiness
        await svc.recovery.sweep()
        svc.recovery.start(settings.policy.recovery_interval)
        svc.inbox.start(settings.policy.recovery_interval)
        svc.inbox.apply_soon()  # what an instance that died left in the inbox
        svc.reconciler.start(settings.policy.reconcile.interval)
        svc.spawn(adopt_at_startup(svc))
        svc.spawn(ops.first_check(readiness))  # beside start-up, not before it

    @app.after_serving
    async def shutdown() -> None:
        svc: Services | None = app.config.get("services")
        if svc is not None:
            await svc.close()

    errors.install(app)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(flex.bp)
    app.register_blueprint(tasks.bp)
    app.register_blueprint(ops.bp)
    if settings.access_log:
        app.asgi_app = AccessLog(app.asgi_app)  # type: ignore[method-assign]
    return app


__all__ = ["AccessLog", "create_app", "open_app"]
