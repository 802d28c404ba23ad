"""A policy accept end to end: announce strictly before the REST accept, settle after."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import jsonschema

from tests.support.bridge import (
    ACCEPT_ALL,
    ITEM_SCHEMA,
    RunningBridge,
    item_writes,
    reservation_updates,
    settled_item,
    wait_until,
)
from tests.support.emulator import Admin, RunningEmulator, twilio_client


async def test_policy_accept_announces_before_rest_and_settles_after(
    start_bridge: Callable[..., tuple[RunningBridge, RunningEmulator]],
) -> None:
    _, emulator = start_bridge(policy=ACCEPT_ALL)
    client = twilio_client(emulator)
    async with aiohttp.ClientSession() as session:
        admin = Admin(emulator, session)
        try:
            assert emulator.state is not None
            ws = client.taskrouter.v1.workspaces(emulator.state.workspace_sid)
            task = await ws.tasks.create_async(attributes=json.dumps({"type": "support"}))
            [reservation] = await ws.tasks(task.sid).reservations.list_async()

            item: Any = await wait_until(lambda: settled_item(admin, reservation.sid))
            assert item["phase"] == "applied"
            assert item["reservation_status"] == "accepted"
            assert item["source"] == "policy"

            entries = await admin.log("rest")
            writes = item_writes(entries, reservation.sid)
            updates = reservation_updates(entries, reservation.sid)
            assert [w["data"]["phase"] for w in writes] == ["pending", "applied"]
            assert len(updates) == 1
            assert updates[0]["form"]["ReservationStatus"] == "accepted"
            assert writes[0]["seq"] < updates[0]["seq"] < writes[1]["seq"]

            schema = json.loads(ITEM_SCHEMA.read_text())
            for write in writes:
                jsonschema.validate(write["data"], schema)
            fetched = await ws.tasks(task.sid).reservations(reservation.sid).fetch_async()
            assert fetched.reservation_status == "accepted"
        finally:
            await client.http_client.close()
