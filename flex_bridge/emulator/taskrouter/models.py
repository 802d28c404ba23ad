"""TaskRouter's resources as the emulator keeps them in memory, and how a workspace finds them."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flex_bridge.emulator.api import not_found
from flex_bridge.emulator.clock import Timer
from flex_bridge.emulator.expressions import Expression, WorkflowConfiguration

T = TypeVar("T")

RESERVATION_ACTIVE = frozenset({"pending", "accepted", "wrapping"})
TASK_OPEN = frozenset({"pending", "reserved", "assigned", "wrapping"})


def new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def parse_attributes(text: str | None) -> dict[str, Any]:
    """Attributes as an object for routing; anything that is not a JSON object routes as {}."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def truthy(value: Any) -> bool:
    """A form or callback flag: ``true`` in any case, or any truthy non-string value."""
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


@dataclass(slots=True)
class Activity:
    sid: str
    friendly_name: str
    available: bool
    date_created: float
    date_updated: float


@dataclass(slots=True)
class TaskChannel:
    sid: str
    unique_name: str
    friendly_name: str
    channel_optimized_routing: bool | None
    date_created: float
    date_updated: float


@dataclass(slots=True)
class TaskQueue:
    sid: str
    friendly_name: str
    target_workers: str
    expression: Expression
    max_reserved_workers: int
    task_order: str
    reservation_activity_sid: str | None
    assignment_activity_sid: str | None
    date_created: float
    date_updated: float


@dataclass(slots=True)
class Workflow:
    sid: str
    friendly_name: str
    configuration: str
    parsed: WorkflowConfiguration
    assignment_callback_url: str | None
    fallback_assignment_callback_url: str | None
    task_reservation_timeout: int
    date_created: float
    date_updated: float


@dataclass(slots=True)
class Worker:
    sid: str
    friendly_name: str
    activity_sid: str
    attributes: str
    parsed: dict[str, Any]
    date_created: float
    date_updated: float
    date_status_changed: float
    idle_since: float
    version: int = 0


@dataclass(slots=True)
class Ring:
    """The worker's leg of a voice instruction, ringing until it is answered or given up."""

    instruction: str
    call_sid: str
    started: float
    accepts: bool  # whether answering accepts the reservation (conference, dequeue)
    timer: Timer | None = None


@dataclass(slots=True)
class Reservation:
    sid: str
    task_sid: str
    worker_sid: str
    status: str
    date_created: float
    date_updated: float
    deadline: float
    timer: Timer | None = None
    instructions: list[dict[str, Any]] = field(default_factory=list)
    # The voice instruction TaskRouter took (conference, dequeue or call): it takes one only.
    voice: str | None = None
    ring: Ring | None = None
    worker_call_sid: str | None = None

    @property
    def ringing(self) -> bool:
        return self.ring is not None


@dataclass(slots=True)
class Task:
    sid: str
    attributes: str
    assignment_status: str
    priority: int
    timeout: int
    workflow_sid: str | None
    task_queue_sid: str | None
    task_channel_sid: str | None
    date_created: float
    date_updated: float
    task_queue_entered_date: float | None
    virtual_start_time: float
    target_expression: Expression | None = None
    routing_target: str | None = None
    ignore_capacity: bool = False
    reason: str | None = None
    version: int = 0
    # How many times the task went from pending to reserved (Twilio's "assignment count").
    assignments: int = 0
    rejected_by: set[str] = field(default_factory=set)
    reservation_sids: list[str] = field(default_factory=list)
    ttl_timer: Timer | None = None
    # Deletion by the system: after the retention once finished, or 24 h after assignment.
    cleanup_timer: Timer | None = None

    @property
    def etag(self) -> str:
        return str(self.version)

    def touch(self, now: float) -> None:
        self.version += 1
        self.date_updated = now


@dataclass(slots=True)
class Event:
    sid: str
    event_type: str
    resource_type: str
    resource_sid: str
    description: str
    data: dict[str, str]
    date: float


@dataclass(slots=True)
class Workspace:
    sid: str
    friendly_name: str
    event_callback_url: str | None
    events_filter: list[str] | None
    multi_task_enabled: bool
    prioritize_queue_order: str
    default_activity_sid: str
    timeout_activity_sid: str
    date_created: float
    date_updated: float
    activities: dict[str, Activity] = field(default_factory=dict)
    task_channels: dict[str, TaskChannel] = field(default_factory=dict)
    task_queues: dict[str, TaskQueue] = field(default_factory=dict)
    workflows: dict[str, Workflow] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    # Indexes kept by the engine so matching does not scan every task and reservation.
    pending_tasks: set[str] = field(default_factory=set)
    worker_active: dict[str, set[str]] = field(default_factory=dict)

    # Finding what the workspace holds, or refusing with TaskRouter's 404 -------------------
    def activity(self, sid: str) -> Activity:
        return _find(self.activities, sid, "Activity")

    def task_queue(self, sid: str) -> TaskQueue:
        return _find(self.task_queues, sid, "TaskQueue")

    def workflow(self, sid: str) -> Workflow:
        return _find(self.workflows, sid, "Workflow")

    def worker(self, sid: str) -> Worker:
        return _find(self.workers, sid, "Worker")

    def task(self, sid: str) -> Task:
        return _find(self.tasks, sid, "Task")

    def task_channel(self, sid_or_name: str) -> TaskChannel:
        """A task channel by SID or by unique name (``voice``, ``chat``, ...)."""
        channel = self.task_channels.get(sid_or_name)
        if channel is None:
            for candidate in self.task_channels.values():
                if candidate.unique_name == sid_or_name:
                    return candidate
            raise not_found("TaskChannel", sid_or_name)
        return channel

    def reservation(
        self, sid: str, *, task_sid: str | None = None, worker_sid: str | None = None
    ) -> Reservation:
        """A reservation, which must belong to ``task_sid`` or ``worker_sid`` when given."""
        res = self.reservations.get(sid)
        if (
            res is None
            or (task_sid is not None and res.task_sid != task_sid)
            or (worker_sid is not None and res.worker_sid != worker_sid)
        ):
            raise not_found("Reservation", sid)
        return res

    def event(self, sid: str) -> Event:
        for e in self.events:
            if e.sid == sid:
                return e
        raise not_found("Event", sid)


def _find(table: dict[str, T], sid: str, what: str) -> T:
    item = table.get(sid)
    if item is None:
        raise not_found(what, sid)
    return item
