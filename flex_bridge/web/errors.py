"""Error answers, in one place: ``{"error": {"code", "message", ...}}``, always.

``ApiProblem`` is what the web layer itself refuses (a malformed path, query or body, a missing
token). Everything a use case refuses comes as an exception of ``flex_bridge.errors``; ``answer``
maps each type of the tree to its HTTP status and public code (the first matching row of
``ANSWERS`` wins, so subclasses come before their bases). ``install`` registers both with the
app, so no route maps errors by itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from quart import Quart, Response, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from flex_bridge.domain.attributes import BridgeOwnedKeys, MalformedExisting, PatchError, TooLarge
from flex_bridge.domain.policy import AgentParamRefused
from flex_bridge.errors import (
    AuthenticationError,
    BusyError,
    ConfigError,
    ConflictError,
    FlexBridgeError,
    ForbiddenError,
    JournalError,
    NotFoundError,
    RejectedError,
    UnknownIntentError,
    UpstreamError,
    ValidationError,
)

logger = logging.getLogger("flex_bridge.web")


class ApiProblem(Exception):
    """An error answer decided by the web layer: ``status``, public ``code``, ``message``."""

    def __init__(self, status: int, code: str | int | None, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.extra = extra


def error(status: int, code: str | int | None, message: str, **extra: Any) -> Response:
    details = {k: v for k, v in extra.items() if v is not None}
    body: dict[str, Any] = {"error": {"code": code, "message": message, **details}}
    response = jsonify(body)
    response.status_code = status
    return response


def _twilio_code(exc: FlexBridgeError) -> int | None:
    return exc.code if isinstance(exc, UpstreamError) else None


Code = str | Callable[[FlexBridgeError], str | int | None]
ANSWERS: Final[tuple[tuple[type[FlexBridgeError], int, Code], ...]] = (
    (TooLarge, 413, "attributes_too_large"),
    (MalformedExisting, 409, "malformed_attributes"),
    (PatchError, 400, "invalid_patch"),
    (ValidationError, 400, "invalid_request"),
    (AuthenticationError, 401, "invalid_token"),
    (BridgeOwnedKeys, 403, "bridge_owned_attributes"),
    (AgentParamRefused, 403, "not_allowed_by_policy"),
    (ForbiddenError, 403, "forbidden"),
    (UnknownIntentError, 404, "unknown_intent"),
    (BusyError, 409, "intent_in_flight"),
    (NotFoundError, 404, lambda exc: _twilio_code(exc) or 20404),
    (ConflictError, 409, "conflict"),
    (RejectedError, 502, _twilio_code),
    (UpstreamError, 503, _twilio_code),
    (JournalError, 503, "journal_unavailable"),
    (ConfigError, 500, "misconfigured"),
    (FlexBridgeError, 500, "internal_error"),
)
# Fields of an exception that an answer carries besides code and message.
DETAILS: Final = ("where", "size", "limit")


def problem(exc: FlexBridgeError) -> ApiProblem:
    """The answer for ``exc``: its row of ``ANSWERS``, its message and its details."""
    kind, status, code = next(row for row in ANSWERS if isinstance(exc, row[0]))
    message = str(exc)
    if kind is RejectedError:
        message = f"TaskRouter refused: {message}"
    details = {name: getattr(exc, name, None) or None for name in DETAILS}
    return ApiProblem(status, code(exc) if callable(code) else code, message, **details)


# The requests-by-outcome metric of each route that counts its refusals.
COUNTED: Final = {
    "flex.reservation_action": "flex_action",
    "tasks.patch_task_attributes": "flex_patch",
}


def install(app: Quart) -> None:
    @app.errorhandler(ApiProblem)
    async def api_problem(exc: ApiProblem) -> Response:
        label = COUNTED.get(request.endpoint or "")
        services = app.config.get("services")
        if label and services is not None:
            services.metrics.webhooks.labels(label, str(exc.status)).inc()
        return error(exc.status, exc.code, exc.message, **exc.extra)

    @app.errorhandler(FlexBridgeError)
    async def refused(exc: FlexBridgeError) -> Response:
        return await api_problem(problem(exc))

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
        """A bug: logged with its traceback, answered without internals."""
        logger.exception("unhandled error: %r", exc)
        return error(500, "internal_error", "the bridge failed to handle this request")
