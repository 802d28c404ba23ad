"""TaskRouter's resources as the REST API answers them: plain values keyed by field name."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from flex_bridge.emulator.api import JSON, resource_url
from flex_bridge.emulator.clock import iso
from flex_bridge.emulator.runtime import Runtime
from flex_bridge.emulator.taskrouter import models
from flex_bridge.emulator.taskrouter.matching import worker_available
from flex_bridge.emulator.taskrouter.models import Workspace


def _url(path: str) -> str:
    return resource_url("taskrouter", path)


def _ws_url(ws: Workspace, tail: str = "") -> str:
    return _url(f"/v1/Workspaces/{ws.sid}{tail}")


def _dates(record: Any) -> dict[str, str | None]:
    return {"date_created": iso(record.date_created), "date_updated": iso(record.date_updated)}


def _under(ws: Workspace, tail: str) -> JSON:
    """The fields of a resource that sits directly under its workspace."""
    return {"workspace_sid": ws.sid, "url": _ws_url(ws, tail), "links": {"workspace": _ws_url(ws)}}


class _Named(Protocol):
    friendly_name: str


def _name(table: Mapping[str, _Named], sid: str | None) -> str | None:
    """The friendly name of what ``sid`` names in ``table``, or None."""
    found = table.get(sid or "")
    return found.friendly_name if found else None


def _link(ws: Workspace, segment: str, sid: str | None) -> str | None:
    """The URL of a workspace resource a field may name, or None."""
    return _ws_url(ws, f"/{segment}/{sid}") if sid else None


def _statistics(base: str) -> dict[str, str]:
    return {
        "statistics": _url(f"{base}/Statistics"),
        "real_time_statistics": _url(f"{base}/RealTimeStatistics"),
        "cumulative_statistics": _url(f"{base}/CumulativeStatistics"),
    }


class Renderer:
    """Plain values of each resource, keyed by the spec's field names."""

    def __init__(self, runtime: Runtime) -> None:
        self.account_sid = runtime.account_sid
        self.runtime = runtime

    def workspace(self, ws: Workspace) -> JSON:
        base = f"/v1/Workspaces/{ws.sid}"
        return {
            "account_sid": self.account_sid,
            **_dates(ws),
            "default_activity_name": _name(ws.activities, ws.default_activity_sid),
            "default_activity_sid": ws.default_activity_sid,
            "event_callback_url": ws.event_callback_url,
            "events_filter": ",".join(ws.events_filter) if ws.events_filter else None,
            "friendly_name": ws.friendly_name,
            "multi_task_enabled": ws.multi_task_enabled,
            "sid": ws.sid,
            "timeout_activity_name": _name(ws.activities, ws.timeout_activity_sid),
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

    def activity(self, ws: Workspace, a: models.Activity) -> JSON:
        return {
            "account_sid": self.account_sid,
            "available": a.available,
            **_dates(a),
            "friendly_name": a.friendly_name,
            "sid": a.sid,
            **_under(ws, f"/Activities/{a.sid}"),
        }

    def task_channel(self, ws: Workspace, c: models.TaskChannel) -> JSON:
        return {
            "account_sid": self.account_sid,
            **_dates(c),
            "friendly_name": c.friendly_name,
            "sid": c.sid,
            "unique_name": c.unique_name,
            "channel_optimized_routing": c.channel_optimized_routing,
            **_under(ws, f"/TaskChannels/{c.sid}"),
        }

    def task_queue(self, ws: Workspace, q: models.TaskQueue) -> JSON:
        base = f"/v1/Workspaces/{ws.sid}/TaskQueues/{q.sid}"
        return {
            "account_sid": self.account_sid,
            "assignment_activity_sid": q.assignment_activity_sid,
            "assignment_activity_name": _name(ws.activities, q.assignment_activity_sid),
            **_dates(q),
            "friendly_name": q.friendly_name,
            "max_reserved_workers": q.max_reserved_workers,
            "reservation_activity_sid": q.reservation_activity_sid,
            "reservation_activity_name": _name(ws.activities, q.reservation_activity_sid),
            "sid": q.sid,
            "target_workers": q.target_workers,
            "task_order": q.task_order,
            "url": _url(base),
            "workspace_sid": ws.sid,
            "links": {
                "assignment_activity": _link(ws, "Activities", q.assignment_activity_sid),
                "reservation_activity": _link(ws, "Activities", q.reservation_activity_sid),
                "workspace": _ws_url(ws),
                **_statistics(base),
            },
        }

    def workflow(self, ws: Workspace, w: models.Workflow) -> JSON:
        base = f"/v1/Workspaces/{ws.sid}/Workflows/{w.sid}"
        return {
            "account_sid": self.account_sid,
            "assignment_callback_url": w.assignment_callback_url,
            "configuration": w.configuration,
            **_dates(w),
            "document_content_type": "application/json",
            "fallback_assignment_callback_url": w.fallback_assignment_callback_url,
            "friendly_name": w.friendly_name,
            "sid": w.sid,
            "task_reservation_timeout": w.task_reservation_timeout,
            "workspace_sid": ws.sid,
            "url": _url(base),
            "links": {
                **_statistics(base),
            },
        }

    def worker(self, ws: Workspace, w: models.Worker) -> JSON:
        base = f"/v1/Workspaces/{ws.sid}/Workers/{w.sid}"
        return {
            "account_sid": self.account_sid,
            "activity_name": _name(ws.activities, w.activity_sid),
            "activity_sid": w.activity_sid,
            "attributes": w.attributes,
            "available": worker_available(ws, w),
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
                "workspace": _ws_url(ws),
                "activity": _ws_url(ws, f"/Activities/{w.activity_sid}"),
            },
        }

    def worker_listed(self, ws: Workspace, w: models.Worker) -> JSON:
        """A worker in a list: Twilio shows attributes only when one worker is fetched."""
        return {**self.worker(ws, w), "attributes": None}

    def task_listed(self, ws: Workspace, t: models.Task) -> JSON:
        """A task in a list: Twilio shows attributes only when one task is fetched."""
        return {**self.task(ws, t), "attributes": None}

    def task(self, ws: Workspace, t: models.Task) -> JSON:
        base = f"/v1/Workspaces/{ws.sid}/Tasks/{t.sid}"
        channel = ws.task_channels.get(t.task_channel_sid or "")
        return {
            "account_sid": self.account_sid,
            "age": int(self.runtime.now() - t.date_created),
            "assignment_status": t.assignment_status,
            "attributes": t.attributes,
            "addons": "{}",
            **_dates(t),
            "task_queue_entered_date": iso(t.task_queue_entered_date),
            "priority": t.priority,
            "reason": t.reason,
            "sid": t.sid,
            "task_queue_sid": t.task_queue_sid,
            "task_queue_friendly_name": _name(ws.task_queues, t.task_queue_sid),
            "task_channel_sid": t.task_channel_sid,
            "task_channel_unique_name": channel.unique_name if channel else None,
            "timeout": t.timeout,
            "workflow_sid": t.workflow_sid,
            "workflow_friendly_name": _name(ws.workflows, t.workflow_sid),
            "workspace_sid": ws.sid,
            "url": _url(base),
            "links": {
                "task_queue": _link(ws, "TaskQueues", t.task_queue_sid),
                "workflow": _link(ws, "Workflows", t.workflow_sid),
                "workspace": _ws_url(ws),
                "reservations": _url(f"{base}/Reservations"),
            },
            "virtual_start_time": iso(t.virtual_start_time),
            "ignore_capacity": t.ignore_capacity,
            "routing_target": t.routing_target,
        }

    def reservation(self, ws: Workspace, r: models.Reservation, *, under_worker: bool) -> JSON:
        if under_worker:
            url = _ws_url(ws, f"/Workers/{r.worker_sid}/Reservations/{r.sid}")
        else:
            url = _ws_url(ws, f"/Tasks/{r.task_sid}/Reservations/{r.sid}")
        return {
            "account_sid": self.account_sid,
            **_dates(r),
            "reservation_status": r.status,
            "sid": r.sid,
            "task_sid": r.task_sid,
            "worker_name": _name(ws.workers, r.worker_sid),
            "worker_sid": r.worker_sid,
            "workspace_sid": ws.sid,
            "url": url,
            "links": {
                "task": _ws_url(ws, f"/Tasks/{r.task_sid}"),
                "worker": _ws_url(ws, f"/Workers/{r.worker_sid}"),
                "workspace": _ws_url(ws),
            },
        }

    def event(self, ws: Workspace, e: models.Event) -> JSON:
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
            "actor_url": _ws_url(ws),
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
            "url": _ws_url(ws, f"/Events/{e.sid}"),
            "workspace_sid": ws.sid,
        }

    def dump(self, workspaces: Iterable[Workspace]) -> list[JSON]:
        """Every workspace with what it holds, reservations with their instructions."""
        return [
            {
                **self.workspace(ws),
                "activities": [self.activity(ws, a) for a in ws.activities.values()],
                "task_queues": [self.task_queue(ws, q) for q in ws.task_queues.values()],
                "workflows": [self.workflow(ws, w) for w in ws.workflows.values()],
                "workers": [self.worker(ws, w) for w in ws.workers.values()],
                "tasks": [self.task(ws, t) for t in ws.tasks.values()],
                "reservations": [
                    {
                        **self.reservation(ws, r, under_worker=False),
                        "instructions": r.instructions,
                        "worker_call_sid": r.worker_call_sid,
                        "ringing": r.ring.instruction if r.ring else None,
                    }
                    for r in ws.reservations.values()
                ],
            }
            for ws in workspaces
        ]
