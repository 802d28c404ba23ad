"""Task and reservation lifecycles: state transitions, timers, timeouts and TTLs.

- Reservations: pending -> accepted | rejected | timeout | canceled | rescinded;
  accepted -> wrapping -> completed, or accepted -> completed. Instructions (conference,
  dequeue, call, redirect) only while pending and before any voice instruction was taken
  (``instructions`` says what is checked and with which codes); voice instructions ring the
  worker's leg and settle later (``voice``). Any other change a status does not allow is 400
  with 20001 naming the current status.
- Tasks: pending -> reserved -> assigned -> wrapping -> completed; reserved -> pending on
  reject or timeout; cancel only from pending or reserved. A task is canceled when its own
  ``Timeout`` (TTL) runs out before it is assigned, and when it has been reserved
  ``MAX_ASSIGNMENTS`` times (Twilio's Max Assignment Count) without being accepted. The system
  deletes finished and stale tasks (``retention``).

Every change that can free a worker or a task ends by matching again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flex_bridge.emulator.api import ApiError, invalid
from flex_bridge.emulator.runtime import Runtime
from flex_bridge.emulator.taskrouter.callbacks import AssignmentCallbacks, Events
from flex_bridge.emulator.taskrouter.instructions import (
    INSTRUCTIONS,
    Instruction,
    check_fields,
    check_state,
    check_task,
)
from flex_bridge.emulator.taskrouter.matching import offers, worker_available
from flex_bridge.emulator.taskrouter.models import (
    RESERVATION_ACTIVE,
    Reservation,
    Task,
    TaskQueue,
    Worker,
    Workspace,
    new_sid,
)
from flex_bridge.emulator.taskrouter.retention import Retention
from flex_bridge.emulator.taskrouter.voice import Voice

MAX_ASSIGNMENTS = 1000
MAX_ASSIGNMENTS_REASON = f"Task reached the Max Assignment Count ({MAX_ASSIGNMENTS})"
DEFAULT_RESERVATION_TIMEOUT = 120
# The statuses a REST update may set, and the statuses each may be set from.
ALLOWED_FROM = {
    "accepted": ("pending",),
    "rejected": ("pending",),
    "wrapping": ("accepted",),
    "completed": ("accepted", "wrapping"),
}
# A task's TTL runs until it is assigned.
TTL_STATUSES = frozenset({"pending", "reserved"})


class Lifecycle:
    """Moves tasks, reservations and workers between states, and runs their timers."""

    def __init__(
        self,
        runtime: Runtime,
        events: Events,
        callbacks: AssignmentCallbacks,
        workspaces: dict[str, Workspace],
    ) -> None:
        self.runtime = runtime
        self.events = events
        self.callbacks = callbacks
        self.workspaces = workspaces
        self.voice = Voice(self)
        self.retention = Retention(self)

    # ---------------------------------------------------------------------------- matching
    def match(self, ws: Workspace) -> None:
        """Offer pending tasks to available workers, creating reservations."""
        for task, worker, queue in offers(ws):
            self._reserve(ws, task, worker, queue)

    def _reserve(self, ws: Workspace, task: Task, worker: Worker, queue: TaskQueue) -> None:
        now = self.runtime.now()
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
        task.assignments += 1
        self._set_reservation(ws, res, "pending")
        self.set_task(ws, task, "reserved", task.reason)
        res.timer = self.runtime.scheduler.call_at(
            res.deadline, lambda: self._timeout(ws.sid, res.sid)
        )
        self.events.reservation(ws, res, "reservation.created", "Reservation created")
        if queue.reservation_activity_sid:
            self.set_activity(ws, worker, queue.reservation_activity_sid)
        if workflow is not None and workflow.assignment_callback_url:
            self.callbacks.offer(ws, res, self.apply_assignment_reply)

    # ------------------------------------------------------------------------------ timers
    def start_ttl(self, ws: Workspace, task: Task) -> None:
        """Cancel the task when its own ``Timeout`` runs out, counted from its creation."""
        task.ttl_timer = self.runtime.scheduler.call_at(
            task.date_created + task.timeout, lambda: self._task_ttl(ws.sid, task.sid)
        )

    def stop_timers(self, ws: Workspace) -> None:
        for res in ws.reservations.values():
            if res.timer:
                res.timer.cancel()
            self.voice.hang_up(res)
        for task in ws.tasks.values():
            if task.ttl_timer:
                task.ttl_timer.cancel()
            self.retention.stop(task)

    def _timeout(self, ws_sid: str, res_sid: str) -> None:
        ws = self.workspaces.get(ws_sid)
        res = ws.reservations.get(res_sid) if ws else None
        if ws is None or res is None or res.status != "pending":
            return
        res.timer = None
        self.time_out(ws, res)

    def time_out(self, ws: Workspace, res: Reservation) -> None:
        """Nobody answered: the reservation times out, its worker goes to the timeout activity
        and the task is offered again (or canceled at its Max Assignment Count)."""
        task = ws.tasks[res.task_sid]
        self._set_reservation(ws, res, "timeout")
        self.events.reservation(ws, res, "reservation.timeout", "Reservation timed out")
        worker = ws.workers.get(res.worker_sid)
        if worker is not None:
            self.set_activity(ws, worker, ws.timeout_activity_sid)
        self._requeue(ws, task)
        self.match(ws)

    def _task_ttl(self, ws_sid: str, task_sid: str) -> None:
        ws = self.workspaces.get(ws_sid)
        task = ws.tasks.get(task_sid) if ws else None
        if ws is None or task is None or task.assignment_status not in TTL_STATUSES:
            return
        self._cancel(ws, task, "Task TTL Exceeded")
        self.match(ws)

    # ------------------------------------------------------------------------------- tasks
    def set_task(self, ws: Workspace, task: Task, status: str, reason: str | None) -> None:
        previous = task.assignment_status
        task.assignment_status = status
        task.reason = reason
        task.touch(self.runtime.now())
        if status == "pending":
            ws.pending_tasks.add(task.sid)
        else:
            ws.pending_tasks.discard(task.sid)
        if status not in TTL_STATUSES and task.ttl_timer:
            task.ttl_timer.cancel()
            task.ttl_timer = None
        self.retention.status_changed(ws, task, previous)

    def move_task(self, ws: Workspace, task: Task, status: str, reason: str | None) -> None:
        """Cancel, wrap up or complete a task, and its active reservations with it."""
        if status == "canceled":
            self._cancel(ws, task, reason or "Task canceled")
        elif status == "wrapping":
            self.set_task(ws, task, "wrapping", task.reason)
            self._end_reservations(ws, task, "wrapping", "reservation.wrapup")
            self.events.task(ws, task, "task.wrapup", "Task wrapping up")
        else:
            self.set_task(ws, task, "completed", reason or "Task completed")
            self._end_reservations(ws, task, "completed", "reservation.completed")
            self.events.task(ws, task, "task.completed", "Task completed", "TaskCompletedReason")

    def _cancel(self, ws: Workspace, task: Task, reason: str) -> None:
        self.cancel_reservations(ws, task)
        self.set_task(ws, task, "canceled", reason)
        self.events.task(ws, task, "task.canceled", "Task canceled", "TaskCanceledReason")

    def _requeue(self, ws: Workspace, task: Task) -> None:
        """A reservation ended unaccepted: the task waits again, unless it has been reserved
        as many times as Twilio allows."""
        if task.assignments >= MAX_ASSIGNMENTS:
            self._cancel(ws, task, MAX_ASSIGNMENTS_REASON)
        else:
            self.set_task(ws, task, "pending", task.reason)

    def cancel_reservations(self, ws: Workspace, task: Task) -> None:
        """Cancel the task's pending, accepted and wrapping reservations."""
        self._end_reservations(ws, task, "canceled", "reservation.canceled")

    def _end_reservations(self, ws: Workspace, task: Task, status: str, event_type: str) -> None:
        active = [ws.reservations[s] for s in task.reservation_sids]
        for res in [r for r in active if r.status in RESERVATION_ACTIVE]:
            self._set_reservation(ws, res, status)
            self.events.reservation(ws, res, event_type, f"Reservation {status}")

    def forget_task(self, ws: Workspace, task: Task) -> None:
        """Remove a deleted task and its reservations, with every timer they had."""
        for sid in task.reservation_sids:
            res = ws.reservations.pop(sid, None)
            if res is None:
                continue
            if res.timer is not None:
                res.timer.cancel()
            self.voice.hang_up(res)
            ws.worker_active.get(res.worker_sid, set()).discard(sid)
        if task.ttl_timer:
            task.ttl_timer.cancel()
        self.retention.stop(task)
        ws.pending_tasks.discard(task.sid)
        ws.tasks.pop(task.sid, None)

    # ----------------------------------------------------------------------------- workers
    def set_activity(self, ws: Workspace, worker: Worker, activity_sid: str) -> None:
        if activity_sid == worker.activity_sid:
            return
        now = self.runtime.now()
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
        if worker_available(ws, worker):
            worker.idle_since = now
        activity = ws.activities[activity_sid]
        self.events.worker(
            ws,
            worker,
            "worker.activity.update",
            f"Worker {worker.friendly_name} updated to {activity.friendly_name} Activity",
            extra,
        )

    def reject_pending(self, ws: Workspace, worker: Worker) -> None:
        """Reject the worker's pending reservations (``RejectPendingReservations``)."""
        for sid in list(ws.worker_active.get(worker.sid, ())):
            res = ws.reservations[sid]
            if res.status == "pending":
                self._reject(ws, res, None)

    # ------------------------------------------------------------------------ reservations
    def _set_reservation(self, ws: Workspace, res: Reservation, status: str) -> None:
        res.status = status
        res.date_updated = self.runtime.now()
        active = ws.worker_active.setdefault(res.worker_sid, set())
        if status in RESERVATION_ACTIVE:
            active.add(res.sid)
        else:
            active.discard(res.sid)
            worker = ws.workers.get(res.worker_sid)
            if worker is not None:
                worker.idle_since = self.runtime.now()
        if status != "pending":
            if res.timer is not None:
                res.timer.cancel()
                res.timer = None
            self.voice.hang_up(res)

    def update_reservation(self, ws: Workspace, res: Reservation, form: Mapping[str, Any]) -> None:
        """A REST update: a ``ReservationStatus`` or an ``Instruction``."""
        status = form.get("ReservationStatus")
        instruction = form.get("Instruction")
        if status is not None and instruction is not None:
            raise invalid("Give either ReservationStatus or Instruction, not both")
        if status is None and instruction is None:
            raise invalid("ReservationStatus or Instruction is required")
        if "WorkerActivitySid" in form:
            ws.activity(form["WorkerActivitySid"])
        if instruction is not None:
            params = {k: v for k, v in form.items() if k != "Instruction"}
            self._instruct(ws, res, Instruction(instruction.lower(), params, reply=False))
        elif status not in ALLOWED_FROM:
            raise invalid(f"ReservationStatus cannot be set to {status!r}")
        else:
            if res.status not in ALLOWED_FROM[status] or res.ringing:
                self._refuse(res, status)
            if status == "accepted":
                self.accept(ws, res)
            elif status == "rejected":
                self._reject(ws, res, form.get("WorkerActivitySid"))
            else:
                self.move_task(ws, ws.tasks[res.task_sid], status, None)
        if res.status in ("completed", "canceled") and "WorkerActivitySid" in form:
            self.set_activity(ws, ws.workers[res.worker_sid], form["WorkerActivitySid"])
        self.match(ws)

    def apply_assignment_reply(
        self, ws: Workspace, res: Reservation, reply: Mapping[str, Any]
    ) -> None:
        """Honour an assignment callback's answer, as TaskRouter does."""
        instruction = reply.get("instruction")
        if res.status != "pending":
            self.runtime.log.append(
                "note",
                reservation_sid=res.sid,
                message=f"assignment reply ignored: reservation is {res.status}",
            )
            return
        if instruction is None:
            if reply:
                self.runtime.log.append(
                    "note",
                    reservation_sid=res.sid,
                    code=40005,
                    message="assignment reply has no instruction; deferred",
                )
            return
        try:
            if instruction in ("accept", "reject") and res.ringing:
                self._refuse(res, f"{instruction}ed")
            if instruction == "accept":
                self.accept(ws, res)
            elif instruction == "reject":
                activity = reply.get("activity_sid")
                if activity is not None:
                    ws.activity(str(activity))
                self._reject(ws, res, str(activity) if activity is not None else None)
            elif instruction in INSTRUCTIONS:
                params = {k: v for k, v in reply.items() if k != "instruction"}
                self._instruct(ws, res, Instruction(str(instruction), params, reply=True))
            else:
                raise invalid(f"Unknown assignment instruction {instruction!r}")
        except ApiError as exc:
            self.runtime.log.append(
                "note",
                reservation_sid=res.sid,
                code=exc.code,
                message=f"assignment instruction failed: {exc.message}",
            )
        self.match(ws)

    @staticmethod
    def _refuse(res: Reservation, target: str, code: int = 20001) -> None:
        state = res.status
        if res.ringing and res.ring is not None:
            state = f"pending with its worker's leg ringing ({res.ring.instruction} instruction)"
        raise ApiError(
            400,
            code,
            f"Reservation {res.sid} is not in expected state: it is {state}, "
            f"so it cannot become {target}",
        )

    def _instruct(self, ws: Workspace, res: Reservation, ins: Instruction) -> None:
        if ins.name == "supervise":
            if res.status != "accepted":
                self._refuse(res, "supervised")
            res.instructions.append(ins.recorded())
            return
        if ins.name not in INSTRUCTIONS:
            raise invalid(f"Instruction {ins.name!r} is not supported")
        task = ws.tasks[res.task_sid]
        check_state(res, task, ins.name)
        check_task(ws, task, ins.name)
        check_fields(ws, ws.workers[res.worker_sid], ins)
        res.instructions.append(ins.recorded())
        if ins.name == "redirect":
            # Synchronous: the parked call is redirected; accept when asked to.
            if ins.accepts:
                self.accept(ws, res)
            return
        self.voice.take(ws, res, ins)

    def accept(self, ws: Workspace, res: Reservation) -> None:
        task = ws.tasks[res.task_sid]
        self._set_reservation(ws, res, "accepted")
        self.set_task(ws, task, "assigned", task.reason)
        queue = ws.task_queues.get(task.task_queue_sid or "")
        self.events.reservation(ws, res, "reservation.accepted", "Reservation accepted")
        if queue and queue.assignment_activity_sid:
            self.set_activity(ws, ws.workers[res.worker_sid], queue.assignment_activity_sid)

    def _reject(self, ws: Workspace, res: Reservation, activity_sid: str | None) -> None:
        task = ws.tasks[res.task_sid]
        self._set_reservation(ws, res, "rejected")
        task.rejected_by.add(res.worker_sid)
        self.events.reservation(ws, res, "reservation.rejected", "Reservation rejected")
        if activity_sid is not None:
            self.set_activity(ws, ws.workers[res.worker_sid], activity_sid)
        self._requeue(ws, task)
