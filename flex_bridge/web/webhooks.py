"""TaskRouter's webhooks: the assignment callback and the event callback."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from quart import Blueprint, Response, current_app, jsonify, request
from twilio.request_validator import RequestValidator

from flex_bridge.app.coordinator import INSTRUCTION_GRACE
from flex_bridge.app.services import Services
from flex_bridge.domain.ops import instruction_reply
from flex_bridge.domain.policy import choose_rule
from flex_bridge.errors import FlexBridgeError
from flex_bridge.web.errors import error
from flex_bridge.web.signatures import verify

logger = logging.getLogger("flex_bridge.web.webhooks")
bp = Blueprint("webhooks", __name__)

# The assignment reply must reach TaskRouter within 5 s: everything we do fits in this budget,
# and when it does not, the answer is {} (defer) and the intent goes on in the background.
REPLY_BUDGET = 3.5
# Recovery leaves an instruction intent to its callback for INSTRUCTION_GRACE seconds.
assert REPLY_BUDGET < INSTRUCTION_GRACE
DEDUPE_TTL = 86_400.0
DEFAULT_RESERVATION_TIMEOUT = 120


def services() -> Services:
    return current_app.config["services"]  # type: ignore[no-any-return]


def _attributes(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def _verified(endpoint: str) -> Mapping[str, str] | Response:
    svc = services()
    validator = RequestValidator(svc.settings.auth_token)
    form = await verify(request, validator, svc.settings.public_url)
    if form is None:
        svc.metrics.webhooks.labels(endpoint, "bad_signature").inc()
        logger.warning("%s: rejected a request with a missing or invalid signature", endpoint)
        return error(403, "invalid_signature", "missing or invalid X-Twilio-Signature")
    return {k: form.get(k, "") for k in form}


def _json(body: dict[str, Any]) -> Response:
    response = jsonify(body)
    response.status_code = 200
    return response


@bp.post("/taskrouter/assignment")
async def assignment() -> Response:
    started = time.perf_counter()
    svc = services()
    form = await _verified("assignment")
    if isinstance(form, Response):
        return form
    missing = [k for k in ("ReservationSid", "TaskSid", "WorkerSid") if not form.get(k)]
    if missing:
        svc.metrics.webhooks.labels("assignment", "bad_request").inc()
        return error(400, "missing_parameter", f"missing {', '.join(missing)}")
    try:
        reply = await asyncio.wait_for(_decide(svc, form), REPLY_BUDGET)
        result = "ok"
    except TimeoutError:
        logger.warning(
            "assignment %s: no decision within %.1f s; deferring",
            form["ReservationSid"],
            REPLY_BUDGET,
            extra={"reservation_sid": form["ReservationSid"]},
        )
        reply, result = {}, "deferred_late"
    except FlexBridgeError as exc:
        logger.error(
            "assignment %s: %s; deferring",
            form["ReservationSid"],
            exc,
            extra={"reservation_sid": form["ReservationSid"]},
        )
        reply, result = {}, "deferred_error"
    svc.metrics.webhooks.labels("assignment", result).inc()
    svc.metrics.webhook_latency.labels("assignment").observe(time.perf_counter() - started)
    return _json(reply)


async def _deadline(svc: Services, workflow_sid: str, now: float) -> float:
    timeout = DEFAULT_RESERVATION_TIMEOUT
    if workflow_sid:
        try:
            timeout = await asyncio.wait_for(svc.taskrouter.reservation_timeout(workflow_sid), 1.0)
        except (TimeoutError, FlexBridgeError):
            logger.warning("workflow %s: reservation timeout unknown; assuming 120 s", workflow_sid)
    return now + timeout


async def _decide(svc: Services, form: Mapping[str, str]) -> dict[str, Any]:
    rule = choose_rule(
        svc.settings.policy,
        task_queue_sid=form.get("TaskQueueSid") or None,
        workflow_sid=form.get("WorkflowSid") or None,
        task_attributes=_attributes(form.get("TaskAttributes")),
        worker_attributes=_attributes(form.get("WorkerAttributes")),
    )
    if rule is None or rule.op == "defer":
        return {}
    deadline = await _deadline(svc, form.get("WorkflowSid", ""), time.time())
    intent, created = await svc.coordinator.submit(
        op=rule.op,
        reservation_sid=form["ReservationSid"],
        task_sid=form["TaskSid"],
        worker_sid=form["WorkerSid"],
        source="policy",
        params=rule.params,
        deadline=deadline,
        via=rule.via,
        before_accept=rule.before_accept,
    )
    if rule.via == "rest":
        return {}
    if not created:
        # A retried callback: answer as the first time, if that intent was this instruction.
        if intent.via == "instruction" and intent.op == rule.op:
            return instruction_reply(intent.op, intent.params)
        return {}
    intent = await svc.coordinator.announce_only(intent, svc.settings.policy.sync.announce_timeout)
    if intent.state != "announced":
        return {}  # strict mode and Sync is down: no change without an announcement
    await svc.coordinator.mark_instructed(intent)
    return instruction_reply(rule.op, rule.params)


@bp.post("/taskrouter/events")
async def events() -> Response:
    started = time.perf_counter()
    svc = services()
    form = await _verified("events")
    if isinstance(form, Response):
        return form
    event_type = form.get("EventType", "")
    token = request.headers.get("I-Twilio-Idempotency-Token")
    stamp = form.get("TimestampMs") or form.get("Timestamp", "")
    keys = []
    if form.get("ResourceSid") and stamp:
        keys.append(f"event:{event_type}:{form['ResourceSid']}:{stamp}")
    if token:
        keys.insert(0, f"event-token:{token}")
    fresh = True
    for key in keys:
        if not await svc.journal.first_seen(key, DEDUPE_TTL):
            fresh = False
    if not fresh:
        svc.metrics.webhooks.labels("events", "duplicate").inc()
    else:
        svc.handlers.dispatch_soon(dict(form))
        svc.metrics.webhooks.labels("events", "ok").inc()
    svc.metrics.webhook_latency.labels("events").observe(time.perf_counter() - started)
    return Response("", status=204)
