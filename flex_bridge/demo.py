"""``flex-bridge demo``: the emulator, seeded, driven step by step through the official client.

Every step checks what it expects and prints what happened; the run exits non-zero if any
check failed. (The bridge's own demo, with agents and a task stream, will replace this.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from flex_bridge.adapters.http import BridgeHttpClient
from flex_bridge.emulator.app import create_emulator_app
from flex_bridge.emulator.core import Emulator
from flex_bridge.emulator.seed import SeedState, seed
from flex_bridge.serving import base_url, bind, serve_app

Step = Callable[[], Awaitable[str]]


class DemoFailure(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailure(message)


class Scenario:
    def __init__(self, client: Client, state: SeedState, url: str, emu: Emulator) -> None:
        self.client = client
        self.state = state
        self.url = url
        self.emu = emu
        self.ws = client.taskrouter.v1.workspaces(state.workspace_sid)
        self.sync = client.sync.v1.services(state.sync_service_sid)
        self.names = {w["sid"]: w["friendly_name"] for w in state.workers}
        self.first: Any = None
        self.revision = ""

    async def reservation(self, task_sid: str, status: str = "pending") -> Any:
        found = await self.ws.tasks(task_sid).reservations.list_async(reservation_status=status)
        expect(len(found) == 1, f"expected one {status} reservation, found {len(found)}")
        return found[0]

    async def workers(self) -> str:
        workers = await self.ws.workers.list_async()
        expect(len(workers) == len(self.state.workers), "seeded workers missing")
        listed = ", ".join(f"{w.friendly_name} ({w.activity_name})" for w in workers)
        return f"workspace has {len(workers)} workers: {listed}"

    async def create_task(self) -> str:
        task = await self.ws.tasks.create_async(
            attributes=json.dumps({"type": "support", "customer_id": "C-1001"})
        )
        res = await self.reservation(task.sid)
        self.first = res
        return (
            f"task {task.sid} created; reserved for {self.names[res.worker_sid]} "
            f"({res.sid}, pending)"
        )

    async def announce(self) -> str:
        name = f"flex-bridge.worker.{self.first.worker_sid}"
        await self.sync.sync_maps.create_async(unique_name=name)
        item = await self.sync.sync_maps(name).sync_map_items.create_async(
            key=self.first.sid,
            data={"op": "accept", "phase": "pending", "reservation_sid": self.first.sid},
            item_ttl=86_400,
        )
        self.revision = item.revision
        return f"Sync map {name}: item {self.first.sid} phase=pending (revision {item.revision})"

    async def accept(self) -> str:
        res = (
            await self.ws.tasks(self.first.task_sid)
            .reservations(self.first.sid)
            .update_async(reservation_status="accepted")
        )
        expect(res.reservation_status == "accepted", "accept did not take")
        task = await self.ws.tasks(self.first.task_sid).fetch_async()
        expect(task.assignment_status == "assigned", "task not assigned after accept")
        return f"reservation accepted over REST; task is {task.assignment_status}"

    async def settle(self) -> str:
        name = f"flex-bridge.worker.{self.first.worker_sid}"
        item = (
            await self.sync.sync_maps(name)
            .sync_map_items(self.first.sid)
            .update_async(
                data={"op": "accept", "phase": "applied", "reservation_status": "accepted"},
                if_match=self.revision,
            )
        )
        stale = self.revision
        self.revision = item.revision
        try:
            await (
                self.sync.sync_maps(name)
                .sync_map_items(self.first.sid)
                .update_async(data={"phase": "pending"}, if_match=stale)
            )
        except TwilioRestException as exc:
            expect(exc.status == 412, f"stale write gave {exc.status}, not 412")
            return (
                f"item settled (phase=applied, revision {item.revision}); a stale write got "
                f"HTTP {exc.status} / {exc.code}"
            )
        raise DemoFailure("a write with a stale If-Match was accepted")

    async def double_accept(self) -> str:
        try:
            await (
                self.ws.tasks(self.first.task_sid)
                .reservations(self.first.sid)
                .update_async(reservation_status="accepted")
            )
        except TwilioRestException as exc:
            expect(exc.status == 400, "second accept was not refused with 400")
            return f"a second accept is refused: HTTP {exc.status} / {exc.code}"
        raise DemoFailure("a second accept succeeded")

    async def reject(self) -> str:
        task = await self.ws.tasks.create_async(attributes='{"type":"support"}')
        first = await self.reservation(task.sid)
        await (
            self.ws.tasks(task.sid)
            .reservations(first.sid)
            .update_async(reservation_status="rejected")
        )
        second = await self.reservation(task.sid)
        expect(second.worker_sid != first.worker_sid, "re-offered to the same worker")
        return (
            f"{self.names[first.worker_sid]} rejected task {task.sid}; "
            f"re-offered to {self.names[second.worker_sid]}"
        )

    async def timeout(self) -> str:
        # Free the worker who holds the second task, so the third task reaches the last one.
        task = await self.ws.tasks.create_async(attributes='{"type":"support"}')
        with contextlib.suppress(DemoFailure):
            await self.reservation(task.sid)
        fired = self.emu.scheduler.advance(121)
        timed_out = await self.ws.tasks(task.sid).reservations.list_async(
            reservation_status="timeout"
        )
        expect(len(timed_out) >= 1, "no reservation timed out after 121 s")
        worker = await self.ws.workers(timed_out[0].worker_sid).fetch_async()
        expect(worker.activity_name == "Offline", "timed-out worker not moved to Offline")
        return (
            f"clock advanced 121 s ({fired} timers fired): reservation {timed_out[0].sid} "
            f"timed out, {worker.friendly_name} moved to {worker.activity_name}"
        )

    async def complete(self) -> str:
        tasks = self.ws.tasks(self.first.task_sid)
        await tasks.reservations(self.first.sid).update_async(reservation_status="wrapping")
        await tasks.reservations(self.first.sid).update_async(reservation_status="completed")
        task = await tasks.fetch_async()
        expect(task.assignment_status == "completed", "task not completed")
        return f"first task wrapped up and completed; task is {task.assignment_status}"

    async def token(self) -> str:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{self.url}/_emulator/tokens",
                json={"worker_sid": self.first.worker_sid, "roles": ["agent"], "ttl": 60},
            ) as r:
                issued = await r.json()
            auth = aiohttp.encode_basic_auth(self.state.account_sid, self.state.auth_token)
            async with http.post(
                f"{self.url}/iam/v1/Accounts/{self.state.account_sid}/Tokens/validate",
                json={"token": issued["token"]},
                headers={"Authorization": auth},
            ) as r:
                answer = await r.json()
        expect(answer["valid"] and answer["worker_sid"] == self.first.worker_sid, "bad token")
        return f"Flex token validated: worker {answer['worker_sid']}, roles {answer['roles']}"


async def run_demo(quiet: bool = False) -> int:
    emu = Emulator()
    state = seed(emu)
    sock = bind("127.0.0.1", 0)
    url = base_url(sock)
    shutdown = asyncio.Event()
    server = asyncio.create_task(serve_app(create_emulator_app(emu), sock, shutdown))
    http = BridgeHttpClient(url)
    client = Client(state.account_sid, state.auth_token, http_client=http)
    scenario = Scenario(client, state, url, emu)
    steps: list[tuple[str, Step]] = [
        ("list the seeded workers", scenario.workers),
        ("create a task", scenario.create_task),
        ("announce the accept on Sync", scenario.announce),
        ("accept over REST", scenario.accept),
        ("settle the Sync item", scenario.settle),
        ("try a double accept", scenario.double_accept),
        ("reject and re-offer", scenario.reject),
        ("time a reservation out", scenario.timeout),
        ("wrap up and complete", scenario.complete),
        ("validate a Flex token", scenario.token),
    ]
    print(f"flex-bridge demo: emulator at {url}")
    failures = 0
    started = time.perf_counter()
    try:
        for n, (title, step) in enumerate(steps, 1):
            try:
                detail = await step()
                mark = "ok  "
            except (DemoFailure, TwilioRestException) as exc:
                detail, mark = f"FAILED: {exc}", "FAIL"
                failures += 1
            if not quiet or mark == "FAIL":
                print(f"[{n:2}/{len(steps)}] {mark} {title}: {detail}")
    finally:
        await http.close()
        shutdown.set()
        await server
    requests = len(emu.log.entries(kind="rest"))
    elapsed = time.perf_counter() - started
    print(
        f"\nsummary: {len(steps) - failures}/{len(steps)} steps passed, "
        f"{requests} REST requests served, {elapsed:.2f} s"
    )
    return 1 if failures else 0
