"""TaskRouter's webhooks: the assignment callback and the event callback.

Before a handler sees a callback: its signature is valid (else 403), it is for this account
and workspace (an ``AccountSid`` or ``WorkspaceSid`` that is present and not the configured
one: 403), and its required parameters are present (400). Nothing is journaled or written
for a refused callback, and each refusal is one WARNING line.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from quart import Blueprint, Response, jsonify, request

from flex_bridge.app.assignment import OfferFacts, answer_callback
from flex_bridge.app.services import Services
from flex_bridge.domain.attributes import TooDeep
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
    try:
        form = await verify(request, signers, svc.settings.public_url)
    except TooDeep as exc:
        svc.metrics.webhooks.labels(endpoint, "bad_request").inc()
        return _too_deep(endpoint, exc)
    if form is None:
        svc.metrics.webhooks.labels(endpoint, "bad_signature").inc()
        logger.warning("%s: rejected a request with a missing or invalid signature", endpoint)
        return error(403, "invalid_signature", "missing or invalid X-Twilio-Signature")
    fields = {k: form.get(k, "") for k in form}
    return _foreign(svc, endpoint, fields) or fields


def _too_deep(endpoint: str, exc: TooDeep) -> Response:
    """A signed callback whose JSON is nested deeper than attributes may be: 400."""
    logger.warning("%s: refused a callback: %s", endpoint, exc)
    return error(400, "invalid_attributes", str(exc), where=exc.where or None)


SID_RE = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")


def _sid(value: str) -> str:
    """A SID as it may be logged (SIDs are not secrets); anything else is not quoted."""
    return value if SID_RE.fullmatch(value) else "(not a SID)"


# The callback's field -> the setting it must equal (when present).
OWN_SIDS = (("AccountSid", "account_sid"), ("WorkspaceSid", "workspace_sid"))


def _foreign(svc: Services, endpoint: str, form: Mapping[str, str]) -> Response | None:
    """403 for a signed callback about another account or workspace (a Webhook Rule's shared
    key, or an auth token, may sign for more than one): nothing of it is recorded."""
    wrong = [
        field
        for field, setting in OWN_SIDS
        if form.get(field) and form[field] != getattr(svc.settings, setting)
    ]
    if not wrong:
        return None
    svc.metrics.webhooks.labels(endpoint, "wrong_account").inc()
    names = " and ".join(wrong)
    logger.warning(
        "%s: refused a callback for another %s (%s)",
        endpoint,
        "account or workspace" if len(wrong) > 1 else wrong[0].removesuffix("Sid").lower(),
        ", ".join(f"{field}={_sid(form[field])}" for field in wrong),
    )
    return error(403, "wrong_account", f"{names} is not this bridge's")


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
    except TooDeep as exc:
        return _too_deep("assignment", exc), "bad_request"
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
