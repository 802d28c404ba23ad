"""TaskRouter's webhooks: the assignment callback and the event callback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from quart import Blueprint, Response, jsonify, request

from flex_bridge.app.assignment import OfferFacts, answer_callback
from flex_bridge.app.services import Services
from flex_bridge.domain.protocol import INSTRUCTION_GRACE
from flex_bridge.errors import FlexBridgeError, JournalError
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


WebhookHandler = Callable[[Services, Mapping[str, str]], Awaitable[tuple[Response, str]]]


def _webhook(endpoint: str, *required: str) -> Callable[[WebhookHandler], WebhookHandler]:
    """Serve ``handler`` at ``/taskrouter/<endpoint>``: the request's signature checked and the
    ``required`` parameters present first. The handler answers and names its result; each
    request is counted by result, and timed when it reached the handler."""

    def register(handler: WebhookHandler) -> WebhookHandler:
        async def view() -> Response:
            started = time.perf_counter()
            svc = services()
            with svc.coordinator.drivers.ingress.answering():  # callbacks first (app.drivers)
                form = await _verified(endpoint)
                if isinstance(form, Response):
                    return form
                missing = [k for k in required if not form.get(k)]
                if missing:
                    svc.metrics.webhooks.labels(endpoint, "bad_request").inc()
                    return error(400, "missing_parameter", f"missing {', '.join(missing)}")
                response, result = await handler(svc, form)
            svc.metrics.webhooks.labels(endpoint, result).inc()
            svc.metrics.webhook_latency.labels(endpoint).observe(time.perf_counter() - started)
            return response

        bp.add_url_rule(f"/taskrouter/{endpoint}", endpoint, view, methods=["POST"])
        return handler

    return register


def _deferred(
    form: Mapping[str, str], result: str, level: int, reason: object
) -> tuple[Response, str]:
    """The assignment answered {} (defer: the intent goes on in the background), logged."""
    sid = form["ReservationSid"]
    logger.log(level, "assignment %s: %s; deferring", sid, reason, extra={"reservation_sid": sid})
    return _json({}), result


@_webhook("assignment", "ReservationSid", "TaskSid", "WorkerSid")
async def assignment(svc: Services, form: Mapping[str, str]) -> tuple[Response, str]:
    try:
        reply_by = time.monotonic() + REPLY_BUDGET
        offer = OfferFacts.from_callback(form)
        async with asyncio.timeout(REPLY_BUDGET):
            reply = await answer_callback(svc, offer, reply_by)
    except TimeoutError:
        late = f"no decision within {REPLY_BUDGET:.1f} s"
        return _deferred(form, "deferred_late", logging.WARNING, late)
    except JournalError as exc:
        # Not recorded, so not answered as handled: TaskRouter tries the fallback URL, or the
        # reservation waits for the reconciliation sweep to adopt it.
        logger.error("assignment %s: journal unavailable: %s", form["ReservationSid"], exc)
        message = "the bridge cannot record this callback now"
        return error(503, "journal_unavailable", message), "journal_unavailable"
    except FlexBridgeError as exc:
        return _deferred(form, "deferred_error", logging.ERROR, exc)
    return _json(reply), "ok"


@_webhook("events")
async def events(svc: Services, form: Mapping[str, str]) -> tuple[Response, str]:
    try:
        fresh = await svc.inbox.receive(form, request.headers.get("I-Twilio-Idempotency-Token"))
    except JournalError as exc:
        # Not recorded, so not acknowledged; the reconciliation sweep repairs what it changed.
        logger.error("event %s: journal unavailable: %s", form.get("EventType", ""), exc)
        message = "the bridge cannot record this event now"
        return error(503, "journal_unavailable", message), "journal_unavailable"
    return Response("", status=204), "ok" if fresh else "duplicate"
