"""The emulator's HTTP surface: Twilio's REST paths, the IAM endpoint, the admin API, the feed
and the SDK surface for browsers.

Addresses follow ``http://host:port/<product>/v1/...`` with product ``taskrouter``, ``sync``
or ``iam``; the admin API lives under ``/_emulator/`` (guarded by ``blueprints.admin_guard``)
and the token-authenticated SDK surface (with CORS for any origin) under ``/sdk/``
(docs/emulator.md describes them). Each concern is a blueprint in
:mod:`flex_bridge.emulator.blueprints`; this module puts them together with the error
handlers and the serving hooks.
"""

from __future__ import annotations

import logging

from quart import Quart, Response, has_request_context, request, websocket
from werkzeug.exceptions import HTTPException

from flex_bridge.emulator.answers import http_error_answer
from flex_bridge.emulator.api import ApiError
from flex_bridge.emulator.blueprints.admin import admin_blueprint
from flex_bridge.emulator.blueprints.admin_guard import install_admin_guard
from flex_bridge.emulator.blueprints.feed import feed_blueprint
from flex_bridge.emulator.blueprints.iam import iam_blueprint
from flex_bridge.emulator.blueprints.responses import error_response, to_response
from flex_bridge.emulator.blueprints.rest import (
    product_blueprint,
    rest_endpoints,
    unknown_products,
)
from flex_bridge.emulator.blueprints.sdk import sdk_blueprint
from flex_bridge.emulator.blueprints.sdk_ws import sdk_socket_blueprint
from flex_bridge.emulator.core import Emulator
from flex_bridge.emulator.front_door import (
    ResponseLost,
    RestFrontDoor,
    reserved_prefixes,
    with_dropped_responses,
)

__all__ = ["ResponseLost", "create_emulator_app"]

MAX_CONTENT_LENGTH = 1024 * 1024


class _QuietLostResponses(logging.Filter):
    """Injected dropped responses are expected; don't report them as server errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ResponseLost))


# Either server (flex_bridge/serving.py) logs the exception that dropped the connection.
for _server_log in ("hypercorn.error", "uvicorn.error"):
    logging.getLogger(_server_log).addFilter(_QuietLostResponses())


async def http_error(exc: HTTPException) -> Response:
    """Unknown paths, wrong methods, oversized bodies and unexpected failures, in Twilio's shape.

    Not an HTML page. Quart has already logged an unexpected failure. This runs for WebSocket
    handshakes as well, where there is no ``request``.
    """
    status = exc.code or 500
    path = ""
    if status == 404:
        path = request.path if has_request_context() else websocket.path
    return to_response(http_error_answer(status, exc.description or exc.name, path))


async def api_error(exc: ApiError) -> Response:
    return error_response(exc)


def create_emulator_app(emu: Emulator) -> Quart:
    """The emulator's Quart app; with ``rest_path = "asgi"`` (the default) its ASGI entry is
    the REST front door, which hands Quart everything but the REST API."""
    app = Quart("flex_bridge.emulator")
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH

    @app.before_serving
    async def startup() -> None:
        await emu.start()

    @app.after_serving
    async def shutdown() -> None:
        await emu.close()

    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(ApiError, api_error)
    install_admin_guard(app, emu.config)
    for product in emu.routers:
        app.register_blueprint(product_blueprint(emu, product))
    app.register_blueprint(unknown_products())
    app.register_blueprint(iam_blueprint(emu))
    app.register_blueprint(admin_blueprint(emu))
    app.register_blueprint(feed_blueprint(emu))
    app.register_blueprint(sdk_blueprint(emu))
    app.register_blueprint(sdk_socket_blueprint(emu))
    app.asgi_app = with_dropped_responses(app.asgi_app)  # type: ignore[method-assign, assignment]
    if emu.config.rest_path == "asgi":  # else "quart" (EmulatorConfig checks it)
        rules = [(rule.rule, rule.endpoint) for rule in app.url_map.iter_rules()]
        app.asgi_app = RestFrontDoor(  # type: ignore[method-assign, assignment]
            emu,
            app.asgi_app,
            reserved=reserved_prefixes(rules, rest_endpoints(emu.routers)),
            max_body=MAX_CONTENT_LENGTH,
            body_timeout=app.config["BODY_TIMEOUT"],
            logger=app.logger,
        )
    return app
