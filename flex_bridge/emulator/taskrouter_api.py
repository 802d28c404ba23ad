"""TaskRouter v1 over REST: each documented operation the emulator serves, and its rendering."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

from flex_bridge.emulator.api import ApiError, Call, Reply, Router, page, resource_url
from flex_bridge.emulator.clock import iso
from flex_bridge.emulator.spec import Spec
from flex_bridge.emulator.taskrouter import TaskRouter
from flex_bridge.emulator.taskrouter_models import (
    Activity,
    Event,
    Reservation,
    Task,
    TaskChannel,
    TaskQueue,
    Worker,
    Workflow,
    Workspace,
    parse_attributes,
)

JSON = dict[str, Any]
WS = "/v1/Workspaces/{WorkspaceSid}"


def _url(path: str) -> str:
    return resource_url("taskrouter", path)


PAGING_QUERY = frozenset({"PageSize", "Page", "PageToken"})
PAGE_URLS = ("first_page_url", "next_page_url", "previous_page_url", "url")


def _query_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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


class Renderer:
    """Plain values of each resource, keyed by the spec's field names."""

    def __init__(self, engine: TaskRouter) -> None:
        self.engine = engine
        self.account_sid = engine.account_sid

    def workspace(self, ws: Workspace) -> JSON:
        base = f"/v1/Workspaces/{ws.sid}"
        default = ws.activities.get(ws.default_activity_sid)
        timeout = ws.activities.get(ws.timeout_activity_sid)
        return {
            "account_sid": self.account_sid,
            "date_created": iso(ws.date_created),
            "date_updated": iso(ws.date_updated),
            "default_activity_name": default.friendly_name if default else None,
            "default_activity_sid": ws.default_activity_sid,
            "event_callback_url": ws.event_callback_url,
            "events_filter": ",".join(ws.events_filter) if ws.events_filter else None,
            "friendly_name": ws.friendly_name,
            "multi_task_enabled": ws.multi_task_enabled,
            "sid": ws.sid,
            "timeout_activity_name": timeout.friendly_name if timeout else None,
            "timeout_activity_sid": ws.timeout_activity_sid,
            "prioritize_queue_order": ws.prioritize_queue_order,
            "url": _url(base),
            "links": {
                name: _url(f"{base}/{segment}")
                for name, segment in (
                    ("activities", "Activities"),
                    ("events", "Events"),
                    ("tasks", "Tasks"),
                    ("task_queues", "TaskQueues"),
                    ("task_channels", "TaskChannels"),
                    ("workers", "Workers"),
                    ("workflows", "Workflows"),
                    ("statistics", "Statistics"),
                    ("real_time_statistics", "RealTimeStatistics"),
                    ("cumulative_statistics", "CumulativeStatistics"),
                )
            },
        }

    def activity(self, ws: Workspace, a: Activity) -> JSON:
        return {
            "account_sid": self.account_sid,
            "available": a.available,
            "date_created": iso(a.date_created),
            "date_updated": iso(a.date_updated),
            "friendly_name": a.friendly_name,
            "sid": a.sid,
            "workspace_sid": ws.sid,
            "url": _url(f"/v1/Workspaces/{ws.sid}/Activities/{a.sid}"),
            "links": {"workspace": _url(f"/v1/Workspaces/{ws.sid}")},
        }

    def task_channel(self, ws: Workspace, c: TaskChannel) -> JSON:
        return {
            "account_sid": self.account_sid,
            "date_created": iso(c.date_created),
            "date_updated": iso(c.date_updated),
            "friendly_name": c.friendly_name,
            "sid": c.sid,
            "unique_name": c.unique_name,
            "workspace_sid": ws.sid,
            "channel_optimized_routing": c.channel_optimized_routing,
            "url": _url(f"/v1/Workspaces/{ws.sid}/TaskChannels/{c.sid}"),
            "links": {"workspace": _url(f"/v1/Workspaces/{ws.sid}")},
        }

    def task_queue(self, ws: Workspace, q: TaskQueue) -> JSON:
        base = f"/v1/Workspaces/{ws.sid}/TaskQueues/{q.sid}"
        reservation = ws.activities.get(q.reservation_activity_sid or "")
        assignment = ws.activities.get(q.assignment_activity_sid or "")
        return {
            "account_sid": self.account_sid,
            "assignment_activity_sid": q.assignment_activity_sid,
            "assignment_activity_name": assignment.friendly_name if assignment else None,
            "date_created": iso(q.date_created),
            "date_updated": iso(q.date_updated),
            "friendly_name": q.friendly_name,
            "max_reserved_workers": q.max_reserved_workers,
            "reservation_activity_sid": q.reservation_activity_sid,
            "reservation_activity_name": reservation.friendly_name if reservation else None,
            "sid": q.sid,
            "target_workers": q.target_workers,
            "task_order": q.task_order,
            "url": _url(base),
            "workspace_sid": ws.sid,
            "links": {
                "assignment_activity": _url(
                    f"/v1/Workspaces/{ws.sid}/Activities/{q.assignment_activity_sid}"
                )
                if q.assignment_activity_sid
                else None,
                "reservation_activity": _url(
                    f"/v1/Workspaces/{ws.sid}/Activities/{q.reservation_activity_sid}"
                )
                if q.reservation_activity_sid
                else None,
                "workspace": _url(f"/v1/Workspaces/{ws.sid}"),
                "statistics": _url(f"{base}/Statistics"),
                "real_time_statistics": _url(f"{base}/RealTimeStatistics"),
                "cumulative_statistics": _url(f"{base}/CumulativeStatistics"),
            },
        }

    def workflow(self, ws: Workspace, w: Workflow) -> JSON:
        base = f"/v1/Workspaces/{ws.sid}/Workflows/{w.sid}"
        return {
            "account_sid": self.account_sid,
            "assignment_callback_url": w.assignment_callback_url,
            "configuration": w.configuration,
            "date_created": iso(w.date_created),
            "date_updated": iso(w.date_updated),
            "document_content_type": "application/json",
            "fallback_assignment_callback_url": w.fallback_assignment_callback_url,
            "friendly_name": w.friendly_name,
            "sid": w.sid,
            "task_reservation_timeout": w.task_reservation_timeout,
            "workspace_sid": ws.sid,
            "url": _url(base),
            "links": {
                "statistics": _url(f"{base}/Statistics"),
                "real_time_statistics": _url(f"{base}/RealTimeStatistics"),
                "cumulative_statistics": _url(f"{base}/CumulativeStatistics"),
            },
        }

    def worker(self, ws: Workspace, w: Worker) -> JSON:
        base = f"/v1/Workspaces/{ws.sid}/Workers/{w.sid}"
        activity = ws.activities.get(w.activity_sid)
        return {
            "account_sid": self.account_sid,
            "activity_name": activity.friendly_name if activity else None,
            "activity_sid": w.activity_sid,
            "attributes": w.attributes,
            "available": self.engine.worker_available(ws, w),
            "date_created": iso(w.date_created),
            "date_status_changed": iso(w.date_status_changed),
            "date_updated": iso(w.date_updated),
            "friendly_name": w.friendly_name,
            "sid": w.sid,
            "workspace_sid": ws.sid,
            "url": _url(base),
            "links": {
                "channels": _url(f"{base}/Channels"),
                "reservations": _url(f"{base}/Reservations"),
                "statistics": _url(f"{base}/Statistics"),
                "workspace": _url(f"/v1/Workspaces/{ws.sid}"),
                "activity": _url(f"/v1/Workspaces/{ws.sid}/Activities/{w.activity_sid}"),
            },
        }

    def task(self, ws: Workspace, t: Task) -> JSON:
        base = f"/v1/Workspaces/{ws.sid}/Tasks/{t.sid}"
        queue = ws.task_queues.get(t.task_queue_sid or "")
        workflow = ws.workflows.get(t.workflow_sid or "")
        channel = ws.task_channels.get(t.task_channel_sid or "")
        return {
            "account_sid": self.account_sid,
            "age": int(self.engine.clock.now() - t.date_created),
            "assignment_status": t.assignment_status,
            "attributes": t.attributes,
            "addons": "{}",
            "date_created": iso(t.date_created),
            "date_updated": iso(t.date_updated),
            "task_queue_entered_date": iso(t.task_queue_entered_date),
            "priority": t.priority,
            "reason": t.reason,
            "sid": t.sid,
            "task_queue_sid": t.task_queue_sid,
            "task_queue_friendly_name": queue.friendly_name if queue else None,
            "task_channel_sid": t.task_channel_sid,
            "task_channel_unique_name": channel.unique_name if channel else None,
            "timeout": t.timeout,
            "workflow_sid": t.workflow_sid,
            "workflow_friendly_name": workflow.friendly_name if workflow else None,
            "workspace_sid": ws.sid,
            "url": _url(base),
            "links": {
                "task_queue": _url(f"/v1/Workspaces/{ws.sid}/TaskQueues/{t.task_queue_sid}")
                if t.task_queue_sid
                else None,
                "workflow": _url(f"/v1/Workspaces/{ws.sid}/Workflows/{t.workflow_sid}")
                if t.workflow_sid
                else None,
                "workspace": _url(f"/v1/Workspaces/{ws.sid}"),
                "reservations": _url(f"{base}/Reservations"),
            },
            "virtual_start_time": iso(t.virtual_start_time),
            "ignore_capacity": t.ignore_capacity,
            "routing_target": t.routing_target,
        }

    def reservation(self, ws: Workspace, r: Reservation, *, under_worker: bool) -> JSON:
        worker = ws.workers.get(r.worker_sid)
        if under_worker:
            url = _url(f"/v1/Workspaces/{ws.sid}/Workers/{r.worker_sid}/Reservations/{r.sid}")
        else:
            url = _url(f"/v1/Workspaces/{ws.sid}/Tasks/{r.task_sid}/Reservations/{r.sid}")
        return {
            "account_sid": self.account_sid,
            "date_created": iso(r.date_created),
            "date_updated": iso(r.date_updated),
            "reservation_status": r.status,
            "sid": r.sid,
            "task_sid": r.task_sid,
            "worker_name": worker.friendly_name if worker else None,
            "worker_sid": r.worker_sid,
            "workspace_sid": ws.sid,
            "url": url,
            "links": {
                "task": _url(f"/v1/Workspaces/{ws.sid}/Tasks/{r.task_sid}"),
                "worker": _url(f"/v1/Workspaces/{ws.sid}/Workers/{r.worker_sid}"),
                "workspace": _url(f"/v1/Workspaces/{ws.sid}"),
            },
        }

    def event(self, ws: Workspace, e: Event) -> JSON:
        base = f"/v1/Workspaces/{ws.sid}"
        resource: str | None = None
        if e.resource_type == "task":
            resource = _url(f"{base}/Tasks/{e.resource_sid}")
        elif e.resource_type == "worker":
            resource = _url(f"{base}/Workers/{e.resource_sid}")
        elif e.resource_type == "reservation" and e.data.get("TaskSid"):
            # A reservation is addressed under its task.
            resource = _url(f"{base}/Tasks/{e.data['TaskSid']}/Reservations/{e.resource_sid}")
        return {
            "account_sid": self.account_sid,
            "actor_sid": ws.sid,
            "actor_type": "workspace",
            "actor_url": _url(f"/v1/Workspaces/{ws.sid}"),
            "description": e.description,
            "event_data": dict(e.data),
            "event_date": iso(e.date),
            "event_date_ms": int(e.date * 1000),
            "event_type": e.event_type,
            "resource_sid": e.resource_sid,
            "resource_type": e.resource_type,
            "resource_url": resource,
            "sid": e.sid,
            "source": "twilio",
            "source_ip_address": "127.0.0.1",
            "url": _url(f"/v1/Workspaces/{ws.sid}/Events/{e.sid}"),
            "workspace_sid": ws.sid,
        }


