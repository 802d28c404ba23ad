"""Three bridge instances on one PostgreSQL journal, behind a round-robin proxy, against the
emulator: TaskRouter calls the proxy, the proxy calls the instances."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from twilio.request_validator import RequestValidator

from flex_bridge.adapters.journal import Journal, open_journal
from tests.support.bridge import seed_for
from tests.support.emulator import Admin, RunningEmulator, twilio_client
from tests.support.instances import Instances
from tests.support.postgres import PostgresServer
from tests.support.proxy import RoundRobinProxy

# Sweeps often, so that a dead instance's work moves on quickly (its leases still last 15 s).
SWEEPS = """\
[recovery]
interval = 0.5

[reconcile]
interval = 2
"""
ACCEPT_ALL = (
    SWEEPS
    + """
[[assignment.rules]]
name = "all"
op = "accept"
"""
)
DEFER_ALL = SWEEPS  # no rules: every assignment callback is answered {} and left alone


class Rig:
    def __init__(
        self,
        emulator: RunningEmulator,
        proxy: RoundRobinProxy,
        instances: Instances,
        session: aiohttp.ClientSession,
    ) -> None:
        self.emulator = emulator
        self.proxy = proxy
        self.instances = instances
        self.session = session
        self.admin = Admin(emulator, session)
        self.client = twilio_client(emulator)
        state = emulator.state
        assert state is not None
        self.state = state
        self.ws = self.client.taskrouter.v1.workspaces(state.workspace_sid)
        self.validator = RequestValidator(state.auth_token)

    async def create_task(self) -> Any:
        return await self.ws.tasks.create_async(attributes=json.dumps({"type": "support"}))

    async def reservations(self, task_sid: str) -> list[Any]:
        return list(await self.ws.tasks(task_sid).reservations.list_async())

    async def reservation(self, task_sid: str, reservation_sid: str) -> Any:
        return await self.ws.tasks(task_sid).reservations(reservation_sid).fetch_async()

    async def webhooks(self, webhook: str, reservation_sid: str) -> list[dict[str, Any]]:
        """The emulator's attempts of one kind of webhook about the reservation."""
        return [
            e
            for e in await self.admin.log("webhook")
            if e["webhook"] == webhook
            and reservation_sid
            in (
                (e.get("params") or {}).get("ReservationSid"),
                (e.get("params") or {}).get("ResourceSid"),
            )
        ]

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """A query on the instances' journal (its schema is the connection's search_path)."""
        conn = await asyncpg.connect(self.instances.journal)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows
        finally:
            await conn.close()

    async def journal(self) -> Journal:
        journal = open_journal(self.instances.journal)
        await journal.open()
        return journal

    def output(self) -> str:
        return self.instances.output()


StartRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def start_rig(
    postgres: PostgresServer,
    start_emulator: Callable[..., RunningEmulator],
    tmp_path: Path,
) -> AsyncIterator[StartRig]:
    """``await start_rig(policy_toml, crash_at={index: point}, **seed_options)``: the proxy,
    the emulator (seeded with ``seed_options``) calling it, and three instances on a fresh
    PostgreSQL schema, started and answering (instance ``index`` under
    ``tests.support.crashing_bridge point``)."""
    rigs: list[Rig] = []
    proxy = await RoundRobinProxy().start()
    async with aiohttp.ClientSession() as session, postgres.schema() as dsn:

        async def start(policy: str, crash_at: dict[int, str] | None = None, **seed: Any) -> Rig:
            emulator = start_emulator(options=seed_for(proxy.url, **seed))
            policy_path = tmp_path / "policy.toml"
            policy_path.write_text(policy)
            instances = Instances(emulator, dsn, policy_path, proxy.url, tmp_path)
            proxy.route_to(instances.urls)
            rig = Rig(emulator, proxy, instances, session)
            rigs.append(rig)
            await instances.start(session, crash_at)
            return rig

        try:
            yield start
        finally:
            for rig in rigs:
                rig.instances.kill_all()
                await rig.client.http_client.close()
            await proxy.close()
