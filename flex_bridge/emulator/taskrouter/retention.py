"""Tasks the system deletes on its own: finished ones after a retention, stale assigned ones.

- A task that is ``completed`` or ``canceled`` is deleted ``finished`` seconds later (Twilio:
  five minutes, https://www.twilio.com/docs/taskrouter/lifecycle-task-state), with a
  ``task.deleted`` event.
- A task still ``assigned`` (or ``wrapping``) ``assigned`` seconds after it was assigned (24 h)
  is deleted with a ``task.system-deleted`` event; its worker is free again.

Both are on the emulator clock and can be changed through the admin API; a change applies to
tasks that reach the state afterwards. Once deleted, the task and its reservations are 404
(20404) under the task and under the worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flex_bridge.emulator.taskrouter.models import Task, Workspace

if TYPE_CHECKING:
    from flex_bridge.emulator.taskrouter.lifecycle import Lifecycle

FINISHED_RETENTION = 300.0
ASSIGNED_LIMIT = 86_400.0
FINISHED = frozenset({"completed", "canceled"})
HELD = frozenset({"assigned", "wrapping"})


class Retention:
    """Schedules each task's deletion by the system as its status changes."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.runtime = lifecycle.runtime
        self.finished = FINISHED_RETENTION
        self.assigned = ASSIGNED_LIMIT

    def describe(self) -> dict[str, float]:
        return {"finished": self.finished, "assigned": self.assigned}

    def status_changed(self, ws: Workspace, task: Task, previous: str) -> None:
        """Start, keep or stop the task's deletion timer for its new status."""
        status = task.assignment_status
        if status in FINISHED and previous not in FINISHED:
            self._schedule(ws, task, self.finished, "task.deleted", "Task deleted")
        elif status in HELD and previous not in HELD:
            self._schedule(
                ws, task, self.assigned, "task.system-deleted", "Task deleted by the system"
            )
        elif status not in FINISHED | HELD:
            self.stop(task)

    def stop(self, task: Task) -> None:
        if task.cleanup_timer is not None:
            task.cleanup_timer.cancel()
            task.cleanup_timer = None

    def _schedule(
        self, ws: Workspace, task: Task, after: float, event_type: str, text: str
    ) -> None:
        self.stop(task)
        ws_sid, task_sid = ws.sid, task.sid
        task.cleanup_timer = self.runtime.scheduler.call_at(
            self.runtime.now() + after, lambda: self._delete(ws_sid, task_sid, event_type, text)
        )

    def _delete(self, ws_sid: str, task_sid: str, event_type: str, text: str) -> None:
        ws = self.lifecycle.workspaces.get(ws_sid)
        task = ws.tasks.get(task_sid) if ws else None
        if ws is None or task is None:
            return
        task.cleanup_timer = None
        self.lifecycle.forget_task(ws, task)
        self.lifecycle.events.task(ws, task, event_type, text)
        self.lifecycle.match(ws)
