"""An in-memory ``TaskRouterPort`` holding one task: ETags, If-Match, injected trouble."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from flex_bridge.adapters.taskrouter import ReservationView, TaskView
from flex_bridge.errors import PreconditionFailed

WT = "WT" + "a" * 32


class FakeTaskRouter:
    """One task in memory, with an ETag that changes on every write and If-Match enforced."""

    def __init__(self, attributes: str = "{}") -> None:
        self.attributes = attributes
        self.version = 1
        self.fetches = 0
        self.writes: list[dict[str, Any]] = []
        self.conflicts = 0  # 412s to answer before accepting a write
        self.fetch_error: Exception | None = None
        self.hold_writes: asyncio.Event | None = None

    def view(self) -> TaskView:
        return TaskView(WT, self.attributes, "pending", f'"{self.version}"', 0, None, None)

    async def fetch_task(self, task_sid: str) -> TaskView:
        self.fetches += 1
        if self.fetch_error is not None:
            raise self.fetch_error
        return self.view()

    async def update_task(
        self,
        task_sid: str,
        *,
        if_match: str | None,
        attributes: str | None = None,
        priority: int | None = None,
    ) -> TaskView:
        if self.hold_writes is not None:
            await self.hold_writes.wait()
        self.writes.append({"if_match": if_match, "attributes": attributes})
        if self.conflicts:
            self.conflicts -= 1
            self.version += 1  # someone else wrote in between
            raise PreconditionFailed("etag mismatch", status=412, code=20412)
        if if_match != f'"{self.version}"':
            raise PreconditionFailed("etag mismatch", status=412, code=20412)
        if attributes is not None:
            self.attributes = attributes
        self.version += 1
        return self.view()

    async def fetch_reservation(
        self, task_sid: str, reservation_sid: str
    ) -> ReservationView:  # pragma: no cover - unused
        raise NotImplementedError

    async def update_reservation(
        self, task_sid: str, reservation_sid: str, form: Any
    ) -> ReservationView:  # pragma: no cover - unused
        raise NotImplementedError

    async def list_reservations(self, task_sid: str) -> list[ReservationView]:  # pragma: no cover
        return []

    async def reservation_timeout(self, workflow_sid: str) -> int:  # pragma: no cover
        return 120

    async def ping(self) -> None:  # pragma: no cover
        return None

    @property
    def current(self) -> Any:
        return json.loads(self.attributes)