R = TypeVar("R")


def ordered(rows: list[R], ordering: str | None, keys: dict[str, Callable[[R], Any]]) -> list[R]:
    """Sort by ``Field:asc|desc``; an ordering the emulator does not know is a 400."""
    if ordering is None:
        return rows
    field, _, direction = ordering.partition(":")
    if field not in keys or direction not in ("asc", "desc", ""):
        supported = ", ".join(f"{k}:asc|desc" for k in keys)
        raise ApiError(400, 20001, f"Ordering {ordering!r} is not supported ({supported})")
    return sorted(rows, key=keys[field], reverse=direction == "desc")


def register_taskrouter_routes(router: Router, engine: TaskRouter) -> None:
    spec = router.spec
    r = Renderer(engine)

    def one(call: Call, values: JSON, status: int | None = None, **headers: str) -> Reply:
        return Reply(status or call.op.response_status, spec.render(call.op, values), headers)

    def ws_of(call: Call) -> Workspace:
        return engine.workspace(call.path["WorkspaceSid"])

    def route(method: str, template: str) -> Callable[[Callable[[Call], Reply]], Any]:
        return router.route(method, template)

    # Workspaces ---------------------------------------------------------------------------
    @route("GET", "/v1/Workspaces")
    def list_workspaces(call: Call) -> Reply:
        rows = [
            r.workspace(ws)
            for ws in engine.workspaces.values()
            if "FriendlyName" not in call.query or ws.friendly_name == call.query["FriendlyName"]
        ]
        return paged(spec, call, rows)

    @route("POST", "/v1/Workspaces")
    def create_workspace(call: Call) -> Reply:
        f = call.form
        ws = engine.create_workspace(
            f["FriendlyName"],
            event_callback_url=f.get("EventCallbackUrl"),
            events_filter=engine._events_filter(f.get("EventsFilter")),
            multi_task_enabled=f.get("MultiTaskEnabled", True),
            prioritize_queue_order=f.get("PrioritizeQueueOrder", "FIFO"),
        )
        return one(call, r.workspace(ws))

    @route("GET", "/v1/Workspaces/{Sid}")
    def fetch_workspace(call: Call) -> Reply:
        return one(call, r.workspace(engine.workspace(call.path["Sid"])))

    @route("POST", "/v1/Workspaces/{Sid}")
    def update_workspace(call: Call) -> Reply:
        ws = engine.workspace(call.path["Sid"])
        engine.update_workspace(ws, call.form)
        return one(call, r.workspace(ws))

    @route("DELETE", "/v1/Workspaces/{Sid}")
    def delete_workspace(call: Call) -> Reply:
        engine.delete_workspace(engine.workspace(call.path["Sid"]))
        return Reply(204, None)

    # Activities ---------------------------------------------------------------------------
    @route("GET", f"{WS}/Activities")
    def list_activities(call: Call) -> Reply:
        ws = ws_of(call)
        q = call.query
        rows = [
            r.activity(ws, a)
            for a in ws.activities.values()
            if ("FriendlyName" not in q or a.friendly_name == q["FriendlyName"])
            and ("Available" not in q or str(a.available).lower() == q["Available"].lower())
        ]
        return paged(spec, call, rows)

    @route("POST", f"{WS}/Activities")
    def create_activity(call: Call) -> Reply:
        ws = ws_of(call)
        available = str(call.form.get("Available", "true")).lower() == "true"
        return one(
            call, r.activity(ws, engine.create_activity(ws, call.form["FriendlyName"], available))
        )

    @route("GET", f"{WS}/Activities/{{Sid}}")
    def fetch_activity(call: Call) -> Reply:
        ws = ws_of(call)
        return one(call, r.activity(ws, engine.activity(ws, call.path["Sid"])))

    @route("POST", f"{WS}/Activities/{{Sid}}")
    def update_activity(call: Call) -> Reply:
        ws = ws_of(call)
        activity = engine.activity(ws, call.path["Sid"])
        if "FriendlyName" in call.form:
            activity.friendly_name = call.form["FriendlyName"]
            activity.date_updated = call.now
        return one(call, r.activity(ws, activity))

    @route("DELETE", f"{WS}/Activities/{{Sid}}")
    def delete_activity(call: Call) -> Reply:
        ws = ws_of(call)
        engine.delete_activity(ws, engine.activity(ws, call.path["Sid"]))
        return Reply(204, None)

    # Task channels ------------------------------------------------------------------------
    @route("GET", f"{WS}/TaskChannels")
    def list_channels(call: Call) -> Reply:
        ws = ws_of(call)
        return paged(spec, call, [r.task_channel(ws, c) for c in ws.task_channels.values()])

    @route("POST", f"{WS}/TaskChannels")
    def create_channel(call: Call) -> Reply:
        ws = ws_of(call)
        f = call.form
        channel = engine.create_task_channel(
            ws, f["UniqueName"], f["FriendlyName"], f.get("ChannelOptimizedRouting")
        )
        return one(call, r.task_channel(ws, channel))

    @route("GET", f"{WS}/TaskChannels/{{Sid}}")
    def fetch_channel(call: Call) -> Reply:
        ws = ws_of(call)
        return one(call, r.task_channel(ws, engine.task_channel(ws, call.path["Sid"])))

    # Task queues --------------------------------------------------------------------------
    @route("GET", f"{WS}/TaskQueues")
    def list_queues(call: Call) -> Reply:
        ws = ws_of(call)
        q = call.query
        candidates: list[dict[str, Any]] = []
        if "WorkerSid" in q:
            candidates.append(engine.worker(ws, q["WorkerSid"]).parsed)
        if "EvaluateWorkerAttributes" in q:
            try:
                attributes = json.loads(q["EvaluateWorkerAttributes"])
            except ValueError:
                attributes = None
            if not isinstance(attributes, dict):
                raise ApiError(400, 20001, "EvaluateWorkerAttributes must be a JSON object")
            candidates.append(attributes)
        rows = []
        queues = ordered(
            list(ws.task_queues.values()),
            q.get("Ordering"),
            {"DateCreated": lambda x: x.date_created, "DateUpdated": lambda x: x.date_updated},
        )
        for queue in queues:
            if "FriendlyName" in q and queue.friendly_name != q["FriendlyName"]:
                continue
            if not all(queue.expression.evaluate(c, worker=c) for c in candidates):
                continue
            rows.append(r.task_queue(ws, queue))
        return paged(spec, call, rows)

    @route("POST", f"{WS}/TaskQueues")
    def create_queue(call: Call) -> Reply:
        ws = ws_of(call)
        return one(call, r.task_queue(ws, engine.create_task_queue(ws, call.form)))

    @route("GET", f"{WS}/TaskQueues/{{Sid}}")
    def fetch_queue(call: Call) -> Reply:
        ws = ws_of(call)
        return one(call, r.task_queue(ws, engine.task_queue(ws, call.path["Sid"])))

    @route("POST", f"{WS}/TaskQueues/{{Sid}}")
    def update_queue(call: Call) -> Reply:
        ws = ws_of(call)
        queue = engine.task_queue(ws, call.path["Sid"])
        engine.update_task_queue(ws, queue, call.form)
        return one(call, r.task_queue(ws, queue))

    @route("DELETE", f"{WS}/TaskQueues/{{Sid}}")
    def delete_queue(call: Call) -> Reply:
        ws = ws_of(call)
        engine.delete_task_queue(ws, engine.task_queue(ws, call.path["Sid"]))
        return Reply(204, None)

    # Workflows ----------------------------------------------------------------------------
    @route("GET", f"{WS}/Workflows")
    def list_workflows(call: Call) -> Reply:
        ws = ws_of(call)
        rows = [
            r.workflow(ws, w)
            for w in ws.workflows.values()
            if "FriendlyName" not in call.query or w.friendly_name == call.query["FriendlyName"]
        ]
        return paged(spec, call, rows)

    @route("POST", f"{WS}/Workflows")
    def create_workflow(call: Call) -> Reply:
        ws = ws_of(call)
        return one(call, r.workflow(ws, engine.create_workflow(ws, call.form)))

    @route("GET", f"{WS}/Workflows/{{Sid}}")
    def fetch_workflow(call: Call) -> Reply:
        ws = ws_of(call)
        return one(call, r.workflow(ws, engine.workflow(ws, call.path["Sid"])))

    @route("POST", f"{WS}/Workflows/{{Sid}}")
    def update_workflow(call: Call) -> Reply:
        ws = ws_of(call)
        workflow = engine.workflow(ws, call.path["Sid"])
        engine.update_workflow(ws, workflow, call.form)
        return one(call, r.workflow(ws, workflow))

    @route("DELETE", f"{WS}/Workflows/{{Sid}}")
    def delete_workflow(call: Call) -> Reply:
        ws = ws_of(call)
        engine.delete_workflow(ws, engine.workflow(ws, call.path["Sid"]))
        return Reply(204, None)

    # Workers ------------------------------------------------------------------------------
    @route("GET", f"{WS}/Workers")
    def list_workers(call: Call) -> Reply:
        ws = ws_of(call)
        q = call.query
        expression = None
        if "TargetWorkersExpression" in q:
            expression = engine._expression(q["TargetWorkersExpression"], "TargetWorkersExpression")
        queues: list[TaskQueue] = []
        if "TaskQueueSid" in q:
            queues.append(engine.task_queue(ws, q["TaskQueueSid"]))
        if "TaskQueueName" in q:
            named = [t for t in ws.task_queues.values() if t.friendly_name == q["TaskQueueName"]]
            if not named:
                return paged(spec, call, [])
            queues.extend(named)
        rows = []
        workers = ordered(
            list(ws.workers.values()),
            q.get("Ordering"),
            {
                "DateCreated": lambda x: x.date_created,
                "DateUpdated": lambda x: x.date_updated,
                "DateStatusChanged": lambda x: x.date_status_changed,
            },
        )
        for w in workers:
            activity = ws.activities.get(w.activity_sid)
            if "ActivitySid" in q and w.activity_sid != q["ActivitySid"]:
                continue
            if "ActivityName" in q and (
                activity is None or activity.friendly_name != q["ActivityName"]
            ):
                continue
            if (
                "Available" in q
                and str(engine.worker_available(ws, w)).lower() != str(q["Available"]).lower()
            ):
                continue
            if "FriendlyName" in q and w.friendly_name != q["FriendlyName"]:
                continue
            if expression is not None and not expression.evaluate(w.parsed, worker=w.parsed):
                continue
            if not all(t.expression.evaluate(w.parsed, worker=w.parsed) for t in queues):
                continue
            rows.append(r.worker(ws, w))
        return paged(spec, call, rows)

    @route("POST", f"{WS}/Workers")
    def create_worker(call: Call) -> Reply:
        ws = ws_of(call)
        worker = engine.create_worker(ws, call.form)
        return one(call, r.worker(ws, worker), ETag=str(worker.version))

    @route("GET", f"{WS}/Workers/{{Sid}}")
    def fetch_worker(call: Call) -> Reply:
        ws = ws_of(call)
        worker = engine.worker(ws, call.path["Sid"])
        return one(call, r.worker(ws, worker), ETag=str(worker.version))

    @route("POST", f"{WS}/Workers/{{Sid}}")
    def update_worker(call: Call) -> Reply:
        ws = ws_of(call)
        worker = engine.worker(ws, call.path["Sid"])
        engine.update_worker(ws, worker, call.form, call.if_match())
        return one(call, r.worker(ws, worker), ETag=str(worker.version))

    @route("DELETE", f"{WS}/Workers/{{Sid}}")
    def delete_worker(call: Call) -> Reply:
        ws = ws_of(call)
        engine.delete_worker(ws, engine.worker(ws, call.path["Sid"]), call.if_match())
        return Reply(204, None)

    # Tasks --------------------------------------------------------------------------------
    @route("GET", f"{WS}/Tasks")
    def list_tasks(call: Call) -> Reply:
        ws = ws_of(call)
        q = call.query
        statuses = set(q.get("AssignmentStatus", []))
        expression = None
        if "EvaluateTaskAttributes" in q:
            expression = engine._expression(q["EvaluateTaskAttributes"], "EvaluateTaskAttributes")
        has_addons = q.get("HasAddons")

        def keep(t: Task) -> bool:
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

        tasks = [t for t in ws.tasks.values() if keep(t)]
        tasks = ordered(
            tasks,
            q.get("Ordering", "DateCreated:asc"),
            {
                "DateCreated": lambda t: t.date_created,
                "Priority": lambda t: t.priority,
                "VirtualStartTime": lambda t: t.virtual_start_time,
            },
        )
        return paged(spec, call, [r.task(ws, t) for t in tasks])

    @route("POST", f"{WS}/Tasks")
    def create_task(call: Call) -> Reply:
        ws = ws_of(call)
        task = engine.create_task(ws, call.form)
        return one(call, r.task(ws, task), ETag=task.etag)

    @route("GET", f"{WS}/Tasks/{{Sid}}")
    def fetch_task(call: Call) -> Reply:
        ws = ws_of(call)
        task = engine.task(ws, call.path["Sid"])
        return one(call, r.task(ws, task), ETag=task.etag)

    @route("POST", f"{WS}/Tasks/{{Sid}}")
    def update_task(call: Call) -> Reply:
        ws = ws_of(call)
        task = engine.task(ws, call.path["Sid"])
        engine.update_task(ws, task, call.form, call.if_match())
        return one(call, r.task(ws, task), ETag=task.etag)

    @route("DELETE", f"{WS}/Tasks/{{Sid}}")
    def delete_task(call: Call) -> Reply:
        ws = ws_of(call)
        engine.delete_task(ws, engine.task(ws, call.path["Sid"]), call.if_match())
        return Reply(204, None)

    # Reservations -------------------------------------------------------------------------
    def list_reservations(call: Call, rows: list[Reservation], under_worker: bool) -> Reply:
        ws = ws_of(call)
        q = call.query
        rows = [
            res
            for res in rows
            if ("ReservationStatus" not in q or res.status == q["ReservationStatus"])
            and ("WorkerSid" not in q or res.worker_sid == q["WorkerSid"])
        ]
        return paged(
            spec, call, [r.reservation(ws, res, under_worker=under_worker) for res in rows]
        )

    @route("GET", f"{WS}/Tasks/{{TaskSid}}/Reservations")
    def list_task_reservations(call: Call) -> Reply:
        ws = ws_of(call)
        task = engine.task(ws, call.path["TaskSid"])
        return list_reservations(call, [ws.reservations[s] for s in task.reservation_sids], False)

    @route("GET", f"{WS}/Workers/{{WorkerSid}}/Reservations")
    def list_worker_reservations(call: Call) -> Reply:
        ws = ws_of(call)
        worker = engine.worker(ws, call.path["WorkerSid"])
        rows = [res for res in ws.reservations.values() if res.worker_sid == worker.sid]
        return list_reservations(call, rows, True)

    def reservation_of(call: Call) -> tuple[Workspace, Reservation, bool]:
        ws = ws_of(call)
        if "TaskSid" in call.path:
            engine.task(ws, call.path["TaskSid"])
            return (
                ws,
                engine.reservation(ws, call.path["Sid"], task_sid=call.path["TaskSid"]),
                False,
            )
        engine.worker(ws, call.path["WorkerSid"])
        res = engine.reservation(ws, call.path["Sid"], worker_sid=call.path["WorkerSid"])
        return ws, res, True

    def fetch_reservation(call: Call) -> Reply:
        ws, res, under_worker = reservation_of(call)
        return one(call, r.reservation(ws, res, under_worker=under_worker))

    def update_reservation(call: Call) -> Reply:
        ws, res, under_worker = reservation_of(call)
        engine.update_reservation(ws, res, call.form)
        return one(call, r.reservation(ws, res, under_worker=under_worker))

    for parent in ("Tasks/{TaskSid}", "Workers/{WorkerSid}"):
        router.add("GET", f"{WS}/{parent}/Reservations/{{Sid}}", fetch_reservation)
        router.add("POST", f"{WS}/{parent}/Reservations/{{Sid}}", update_reservation)

    # Events -------------------------------------------------------------------------------
    @route("GET", f"{WS}/Events")
    def list_events(call: Call) -> Reply:
        ws = ws_of(call)
        q = call.query
        filters = {
            "EventType": "EventType",
            "ReservationSid": "ReservationSid",
            "TaskSid": "TaskSid",
            "WorkerSid": "WorkerSid",
            "TaskQueueSid": "TaskQueueSid",
            "WorkflowSid": "WorkflowSid",
        }
        start = _date_query(q, "StartDate")
        end = _date_query(q, "EndDate")
        channel = q.get("TaskChannel")
        rows = []
        for e in reversed(ws.events):
            if "Sid" in q and e.sid != q["Sid"]:
                continue
            if any(name in q and e.data.get(key) != q[name] for name, key in filters.items()):
                continue
            if channel is not None and channel not in (
                e.data.get("TaskChannelSid"),
                e.data.get("TaskChannelUniqueName"),
            ):
                continue
            if "Minutes" in q and e.date < call.now - 60 * q["Minutes"]:
                continue
            if (start is not None and e.date < start) or (end is not None and e.date > end):
                continue
            rows.append(r.event(ws, e))
        return paged(spec, call, rows)

    @route("GET", f"{WS}/Events/{{Sid}}")
    def fetch_event(call: Call) -> Reply:
        ws = ws_of(call)
        for e in ws.events:
            if e.sid == call.path["Sid"]:
                return one(call, r.event(ws, e))
        raise ApiError(404, 20404, f"The requested resource Event {call.path['Sid']} was not found")
