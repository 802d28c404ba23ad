"""Offers whose assignment callback never reached the bridge are adopted at start-up."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
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
    start_emulator: Callable[..., RunningEmulator], new_journal: Callable[[], str]
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

            bridge.start(settings_for(emulator, new_journal(), ACCEPT_ALL))

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


async def test_a_missed_offer_is_matched_on_the_tasks_own_attributes(
    start_emulator: Callable[..., RunningEmulator], new_journal: Callable[[], str]
) -> None:
    """Twilio's task LIST answers carry no attributes: adoption must fetch each task, or a
    rule that matches on attributes never adopts anything. One VIP task (adopted and
    accepted) and one other (left alone), both offered while the bridge was down."""
    down = dead_url()
    emulator = start_emulator(options=SeedOptions(assignment_url=f"{down}/taskrouter/assignment"))
    client = twilio_client(emulator)
    bridge = RunningBridge()
    vip_only = {
        "assignment": {
            "rules": [
                {"name": "vip", "match": {"task_attributes": {"tier": "vip"}}, "op": "accept"}
            ]
        }
    }
    try:
        tasks = ws(client, emulator).tasks
        vip = await tasks.create_async(attributes=json.dumps({"tier": "vip"}))
        other = await tasks.create_async(attributes=json.dumps({"tier": "basic"}))
        async with aiohttp.ClientSession() as session:
            admin = Admin(emulator, session)

            async def both_missed() -> bool:
                return len(await _callback_failed(admin)) >= 2

            await wait_until(both_missed, timeout=15)
            bridge.start(settings_for(emulator, new_journal(), vip_only))
            [vip_res] = await tasks(vip.sid).reservations.list_async()

            async def accepted() -> bool:
                r = await tasks(vip.sid).reservations(vip_res.sid).fetch_async()
                return bool(r.reservation_status == "accepted")

            await wait_until(accepted, timeout=15)
            entries = await admin.log("rest")
            assert len([u for u in reservation_updates(entries, vip_res.sid) if u["applied"]]) == 1
            [other_res] = await tasks(other.sid).reservations.list_async()
            assert other_res.reservation_status == "pending"
            assert not reservation_updates(entries, other_res.sid)
    finally:
        bridge.stop()
        await client.http_client.close()
