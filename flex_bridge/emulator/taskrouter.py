"""TaskRouter's behaviour: lifecycles, the matching engine, timers, callbacks and events.

Every public method here is synchronous and applies one change whole; the REST layer calls
them from its handlers. The only asynchronous work is outgoing HTTP (assignment callbacks and
event callbacks), which runs in background tasks and re-enters through the same methods.

Emulated rules (from ../shared/TWILIO.md):

- Reservations: pending -> accepted | rejected | timeout | canceled | rescinded;
  accepted -> wrapping -> completed, or accepted -> completed. Instructions (conference,
  dequeue, call, redirect) only while pending, else 400 with 40136 / 40135 / 40114 / 20001.
  Any other change a status does not allow is 400 with 20001 naming the current status.
- Tasks: pending -> reserved -> assigned -> wrapping -> completed; reserved -> pending on
  reject or timeout; cancel only from pending or reserved; a task is canceled after 1,000
  rejections and when its own ``Timeout`` (TTL) runs out.
- One reservation at a time per task (``MaxReservedWorkers`` is stored but not used) and one
  task at a time per worker: a worker is available when its activity is available and it has
  no pending, accepted or wrapping reservation. Voice is not emulated: an instruction is
  recorded on the reservation and, where Twilio would connect a call and accept, it accepts.
- Matching offers pending tasks in priority order, then by age, each to the matching worker
  that has been idle longest, skipping workers that already rejected that task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

from flex_bridge.emulator.api import ApiError, invalid, not_found
from flex_bridge.emulator.clock import Clock, Scheduler
from flex_bridge.emulator.expressions import (
    Expression,
    ExpressionError,
    parse_expression,
    parse_workflow_configuration,
)
from flex_bridge.emulator.feed import Feed
from flex_bridge.emulator.log import RequestLog
from flex_bridge.emulator.taskrouter_models import (
    RESERVATION_ACTIVE,
    TASK_OPEN,
    Activity,
    Event,
    Reservation,
    Task,
    TaskChannel,
    TaskQueue,
    Worker,
    Workflow,
    Workspace,
    new_sid,
    parse_attributes,
)
from flex_bridge.emulator.webhooks import WebhookResult, WebhookSender

ATTRIBUTES_LIMIT = 4096
MAX_REJECTIONS = 1000
DEFAULT_TASK_TIMEOUT = 86_400
DEFAULT_RESERVATION_TIMEOUT = 120
MAX_RESERVATION_TIMEOUT = 86_400
ASSIGNMENT_TIMEOUT = 5.0
EVENTS_KEPT = 10_000
DEFAULT_CHANNELS = ("default", "voice", "chat", "sms", "video", "email")
INSTRUCTION_CODES = {"conference": 40136, "dequeue": 40135, "call": 40114, "redirect": 20001}


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


class TaskRouter:
    def __init__(
        self,
        account_sid: str,
        clock: Clock,
        scheduler: Scheduler,
        feed: Feed,
        log: RequestLog,
        sender: WebhookSender,
        *,
        assignment_timeout: float = ASSIGNMENT_TIMEOUT,
    ) -> None:
        self.account_sid = account_sid
        self.clock = clock
        self.scheduler = scheduler
        self.feed = feed
        self.log = log
        self.sender = sender
        self.assignment_timeout = assignment_timeout
        self.workspaces: dict[str, Workspace] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Cancel assignment offers still in flight."""
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # ----------------------------------------------------------------------------- lookups
    def workspace(self, sid: str) -> Workspace:
        ws = self.workspaces.get(sid)
        if ws is None:
            raise not_found("Workspace", sid)
        return ws

    @staticmethod
    def _get(table: Mapping[str, Any], sid: str, what: str) -> Any:
        item = table.get(sid)
        if item is None:
            raise not_found(what, sid)
        return item

    def activity(self, ws: Workspace, sid: str) -> Activity:
        return self._get(ws.activities, sid, "Activity")  # type: ignore[no-any-return]

    def task_queue(self, ws: Workspace, sid: str) -> TaskQueue:
        return self._get(ws.task_queues, sid, "TaskQueue")  # type: ignore[no-any-return]

    def workflow(self, ws: Workspace, sid: str) -> Workflow:
        return self._get(ws.workflows, sid, "Workflow")  # type: ignore[no-any-return]

    def worker(self, ws: Workspace, sid: str) -> Worker:
        return self._get(ws.workers, sid, "Worker")  # type: ignore[no-any-return]

    def task(self, ws: Workspace, sid: str) -> Task:
        return self._get(ws.tasks, sid, "Task")  # type: ignore[no-any-return]

    def task_channel(self, ws: Workspace, sid_or_name: str) -> TaskChannel:
        channel = ws.task_channels.get(sid_or_name)
        if channel is None:
            for candidate in ws.task_channels.values():
                if candidate.unique_name == sid_or_name:
                    return candidate
            raise not_found("TaskChannel", sid_or_name)
        return channel

    def reservation(
        self, ws: Workspace, sid: str, *, task_sid: str | None = None, worker_sid: str | None = None
    ) -> Reservation:
        res = ws.reservations.get(sid)
        if (
            res is None
            or (task_sid is not None and res.task_sid != task_sid)
            or (worker_sid is not None and res.worker_sid != worker_sid)
        ):
            raise not_found("Reservation", sid)
        return res

    def worker_available(self, ws: Workspace, worker: Worker) -> bool:
        activity = ws.activities.get(worker.activity_sid)
        return bool(activity and activity.available)

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
        if any(ws.friendly_name == friendly_name for ws in self.workspaces.values()):
            raise ApiError(409, 20001, f"Workspace with FriendlyName {friendly_name!r} exists")
        now = self.clock.now()
        activities = [
            Activity(new_sid("WA"), name, available, now, now)
            for name, available in (("Offline", False), ("Available", True), ("Unavailable", False))
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
        for key in ("DefaultActivitySid", "TimeoutActivitySid"):
            if key in form:
                self.activity(ws, form[key])
        if "FriendlyName" in form:
            ws.friendly_name = form["FriendlyName"]
        if "EventCallbackUrl" in form:
            ws.event_callback_url = form["EventCallbackUrl"] or None
        if "EventsFilter" in form:
            ws.events_filter = self._events_filter(form["EventsFilter"])
        if "MultiTaskEnabled" in form:
            ws.multi_task_enabled = form["MultiTaskEnabled"]
        if "PrioritizeQueueOrder" in form:
            ws.prioritize_queue_order = form["PrioritizeQueueOrder"]
        if "DefaultActivitySid" in form:
            ws.default_activity_sid = form["DefaultActivitySid"]
        if "TimeoutActivitySid" in form:
            ws.timeout_activity_sid = form["TimeoutActivitySid"]
        ws.date_updated = self.clock.now()

    @staticmethod
    def _events_filter(raw: str | None) -> list[str] | None:
        if not raw:
            return None
        return [part.strip() for part in raw.split(",") if part.strip()]

    def delete_workspace(self, ws: Workspace) -> None:
        for res in ws.reservations.values():
            if res.timer:
                res.timer.cancel()
        for task in ws.tasks.values():
            if task.ttl_timer:
                task.ttl_timer.cancel()
        del self.workspaces[ws.sid]

    # -------------------------------------------------------------------------- activities
    def create_activity(self, ws: Workspace, friendly_name: str, available: bool) -> Activity:
        if any(a.friendly_name == friendly_name for a in ws.activities.values()):
            raise ApiError(409, 20001, f"Activity with FriendlyName {friendly_name!r} exists")
        now = self.clock.now()
        activity = Activity(new_sid("WA"), friendly_name, available, now, now)
        ws.activities[activity.sid] = activity
        return activity

    def delete_activity(self, ws: Workspace, activity: Activity) -> None:
        if activity.sid in (ws.default_activity_sid, ws.timeout_activity_sid):
            raise invalid(f"Activity {activity.sid} is the workspace's default or timeout activity")
        if any(w.activity_sid == activity.sid for w in ws.workers.values()):
            raise invalid(f"Activity {activity.sid} is in use by one or more workers")
        del ws.activities[activity.sid]

    def create_task_channel(
        self, ws: Workspace, unique_name: str, friendly_name: str, optimized: bool | None
    ) -> TaskChannel:
        if any(c.unique_name == unique_name for c in ws.task_channels.values()):
            raise ApiError(409, 20001, f"TaskChannel with UniqueName {unique_name!r} exists")
        now = self.clock.now()
        channel = TaskChannel(new_sid("TC"), unique_name, friendly_name, optimized, now, now)
        ws.task_channels[channel.sid] = channel
        return channel

    # ------------------------------------------------------------------------- task queues
    @staticmethod
    def _expression(text: str, field: str) -> Expression:
        try:
            return parse_expression(text)
        except ExpressionError as exc:
            raise invalid(f"{field} is not a valid expression: {exc}") from None

    def create_task_queue(self, ws: Workspace, form: Mapping[str, Any]) -> TaskQueue:
        now = self.clock.now()
        target = form.get("TargetWorkers") or "1==1"
        for key in ("ReservationActivitySid", "AssignmentActivitySid"):
            if key in form:
                self.activity(ws, form[key])
        queue = TaskQueue(
            sid=new_sid("WQ"),
            friendly_name=form["FriendlyName"],
            target_workers=target,
            expression=self._expression(target, "TargetWorkers"),
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
        for key in ("ReservationActivitySid", "AssignmentActivitySid"):
            if key in form:
                self.activity(ws, form[key])
        if "TargetWorkers" in form:
            queue.expression = self._expression(form["TargetWorkers"], "TargetWorkers")
            queue.target_workers = form["TargetWorkers"]
        if "FriendlyName" in form:
            queue.friendly_name = form["FriendlyName"]
        if "MaxReservedWorkers" in form:
            queue.max_reserved_workers = form["MaxReservedWorkers"]
        if "TaskOrder" in form:
            queue.task_order = form["TaskOrder"]
        if "ReservationActivitySid" in form:
            queue.reservation_activity_sid = form["ReservationActivitySid"]
        if "AssignmentActivitySid" in form:
            queue.assignment_activity_sid = form["AssignmentActivitySid"]
        queue.date_updated = self.clock.now()
        self.match(ws)

    def delete_task_queue(self, ws: Workspace, queue: TaskQueue) -> None:
        if any(
            t.task_queue_sid == queue.sid and t.assignment_status in TASK_OPEN
            for t in ws.tasks.values()
        ):
            raise invalid(f"TaskQueue {queue.sid} still holds open tasks")
        del ws.task_queues[queue.sid]

    # --------------------------------------------------------------------------- workflows
    def _configuration(self, ws: Workspace, text: str) -> Any:
        try:
            parsed = parse_workflow_configuration(text)
        except ExpressionError as exc:
            raise invalid(f"Configuration is invalid: {exc}") from None
        for queue_sid in parsed.queue_sids:
            if queue_sid not in ws.task_queues:
                raise invalid(f"Configuration routes to unknown TaskQueue {queue_sid}")
        return parsed

    @staticmethod
    def _reservation_timeout(value: int) -> int:
        if not 1 <= value <= MAX_RESERVATION_TIMEOUT:
            raise invalid(f"TaskReservationTimeout must be between 1 and {MAX_RESERVATION_TIMEOUT}")
        return value

    def create_workflow(self, ws: Workspace, form: Mapping[str, Any]) -> Workflow:
        now = self.clock.now()
        workflow = Workflow(
            sid=new_sid("WW"),
            friendly_name=form["FriendlyName"],
            configuration=form["Configuration"],
            parsed=self._configuration(ws, form["Configuration"]),
            assignment_callback_url=form.get("AssignmentCallbackUrl") or None,
            fallback_assignment_callback_url=form.get("FallbackAssignmentCallbackUrl") or None,
            task_reservation_timeout=self._reservation_timeout(
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
            parsed = self._configuration(ws, form["Configuration"])
        if "TaskReservationTimeout" in form:
            workflow.task_reservation_timeout = self._reservation_timeout(
                form["TaskReservationTimeout"]
            )
        if parsed is not None:
            workflow.configuration = form["Configuration"]
            workflow.parsed = parsed
        if "FriendlyName" in form:
            workflow.friendly_name = form["FriendlyName"]
        if "AssignmentCallbackUrl" in form:
            workflow.assignment_callback_url = form["AssignmentCallbackUrl"] or None
        if "FallbackAssignmentCallbackUrl" in form:
            workflow.fallback_assignment_callback_url = (
                form["FallbackAssignmentCallbackUrl"] or None
            )
        workflow.date_updated = self.clock.now()
        if _truthy(form.get("ReEvaluateTasks", False)):
            for sid in list(ws.pending_tasks):
                task = ws.tasks[sid]
                if task.workflow_sid == workflow.sid:
                    self._route(ws, task, workflow)
            self.match(ws)

    def delete_workflow(self, ws: Workspace, workflow: Workflow) -> None:
        if any(
            t.workflow_sid == workflow.sid and t.assignment_status in TASK_OPEN
            for t in ws.tasks.values()
        ):
            raise invalid(f"Workflow {workflow.sid} still has open tasks")
        del ws.workflows[workflow.sid]

    # ----------------------------------------------------------------------------- workers
    @staticmethod
    def _worker_attributes(text: str) -> dict[str, Any]:
        if len(text) > ATTRIBUTES_LIMIT:
            raise invalid(
                f"Attributes are {len(text)} characters long; the limit is {ATTRIBUTES_LIMIT}"
            )
        try:
            value = json.loads(text)
        except ValueError:
            raise invalid("Attributes must be a valid JSON object") from None
        if not isinstance(value, dict):
            raise invalid("Attributes must be a valid JSON object")
        return value

    def create_worker(self, ws: Workspace, form: Mapping[str, Any]) -> Worker:
        name = form["FriendlyName"]
        if any(w.friendly_name == name for w in ws.workers.values()):
            raise ApiError(409, 20001, f"Worker with FriendlyName {name!r} already exists")
        attributes = form.get("Attributes", "{}")
        parsed = self._worker_attributes(attributes)
        activity_sid = form.get("ActivitySid", ws.default_activity_sid)
        self.activity(ws, activity_sid)
        now = self.clock.now()
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
        self.emit(ws, "worker.created", "worker", worker.sid, "Worker created", worker=worker)
        self.match(ws)
        return worker

    def update_worker(
        self, ws: Workspace, worker: Worker, form: Mapping[str, Any], if_match: str | None
    ) -> None:
        if if_match is not None and if_match.strip('"') != str(worker.version):
            raise ApiError(412, 20412, "The worker has changed since the given ETag")
        parsed = None
        if "Attributes" in form:
            parsed = self._worker_attributes(form["Attributes"])
        if "ActivitySid" in form:
            self.activity(ws, form["ActivitySid"])
        name = form.get("FriendlyName")
        if name is not None and any(
            w.friendly_name == name and w.sid != worker.sid for w in ws.workers.values()
        ):
            raise ApiError(409, 20001, f"Worker with FriendlyName {name!r} already exists")
        now = self.clock.now()
        if name is not None:
            worker.friendly_name = name
        if parsed is not None:
            worker.attributes = form["Attributes"]
            worker.parsed = parsed
            self.emit(
                ws,
                "worker.attributes.update",
                "worker",
                worker.sid,
                "Worker attributes updated",
                worker=worker,
            )
        if "ActivitySid" in form and form["ActivitySid"] != worker.activity_sid:
            if _truthy(form.get("RejectPendingReservations", False)):
                for sid in list(ws.worker_active.get(worker.sid, ())):
                    res = ws.reservations[sid]
                    if res.status == "pending":
                        self._reject(ws, res, None)
            self._set_activity(ws, worker, form["ActivitySid"])
        worker.version += 1
        worker.date_updated = now
        self.match(ws)

    def delete_worker(self, ws: Workspace, worker: Worker, if_match: str | None) -> None:
        if if_match is not None and if_match.strip('"') != str(worker.version):
            raise ApiError(412, 20412, "The worker has changed since the given ETag")
        if ws.worker_active.get(worker.sid):
            raise invalid(f"Worker {worker.sid} has active reservations")
        del ws.workers[worker.sid]
        self.emit(ws, "worker.deleted", "worker", worker.sid, "Worker deleted", worker=worker)

    def _set_activity(self, ws: Workspace, worker: Worker, activity_sid: str) -> None:
        if activity_sid == worker.activity_sid:
            return
        now = self.clock.now()
        previous = ws.activities.get(worker.activity_sid)
        extra = {
            "WorkerPreviousActivitySid": worker.activity_sid,
            "WorkerPreviousActivityName": previous.friendly_name if previous else "",
            "WorkerTimeInPreviousActivity": str(int(now - worker.date_status_changed)),
            "WorkerTimeInPreviousActivityMs": str(int((now - worker.date_status_changed) * 1000)),
        }
        worker.activity_sid = activity_sid
        worker.date_status_changed = now
        worker.version += 1
        if self.worker_available(ws, worker):
            worker.idle_since = now
        activity = ws.activities[activity_sid]
        self.emit(
            ws,
            "worker.activity.update",
            "worker",
            worker.sid,
            f"Worker {worker.friendly_name} updated to {activity.friendly_name} Activity",
            worker=worker,
            extra=extra,
        )

    # ------------------------------------------------------------------------------- tasks
    @staticmethod
    def _check_attributes(text: str) -> None:
        # Twilio does not check task attributes: a malformed string is stored as sent.
        if len(text) > ATTRIBUTES_LIMIT:
            raise invalid(
                f"Attributes are {len(text)} characters long; the limit is {ATTRIBUTES_LIMIT}"
            )

    def create_task(self, ws: Workspace, form: Mapping[str, Any]) -> Task:
        attributes = form.get("Attributes", "{}")
        self._check_attributes(attributes)
        queue_sid = form.get("TaskQueueSid")
        workflow: Workflow | None = None
        if queue_sid is not None:
            self.task_queue(ws, queue_sid)
        if "WorkflowSid" in form:
            workflow = self.workflow(ws, form["WorkflowSid"])
        elif queue_sid is None:
            if len(ws.workflows) != 1:
                raise invalid("WorkflowSid is required when the workspace has not one workflow")
            workflow = next(iter(ws.workflows.values()))
        channel = self.task_channel(ws, form.get("TaskChannel", "default"))
        routing_target = form.get("RoutingTarget")
        if routing_target is not None:
            self.worker(ws, routing_target)
        timeout = form.get("Timeout", DEFAULT_TASK_TIMEOUT)
        if not 1 <= timeout <= 31_536_000:
            raise invalid("Timeout must be between 1 and 31536000 seconds")
        now = self.clock.now()
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
            virtual_start_time=self._timestamp(start) if start else now,
        )
        task.routing_target = routing_target
        task.ignore_capacity = bool(form.get("IgnoreCapacity", False))
        ws.tasks[task.sid] = task
        ws.pending_tasks.add(task.sid)
        if workflow is not None and queue_sid is None:
            self._route(ws, task, workflow)
        task.ttl_timer = self.scheduler.call_at(
            now + timeout, lambda: self._task_ttl(ws.sid, task.sid)
        )
        self.emit(ws, "task.created", "task", task.sid, "Task created", task=task)
        self.match(ws)
        return task

    @staticmethod
    def _timestamp(text: str) -> float:
        from datetime import datetime

        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise invalid(f"VirtualStartTime is not an ISO 8601 date-time: {text!r}") from None

    def _route(self, ws: Workspace, task: Task, workflow: Workflow) -> None:
        target = workflow.parsed.route(parse_attributes(task.attributes))
        if target is None:
            task.task_queue_sid = None
            task.target_expression = None
            return
        if task.task_queue_sid != target.queue_sid:
            task.task_queue_entered_date = self.clock.now()
        task.task_queue_sid = target.queue_sid
        task.target_expression = target.expression
        if target.priority is not None:
            task.priority = target.priority

    def update_task(
        self, ws: Workspace, task: Task, form: Mapping[str, Any], if_match: str | None
    ) -> None:
        if if_match is not None and if_match.strip('"') != task.etag:
            raise ApiError(
                412, 20412, f"Task {task.sid} has changed: ETag {if_match} does not match"
            )
        status = form.get("AssignmentStatus")
        if "Attributes" in form:
            self._check_attributes(form["Attributes"])
        channel = self.task_channel(ws, form["TaskChannel"]) if "TaskChannel" in form else None
        start = self._timestamp(form["VirtualStartTime"]) if "VirtualStartTime" in form else None
        if status is not None:
            self._check_task_transition(task, status)
        changed = False
        if "Attributes" in form:
            task.attributes = form["Attributes"]
            changed = True
            # New attributes send a waiting task through its workflow again.
            workflow = ws.workflows.get(task.workflow_sid or "")
            if task.assignment_status == "pending" and workflow is not None:
                self._route(ws, task, workflow)
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
        now = self.clock.now()
        if changed:
            task.touch(now)
            self.emit(ws, "task.updated", "task", task.sid, "Task updated", task=task)
        if status is not None:
            self._move_task(ws, task, status, form.get("Reason"))
        elif not changed:
            task.touch(now)
        self.match(ws)

    @staticmethod
    def _check_task_transition(task: Task, status: str) -> None:
        allowed = {
            "canceled": {"pending", "reserved"},
            "wrapping": {"assigned"},
            "completed": {"assigned", "wrapping"},
        }
        if status not in allowed:
            raise invalid(f"AssignmentStatus cannot be set to {status!r}")
        if task.assignment_status not in allowed[status]:
            raise invalid(f"Task {task.sid} cannot move from {task.assignment_status} to {status}")

    def _move_task(self, ws: Workspace, task: Task, status: str, reason: str | None) -> None:
        active = [ws.reservations[s] for s in task.reservation_sids]
        active = [r for r in active if r.status in RESERVATION_ACTIVE]
        if status == "canceled":
            for res in active:
                self._set_reservation(ws, res, "canceled")
                self.emit_reservation(ws, res, "reservation.canceled", "Reservation canceled")
            self._set_task(ws, task, "canceled", reason or "Task canceled")
            self.emit(
                ws,
                "task.canceled",
                "task",
                task.sid,
                "Task canceled",
                task=task,
                extra={"TaskCanceledReason": task.reason or ""},
            )
        elif status == "wrapping":
            self._set_task(ws, task, "wrapping", task.reason)
            for res in active:
                self._set_reservation(ws, res, "wrapping")
                self.emit_reservation(ws, res, "reservation.wrapup", "Reservation wrapping")
            self.emit(ws, "task.wrapup", "task", task.sid, "Task wrapping up", task=task)
        else:
            self._set_task(ws, task, "completed", reason or "Task completed")
            for res in active:
                self._set_reservation(ws, res, "completed")
                self.emit_reservation(ws, res, "reservation.completed", "Reservation completed")
            self.emit(
                ws,
                "task.completed",
                "task",
                task.sid,
                "Task completed",
                task=task,
                extra={"TaskCompletedReason": task.reason or ""},
            )

    def delete_task(self, ws: Workspace, task: Task, if_match: str | None) -> None:
        if if_match is not None and if_match.strip('"') != task.etag:
            raise ApiError(
                412, 20412, f"Task {task.sid} has changed: ETag {if_match} does not match"
            )
        for sid in task.reservation_sids:
            res = ws.reservations[sid]
            if res.status in RESERVATION_ACTIVE:
                self._set_reservation(ws, res, "canceled")
                self.emit_reservation(ws, res, "reservation.canceled", "Reservation canceled")
        if task.ttl_timer:
            task.ttl_timer.cancel()
        ws.pending_tasks.discard(task.sid)
        del ws.tasks[task.sid]
        self.emit(ws, "task.deleted", "task", task.sid, "Task deleted", task=task)
        self.match(ws)

    def _task_ttl(self, ws_sid: str, task_sid: str) -> None:
        ws = self.workspaces.get(ws_sid)
        task = ws.tasks.get(task_sid) if ws else None
        if ws is None or task is None or task.assignment_status not in TASK_OPEN:
            return
        for sid in task.reservation_sids:
            res = ws.reservations[sid]
            if res.status in RESERVATION_ACTIVE:
                self._set_reservation(ws, res, "canceled")
                self.emit_reservation(ws, res, "reservation.canceled", "Reservation canceled")
        self._set_task(ws, task, "canceled", "Task TTL Exceeded")
        self.emit(
            ws,
            "task.canceled",
            "task",
            task.sid,
            "Task canceled",
            task=task,
            extra={"TaskCanceledReason": "Task TTL Exceeded"},
        )
        self.match(ws)

    def _set_task(self, ws: Workspace, task: Task, status: str, reason: str | None) -> None:
        task.assignment_status = status
        task.reason = reason
        task.touch(self.clock.now())
        if status == "pending":
            ws.pending_tasks.add(task.sid)
        else:
            ws.pending_tasks.discard(task.sid)
        if status not in TASK_OPEN and task.ttl_timer:
            task.ttl_timer.cancel()

    # ------------------------------------------------------------------------ reservations
    def _set_reservation(self, ws: Workspace, res: Reservation, status: str) -> None:
        res.status = status
        res.date_updated = self.clock.now()
        active = ws.worker_active.setdefault(res.worker_sid, set())
        if status in RESERVATION_ACTIVE:
            active.add(res.sid)
        else:
            active.discard(res.sid)
            worker = ws.workers.get(res.worker_sid)
            if worker is not None:
                worker.idle_since = self.clock.now()
        if status != "pending" and res.timer is not None:
            res.timer.cancel()
            res.timer = None

    def update_reservation(self, ws: Workspace, res: Reservation, form: Mapping[str, Any]) -> None:
        status = form.get("ReservationStatus")
        instruction = form.get("Instruction")
        if status is not None and instruction is not None:
            raise invalid("Give either ReservationStatus or Instruction, not both")
        if status is None and instruction is None:
            raise invalid("ReservationStatus or Instruction is required")
        if "WorkerActivitySid" in form:
            self.activity(ws, form["WorkerActivitySid"])
        if "PostWorkActivitySid" in form:
            self.activity(ws, form["PostWorkActivitySid"])
        if instruction is not None:
            params = {k: v for k, v in form.items() if k != "Instruction"}
            self._instruct(ws, res, instruction.lower(), params)
        elif status == "accepted":
            self._require(res, "pending", "accepted")
            self._accept(ws, res)
        elif status == "rejected":
            self._require(res, "pending", "rejected")
            self._reject(ws, res, form.get("WorkerActivitySid"))
        elif status == "wrapping":
            self._require(res, "accepted", "wrapping")
            task = ws.tasks[res.task_sid]
            self._move_task(ws, task, "wrapping", None)
        elif status == "completed":
            if res.status not in ("accepted", "wrapping"):
                self._refuse(res, "completed")
            task = ws.tasks[res.task_sid]
            self._move_task(ws, task, "completed", None)
        else:
            raise invalid(f"ReservationStatus cannot be set to {status!r}")
        if res.status in ("completed", "canceled") and "WorkerActivitySid" in form:
            self._set_activity(ws, ws.workers[res.worker_sid], form["WorkerActivitySid"])
        self.match(ws)

    @staticmethod
    def _refuse(res: Reservation, target: str, code: int = 20001) -> None:
        raise ApiError(
            400,
            code,
            f"Reservation {res.sid} is not in expected state: it is {res.status}, "
            f"so it cannot become {target}",
        )

    def _require(self, res: Reservation, expected: str, target: str) -> None:
        if res.status != expected:
            self._refuse(res, target)

    def _instruct(
        self, ws: Workspace, res: Reservation, instruction: str, params: Mapping[str, Any]
    ) -> None:
        if instruction == "supervise":
            if res.status != "accepted":
                self._refuse(res, "supervised")
            res.instructions.append({"instruction": "supervise", **params})
            return
        if instruction not in INSTRUCTION_CODES:
            raise invalid(f"Instruction {instruction!r} is not supported")
        if res.status != "pending":
            self._refuse(
                res, f"given the {instruction} instruction", INSTRUCTION_CODES[instruction]
            )
        res.instructions.append({"instruction": instruction, **params})
        accepts = {
            "conference": True,
            "dequeue": True,
            "call": _truthy(params.get("CallAccept", params.get("accept", False))),
            "redirect": _truthy(params.get("RedirectAccept", params.get("accept", False))),
        }[instruction]
        if accepts:
            self._accept(ws, res)

    def _accept(self, ws: Workspace, res: Reservation) -> None:
        task = ws.tasks[res.task_sid]
        self._set_reservation(ws, res, "accepted")
        self._set_task(ws, task, "assigned", task.reason)
        queue = ws.task_queues.get(task.task_queue_sid or "")
        self.emit_reservation(ws, res, "reservation.accepted", "Reservation accepted")
        if queue and queue.assignment_activity_sid:
            self._set_activity(ws, ws.workers[res.worker_sid], queue.assignment_activity_sid)

    def _reject(self, ws: Workspace, res: Reservation, activity_sid: str | None) -> None:
        task = ws.tasks[res.task_sid]
        self._set_reservation(ws, res, "rejected")
        task.rejections += 1
        task.rejected_by.add(res.worker_sid)
        self.emit_reservation(ws, res, "reservation.rejected", "Reservation rejected")
        if activity_sid is not None:
            self._set_activity(ws, ws.workers[res.worker_sid], activity_sid)
        if task.rejections >= MAX_REJECTIONS:
            self._set_task(ws, task, "canceled", f"Task rejected {MAX_REJECTIONS} times")
            self.emit(
                ws,
                "task.canceled",
                "task",
                task.sid,
                "Task canceled",
                task=task,
                extra={"TaskCanceledReason": task.reason or ""},
            )
        else:
            self._set_task(ws, task, "pending", task.reason)

    def _timeout(self, ws_sid: str, res_sid: str) -> None:
        ws = self.workspaces.get(ws_sid)
        res = ws.reservations.get(res_sid) if ws else None
        if ws is None or res is None or res.status != "pending":
            return
        res.timer = None
        task = ws.tasks[res.task_sid]
        self._set_reservation(ws, res, "timeout")
        self._set_task(ws, task, "pending", task.reason)
        self.emit_reservation(ws, res, "reservation.timeout", "Reservation timed out")
        worker = ws.workers.get(res.worker_sid)
        if worker is not None:
            self._set_activity(ws, worker, ws.timeout_activity_sid)
        self.match(ws)

    # ---------------------------------------------------------------------------- matching
    def match(self, ws: Workspace) -> None:
        """Offer pending tasks to available workers, creating reservations."""
        if not ws.pending_tasks:
            return
        idle = [
            w
            for w in ws.workers.values()
            if self.worker_available(ws, w) and not ws.worker_active.get(w.sid)
        ]
        if not idle:
            return
        idle.sort(key=lambda w: w.idle_since)
        pending = sorted(
            (ws.tasks[sid] for sid in ws.pending_tasks),
            key=lambda t: (-t.priority, t.virtual_start_time, t.date_created),
        )
        for task in pending:
            queue = ws.task_queues.get(task.task_queue_sid or "")
            if queue is None:
                continue
            attrs = parse_attributes(task.attributes)
            for worker in idle:
                if worker.sid in task.rejected_by:
                    continue
                if task.routing_target is not None and worker.sid != task.routing_target:
                    continue
                if not queue.expression.evaluate(worker.parsed, task=attrs, worker=worker.parsed):
                    continue
                if task.target_expression is not None and not task.target_expression.evaluate(
                    {**worker.parsed, "sid": worker.sid}, task=attrs, worker=worker.parsed
                ):
                    continue
                idle.remove(worker)
                self._reserve(ws, task, worker, queue)
                break
            if not idle:
                return

    def _reserve(self, ws: Workspace, task: Task, worker: Worker, queue: TaskQueue) -> None:
        now = self.clock.now()
        workflow = ws.workflows.get(task.workflow_sid or "")
        timeout = workflow.task_reservation_timeout if workflow else DEFAULT_RESERVATION_TIMEOUT
        res = Reservation(
            sid=new_sid("WR"),
            task_sid=task.sid,
            worker_sid=worker.sid,
            status="pending",
            date_created=now,
            date_updated=now,
            deadline=now + timeout,
        )
        ws.reservations[res.sid] = res
        task.reservation_sids.append(res.sid)
        self._set_reservation(ws, res, "pending")
        self._set_task(ws, task, "reserved", task.reason)
        res.timer = self.scheduler.call_at(res.deadline, lambda: self._timeout(ws.sid, res.sid))
        self.emit_reservation(ws, res, "reservation.created", "Reservation created")
        if queue.reservation_activity_sid:
            self._set_activity(ws, worker, queue.reservation_activity_sid)
        if workflow is not None and workflow.assignment_callback_url:
            self._spawn(self._offer(ws.sid, res.sid))

    def _spawn(self, coro: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            return
        task = loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def assignment_params(self, ws: Workspace, res: Reservation) -> dict[str, str]:
        task = ws.tasks[res.task_sid]
        worker = ws.workers[res.worker_sid]
        return {
            "Timestamp": str(int(self.clock.now())),
            "AccountSid": self.account_sid,
            "WorkspaceSid": ws.sid,
            "WorkflowSid": task.workflow_sid or "",
            "TaskQueueSid": task.task_queue_sid or "",
            "WorkerSid": worker.sid,
            "WorkerAttributes": worker.attributes,
            "TaskSid": task.sid,
            "TaskAttributes": task.attributes,
            "TaskAge": str(int(self.clock.now() - task.date_created)),
            "TaskPriority": str(task.priority),
            "ReservationSid": res.sid,
        }

    async def _offer(self, ws_sid: str, res_sid: str) -> None:
        ws = self.workspaces.get(ws_sid)
        if ws is None or res_sid not in ws.reservations:
            return
        res = ws.reservations[res_sid]
        task = ws.tasks[res.task_sid]
        workflow = ws.workflows.get(task.workflow_sid or "")
        if workflow is None or not workflow.assignment_callback_url:
            return
        params = self.assignment_params(ws, res)
        urls = [("assignment", workflow.assignment_callback_url)]
        if workflow.fallback_assignment_callback_url:
            urls.append(("assignment_fallback", workflow.fallback_assignment_callback_url))
        reply: dict[str, Any] | None = None
        for kind, url in urls:
            result = await self.sender.post(kind, url, params, timeout=self.assignment_timeout)
            reply = self._assignment_reply(result)
            if reply is not None:
                break
        if reply is None:
            self.log.append(
                "note", reservation_sid=res_sid, message="no valid assignment reply; left pending"
            )
            return
        self.apply_assignment_reply(ws, res, reply)

    @staticmethod
    def _assignment_reply(result: WebhookResult) -> dict[str, Any] | None:
        if result.status != 200 or "json" not in result.content_type.lower():
            return None
        try:
            value = json.loads(result.body or "null")
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def apply_assignment_reply(
        self, ws: Workspace, res: Reservation, reply: Mapping[str, Any]
    ) -> None:
        """Honour an assignment callback's answer, as TaskRouter does."""
        instruction = reply.get("instruction")
        if res.status != "pending":
            self.log.append(
                "note",
                reservation_sid=res.sid,
                message=f"assignment reply ignored: reservation is {res.status}",
            )
            return
        if instruction is None:
            if reply:
                self.log.append(
                    "note",
                    reservation_sid=res.sid,
                    code=40005,
                    message="assignment reply has no instruction; deferred",
                )
            return
        try:
            if instruction == "accept":
                self._accept(ws, res)
            elif instruction == "reject":
                activity = reply.get("activity_sid")
                if activity is not None:
                    self.activity(ws, str(activity))
                self._reject(ws, res, str(activity) if activity is not None else None)
            elif instruction in INSTRUCTION_CODES:
                params = {k: v for k, v in reply.items() if k != "instruction"}
                self._instruct(ws, res, str(instruction), params)
            else:
                raise invalid(f"Unknown assignment instruction {instruction!r}")
        except ApiError as exc:
            self.log.append(
                "note",
                reservation_sid=res.sid,
                code=exc.code,
                message=f"assignment instruction failed: {exc.message}",
            )
        self.match(ws)

    # ------------------------------------------------------------------------------ events
    def emit_reservation(self, ws: Workspace, res: Reservation, kind: str, text: str) -> None:
        self.emit(
            ws,
            kind,
            "reservation",
            res.sid,
            text,
            task=ws.tasks.get(res.task_sid),
            worker=ws.workers.get(res.worker_sid),
            extra={"ReservationSid": res.sid},
        )

    def emit(
        self,
        ws: Workspace,
        event_type: str,
        resource_type: str,
        resource_sid: str,
        description: str,
        *,
        task: Task | None = None,
        worker: Worker | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> Event:
        now = self.clock.now()
        data = {
            "EventType": event_type,
            "AccountSid": self.account_sid,
            "WorkspaceSid": ws.sid,
            "WorkspaceName": ws.friendly_name,
            "EventDescription": description,
            "ResourceType": resource_type,
            "ResourceSid": resource_sid,
            "Timestamp": str(int(now)),
            "TimestampMs": str(int(now * 1000)),
        }
        if task is not None:
            data.update(self._task_fields(ws, task, now))
        if worker is not None:
            data.update(self._worker_fields(ws, worker))
        data.update(extra or {})
        event = Event(
            new_sid("EV"), event_type, resource_type, resource_sid, description, data, now
        )
        ws.events.append(event)
        if len(ws.events) > EVENTS_KEPT:
            del ws.events[: len(ws.events) - EVENTS_KEPT]
        self.feed.publish({"product": "taskrouter", "type": event_type, "data": data})
        if ws.event_callback_url and (ws.events_filter is None or event_type in ws.events_filter):
            # Without a running loop (synchronous use in unit tests) nothing is delivered.
            with contextlib.suppress(RuntimeError):
                self.sender.send_event(ws.event_callback_url, data)
        return event

    def _task_fields(self, ws: Workspace, task: Task, now: float) -> dict[str, str]:
        queue = ws.task_queues.get(task.task_queue_sid or "")
        workflow = ws.workflows.get(task.workflow_sid or "")
        channel = ws.task_channels.get(task.task_channel_sid or "")
        return {
            "TaskSid": task.sid,
            "TaskAttributes": task.attributes,
            "TaskAge": str(int(now - task.date_created)),
            "TaskPriority": str(task.priority),
            "TaskAssignmentStatus": task.assignment_status,
            "TaskDateCreated": str(int(task.date_created)),
            "TaskVersion": task.etag,
            "TaskQueueSid": task.task_queue_sid or "",
            "TaskQueueName": queue.friendly_name if queue else "",
            "WorkflowSid": task.workflow_sid or "",
            "WorkflowName": workflow.friendly_name if workflow else "",
            "TaskChannelSid": task.task_channel_sid or "",
            "TaskChannelUniqueName": channel.unique_name if channel else "",
        }

    @staticmethod
    def _worker_fields(ws: Workspace, worker: Worker) -> dict[str, str]:
        activity = ws.activities.get(worker.activity_sid)
        return {
            "WorkerSid": worker.sid,
            "WorkerName": worker.friendly_name,
            "WorkerAttributes": worker.attributes,
            "WorkerActivitySid": worker.activity_sid,
            "WorkerActivityName": activity.friendly_name if activity else "",
            "WorkerVersion": str(worker.version),
        }
