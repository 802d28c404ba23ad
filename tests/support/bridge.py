"""Test support: the bridge on a real socket, wired to a running emulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from flex_bridge.app.recovery import Recovery
from flex_bridge.domain.policy import Policy, parse_policy
from flex_bridge.domain.protocol import INSTRUCTION_GRACE
from flex_bridge.emulator.seed import SeedOptions
from flex_bridge.settings import Settings
from flex_bridge.web import create_app
from tests.support.emulator import Admin, RunningEmulator
from tests.support.threaded import ThreadedServer

ITEM_SCHEMA = Path(__file__).resolve().parents[2] / "sync" / "schema" / "item.v1.json"


def policy(**toml: Any) -> Policy:
    return parse_policy(toml)


# The least environment ``Settings.from_env`` accepts: development (no public URL).
SETTINGS_ENV = {
    "TWILIO_ACCOUNT_SID": "AC" + "0123456789abcdef" * 2,
    "TWILIO_AUTH_TOKEN": "secret-token",
    "FLEX_BRIDGE_WORKSPACE_SID": "WS" + "1" * 32,
    "FLEX_BRIDGE_SYNC_SERVICE_SID": "IS" + "a" * 32,
    "FLEX_BRIDGE_DEV": "1",
}
ACCEPT_ALL = {"assignment": {"rules": [{"name": "all", "op": "accept"}]}}


class RunningBridge:
    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.app: Any = None

        def factory() -> Any:
            assert self.settings is not None
            self.app = create_app(self.settings)
            return self.app

        self.server = ThreadedServer(factory)
        self.url = self.server.url

    def start(self, settings: Settings) -> RunningBridge:
        self.settings = settings
        # Served as `flex-bridge serve` would serve these settings.
        self.server.server, self.server.loop_name = settings.server, settings.loop
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def services(self) -> Any:
        return self.app.config["services"]

    def call(self, fn: Callable[[Any], Any], timeout: float = 10.0) -> Any:
        """Run ``fn(services)`` (a coroutine function) on the bridge's loop."""
        assert self.server.loop is not None
        return asyncio.run_coroutine_threadsafe(fn(self.services), self.server.loop).result(timeout)


def settings_for(
    emulator: RunningEmulator,
    journal: Path | str,
    policy_data: dict[str, Any] | None = None,
    **overrides: Any,
) -> Settings:
    state = emulator.state
    assert state is not None
    settings = Settings(
        account_sid=state.account_sid,
        auth_token=state.auth_token,
        workspace_sid=state.workspace_sid,
        sync_service_sid=state.sync_service_sid,
        twilio_base_url=emulator.url,
        journal=str(journal),
        policy=parse_policy(policy_data or {}),
        http_timeout=5.0,
        dev=True,  # no public URL: signatures are checked against the Host header
    )
    return replace(settings, **overrides)


def seed_for(bridge_url: str, **options: Any) -> SeedOptions:
    return SeedOptions(
        assignment_url=f"{bridge_url}/taskrouter/assignment",
        event_url=f"{bridge_url}/taskrouter/events",
        **options,
    )


def item_writes(entries: list[dict[str, Any]], reservation_sid: str) -> list[dict[str, Any]]:
    """Sync map-item writes for one reservation, with their parsed Data, in log order."""
    out = []
    for e in entries:
        if e.get("product") != "sync" or e.get("method") != "POST" or not e.get("applied"):
            continue
        path = e.get("path", "")
        form = e.get("form") or {}
        if "/Items" not in path:
            continue
        key = form.get("Key") or path.rsplit("/", 1)[-1]
        if key != reservation_sid:
            continue
        out.append({**e, "data": json.loads(form["Data"]) if "Data" in form else None})
    return out


def reservation_updates(
    entries: list[dict[str, Any]], reservation_sid: str
) -> list[dict[str, Any]]:
    return [
        e
        for e in entries
        if e.get("product") == "taskrouter"
        and e.get("method") == "POST"
        and e.get("path", "").endswith(f"/Reservations/{reservation_sid}")
    ]


def applied_changes(entries: list[dict[str, Any]], reservation_sid: str) -> list[dict[str, Any]]:
    """The reservation's updates that TaskRouter applied (a refused one is logged too)."""
    return [u for u in reservation_updates(entries, reservation_sid) if u.get("applied")]


async def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 15.0, interval: float = 0.05
) -> Any:
    async def loop() -> Any:
        while True:
            value = await predicate()
            if value:
                return value
            await asyncio.sleep(interval)

    return await asyncio.wait_for(loop(), timeout)


async def settled_item(admin: Admin, reservation_sid: str) -> dict[str, Any] | None:
    writes = item_writes(await admin.log("rest"), reservation_sid)
    if writes and writes[-1]["data"] and writes[-1]["data"]["phase"] != "pending":
        return writes[-1]["data"]  # type: ignore[no-any-return]
    return None


async def started(session: aiohttp.ClientSession, url: str) -> bool:
    """Whether the bridge process at ``url`` serves, and its start-up check of TaskRouter and
    Sync is over: ``/readyz`` waits for that check (whatever it answers), so a fault a test
    installs next meets the test's own requests, not the check's."""
    try:
        async with session.get(url + "/healthz") as response:
            if response.status != 200:
                return False
        async with session.get(url + "/readyz") as response:
            await response.read()
    except aiohttp.ClientError:
        return False
    return True


async def sweep_later(svc: Any) -> int:
    """One recovery sweep of a running bridge's services, as if long past the instruction
    grace (for ``RunningBridge.call``): what recovery does to an intent it may resend."""
    coordinator = svc.coordinator
    real = coordinator.clock
    coordinator.clock = lambda: real() + 3 * INSTRUCTION_GRACE
    try:
        return int(await Recovery(coordinator).sweep())
    finally:
        coordinator.clock = real
