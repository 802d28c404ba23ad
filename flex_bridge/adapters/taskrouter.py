"""TaskRouter over REST, through the official client's async methods.

Three narrow seams (``ReservationsPort`` for the coordinator, ``TasksPort`` for attribute
writes and enrichment, ``OffersPort`` for the assignment use case) make up ``TaskRouterPort``;
``TwilioTaskRouter`` implements it with the ``twilio`` package (pointed at Twilio or at the
emulator by the HTTP client underneath). Twilio's errors become flex-bridge's here and nowhere else.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from twilio.rest import Client

from flex_bridge.adapters.twilio_errors import call

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReservationView:
    sid: str
    task_sid: str
    worker_sid: str
    status: str
    date_created: float | None


@dataclass(frozen=True, slots=True)
class Offer:
    """A pending reservation with what an assignment callback would have said about it."""

    reservation: ReservationView
    task_queue_sid: str | None
    workflow_sid: str | None
    task_attributes: str
    worker_attributes: str


@dataclass(frozen=True, slots=True)
class TaskView:
    sid: str
    attributes: str
    assignment_status: str
    etag: str | None
    priority: int
    workflow_sid: str | None
    task_queue_sid: str | None


class ReservationsPort(Protocol):
    """What the coordinator needs: read and change one reservation."""

    async def fetch_reservation(self, task_sid: str, reservation_sid: str) -> ReservationView: ...

    async def update_reservation(
        self, task_sid: str, reservation_sid: str, form: Mapping[str, Any]
    ) -> ReservationView: ...


class TasksPort(Protocol):
    """What attribute writes and enrichment need: a task, its ETag, its reservations."""

    async def fetch_task(self, task_sid: str) -> TaskView: ...

    async def list_reservations(self, task_sid: str) -> list[ReservationView]: ...

    async def update_task(
        self,
        task_sid: str,
        *,
        if_match: str | None,
        attributes: str | None = None,
        priority: int | None = None,
    ) -> TaskView: ...


class OffersPort(Protocol):
    """What the assignment use case needs: pending offers and the workflow's deadline."""

    async def reservation_timeout(self, workflow_sid: str) -> int: ...

    async def pending_offers(self, limit: int = 1000) -> list[Offer]:
        """Reservations still pending on reserved tasks (at most ``limit`` tasks), with the
        task's and the worker's attributes as an assignment callback would carry them."""
        ...


class TaskRouterPort(ReservationsPort, TasksPort, OffersPort, Protocol):
    """All of TaskRouter the bridge uses, plus the readiness check."""

    async def ping(self) -> None: ...


def _kwarg(field: str) -> str:
    """TaskRouter form field -> the official client's keyword (``From`` -> ``from_``)."""
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", field).lower()
    return "from_" if name == "from" else name


def _timestamp(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return value
    return None


class TwilioTaskRouter:
    def __init__(self, client: Client, workspace_sid: str) -> None:
        self.client = client
        self.workspace_sid = workspace_sid
        self._timeouts: dict[str, int] = {}

    @property
    def _ws(self) -> Any:
        return self.client.taskrouter.v1.workspaces(self.workspace_sid)

    @staticmethod
    def _reservation(r: Any) -> ReservationView:
        return ReservationView(
            sid=r.sid,
            task_sid=r.task_sid,
            worker_sid=r.worker_sid,
            status=r.reservation_status,
            date_created=_timestamp(r.date_created),
        )

    @staticmethod
    def _task(t: Any, etag: str | None) -> TaskView:
        return TaskView(
            sid=t.sid,
            attributes=t.attributes or "",
            assignment_status=t.assignment_status,
            etag=etag,
            priority=int(t.priority or 0),
            workflow_sid=t.workflow_sid,
            task_queue_sid=t.task_queue_sid,
        )

    async def fetch_reservation(self, task_sid: str, reservation_sid: str) -> ReservationView:
        r = await call(lambda: self._ws.tasks(task_sid).reservations(reservation_sid).fetch_async())
        return self._reservation(r)

    async def update_reservation(
        self, task_sid: str, reservation_sid: str, form: Mapping[str, Any]
    ) -> ReservationView:
        kwargs = {_kwarg(k): v for k, v in form.items()}
        context = self._ws.tasks(task_sid).reservations(reservation_sid)
        r = await call(lambda: context.update_async(**kwargs))
        return self._reservation(r)

    async def fetch_task(self, task_sid: str) -> TaskView:
        answer = await call(lambda: self._ws.tasks(task_sid).fetch_with_http_info_async())
        return self._task(answer.data, _header(answer.headers, "ETag"))

    async def list_reservations(self, task_sid: str) -> list[ReservationView]:
        found = await call(lambda: self._ws.tasks(task_sid).reservations.list_async())
        return [self._reservation(r) for r in found]

    async def update_task(
        self,
        task_sid: str,
        *,
        if_match: str | None,
        attributes: str | None = None,
        priority: int | None = None,
    ) -> TaskView:
        kwargs: dict[str, Any] = {}
        if if_match is not None:
            kwargs["if_match"] = if_match
        if attributes is not None:
            kwargs["attributes"] = attributes
        if priority is not None:
            kwargs["priority"] = priority
        context = self._ws.tasks(task_sid)
        answer = await call(lambda: context.update_with_http_info_async(**kwargs))
        return self._task(answer.data, _header(answer.headers, "ETag"))

    async def reservation_timeout(self, workflow_sid: str) -> int:
        cached = self._timeouts.get(workflow_sid)
        if cached is None:
            workflow = await call(lambda: self._ws.workflows(workflow_sid).fetch_async())
            cached = int(workflow.task_reservation_timeout or 120)
            self._timeouts[workflow_sid] = cached
        return cached

    async def pending_offers(self, limit: int = 1000) -> list[Offer]:
        tasks = await call(
            lambda: self._ws.tasks.list_async(assignment_status=["reserved"], limit=limit)
        )
        workers: dict[str, str] = {}
        offers = []
        for listed in tasks:
            context = self._ws.tasks(listed.sid).reservations
            pending = await call(
                functools.partial(context.list_async, reservation_status="pending")
            )
            if not pending:
                continue
            # A LIST answer carries no attributes (Twilio answers null): fetch the task, whose
            # attributes the policy matches on. The HTTP adapter paces these fetches.
            task = await call(self._ws.tasks(listed.sid).fetch_async)
            for r in pending:
                if r.worker_sid not in workers:
                    worker = await call(self._ws.workers(r.worker_sid).fetch_async)
                    workers[r.worker_sid] = worker.attributes or "{}"
                offers.append(
                    Offer(
                        reservation=self._reservation(r),
                        task_queue_sid=task.task_queue_sid,
                        workflow_sid=task.workflow_sid,
                        task_attributes=task.attributes or "{}",
                        worker_attributes=workers[r.worker_sid],
                    )
                )
        return offers

    async def ping(self) -> None:
        await call(lambda: self._ws.fetch_async())
