"""The matching engine: which pending task is offered to which available worker.

Pending tasks go in priority order, then by age (``VirtualStartTime``, then creation), each to
the matching worker that has been idle longest. A worker is available when its activity is
available and it holds no pending, accepted or wrapping reservation (capacity one); it is not
offered a task it rejected, nor a task routed to another worker (``RoutingTarget``).
"""

from __future__ import annotations

from collections.abc import Iterator

from flex_bridge.emulator.taskrouter.models import (
    Task,
    TaskQueue,
    Worker,
    Workspace,
    parse_attributes,
)


def worker_available(ws: Workspace, worker: Worker) -> bool:
    """Whether the worker's activity is an available one (reservations aside)."""
    activity = ws.activities.get(worker.activity_sid)
    return bool(activity and activity.available)


def offers(ws: Workspace) -> Iterator[tuple[Task, Worker, TaskQueue]]:
    """The (task, worker, queue) offers to make now, best first.

    Each worker appears at most once. The caller reserves each offer as it comes, before
    asking for the next.
    """
    if not ws.pending_tasks:
        return
    idle = [
        w
        for w in ws.workers.values()
        if worker_available(ws, w) and not ws.worker_active.get(w.sid)
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
        worker = _first_match(task, queue, idle)
        if worker is not None:
            idle.remove(worker)
            yield task, worker, queue
        if not idle:
            return


def _first_match(task: Task, queue: TaskQueue, idle: list[Worker]) -> Worker | None:
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
        return worker
    return None
