"""The ``/flex`` API that Flex plugins call: reservation actions and intent lookups."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any

import jsonschema
from quart import Blueprint, Response, jsonify, request

from flex_bridge.app.services import Services
from flex_bridge.domain.intents import Intent
from flex_bridge.domain.ops import PARAM_SCHEMAS
from flex_bridge.domain.types import OPS
from flex_bridge.errors import NotFoundError, RejectedError, UpstreamError
from flex_bridge.web.auth import ApiProblem, allowed, identify, services
from flex_bridge.web.errors import error
from flex_bridge.web.openapi import openapi_document

bp = Blueprint("flex", __name__)


@bp.errorhandler(ApiProblem)
async def problem(exc: ApiProblem) -> Response:
    return error(exc.status, exc.code, exc.message)


RESERVATION_RE = re.compile(r"^WR[0-9a-fA-F]{32}$")
INTENT_RE = re.compile(r"^in_[0-9a-f]{22}$")
CONFLICT_CODES = frozenset({20001, 40114, 40135, 40136})
DEFAULT_WAIT = 5.0
MAX_WAIT = 30.0
DEFAULT_RESERVATION_TIMEOUT = 120


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
    raw = await request.get_data()
    if not raw:
        return {}
    try:
        # Bytes, not text: a body that is not UTF-8 is a bad request, not a decoding crash.
        body = json.loads(raw)
    except (ValueError, RecursionError):
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


async def _reservation_facts(
    svc: Services, task_sid: str, reservation_sid: str
) -> tuple[str, float | None]:
    """The reservation's worker and deadline, from the journal or from TaskRouter."""
    known = await svc.journal.latest_for_reservation(reservation_sid)
    if known is not None and known.task_sid == task_sid:
        return known.worker_sid, known.deadline
    try:
        reservation, task = await asyncio.gather(
            svc.taskrouter.fetch_reservation(task_sid, reservation_sid),
            svc.taskrouter.fetch_task(task_sid),
        )
    except NotFoundError:
        raise ApiProblem(
            404, 20404, f"reservation {reservation_sid} of task {task_sid} was not found"
        ) from None
    except RejectedError as exc:
        raise ApiProblem(404, exc.code, f"reservation {reservation_sid}: {exc.message}") from None
    except UpstreamError as exc:
        raise ApiProblem(503, exc.code, f"TaskRouter is unavailable: {exc.message}") from None
    deadline = None
    if reservation.date_created is not None:
        timeout = DEFAULT_RESERVATION_TIMEOUT
        if task.workflow_sid:
            with contextlib.suppress(UpstreamError):
                timeout = await svc.taskrouter.reservation_timeout(task.workflow_sid)
        deadline = reservation.date_created + timeout
    return reservation.worker_sid, deadline


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
        message = err.message if err else "the change was refused"
        if intent.reservation_status and intent.reservation_status not in message:
            message = f"{message} (reservation is {intent.reservation_status})"
        status = _failure_status(code, intent.reservation_status)
        body["error"] = {"code": code, "message": message}
    response = jsonify(body)
    response.status_code = status
    return response


UPSTREAM_CODES = frozenset({503, 20429, 20500, 20503, 20504})


def _failure_status(code: int | None, reservation_status: str | None) -> int:
    """The HTTP status a failed intent is reported with."""
    if code == 20404:
        return 404
    if code in CONFLICT_CODES or (code is None and reservation_status):
        return 409
    if code in UPSTREAM_CODES or (code is not None and 500 <= code < 600):
        return 503
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
        task_sid = params.pop("task_sid")
        worker_sid, deadline = await _reservation_facts(svc, task_sid, reservation_sid)
        if not allowed(identity, worker_sid):
            raise ApiProblem(403, "forbidden", "this reservation belongs to another worker")
        intent, created = await svc.coordinator.submit(
            op=op,
            reservation_sid=reservation_sid,
            task_sid=task_sid,
            worker_sid=worker_sid,
            source="plugin",
            params=params,
            deadline=deadline,
        )
        if not created and intent.op != op and not intent.settled:
            raise ApiProblem(
                409,
                "intent_in_flight",
                f"a {intent.op} intent ({intent.intent_id}) is in flight for this reservation",
            )
        final = await svc.coordinator.wait(intent.intent_id, wait) or intent
        svc.metrics.webhooks.labels("flex_action", "ok").inc()
        return _answer(final)
    except ApiProblem as exc:
        svc.metrics.webhooks.labels("flex_action", str(exc.status)).inc()
        return error(exc.status, exc.code, exc.message)
    finally:
        svc.metrics.webhook_latency.labels("flex_action").observe(time.perf_counter() - started)


@bp.get("/flex/intents/<intent_id>")
async def get_intent(intent_id: str) -> Response:
    svc = services()
    try:
        identity = await identify(None)
        if not INTENT_RE.fullmatch(intent_id):
            raise ApiProblem(404, "unknown_intent", f"{intent_id!r} is not an intent id")
        intent = await svc.journal.get(intent_id)
        if intent is None:
            raise ApiProblem(404, "unknown_intent", f"intent {intent_id} was not found")
        if not allowed(identity, intent.worker_sid):
            raise ApiProblem(403, "forbidden", "this intent belongs to another worker")
    except ApiProblem as exc:
        return error(exc.status, exc.code, exc.message)
    response = jsonify({"intent": intent.to_json()})
    return response


@bp.get("/flex/openapi.json")
async def openapi() -> Response:
    return jsonify(openapi_document())
