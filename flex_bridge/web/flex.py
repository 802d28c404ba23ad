"""The ``/flex`` API that Flex plugins call: reservation actions and intent lookups."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import jsonschema
from quart import Blueprint, Response, jsonify, request

from flex_bridge.app.actions import read_intent, request_change
from flex_bridge.domain.attributes import TooDeep, check_depth
from flex_bridge.domain.intents import Intent
from flex_bridge.domain.ops import PARAM_SCHEMAS
from flex_bridge.domain.protocol import CONFLICT_CODES
from flex_bridge.domain.types import OPS
from flex_bridge.web.auth import identify
from flex_bridge.web.context import services
from flex_bridge.web.cors import allow_plugins
from flex_bridge.web.errors import ApiProblem
from flex_bridge.web.openapi import openapi_document

logger = logging.getLogger("flex_bridge.web.flex")
bp = allow_plugins(Blueprint("flex", __name__))


RESERVATION_RE = re.compile(r"^WR[0-9a-fA-F]{32}$")
INTENT_RE = re.compile(r"^in_[0-9a-f]{22}$")
DEFAULT_WAIT = 5.0
MAX_WAIT = 30.0


def _wait_seconds() -> float:
    raw = request.args.get("wait")
    if raw is None:
        return DEFAULT_WAIT
    try:
        value = float(raw)
    except ValueError:
        raise ApiProblem(
            400, "invalid_wait", f"wait must be a number of seconds; got {raw!r}"
        ) from None
    if not 0 <= value <= MAX_WAIT:
        raise ApiProblem(400, "invalid_wait", f"wait must be between 0 and {MAX_WAIT:g}")
    return value


async def _json_body() -> dict[str, Any]:
    raw = await request.get_data(as_text=False)
    if not raw:
        return {}
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw  # (typed str | bytes)
        check_depth(text, "the body")
        body = json.loads(text)
    except TooDeep as exc:
        logger.warning("%s: refused a plugin action: %s", request.path, exc)
        raise ApiProblem(400, "invalid_body", str(exc)) from None
    except (ValueError, RecursionError):  # not UTF-8, or not JSON
        body = None
    if not isinstance(body, dict):
        raise ApiProblem(400, "invalid_body", "the body must be a JSON object")
    return body


def _validate(op: str, params: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(
        PARAM_SCHEMAS[op], format_checker=jsonschema.FormatChecker()
    )
    problems = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if problems:
        first = problems[0]
        where = "/".join(str(p) for p in first.absolute_path) or "body"
        raise ApiProblem(400, "invalid_params", f"{where}: {first.message}")


def _answer(intent: Intent) -> Response:
    """200 settled-applied, 202 still running, or the error the failure stands for."""
    body: dict[str, Any] = {"intent": intent.to_json()}
    status = 200
    if intent.state in ("recorded", "announced", "instructed"):
        body["intent_id"] = intent.intent_id
        body["status_url"] = f"/flex/intents/{intent.intent_id}"
        status = 202
    elif intent.phase == "failed":
        err = intent.error
        code = err.code if err else None
        message = err.public_message if err else "the change was refused"
        if intent.reservation_status and intent.reservation_status not in message:
            message = f"{message} (reservation is {intent.reservation_status})"
        status = _failure_status(code, intent.reservation_status)
        body["error"] = {"code": err.public_code if err else None, "message": message}
    response = jsonify(body)
    response.status_code = status
    return response


UPSTREAM_CODES = frozenset({503, 20429, 20500, 20503, 20504})
CREDENTIAL_CODES = frozenset({20003, 20403})  # the bridge's own credentials: a bad gateway


def _failure_status(code: int | None, reservation_status: str | None) -> int:
    """The HTTP status a failed intent is reported with."""
    if code == 20404:
        return 404
    if code in CONFLICT_CODES or (code is None and reservation_status):
        return 409
    if code in UPSTREAM_CODES or (code is not None and 500 <= code < 600):
        return 503
    if code is not None and code >= 10_000 and code not in CREDENTIAL_CODES:
        return 422  # Twilio refused the request itself: the plugin asked for what cannot be
    return 502


@bp.post("/flex/reservations/<reservation_sid>/<op>")
async def reservation_action(reservation_sid: str, op: str) -> Response:
    started = time.perf_counter()
    svc = services()
    try:
        if op not in OPS:
            # sync/README.md: an unknown op is a bad request (400), like an unknown field.
            raise ApiProblem(400, "unknown_op", f"{op!r} is not one of {', '.join(OPS)}")
        if not RESERVATION_RE.fullmatch(reservation_sid):
            raise ApiProblem(404, 20404, f"{reservation_sid!r} is not a reservation SID")
        body = await _json_body()
        identity = await identify(body)
        params = {k: v for k, v in body.items() if k != "Token"}
        _validate(op, params)
        wait = _wait_seconds()
        final = await request_change(svc, identity, reservation_sid, op, params, wait)
        svc.metrics.webhooks.labels("flex_action", "ok").inc()
        return _answer(final)
    finally:
        svc.metrics.webhook_latency.labels("flex_action").observe(time.perf_counter() - started)


@bp.get("/flex/intents/<intent_id>")
async def get_intent(intent_id: str) -> Response:
    identity = await identify(None)
    if not INTENT_RE.fullmatch(intent_id):
        raise ApiProblem(404, "unknown_intent", f"{intent_id!r} is not an intent id")
    intent = await read_intent(services(), identity, intent_id)
    return jsonify({"intent": intent.to_json()})


@bp.get("/flex/openapi.json")
async def openapi() -> Response:
    return jsonify(openapi_document())
