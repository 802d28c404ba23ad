"""The live feed over WebSocket: ``/_emulator/ws``, standing in for the Flex UI's connection."""

from __future__ import annotations

import json

from quart import Blueprint, websocket

from flex_bridge.emulator.core import Emulator


def feed_blueprint(emu: Emulator) -> Blueprint:
    blueprint = Blueprint("feed", __name__, url_prefix="/_emulator")

    @blueprint.websocket("/ws")
    async def feed() -> None:
        queue = emu.feed.subscribe()
        try:
            await websocket.accept()
            await websocket.send(json.dumps({"type": "hello", "product": "emulator"}))
            while True:
                message = await queue.get()
                if message is None:
                    await websocket.close(1008, "subscriber fell behind")
                    return
                await websocket.send(json.dumps(message))
        finally:
            emu.feed.unsubscribe(queue)

    return blueprint
