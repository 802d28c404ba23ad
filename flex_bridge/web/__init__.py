"""The HTTP layer: ``create_app(settings)`` and its blueprints (webhooks, /flex, ops)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from quart import Quart, Response
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from flex_bridge.metrics import Metrics
from flex_bridge.settings import Settings
from flex_bridge.web.errors import error
from flex_bridge.web.services import Services, ServicesFactory, open_services

logger = logging.getLogger("flex_bridge.web")


def builtin_handlers(svc: Services) -> None:
    """Rule 6 (reservation events settle items) and the timeout record."""

    async def settle_from_event(event: Mapping[str, str]) -> None:
        await svc.coordinator.on_reservation_event(
            event.get("EventType", ""),
            reservation_sid=event.get("ReservationSid") or event.get("ResourceSid", ""),
            task_sid=event.get("TaskSid", ""),
            worker_sid=event.get("WorkerSid", ""),
        )

    async def record_timeout(event: Mapping[str, str]) -> None:
        reservation = event.get("ReservationSid") or event.get("ResourceSid", "")
        await svc.journal.record_timeout(event.get("TaskSid", ""), reservation)

    for event_type in (
        "reservation.accepted",
        "reservation.rejected",
        "reservation.timeout",
        "reservation.canceled",
        "reservation.rescinded",
        "reservation.wrapup",
        "reservation.completed",
    ):
        svc.handlers.register(event_type, settle_from_event, "flex_bridge:settle_from_event")
    svc.handlers.register("reservation.timeout", record_timeout, "flex_bridge:record_timeout")


def create_app(settings: Settings, *, services: ServicesFactory | None = None) -> Quart:
    from flex_bridge.web import flex, ops, webhooks

    app = Quart("flex_bridge")
    app.config["MAX_CONTENT_LENGTH"] = 256 * 1024
    app.config["settings"] = settings
    metrics = Metrics()
    factory = services or open_services

    @app.before_serving
    async def startup() -> None:
        svc = await factory(settings, metrics)
        builtin_handlers(svc)
        app.config["services"] = svc
        await svc.coordinator.recover()
        svc.coordinator.start_recovery(settings.policy.recovery_interval)

    @app.after_serving
    async def shutdown() -> None:
        svc: Services | None = app.config.get("services")
        if svc is not None:
            await svc.close()

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        """Routing and protocol errors (404, 405, 413, ...) answer JSON like every other."""
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error(status, code, exc.description or exc.name or "error")
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return response

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        logger.exception("unhandled error: %r", exc)
        return error(500, "internal_error", "the bridge failed to handle this request")

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(flex.bp)
    app.register_blueprint(ops.bp)
    return app


__all__ = ["create_app"]
