"""Creating, changing and deleting workspaces and what they hold.

Workspaces, activities, task channels, task queues, workflows, workers and tasks: each method
checks its input whole before it changes anything, and refuses with TaskRouter's status and
code. Moves between lifecycle states are the :class:`Lifecycle`'s; a change that can make a
new match ends by matching again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flex_bridge.emulator.api import ApiError, invalid, not_found
from flex_bridge.emulator.expressions import (
    Expression,
    ExpressionError,
    WorkflowConfiguration,
    parse_expression,
    parse_workflow_configuration,
)
from flex_bridge.emulator.taskrouter.lifecycle import DEFAULT_RESERVATION_TIMEOUT, Lifecycle
from flex_bridge.emulator.taskrouter.models import (
    TASK_OPEN,
    Activity,
    Task,
    TaskChannel,
    TaskQueue,
    Worker,
    Workflow,
    Workspace,
    new_sid,
    parse_attributes,
    truthy,
)

ATTRIBUTES_LIMIT = 4096
DEFAULT_TASK_TIMEOUT = 86_400
# A task lives at most two weeks before it is assigned (Twilio's Task resource, Timeout).
MAX_TASK_TIMEOUT = 1_209_600
MAX_RESERVATION_TIMEOUT = 86_400
DEFAULT_CHANNELS = ("default", "voice", "chat", "sms", "video", "email")
DEFAULT_ACTIVITIES = (("Offline", False), ("Available", True), ("Unavailable", False))
WORKSPACE_FIELDS = {
    "FriendlyName": "friendly_name",
    "MultiTaskEnabled": "multi_task_enabled",
    "PrioritizeQueueOrder": "prioritize_queue_order",
    "DefaultActivitySid": "default_activity_sid",
    "TimeoutActivitySid": "timeout_activity_sid",
}
QUEUE_ACTIVITIES = ("ReservationActivitySid", "AssignmentActivitySid")
QUEUE_FIELDS = {
    "FriendlyName": "friendly_name",
    "MaxReservedWorkers": "max_reserved_workers",
    "TaskOrder": "task_order",
    "ReservationActivitySid": "reservation_activity_sid",
    "AssignmentActivitySid": "assignment_activity_sid",
}
WORKFLOW_URLS = {
    "AssignmentCallbackUrl": "assignment_callback_url",
    "FallbackAssignmentCallbackUrl": "fallback_assignment_callback_url",
}
WORKER_CHANGED = "The worker has changed since the given ETag"
TASK_TRANSITIONS = {
    "canceled": {"pending", "reserved"},
    "wrapping": {"assigned"},
    "completed": {"assigned", "wrapping"},
}


def parse_target(text: str, field: str) -> Expression:
    """A target-workers or filter expression; a 400 naming ``field`` when it does not parse."""
    try:
        return parse_expression(text)
    except ExpressionError as exc:
        raise invalid(f"{field} is not a valid expression: {exc}") from None


def events_filter(raw: str | None) -> list[str] | None:
    """``EventsFilter``: comma-separated event types; empty means every event."""
    if not raw:
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


def _check_etag(if_match: str | None, etag: str, message: str) -> None:
    if if_match is not None and if_match.strip('"') != etag:
        raise ApiError(412, 20412, message)


def _check_length(attributes: str) -> None:
    if len(attributes) > ATTRIBUTES_LIMIT:
        raise invalid(
            f"Attributes are {len(attributes)} characters long; the limit is {ATTRIBUTES_LIMIT}"
        )


def _worker_attributes(text: str) -> dict[str, Any]:
    _check_length(text)
    try:
        value = json.loads(text)
    except ValueError:
        raise invalid("Attributes must be a valid JSON object") from None
    if not isinstance(value, dict):
        raise invalid("Attributes must be a valid JSON object")
    return value


def _timestamp(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise invalid(f"VirtualStartTime is not an ISO 8601 date-time: {text!r}") from None


def _reservation_timeout(value: int) -> int:
    if not 1 <= value <= MAX_RESERVATION_TIMEOUT:
        raise invalid(f"TaskReservationTimeout must be between 1 and {MAX_RESERVATION_TIMEOUT}")
    return value


def _configuration(ws: Workspace, text: str) -> WorkflowConfiguration:
    try:
        parsed = parse_workflow_configuration(text)
    except ExpressionError as exc:
        raise invalid(f"Configuration is invalid: {exc}") from None
    for queue_sid in parsed.queue_sids:
        if queue_sid not in ws.task_queues:
            raise invalid(f"Configuration routes to unknown TaskQueue {queue_sid}")
    return parsed


def _check_activities(ws: Workspace, form: Mapping[str, Any], *keys: str) -> None:
    for key in keys:
        if key in form:
            ws.activity(form[key])


def _refuse_if(refused: bool, message: str) -> None:
    if refused:
        raise invalid(message)


def _unique(taken: bool, what: str, field: str, value: str, verb: str = "exists") -> None:
    if taken:
        raise ApiError(409, 20001, f"{what} with {field} {value!r} {verb}")


def _copy_fields(
    target: object, form: Mapping[str, Any], fields: Mapping[str, str], *, blank_none: bool = False
) -> None:
    """Set ``target.<attribute>`` from each form field present; "" is None if ``blank_none``."""
    for name, attribute in fields.items():
        if name in form:
            setattr(target, attribute, (form[name] or None) if blank_none else form[name])


def _open_tasks(ws: Workspace) -> list[Task]:
    return [t for t in ws.tasks.values() if t.assignment_status in TASK_OPEN]


def _task_changed(task: Task, if_match: str | None) -> str:
    return f"Task {task.sid} has changed: ETag {if_match} does not match"


def _check_task_transition(task: Task, status: str) -> None:
    if status not in TASK_TRANSITIONS:
        raise invalid(f"AssignmentStatus cannot be set to {status!r}")
    if task.assignment_status not in TASK_TRANSITIONS[status]:
        raise invalid(f"Task {task.sid} cannot move from {task.assignment_status} to {status}")


class Resources:
    """Workspaces and their resources, created, changed and deleted as the REST API asks."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.runtime = lifecycle.runtime
        self.events = lifecycle.events
        self.workspaces = lifecycle.workspaces

    def workspace(self, sid: str) -> Workspace:
        ws = self.workspaces.get(sid)
        if ws is None:
            raise not_found("Workspace", sid)
        return ws

    def match(self, ws: Workspace) -> None:
        """Offer pending tasks to available workers, creating reservations."""
        self.lifecycle.match(ws)

    # --------------------------------------------------------------------------- workspace
    def create_workspace(
        self,
        friendly_name: str,
        *,
        event_callback_url: str | None = None,
        events_filter: list[str] | None = None,
        multi_task_enabled: bool = True,
        prioritize_queue_order: str = "FIFO",
    ) -> Workspace:
        names = (ws.friendly_name for ws in self.workspaces.values())
        _unique(friendly_name in names, "Workspace", "FriendlyName", friendly_name)
        now = self.runtime.now()
        activities = [
            Activity(new_sid("WA"), name, available, now, now)
            for name, available in DEFAULT_ACTIVITIES
        ]
        ws = Workspace(
            sid=new_sid("WS"),
            friendly_name=friendly_name,
            event_callback_url=event_callback_url or None,
            events_filter=events_filter,
            multi_task_enabled=multi_task_enabled,
            prioritize_queue_order=prioritize_queue_order,
            default_activity_sid=activities[0].sid,
            timeout_activity_sid=activities[0].sid,
            date_created=now,
            date_updated=now,
        )
        ws.activities = {a.sid: a for a in activities}
        for name in DEFAULT_CHANNELS:
            channel = TaskChannel(new_sid("TC"), name, name.title(), False, now, now)
            ws.task_channels[channel.sid] = channel
        self.workspaces[ws.sid] = ws
        return ws

    def update_workspace(self, ws: Workspace, form: Mapping[str, Any]) -> None:
        _check_activities(ws, form, "DefaultActivitySid", "TimeoutActivitySid")
        _copy_fields(ws, form, WORKSPACE_FIELDS)
        _copy_fields(ws, form, {"EventCallbackUrl": "event_callback_url"}, blank_none=True)
        if "EventsFilter" in form:
            ws.events_filter = events_filter(form["EventsFilter"])
        ws.date_updated = self.runtime.now()

    def delete_workspace(self, ws: Workspace) -> None:
        self.lifecycle.stop_timers(ws)
        del self.workspaces[ws.sid]

    # -------------------------------------------------------------------------- activities
    def create_activity(self, ws: Workspace, form: Mapping[str, Any]) -> Activity:
        friendly_name = form["FriendlyName"]
        available = str(form.get("Available", "true")).lower() == "true"
        names = (a.friendly_name for a in ws.activities.values())
        _unique(friendly_name in names, "Activity", "FriendlyName", friendly_name)
        now = self.runtime.now()
        activity = Activity(new_sid("WA"), friendly_name, available, now, now)
        ws.activities[activity.sid] = activity
        return activity

    def update_activity(self, ws: Workspace, activity: Activity, form: Mapping[str, Any]) -> None:
        if "FriendlyName" in form:
            activity.friendly_name = form["FriendlyName"]
            activity.date_updated = self.runtime.now()

    def delete_activity(self, ws: Workspace, activity: Activity) -> None:
        if activity.sid in (ws.default_activity_sid, ws.timeout_activity_sid):
            raise invalid(f"Activity {activity.sid} is the workspace's default or timeout activity")
        if any(w.activity_sid == activity.sid for w in ws.workers.values()):
            raise invalid(f"Activity {activity.sid} is in use by one or more workers")
        del ws.activities[activity.sid]

    def create_task_channel(self, ws: Workspace, form: Mapping[str, Any]) -> TaskChannel:
        unique_name, friendly_name = form["UniqueName"], form["FriendlyName"]
        optimized = form.get("ChannelOptimizedRouting")
        names = (c.unique_name for c in ws.task_channels.values())
        _unique(unique_name in names, "TaskChannel", "UniqueName", unique_name)
        now = self.runtime.now()
        channel = TaskChannel(new_sid("TC"), unique_name, friendly_name, optimized, now, now)
        ws.task_channels[channel.sid] = channel
        return channel

    # ------------------------------------------------------------------------- task queues
    def create_task_queue(self, ws: Workspace, form: Mapping[str, Any]) -> TaskQueue:
        now = self.runtime.now()
        target = form.get("TargetWorkers") or "1==1"
        _check_activities(ws, form, *QUEUE_ACTIVITIES)
        queue = TaskQueue(
            sid=new_sid("WQ"),
            friendly_name=form["FriendlyName"],
            target_workers=target,
            expression=parse_target(target, "TargetWorkers"),
            max_reserved_workers=form.get("MaxReservedWorkers", 1),
            task_order=form.get("TaskOrder", "FIFO"),
            reservation_activity_sid=form.get("ReservationActivitySid"),
            assignment_activity_sid=form.get("AssignmentActivitySid"),
            date_created=now,
            date_updated=now,
        )
        ws.task_queues[queue.sid] = queue
        return queue

    def update_task_queue(self, ws: Workspace, queue: TaskQueue, form: Mapping[str, Any]) -> None:
        _check_activities(ws, form, *QUEUE_ACTIVITIES)
        if "TargetWorkers" in form:
            queue.expression = parse_target(form["TargetWorkers"], "TargetWorkers")
            queue.target_workers = form["TargetWorkers"]
        _copy_fields(queue, form, QUEUE_FIELDS)
        queue.date_updated = self.runtime.now()
        self.match(ws)

    def delete_task_queue(self, ws: Workspace, queue: TaskQueue) -> None:
        in_queue = (t.task_queue_sid == queue.sid for t in _open_tasks(ws))
        _refuse_if(any(in_queue), f"TaskQueue {queue.sid} still holds open tasks")
        del ws.task_queues[queue.sid]

    # --------------------------------------------------------------------------- workflows
    def create_workflow(self, ws: Workspace, form: Mapping[str, Any]) -> Workflow:
        now = self.runtime.now()
        workflow = Workflow(
            sid=new_sid("WW"),
            friendly_name=form["FriendlyName"],
            configuration=form["Configuration"],
            parsed=_configuration(ws, form["Configuration"]),
            assignment_callback_url=form.get("AssignmentCallbackUrl") or None,
            fallback_assignment_callback_url=form.get("FallbackAssignmentCallbackUrl") or None,
            task_reservation_timeout=_reservation_timeout(
                form.get("TaskReservationTimeout", DEFAULT_RESERVATION_TIMEOUT)
            ),
            date_created=now,
            date_updated=now,
        )
        ws.workflows[workflow.sid] = workflow
        return workflow

    def update_workflow(self, ws: Workspace, workflow: Workflow, form: Mapping[str, Any]) -> None:
        parsed = None
        if "Configuration" in form:
            parsed = _configuration(ws, form["Configuration"])
        if "TaskReservationTimeout" in form:
            workflow.task_reservation_timeout = _reservation_timeout(form["TaskReservationTimeout"])
        if parsed is not None:
            workflow.configuration = form["Configuration"]
            workflow.parsed = parsed
        _copy_fields(workflow, form, {"FriendlyName": "friendly_name"})
        _copy_fields(workflow, form, WORKFLOW_URLS, blank_none=True)
        workflow.date_updated = self.runtime.now()
        if truthy(form.get("ReEvaluateTasks", False)):
            for sid in list(ws.pending_tasks):
                task = ws.tasks[sid]
                if task.workflow_sid == workflow.sid:
                    self._route(task, workflow)
            self.match(ws)

    def delete_workflow(self, ws: Workspace, workflow: Workflow) -> None:
        routed = (t.workflow_sid == workflow.sid for t in _open_tasks(ws))
        _refuse_if(any(routed), f"Workflow {workflow.sid} still has open tasks")
        del ws.workflows[workflow.sid]

    # ----------------------------------------------------------------------------- workers
    def create_worker(self, ws: Workspace, form: Mapping[str, Any]) -> Worker:
        name = form["FriendlyName"]
        names = (w.friendly_name for w in ws.workers.values())
        _unique(name in names, "Worker", "FriendlyName", name, "already exists")
        attributes = form.get("Attributes", "{}")
        parsed = _worker_attributes(attributes)
        activity_sid = form.get("ActivitySid", ws.default_activity_sid)
        ws.activity(activity_sid)
        now = self.runtime.now()
        worker = Worker(
            sid=new_sid("WK"),
            friendly_name=name,
            activity_sid=activity_sid,
            attributes=attributes,
            parsed=parsed,
            date_created=now,
            date_updated=now,
            date_status_changed=now,
            idle_since=now,
        )
        ws.workers[worker.sid] = worker
        self.events.worker(ws, worker, "worker.created", "Worker created")
        self.match(ws)
        return worker

    def update_worker(
        self, ws: Workspace, worker: Worker, form: Mapping[str, Any], if_match: str | None
    ) -> None:
        _check_etag(if_match, str(worker.version), WORKER_CHANGED)
        parsed = None
        if "Attributes" in form:
            parsed = _worker_attributes(form["Attributes"])
        _check_activities(ws, form, "ActivitySid")
        name = form.get("FriendlyName")
        others = (w.friendly_name for w in ws.workers.values() if w.sid != worker.sid)
        _unique(
            name is not None and name in others,
            "Worker",
            "FriendlyName",
            str(name),
            "already exists",
        )
        now = self.runtime.now()
        if name is not None:
            worker.friendly_name = name
        if parsed is not None:
            worker.attributes = form["Attributes"]
            worker.parsed = parsed
            self.events.worker(ws, worker, "worker.attributes.update", "Worker attributes updated")
        if "ActivitySid" in form and form["ActivitySid"] != worker.activity_sid:
            if truthy(form.get("RejectPendingReservations", False)):
                self.lifecycle.reject_pending(ws, worker)
            self.lifecycle.set_activity(ws, worker, form["ActivitySid"])
        worker.version += 1
        worker.date_updated = now
        self.match(ws)

    def delete_worker(self, ws: Workspace, worker: Worker, if_match: str | None) -> None:
        _check_etag(if_match, str(worker.version), WORKER_CHANGED)
        if ws.worker_active.get(worker.sid):
            raise invalid(f"Worker {worker.sid} has active reservations")
        del ws.workers[worker.sid]
        self.events.worker(ws, worker, "worker.deleted", "Worker deleted")

    # ------------------------------------------------------------------------------- tasks
    def create_task(self, ws: Workspace, form: Mapping[str, Any]) -> Task:
        # Twilio does not check task attributes: a malformed string is stored as sent.
        attributes = form.get("Attributes", "{}")
        _check_length(attributes)
        queue_sid = form.get("TaskQueueSid")
        workflow: Workflow | None = None
        if queue_sid is not None:
            ws.task_queue(queue_sid)
        if "WorkflowSid" in form:
            workflow = ws.workflow(form["WorkflowSid"])
        elif queue_sid is None:
            if len(ws.workflows) != 1:
                raise invalid("WorkflowSid is required when the workspace has not one workflow")
            workflow = next(iter(ws.workflows.values()))
        channel = ws.task_channel(form.get("TaskChannel", "default"))
        routing_target = form.get("RoutingTarget")
        if routing_target is not None:
            ws.worker(routing_target)
        timeout = form.get("Timeout", DEFAULT_TASK_TIMEOUT)
        if not 1 <= timeout <= MAX_TASK_TIMEOUT:
            raise invalid(
                f"Timeout must be between 1 and {MAX_TASK_TIMEOUT} seconds (two weeks); "
                f"got {timeout}"
            )
        now = self.runtime.now()
        start = form.get("VirtualStartTime")
        task = Task(
            sid=new_sid("WT"),
            attributes=attributes,
            assignment_status="pending",
            priority=form.get("Priority", 0),
            timeout=timeout,
            workflow_sid=workflow.sid if workflow else None,
            task_queue_sid=queue_sid,
            task_channel_sid=channel.sid,
            date_created=now,
            date_updated=now,
            task_queue_entered_date=now if queue_sid else None,
            virtual_start_time=_timestamp(start) if start else now,
        )
        task.routing_target = routing_target
        task.ignore_capacity = bool(form.get("IgnoreCapacity", False))
        ws.tasks[task.sid] = task
        ws.pending_tasks.add(task.sid)
        if workflow is not None and queue_sid is None:
            self._route(task, workflow)
        self.lifecycle.start_ttl(ws, task)
        self.events.task(ws, task, "task.created", "Task created")
        self.match(ws)
        return task

    def _route(self, task: Task, workflow: Workflow) -> None:
        """Send a task through its workflow: its queue, target expression and priority."""
        target = workflow.parsed.route(parse_attributes(task.attributes))
        if target is None:
            task.task_queue_sid = None
            task.target_expression = None
            return
        if task.task_queue_sid != target.queue_sid:
            task.task_queue_entered_date = self.runtime.now()
        task.task_queue_sid = target.queue_sid
        task.target_expression = target.expression
        if target.priority is not None:
            task.priority = target.priority

    def update_task(
        self, ws: Workspace, task: Task, form: Mapping[str, Any], if_match: str | None
    ) -> None:
        _check_etag(if_match, task.etag, _task_changed(task, if_match))
        status = form.get("AssignmentStatus")
        if "Attributes" in form:
            _check_length(form["Attributes"])
        channel = ws.task_channel(form["TaskChannel"]) if "TaskChannel" in form else None
        start = _timestamp(form["VirtualStartTime"]) if "VirtualStartTime" in form else None
        if status is not None:
            _check_task_transition(task, status)
        changed = False
        if "Attributes" in form:
            task.attributes = form["Attributes"]
            changed = True
            # New attributes send a waiting task through its workflow again.
            workflow = ws.workflows.get(task.workflow_sid or "")
            if task.assignment_status == "pending" and workflow is not None:
                self._route(task, workflow)
        if "Priority" in form:
            task.priority = form["Priority"]
            changed = True
        if channel is not None:
            task.task_channel_sid = channel.sid
            changed = True
        if start is not None:
            task.virtual_start_time = start
            changed = True
        if "Reason" in form:
            task.reason = form["Reason"]
        now = self.runtime.now()
        if changed:
            task.touch(now)
            self.events.task(ws, task, "task.updated", "Task updated")
        if status is not None:
            self.lifecycle.move_task(ws, task, status, form.get("Reason"))
        elif not changed:
            task.touch(now)
        self.match(ws)

    def delete_task(self, ws: Workspace, task: Task, if_match: str | None) -> None:
        _check_etag(if_match, task.etag, _task_changed(task, if_match))
        self.lifecycle.cancel_reservations(ws, task)
        self.lifecycle.forget_task(ws, task)
        self.events.task(ws, task, "task.deleted", "Task deleted")
        self.match(ws)
