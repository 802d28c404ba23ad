"""What TaskRouter sends out: events and assignment callbacks.

An event is kept on its workspace (the last ``EVENTS_KEPT``), published on the live feed and,
when the workspace has an event callback URL whose filter lets it through, posted there in the
background. An assignment callback offers a new reservation to its workflow's URL (then to the
fallback URL) and hands a valid JSON answer back to whoever asked for the offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from flex_bridge.emulator.runtime import Runtime
from flex_bridge.emulator.taskrouter.models import (
    Event,
    Reservation,
    Task,
    Worker,
    Workspace,
    new_sid,
)
from flex_bridge.emulator.webhooks import WebhookResult

ASSIGNMENT_TIMEOUT = 5.0
EVENTS_KEPT = 10_000

Answer = Callable[[Workspace, Reservation, Mapping[str, Any]], None]


class Events:
    """Records each event and sends it to the feed and the event callback URL."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

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
        now = self.runtime.now()
        data = {
            "EventType": event_type,
            "AccountSid": self.runtime.account_sid,
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
        self.runtime.feed.publish({"product": "taskrouter", "type": event_type, "data": data})
        if ws.event_callback_url and (ws.events_filter is None or event_type in ws.events_filter):
            # Without a running loop (synchronous use in unit tests) nothing is delivered.
            with contextlib.suppress(RuntimeError):
                self.runtime.sender.send_event(ws.event_callback_url, data)
        return event

    def task(
        self, ws: Workspace, task: Task, kind: str, text: str, reason_field: str | None = None
    ) -> None:
        """A ``task.*`` event; ``reason_field`` (``TaskCanceledReason``, ...) carries its reason."""
        extra = None if reason_field is None else {reason_field: task.reason or ""}
        self.emit(ws, kind, "task", task.sid, text, task=task, extra=extra)

    def worker(
        self,
        ws: Workspace,
        worker: Worker,
        kind: str,
        text: str,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        self.emit(ws, kind, "worker", worker.sid, text, worker=worker, extra=extra)

    def reservation(self, ws: Workspace, res: Reservation, kind: str, text: str) -> None:
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

    @staticmethod
    def _task_fields(ws: Workspace, task: Task, now: float) -> dict[str, str]:
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


class AssignmentCallbacks:
    """Offers reservations to assignment callback URLs, in background tasks."""

    def __init__(
        self,
        runtime: Runtime,
        workspaces: Mapping[str, Workspace],
        *,
        timeout: float = ASSIGNMENT_TIMEOUT,
    ) -> None:
        self.runtime = runtime
        self.workspaces = workspaces
        self.timeout = timeout
        self.background: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Cancel the offers still in flight."""
        for task in list(self.background):
            task.cancel()
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)

    def offer(self, ws: Workspace, res: Reservation, answer: Answer) -> None:
        """Post the assignment callback in the background; a valid reply goes to ``answer``."""
        self._spawn(self._offer(ws.sid, res.sid, answer))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            return
        task = loop.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def params(self, ws: Workspace, res: Reservation) -> dict[str, str]:
        """The form TaskRouter posts to an assignment callback URL."""
        task = ws.tasks[res.task_sid]
        worker = ws.workers[res.worker_sid]
        return {
            "Timestamp": str(int(self.runtime.now())),
            "AccountSid": self.runtime.account_sid,
            "WorkspaceSid": ws.sid,
            "WorkflowSid": task.workflow_sid or "",
            "TaskQueueSid": task.task_queue_sid or "",
            "WorkerSid": worker.sid,
            "WorkerAttributes": worker.attributes,
            "TaskSid": task.sid,
            "TaskAttributes": task.attributes,
            "TaskAge": str(int(self.runtime.now() - task.date_created)),
            "TaskPriority": str(task.priority),
            "ReservationSid": res.sid,
        }

    async def _offer(self, ws_sid: str, res_sid: str, answer: Answer) -> None:
        ws = self.workspaces.get(ws_sid)
        if ws is None or res_sid not in ws.reservations:
            return
        res = ws.reservations[res_sid]
        task = ws.tasks[res.task_sid]
        workflow = ws.workflows.get(task.workflow_sid or "")
        if workflow is None or not workflow.assignment_callback_url:
            return
        params = self.params(ws, res)
        urls = [("assignment", workflow.assignment_callback_url)]
        if workflow.fallback_assignment_callback_url:
            urls.append(("assignment_fallback", workflow.fallback_assignment_callback_url))
        reply: dict[str, Any] | None = None
        for kind, url in urls:
            result = await self.runtime.sender.post(kind, url, params, timeout=self.timeout)
            reply = self._reply(result)
            if reply is not None:
                break
        if reply is None:
            self.runtime.log.append(
                "note", reservation_sid=res_sid, message="no valid assignment reply; left pending"
            )
            return
        answer(ws, res, reply)

    @staticmethod
    def _reply(result: WebhookResult) -> dict[str, Any] | None:
        if result.status != 200 or "json" not in result.content_type.lower():
            return None
        try:
            value = json.loads(result.body or "null")
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
