"""``/sdk/sync/v1/ws``: live Map item events for a browser, standing in for twilio-sync's
connection (docs/emulator.md, "The SDK surface (for browsers)").

One session per connection, from any Origin. The first message authenticates
(``{"type": "auth", "token"}``, within :data:`AUTH_TIMEOUT` seconds); then the client
subscribes to Maps of its token's Sync service and receives ``itemAdded``, ``itemUpdated`` and
``itemRemoved`` for them, translated from the emulator's live feed in the feed's order. The
token's expiry is watched on the emulator clock, at least every :data:`CHECK_INTERVAL` seconds
of real time: a warning once :data:`EXPIRY_WARNING` seconds or less remain, then
``tokenExpired`` and close code 4001. ``updateToken`` swaps in a newer token of the same
identity and service.

Feed messages and client messages are handled by one loop, and every feed message already
queued is handled before a client message: an event published before a ``subscribe`` (or an
``unsubscribe``) was received is judged by the subscriptions as they were then.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, NoReturn

from quart import Blueprint, websocket

from flex_bridge.emulator.api import ApiError
from flex_bridge.emulator.blueprints.responses import NotJson, strict_json
from flex_bridge.emulator.blueprints.sdk import check_token, find_map, granted_service
from flex_bridge.emulator.clock import iso
from flex_bridge.emulator.core import Emulator
from flex_bridge.emulator.iam import IssuedToken

AUTH_TIMEOUT = 10.0  # real seconds for the first message
CHECK_INTERVAL = 0.25  # real seconds between two looks at the token's expiry
EXPIRY_WARNING = 30.0  # emulator seconds before expiry when tokenAboutToExpire is sent
AUTH_FAILED = 4001
FELL_BEHIND = 1008  # as the admin feed closes a subscriber that fell behind
ITEM_EVENTS = {
    "map_item.added": "itemAdded",
    "map_item.updated": "itemUpdated",
    "map_item.removed": "itemRemoved",
}

Message = dict[str, Any]
FeedQueue = asyncio.Queue[Message | None]


class _Closed(Exception):
    """The session closed the connection."""


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Collect what a helper task ended with, so asyncio does not report it as lost."""
    if not task.cancelled():
        task.exception()


async def _next_batch(queue: FeedQueue) -> list[Message | None]:
    """The next feed message and every one queued behind it, taken in one step."""
    batch = [await queue.get()]
    while not queue.empty():
        batch.append(queue.get_nowait())
    return batch


def _parse(raw: str | bytes) -> Message | None:
    try:
        value = strict_json(raw)
    except NotJson:
        return None
    return value if isinstance(value, dict) else None


