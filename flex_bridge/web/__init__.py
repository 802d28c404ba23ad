"""The HTTP layer: ``create_app(settings)`` and its blueprints (webhooks, /flex, ops)."""

from __future__ import annotations

from quart import Quart

from flex_bridge.app.assignment import adopt_at_startup
from flex_bridge.app.events import register_builtin_handlers
from flex_bridge.app.metrics import Metrics
from flex_bridge.app.services import Services, ServicesFactory, open_services
from flex_bridge.settings import Settings
from flex_bridge.web import cors, errors


def create_app(settings: Settings, *, services: ServicesFactory | None = None) -> Quart:
    from flex_bridge.web import flex, ops, tasks, webhooks

    app = Quart("flex_bridge")
    app.config["MAX_CONTENT_LENGTH"] = 256 * 1024
    app.config["settings"] = settings
    cors.configure(app, settings.cors_origins)
    metrics = Metrics()
    factory = services or open_services

    @app.before_serving
    async def startup() -> None:
        svc = await factory(settings, metrics)
        register_builtin_handlers(svc)
        app.config["services"] = svc
        await svc.recovery.sweep()
        svc.recovery.start(settings.policy.recovery_interval)
        svc.inbox.start(settings.policy.recovery_interval)
        svc.inbox.apply_soon()  # what an instance that died left in the inbox
        svc.reconciler.start(settings.policy.reconcile.interval)
        svc.spawn(adopt_at_startup(svc))

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
    return app


__all__ = ["create_app"]
