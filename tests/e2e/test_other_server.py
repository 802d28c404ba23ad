"""The non-default server and loop (Hypercorn on asyncio's loop, FLEX_BRIDGE_SERVER=hypercorn
FLEX_BRIDGE_LOOP=asyncio) still serve the bridge and the emulator: a policy accept end to end,
on real sockets, and the emulator's live feed over a WebSocket. The rest of the e2e suite runs
on the defaults (flex_bridge/serving.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from websockets.asyncio.client import connect

from flex_bridge.emulator.core import EmulatorConfig
from flex_bridge.serving import DEFAULT_LOOP, DEFAULT_SERVER
from tests.support.bridge import (
    ACCEPT_ALL,
    RunningBridge,
    reservation_updates,
    seed_for,
    settings_for,
    settled_item,
    wait_until,
)
from tests.support.emulator import Admin, RunningEmulator, twilio_client

SERVER, LOOP = "hypercorn", "asyncio"


async def test_a_policy_accept_on_hypercorn_and_asyncio(tmp_path: Path) -> None:
    assert (SERVER, LOOP) != (DEFAULT_SERVER, DEFAULT_LOOP)
    bridge = RunningBridge()
    emulator = RunningEmulator(
        EmulatorConfig(), seed_for(bridge.url), server=SERVER, loop=LOOP
    ).start()
    client = twilio_client(emulator)
    try:
        bridge.start(
            settings_for(emulator, tmp_path / "journal.db", ACCEPT_ALL, server=SERVER, loop=LOOP)
        )
        assert emulator.state is not None
        feed_url = emulator.url.replace("http://", "ws://", 1) + "/_emulator/ws"
        async with aiohttp.ClientSession() as session, connect(feed_url) as feed:
            admin = Admin(emulator, session)
            for url in (bridge.url + "/healthz", emulator.url + "/_emulator/health"):
                async with session.get(url) as answer:
                    assert answer.headers.get("Server") == "hypercorn-h11", url
            assert json.loads(await feed.recv())["type"] == "hello"
            ws = client.taskrouter.v1.workspaces(emulator.state.workspace_sid)
            task = await ws.tasks.create_async(attributes=json.dumps({"type": "support"}))
            [reservation] = await ws.tasks(task.sid).reservations.list_async()

            item: Any = await wait_until(lambda: settled_item(admin, reservation.sid))
            assert (item["phase"], item["reservation_status"]) == ("applied", "accepted")
            updates = reservation_updates(await admin.log("rest"), reservation.sid)
            assert [u["form"]["ReservationStatus"] for u in updates] == ["accepted"]
            # The bridge answered TaskRouter's callback itself, once.
            answered = [
                e
                for e in await admin.log("webhook")
                if e.get("webhook") == "assignment" and e.get("status") == 200
            ]
            assert len(answered) == 1
            while (message := json.loads(await feed.recv())).get("type") != "task.created":
                pass
            assert message["data"]["TaskSid"] == task.sid
    finally:
        await client.http_client.close()
        bridge.stop()
        emulator.stop()
