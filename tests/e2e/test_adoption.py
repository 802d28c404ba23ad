"""Offers whose assignment callback never reached the bridge are adopted at start-up."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from flex_bridge.emulator.seed import SeedOptions
from tests.support.bridge import (
    ACCEPT_ALL,
    RunningBridge,
    item_writes,
    reservation_updates,
    settings_for,
    wait_until,
)
from tests.support.emulator import Admin, RunningEmulator, twilio_client, ws


def dead_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


async def test_a_reservation_offered_while_the_bridge_was_down_is_adopted(
    start_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    down = dead_url()
    emulator = start_emulator(options=SeedOptions(assignment_url=f"{down}/taskrouter/assignment"))
    client = twilio_client(emulator)
    bridge = RunningBridge()
    try:
        task = await ws(client, emulator).tasks.create_async(attributes=json.dumps({"k": 1}))
        async with aiohttp.ClientSession() as session:
            admin = Admin(emulator, session)
            # The callback could not be delivered: the reservation waits, pending.
            await wait_until(lambda: _callback_failed(admin), timeout=15)
            [res] = await ws(client, emulator).tasks(task.sid).reservations.list_async()
            assert res.reservation_status == "pending"

            bridge.start(settings_for(emulator, tmp_path / "journal.db", ACCEPT_ALL))

            async def accepted() -> bool:
                r = await ws(client, emulator).tasks(task.sid).reservations(res.sid).fetch_async()
                return bool(r.reservation_status == "accepted")

            await wait_until(accepted, timeout=15)
            entries = await admin.log("rest")
            updates = [u for u in reservation_updates(entries, res.sid) if u["applied"]]
            writes = item_writes(entries, res.sid)
            assert len(updates) == 1
            assert writes and writes[0]["data"]["phase"] == "pending"
            assert writes[0]["seq"] < updates[0]["seq"]  # announced before the change
            assert writes[0]["data"]["source"] == "policy"
    finally:
        bridge.stop()
        await client.http_client.close()


async def _callback_failed(admin: Admin) -> Any:
    return [e for e in await admin.log("webhook") if e.get("webhook") == "assignment"]
