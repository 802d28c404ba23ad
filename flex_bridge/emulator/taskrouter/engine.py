"""The TaskRouter engine: the resources API, wired to its lifecycle, callbacks and events.

Every public method is synchronous and applies one change whole; the REST layer calls them
from its handlers. The only asynchronous work is outgoing HTTP (assignment callbacks and
event callbacks), which runs in background tasks and re-enters through the same methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from flex_bridge.emulator.runtime import Runtime
from flex_bridge.emulator.taskrouter.callbacks import (
    ASSIGNMENT_TIMEOUT,
    AssignmentCallbacks,
    Events,
)
from flex_bridge.emulator.taskrouter.lifecycle import Lifecycle
from flex_bridge.emulator.taskrouter.models import Reservation, Worker, Workspace
from flex_bridge.emulator.taskrouter.rendering import Renderer
from flex_bridge.emulator.taskrouter.resources import Resources
from flex_bridge.emulator.taskrouter.retention import Retention
from flex_bridge.emulator.taskrouter.voice import Phones


class TaskRouter(Resources):
    """In-memory TaskRouter v1: its workspaces, and every change the REST API can ask for."""

    def __init__(self, runtime: Runtime, *, assignment_timeout: float = ASSIGNMENT_TIMEOUT) -> None:
        workspaces: dict[str, Workspace] = {}
        events = Events(runtime)
        self.callbacks = AssignmentCallbacks(runtime, workspaces, timeout=assignment_timeout)
        lifecycle = Lifecycle(runtime, events, self.callbacks, workspaces)
        super().__init__(lifecycle)

    @property
    def assignment_timeout(self) -> float:
        """Seconds an assignment callback has to answer (a runtime setting)."""
        return self.callbacks.timeout

    @assignment_timeout.setter
    def assignment_timeout(self, value: float) -> None:
        self.callbacks.timeout = value

    @property
    def phones(self) -> Phones:
        """How long each worker takes to answer a voice instruction's call (admin API)."""
        return self.lifecycle.voice.phones

    @property
    def retention(self) -> Retention:
        """When the system deletes finished and stale tasks (admin API)."""
        return self.lifecycle.retention

    def find_worker(self, sid: str) -> Worker | None:
        """A worker of any workspace, by SID."""
        for ws in self.workspaces.values():
            if sid in ws.workers:
                return ws.workers[sid]
        return None

    @property
    def _background(self) -> set[asyncio.Task[None]]:
        """The assignment offers in flight."""
        return self.callbacks.background

    async def close(self) -> None:
        """Cancel assignment offers still in flight."""
        await self.callbacks.close()

    def update_reservation(self, ws: Workspace, res: Reservation, form: Mapping[str, Any]) -> None:
        """A REST update of a reservation: a ``ReservationStatus`` or an ``Instruction``."""
        self.lifecycle.update_reservation(ws, res, form)

    def dump(self) -> list[dict[str, Any]]:
        """Every workspace with what it holds, reservations with their instructions."""
        return Renderer(self.runtime).dump(self.workspaces.values())
