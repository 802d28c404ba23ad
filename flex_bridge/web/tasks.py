"""``PATCH /flex/tasks/<TaskSid>/attributes``: a JSON Merge Patch, written safely."""

from __future__ import annotations

import logging
import re
import time

from quart import Blueprint, Response, jsonify, request

from flex_bridge.app import actions
from flex_bridge.domain.attributes import TooDeep, parse_patch
from flex_bridge.web.auth import identify
from flex_bridge.web.context import services
from flex_bridge.web.cors import allow_plugins
from flex_bridge.web.errors import ApiProblem

logger = logging.getLogger("flex_bridge.web.tasks")
bp = allow_plugins(Blueprint("tasks", __name__))

TASK_RE = re.compile(r"WT[0-9a-fA-F]{32}")
CONTENT_TYPES = ("application/merge-patch+json", "application/json")
MAX_PATCH_BYTES = 64 * 1024


def _flag(name: str) -> bool:
    raw = request.args.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiProblem(400, "invalid_query", f"{name} must be true or false")
    return raw in ("true", "1")


@bp.route("/flex/tasks/<task_sid>/attributes", methods=["PATCH"])
async def patch_task_attributes(task_sid: str) -> Response:
    started = time.perf_counter()
    svc = services()
    try:
        if not TASK_RE.fullmatch(task_sid):
            raise ApiProblem(404, 20404, f"{task_sid!r} is not a task SID")
        identity = await identify(None)
        content_type = (request.mimetype or "").lower()
        if content_type not in CONTENT_TYPES:
            raise ApiProblem(
                415,
                "unsupported_media_type",
                f"send the patch as {' or '.join(CONTENT_TYPES)}, not {content_type or 'nothing'}",
            )
        raw = await request.get_data(cache=False)
        if len(raw) > MAX_PATCH_BYTES:
            raise ApiProblem(413, "patch_too_large", f"the patch is over {MAX_PATCH_BYTES} bytes")
        try:
            patch = parse_patch(raw)
        except TooDeep as exc:  # no agent's patch needs it: worth one line in the log
            logger.warning("PATCH %s attributes: refused: %s", task_sid, exc)
            raise
        replace = _flag("replace_malformed")
        result = await actions.patch_task_attributes(
            svc, identity, task_sid, patch, replace_malformed=replace
        )
        svc.metrics.webhooks.labels("flex_patch", "ok").inc()
        return jsonify(
            {"attributes": result.attributes, "etag": result.etag, "changed": result.changed}
        )
    finally:
        svc.metrics.webhook_latency.labels("flex_patch").observe(time.perf_counter() - started)
