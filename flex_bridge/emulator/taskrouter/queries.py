"""The list endpoints' filters and orderings, and paging that keeps them.

Each ``*_rows`` function takes a workspace and the request and returns the resources the list
answers with, in order; a filter value the emulator cannot use is a 400 with code 20001.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

from flex_bridge.emulator.api import JSON, ApiError, Call, Reply, page
from flex_bridge.emulator.spec import Spec
from flex_bridge.emulator.taskrouter import models
from flex_bridge.emulator.taskrouter.matching import worker_available
from flex_bridge.emulator.taskrouter.models import Workspace, parse_attributes
from flex_bridge.emulator.taskrouter.resources import parse_target

R = TypeVar("R")

PAGING_QUERY = frozenset({"PageSize", "Page", "PageToken"})
PAGE_URLS = ("first_page_url", "next_page_url", "previous_page_url", "url")
EVENT_FILTERS = (
    "EventType",
    "ReservationSid",
    "TaskSid",
    "WorkerSid",
    "TaskQueueSid",
    "WorkflowSid",
)


def _query_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def paged(spec: Spec, call: Call, rows: Sequence[JSON]) -> Reply:
    """A list answer whose paging URLs keep the request's filters, as Twilio's do.

    Without them, following ``next_page_url`` would read the next page of the unfiltered list.
    A filter given more than once (``AssignmentStatus``) is repeated in the URLs.
    """
    filters = {k: v for k, v in call.query.items() if k not in PAGING_QUERY}
    single = {k: _query_text(v) for k, v in filters.items() if not isinstance(v, list)}
    reply = page(spec, call, rows, extra_query=single)
    repeated = [
        (k, _query_text(item)) for k, v in filters.items() if isinstance(v, list) for item in v
    ]
    if repeated and reply.body is not None:
        meta = reply.body["meta"]
        suffix = urlencode(repeated)
        for key in PAGE_URLS:
            if meta.get(key) is not None:
                meta[key] = f"{meta[key]}&{suffix}"
    return reply


def ordered(rows: list[R], ordering: str | None, keys: dict[str, Callable[[R], Any]]) -> list[R]:
    """Sort by ``Field:asc|desc``; an ordering the emulator does not know is a 400."""
    if ordering is None:
        return rows
    field, _, direction = ordering.partition(":")
    if field not in keys or direction not in ("asc", "desc", ""):
        supported = ", ".join(f"{k}:asc|desc" for k in keys)
        raise ApiError(400, 20001, f"Ordering {ordering!r} is not supported ({supported})")
    return sorted(rows, key=keys[field], reverse=direction == "desc")


def _date_query(query: JSON, name: str) -> float | None:
    """An ISO 8601 date-time query parameter as a timestamp."""
    raw = query.get(name)
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, 20001, f"{name} must be an ISO 8601 date-time; got {raw!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def named(rows: Iterable[R], call: Call, name: Callable[[R], str]) -> list[R]:
    """The rows whose name is the ``FriendlyName`` query, or all of them without one."""
    wanted = call.query.get("FriendlyName")
    return [row for row in rows if wanted is None or name(row) == wanted]


def activity_rows(ws: Workspace, call: Call) -> list[models.Activity]:
    available = call.query.get("Available")
    return [
        a
        for a in named(ws.activities.values(), call, lambda a: a.friendly_name)
        if available is None or str(a.available).lower() == available.lower()
    ]


def task_channel_rows(ws: Workspace, call: Call) -> list[models.TaskChannel]:
    return list(ws.task_channels.values())


def workflow_rows(ws: Workspace, call: Call) -> list[models.Workflow]:
    return named(ws.workflows.values(), call, lambda w: w.friendly_name)


def task_queue_rows(ws: Workspace, call: Call) -> list[models.TaskQueue]:
    q = call.query
    candidates: list[dict[str, Any]] = []
    if "WorkerSid" in q:
        candidates.append(ws.worker(q["WorkerSid"]).parsed)
    if "EvaluateWorkerAttributes" in q:
        try:
            attributes = json.loads(q["EvaluateWorkerAttributes"])
        except ValueError:
            attributes = None
        if not isinstance(attributes, dict):
            raise ApiError(400, 20001, "EvaluateWorkerAttributes must be a JSON object")
        candidates.append(attributes)
    queues = ordered(
        list(ws.task_queues.values()),
        q.get("Ordering"),
        {"DateCreated": lambda x: x.date_created, "DateUpdated": lambda x: x.date_updated},
    )
    return [
        queue
        for queue in named(queues, call, lambda x: x.friendly_name)
        if all(queue.expression.evaluate(c, worker=c) for c in candidates)
    ]


def worker_rows(ws: Workspace, call: Call) -> list[models.Worker]:
    q = call.query
    expression = None
    if "TargetWorkersExpression" in q:
        expression = parse_target(q["TargetWorkersExpression"], "TargetWorkersExpression")
    queues: list[models.TaskQueue] = []
    if "TaskQueueSid" in q:
        queues.append(ws.task_queue(q["TaskQueueSid"]))
    if "TaskQueueName" in q:
        same_name = [t for t in ws.task_queues.values() if t.friendly_name == q["TaskQueueName"]]
        if not same_name:
            return []
        queues.extend(same_name)
    workers = ordered(
        list(ws.workers.values()),
        q.get("Ordering"),
        {
            "DateCreated": lambda x: x.date_created,
            "DateUpdated": lambda x: x.date_updated,
            "DateStatusChanged": lambda x: x.date_status_changed,
        },
    )

    def keep(w: models.Worker) -> bool:
        activity = ws.activities.get(w.activity_sid)
        return (
            ("ActivitySid" not in q or w.activity_sid == q["ActivitySid"])
            and (
                "ActivityName" not in q
                or (activity is not None and activity.friendly_name == q["ActivityName"])
            )
            and (
                "Available" not in q
                or str(worker_available(ws, w)).lower() == str(q["Available"]).lower()
            )
            and (expression is None or expression.evaluate(w.parsed, worker=w.parsed))
            and all(t.expression.evaluate(w.parsed, worker=w.parsed) for t in queues)
        )

    return [w for w in named(workers, call, lambda x: x.friendly_name) if keep(w)]


def task_rows(ws: Workspace, call: Call) -> list[models.Task]:
    q = call.query
    statuses = set(q.get("AssignmentStatus", []))
    expression = None
    if "EvaluateTaskAttributes" in q:
        expression = parse_target(q["EvaluateTaskAttributes"], "EvaluateTaskAttributes")
    has_addons = q.get("HasAddons")

    def keep(t: models.Task) -> bool:
        queue = ws.task_queues.get(t.task_queue_sid or "")
        workflow = ws.workflows.get(t.workflow_sid or "")
        return (
            (not statuses or t.assignment_status in statuses)
            and ("Priority" not in q or t.priority == q["Priority"])
            and ("WorkflowSid" not in q or t.workflow_sid == q["WorkflowSid"])
            and ("TaskQueueSid" not in q or t.task_queue_sid == q["TaskQueueSid"])
            and ("RoutingTarget" not in q or t.routing_target == q["RoutingTarget"])
            # The emulator has no Add-ons: every task's addons are "{}".
            and has_addons is not True
            and (
                "WorkflowName" not in q
                or (workflow is not None and workflow.friendly_name == q["WorkflowName"])
            )
            and (
                "TaskQueueName" not in q
                or (queue is not None and queue.friendly_name == q["TaskQueueName"])
            )
            and (expression is None or expression.evaluate(parse_attributes(t.attributes)))
        )

    return ordered(
        [t for t in ws.tasks.values() if keep(t)],
        q.get("Ordering", "DateCreated:asc"),
        {
            "DateCreated": lambda t: t.date_created,
            "Priority": lambda t: t.priority,
            "VirtualStartTime": lambda t: t.virtual_start_time,
        },
    )


def reservation_rows(rows: Iterable[models.Reservation], call: Call) -> list[models.Reservation]:
    q = call.query
    return [
        res
        for res in rows
        if ("ReservationStatus" not in q or res.status == q["ReservationStatus"])
        and ("WorkerSid" not in q or res.worker_sid == q["WorkerSid"])
    ]


def event_rows(ws: Workspace, call: Call) -> list[models.Event]:
    """The workspace's events, newest first."""
    q = call.query
    start = _date_query(q, "StartDate")
    end = _date_query(q, "EndDate")
    channel = q.get("TaskChannel")

    def keep(e: models.Event) -> bool:
        return (
            ("Sid" not in q or e.sid == q["Sid"])
            and not any(name in q and e.data.get(name) != q[name] for name in EVENT_FILTERS)
            and (
                channel is None
                or channel in (e.data.get("TaskChannelSid"), e.data.get("TaskChannelUniqueName"))
            )
            and ("Minutes" not in q or e.date >= call.now - 60 * q["Minutes"])
            and (start is None or e.date >= start)
            and (end is None or e.date <= end)
        )

    return [e for e in reversed(ws.events) if keep(e)]
