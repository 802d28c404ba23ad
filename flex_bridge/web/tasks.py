"""``PATCH /flex/tasks/<TaskSid>/attributes``: a JSON Merge Patch, written safely."""

from __future__ import annotations

import re
import time

from quart import Blueprint, Response, jsonify, request

from flex_bridge.app.attributes import patch_attributes
from flex_bridge.domain.attributes import MalformedExisting, PatchError, TooLarge, parse_patch
from flex_bridge.errors import ConflictError, NotFoundError, RejectedError, UpstreamError
from flex_bridge.web.auth import ApiProblem, identify, services
from flex_bridge.web.errors import error

bp = Blueprint("tasks", __name__)

TASK_RE = re.compile(r"WT[0-9a-fA-F]{32}")
CONTENT_TYPES = ("application/merge-patch+json", "application/json")
ACTIVE = frozenset({"pending", "accepted", "wrapping"})
MAX_PATCH_BYTES = 64 * 1024


@bp.errorhandler(ApiProblem)
async def problem(exc: ApiProblem) -> Response:
    return error(exc.status, exc.code, exc.message, **exc.extra)


def _flag(name: str) -> bool:
    raw = request.args.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiProblem(400, "invalid_query", f"{name} must be true or false")
    return raw in ("true", "1")


async def _may_patch(task_sid: str, worker_sid: str | None) -> None:
    """An agent may patch a task only while one of its reservations on it is active."""
    taskrouter = services().taskrouter
    try:
        # The task first: its 404 is a clean NotFoundError, whereas the official client's
        # list call raises an untranslated TwilioException for an unknown task.
        await taskrouter.fetch_task(task_sid)
        reservations = await taskrouter.list_reservations(task_sid)
    except NotFoundError:
        raise ApiProblem(404, 20404, f"task {task_sid} was not found") from None
    except UpstreamError as exc:
        raise ApiProblem(503, exc.code, f"TaskRouter is unavailable: {exc.message}") from None
    if not any(r.worker_sid == worker_sid and r.status in ACTIVE for r in reservations):
        raise ApiProblem(403, "forbidden", "agents may patch only tasks reserved to them")


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
        except PatchError as exc:
            raise ApiProblem(400, "invalid_patch", str(exc), where=exc.where or None) from None
        replace = _flag("replace_malformed")
        if not identity.is_supervisor:
            await _may_patch(task_sid, identity.worker_sid)
        try:
            result = await patch_attributes(
                svc.taskrouter, task_sid, patch, replace_malformed=replace
            )
        except TooLarge as exc:
            raise ApiProblem(
                413, "attributes_too_large", str(exc), size=exc.size, limit=exc.limit
            ) from None
        except MalformedExisting as exc:
            raise ApiProblem(
                409, "malformed_attributes", str(exc), where=exc.where or None
            ) from None
        except PatchError as exc:
            raise ApiProblem(400, "invalid_patch", str(exc)) from None
        except NotFoundError:
            raise ApiProblem(404, 20404, f"task {task_sid} was not found") from None
        except ConflictError as exc:
            raise ApiProblem(409, "conflict", exc.message) from None
        except RejectedError as exc:
            raise ApiProblem(502, exc.code, f"TaskRouter refused: {exc.message}") from None
        except UpstreamError as exc:
            raise ApiProblem(503, exc.code, f"TaskRouter is unavailable: {exc.message}") from None
        svc.metrics.webhooks.labels("flex_patch", "ok").inc()
        return jsonify(
            {"attributes": result.attributes, "etag": result.etag, "changed": result.changed}
        )
    except ApiProblem as exc:
        svc.metrics.webhooks.labels("flex_patch", str(exc.status)).inc()
        return error(exc.status, exc.code, exc.message, **exc.extra)
    finally:
        svc.metrics.webhook_latency.labels("flex_patch").observe(time.perf_counter() - started)
