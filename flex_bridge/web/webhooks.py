"""TaskRouter's webhooks: the assignment callback and the event callback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from quart import Blueprint, Response, jsonify, request

from flex_bridge.app.assignment import OfferFacts, answer_callback
from flex_bridge.app.events import receive_event
from flex_bridge.domain.protocol import INSTRUCTION_GRACE
from flex_bridge.errors import FlexBridgeError
from flex_bridge.web.context import services
from flex_bridge.web.errors import error
from flex_bridge.web.signatures import Signers, verify

logger = logging.getLogger("flex_bridge.web.webhooks")
bp = Blueprint("webhooks", __name__)

# The assignment reply must reach TaskRouter within 5 s: everything we do fits in this budget,
# and when it does not, the answer is {} (defer) and the intent goes on in the background.
REPLY_BUDGET = 3.5
# Recovery leaves an instruction intent to its callback for INSTRUCTION_GRACE seconds.
assert REPLY_BUDGET < INSTRUCTION_GRACE


async def _verified(endpoint: str) -> Mapping[str, str] | Response:
    svc = services()
    signers = Signers.of(svc.settings.auth_token, svc.settings.webhook_secrets)
    form = await verify(request, signers, svc.settings.public_url)
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
        reply_by = time.monotonic() + REPLY_BUDGET
        offer = OfferFacts.from_callback(form)
        reply = await asyncio.wait_for(answer_callback(svc, offer, reply_by), REPLY_BUDGET)
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


@bp.post("/taskrouter/events")
async def events() -> Response:
    started = time.perf_counter()
    svc = services()
    form = await _verified("events")
    if isinstance(form, Response):
        return form
    fresh = await receive_event(svc, form, request.headers.get("I-Twilio-Idempotency-Token"))
    svc.metrics.webhooks.labels("events", "ok" if fresh else "duplicate").inc()
    svc.metrics.webhook_latency.labels("events").observe(time.perf_counter() - started)
    return Response("", status=204)