class SyncSession:
    """One authenticated connection: its token, its subscriptions, its share of the feed."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.token: IssuedToken | None = None
        self.warned = False  # tokenAboutToExpire sent for the current token
        self.maps: dict[str, str | None] = {}  # subscribed Map SID -> its unique name

    # -------------------------------------------------------------------------- sending
    async def _send(self, message: Message) -> None:
        await websocket.send(json.dumps(message, separators=(",", ":")))

    async def _error(self, code: int, message: str, **extra: Any) -> None:
        await self._send({"type": "error", "code": code, "message": message, **extra})

    async def _close(self, code: int, reason: str) -> NoReturn:
        await websocket.close(code, reason.encode()[:120].decode(errors="ignore"))
        raise _Closed

    async def _refuse(self, code: int, message: str) -> NoReturn:
        """An authentication failure: say why, then close with 4001."""
        await self._error(code, message)
        await self._close(AUTH_FAILED, message)

    # --------------------------------------------------------------------------- tokens
    async def _accept_token(self, raw: Any) -> IssuedToken:
        if not isinstance(raw, str) or not raw:
            await self._refuse(20101, "Invalid Access Token: token must be a non-empty string")
        try:
            return check_token(self.emu, raw)
        except ApiError as exc:
            await self._refuse(exc.code, exc.message)

    async def _authenticate(self) -> IssuedToken:
        """The first message's token, which must grant a Sync service."""
        try:
            raw = await asyncio.wait_for(websocket.receive(), AUTH_TIMEOUT)
        except TimeoutError:
            await self._close(AUTH_FAILED, f"no auth message within {AUTH_TIMEOUT:g} s")
        message = _parse(raw)
        if message is None or message.get("type") != "auth":
            await self._refuse(
                20101, 'Invalid Access Token: the first message must be {"type": "auth", ...}'
            )
        token = await self._accept_token(message.get("token"))
        try:
            granted_service(self.emu, token)
        except ApiError as exc:
            await self._refuse(exc.code, exc.message)
        return token

    async def _update_token(self, message: Message) -> None:
        assert self.token is not None
        token = await self._accept_token(message.get("token"))
        same = (token.identity, token.sync_service_sid)
        if same != (self.token.identity, self.token.sync_service_sid):
            await self._refuse(20403, "updateToken must keep the token's identity and Sync service")
        self.token = token
        self.warned = False
        await self._send({"type": "tokenUpdated", "expires": iso(token.expires)})

    async def _watch_expiry(self) -> None:
        assert self.token is not None
        left = self.token.expires - self.emu.clock.now()
        if left <= 0:
            await self._send({"type": "tokenExpired"})
            await self._close(AUTH_FAILED, "token expired")
        if left <= EXPIRY_WARNING and not self.warned:
            self.warned = True
            await self._send({"type": "tokenAboutToExpire", "expires": iso(self.token.expires)})

    # ---------------------------------------------------------------------- subscriptions
    async def _subscribe(self, message: Message) -> None:
        assert self.token is not None
        ref = message.get("map_sid")
        if not isinstance(ref, str) or not ref:
            await self._error(20001, "subscribe needs map_sid: a Map SID or unique name")
            return
        try:
            sync_map = find_map(self.emu, self.token, ref)
        except ApiError as exc:
            await self._error(exc.code, exc.message, map_sid=ref)
            return
        self.maps[sync_map.sid] = sync_map.unique_name
        await self._send({"type": "subscribed", "map_sid": sync_map.sid})

    async def _unsubscribe(self, message: Message) -> None:
        ref = message.get("map_sid")
        if not isinstance(ref, str) or not ref:
            await self._error(20001, "unsubscribe needs map_sid: a Map SID or unique name")
            return
        sid = ref
        if ref not in self.maps:
            sid = next((s for s, name in self.maps.items() if name == ref), ref)
        self.maps.pop(sid, None)
        await self._send({"type": "unsubscribed", "map_sid": sid})

    # ------------------------------------------------------------------------ the feed
    def _date_updated(self, message: Message, removed: bool) -> str | None:
        """The feed does not carry it: the item's own while it is still at that revision,
        else (changed or gone since, or removed) the emulator clock's time now."""
        if not removed:
            service = self.emu.sync.services.get(str(message.get("service_sid")))
            sync_map = None if service is None else service.maps.by_sid.get(message["map_sid"])
            item = None if sync_map is None else sync_map.items.get(message.get("key", ""))
            if item is not None and str(item.revision) == message.get("revision"):
                return iso(item.date_updated)
        return iso(self.emu.clock.now())

    async def _forward(self, message: Message | None) -> None:
        if message is None:
            await self._close(FELL_BEHIND, "subscriber fell behind")
        kind = ITEM_EVENTS.get(str(message.get("type")))
        if message.get("product") != "sync" or kind is None:
            return
        if message.get("map_sid") not in self.maps:
            return
        removed = kind == "itemRemoved"
        await self._send(
            {
                "type": kind,
                "map_sid": message["map_sid"],
                "key": message.get("key"),
                "data": None if removed else message.get("data"),
                "revision": message.get("revision"),
                "date_updated": self._date_updated(message, removed),
            }
        )

    # -------------------------------------------------------------------------- serving
    async def _handle(self, raw: str | bytes) -> None:
        message = _parse(raw)
        if message is None:
            await self._error(20001, "A message must be a JSON object with a type")
            return
        kind = message.get("type")
        if kind == "subscribe":
            await self._subscribe(message)
        elif kind == "unsubscribe":
            await self._unsubscribe(message)
        elif kind == "updateToken":
            await self._update_token(message)
        elif kind == "auth":
            await self._error(20001, "Already authenticated: send updateToken to change tokens")
        else:
            await self._error(20001, f"Unknown message type {kind!r}")

    async def _serve(self, queue: FeedQueue) -> None:
        receiving = asyncio.ensure_future(websocket.receive())
        feeding = asyncio.ensure_future(_next_batch(queue))
        try:
            await self._watch_expiry()
            while True:
                await asyncio.wait(
                    {receiving, feeding},
                    timeout=CHECK_INTERVAL,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                await self._watch_expiry()
                # Everything the feed published so far, in its order, then the client. Only
                # the feeding task reads the queue: a second reader could take the next
                # message while a send is awaited, and the two would go out swapped.
                while feeding.done() or not queue.empty():
                    if not feeding.done():
                        await asyncio.wait({feeding})  # woken already: the queue holds one
                    for message in feeding.result():
                        await self._forward(message)
                    feeding = asyncio.ensure_future(_next_batch(queue))
                if receiving.done():
                    raw = receiving.result()
                    receiving = asyncio.ensure_future(websocket.receive())
                    await self._handle(raw)
        finally:
            for task in (receiving, feeding):
                task.cancel()
                task.add_done_callback(_retrieve)

    async def run(self) -> None:
        await websocket.accept()
        queue: FeedQueue | None = None
        try:
            token = self.token = await self._authenticate()
            # On the feed before the client hears it is connected: nothing it does after
            # that can be missed.
            queue = self.emu.feed.subscribe()
            expires = iso(token.expires)
            await self._send({"type": "connected", "identity": token.identity, "expires": expires})
            await self._serve(queue)
        except _Closed:
            return
        finally:
            if queue is not None:
                self.emu.feed.unsubscribe(queue)


def sdk_socket_blueprint(emu: Emulator) -> Blueprint:
    """``/sdk/sync/v1/ws``, beside the HTTP routes of :mod:`.sdk` under the same prefix."""
    blueprint = Blueprint("sdk_ws", __name__, url_prefix="/sdk")

    @blueprint.websocket("/sync/v1/ws")
    async def sync_socket() -> None:
        await SyncSession(emu).run()

    return blueprint
