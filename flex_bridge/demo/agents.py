"""Simulated Flex agents: each watches its worker's Sync map over the live feed, as a Flex
plugin does, and acts through the bridge's ``/flex`` API.

An agent never accepts a reservation the bridge is already accepting: before it accepts it
looks at the channel item for that reservation (the ``beforeAcceptTask`` guard of
``sync/README.md``), and skips when an accept is pending or applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import websockets

from flex_bridge.adapters.sync_channel import map_name


@dataclass
class AgentStats:
    plugin_accepts: int = 0
    skipped_bridge_accepting: int = 0
    ignored: int = 0
    completed: int = 0
    errors: list[str] = field(default_factory=list)


class Feed:
    """One WebSocket subscription to the emulator's live feed, fanned out to agents."""

    def __init__(self, ws_url: str) -> None:
        self.ws_url = ws_url
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.items: dict[str, dict[str, Any]] = {}  # reservation_sid -> latest item data
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def subscribe(self, worker_sid: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.queues[worker_sid] = queue
        return queue

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async with websockets.connect(self.ws_url, max_queue=None) as ws:
            self.ready.set()
            async for raw in ws:
                message = json.loads(raw)
                self._route(message)

    def _route(self, message: dict[str, Any]) -> None:
        if message.get("product") == "sync" and str(message.get("type", "")).startswith(
            "map_item."
        ):
            name = str(message.get("map_unique_name") or "")
            key = str(message.get("key") or "")
            if name.startswith("flex-bridge.worker.") and message.get("data"):
                self.items[key] = message["data"]
            worker = name.removeprefix("flex-bridge.worker.")
            if worker in self.queues:
                self.queues[worker].put_nowait(message)
        elif message.get("product") == "taskrouter":
            data = message.get("data") or {}
            owner = str(data.get("WorkerSid", ""))
            if owner in self.queues and str(message.get("type", "")).startswith("reservation."):
                self.queues[owner].put_nowait(message)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


@dataclass(eq=False, kw_only=True)
class Agent:
    """One simulated agent: its worker's reservations arrive from ``feed``; it acts on them
    through the bridge's ``/flex`` API at ``bridge_url`` with its Flex ``token``."""

    name: str
    worker_sid: str
    token: str
    bridge_url: str
    feed: Feed
    http: aiohttp.ClientSession
    set_available: Any
    rng: random.Random
    ignore_rate: float
    stats: AgentStats = field(default_factory=AgentStats, init=False)

    def __post_init__(self) -> None:
        self.inbox = self.feed.subscribe(self.worker_sid)
        self.map = map_name(self.worker_sid)
        self._tasks: set[asyncio.Task[None]] = set()

    def bridge_is_accepting(self, reservation_sid: str) -> bool:
        """The plugin's ``beforeAcceptTask`` guard (sync/README.md): hands off while the bridge
        has a change in flight, or once the reservation has moved on from pending."""
        item = self.feed.items.get(reservation_sid)
        if item is None:
            return False
        if item.get("phase") == "pending":
            return True
        return item.get("reservation_status") not in (None, "pending")

    async def action(self, reservation_sid: str, op: str, task_sid: str) -> dict[str, Any]:
        async with self.http.post(
            f"{self.bridge_url}/flex/reservations/{reservation_sid}/{op}?wait=10",
            json={"task_sid": task_sid},
            headers={"Authorization": f"Bearer {self.token}"},
        ) as response:
            body: dict[str, Any] = await response.json()
            if response.status not in (200, 202):
                raise RuntimeError(f"{op} {reservation_sid}: HTTP {response.status} {body}")
            return body

    async def run(self) -> None:
        while True:
            message = await self.inbox.get()
            kind = message.get("type")
            data = message.get("data") or {}
            if kind == "reservation.created":
                self._spawn(self.ring(data["ReservationSid"], data["TaskSid"]))
            elif kind == "reservation.accepted":
                self._spawn(self.work(data["ReservationSid"], data["TaskSid"]))
            elif kind == "reservation.timeout":
                self._spawn(self.back_to_available())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ring(self, reservation_sid: str, task_sid: str) -> None:
        """A reservation rings: think a moment, then accept unless the bridge is on it."""
        await asyncio.sleep(self.rng.uniform(0.15, 0.4))
        if self.bridge_is_accepting(reservation_sid):
            self.stats.skipped_bridge_accepting += 1
            return
        if self.rng.random() < self.ignore_rate:
            self.stats.ignored += 1  # the agent looks away: the reservation will time out
            return
        try:
            body = await self.action(reservation_sid, "accept", task_sid)
        except (RuntimeError, aiohttp.ClientError) as exc:
            self.stats.errors.append(str(exc))
            return
        if body["intent"]["source"] == "plugin":
            self.stats.plugin_accepts += 1

    async def work(self, reservation_sid: str, task_sid: str) -> None:
        await asyncio.sleep(self.rng.uniform(0.2, 0.6))
        try:
            await self.action(reservation_sid, "complete", task_sid)
            self.stats.completed += 1
        except (RuntimeError, aiohttp.ClientError) as exc:
            self.stats.errors.append(str(exc))

    async def back_to_available(self) -> None:
        await asyncio.sleep(0.3)
        await self.set_available(self.worker_sid)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
