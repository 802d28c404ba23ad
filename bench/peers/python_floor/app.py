"""The floor peer's ASGI app: one assignment-callback handler doing everything inline."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from bench.peers.common import ITEM_TTL, PeerConfig, pending_item, rewrite, settle

logger = logging.getLogger("bench.peers.python_floor")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]


class FloorHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The package's async client with the least work per request: one aiohttp session
    (keep-alive, the connector's defaults), the base-URL rewrite, no retries, and none of
    the package's per-request logging (``log_request`` formats its lines whether or not
    INFO is enabled). Made inside the running event loop (the session binds to it)."""

    def __init__(self, base_url: str | None) -> None:
        super().__init__(pool_connections=False)
        self.base_url = base_url
        self.session = aiohttp.ClientSession()
        self._auth: tuple[tuple[str, str], aiohttp.BasicAuth] | None = None

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        basic = None
        if auth is not None:
            if self._auth is None or self._auth[0] != auth:
                self._auth = (auth, aiohttp.BasicAuth(auth[0], auth[1]))
            basic = self._auth[1]
        async with self.session.request(
            method.upper(),
            rewrite(url, self.base_url),
            params=params,
            data=data,
            headers=headers,
            auth=basic,
            allow_redirects=allow_redirects,
        ) as response:
            text = await response.text()
        return Response(response.status, text, response.headers)


FloorConfig = PeerConfig


class Peer:
    """The client, the validator and the maps this process knows: made at start-up, in
    the server's event loop."""

    def __init__(self, config: FloorConfig) -> None:
        self.config = config
        self.http = FloorHttpClient(config.base_url)
        client = Client(config.account_sid, config.auth_token, http_client=self.http)
        self.workspace = client.taskrouter.v1.workspaces(config.workspace_sid)
        self.sync = client.sync.v1.services(config.sync_service_sid)
        self.validator = RequestValidator(config.auth_token)
        self.known_maps: set[str] = set()  # maps this process created or found

    async def close(self) -> None:
        await self.http.close()

    async def ensure_map(self, name: str) -> None:
        if name in self.known_maps:
            return
        try:
            await self.sync.sync_maps.create_async(unique_name=name)
        except TwilioRestException as exc:
            if exc.status != 409:  # 409: it exists already, which is what we want
                raise
        self.known_maps.add(name)

    async def assignment(self, url: str, form: dict[str, str], signature: str) -> tuple[int, Any]:
        if not self.validator.validate(url, form, signature):
            return 403, {"error": "invalid signature"}
        reservation_sid = form.get("ReservationSid", "")
        task_sid = form.get("TaskSid", "")
        worker_sid = form.get("WorkerSid", "")
        if not (reservation_sid and task_sid and worker_sid):
            return 400, {"error": "missing parameters"}

        # 1. Announce on the worker's Sync map that the server is accepting.
        name = f"flex-bridge.worker.{worker_sid}"
        item = pending_item(task_sid, reservation_sid, worker_sid)
        sync_map = self.sync.sync_maps(name)
        try:
            await self.ensure_map(name)
            created = await sync_map.sync_map_items.create_async(
                key=reservation_sid, data=item, item_ttl=ITEM_TTL
            )
        except TwilioRestException as exc:
            # Not announced (or a retried callback whose item exists): change nothing.
            logger.warning("%s: announce failed: %s", reservation_sid, exc.msg)
            return 200, {}

        # 2. Accept over REST.
        try:
            reservation = (
                await self.workspace.tasks(task_sid)
                .reservations(reservation_sid)
                .update_async(reservation_status="accepted")
            )
            settle(item, reservation.reservation_status)
        except TwilioRestException as exc:
            logger.warning("%s: accept failed: %s", reservation_sid, exc.msg)
            settle(item, None, exc.code, str(exc.msg))

        # 3. Settle the item, conditional on the revision the announce wrote.
        try:
            await sync_map.sync_map_items(reservation_sid).update_async(
                data=item, if_match=str(created.revision), item_ttl=ITEM_TTL
            )
        except TwilioRestException as exc:
            logger.warning("%s: settle failed: %s", reservation_sid, exc.msg)
        return 200, {}


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _reply(send: Send, status: int, body: Any) -> None:
    data = b"{}" if body == {} else json.dumps(body).encode()
    headers = [*JSON_HEADERS, (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def create_app(config: FloorConfig) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """A raw ASGI app: ``POST /taskrouter/assignment``, ``GET /healthz`` and the lifespan
    (the peer is made at start-up, closed at shutdown)."""
    peers: list[Peer] = []

    async def lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                peers.append(Peer(config))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for peer in peers:
                    await peer.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/taskrouter/assignment" and method == "POST":
            body = await _body(receive)
            signature = host = ""
            for key, value in scope["headers"]:
                if key == b"x-twilio-signature":
                    signature = value.decode("latin-1")
                elif key == b"host":
                    host = value.decode("latin-1")
            query = scope["query_string"].decode("latin-1")
            base = config.public_url or f"{scope['scheme']}://{host}"
            url = base + path + (f"?{query}" if query else "")
            form = dict(parse_qsl(body.decode(), keep_blank_values=True))
            await _reply(send, *await peers[0].assignment(url, form, signature))
        elif path == "/healthz" and method == "GET":
            await _reply(send, 200, {"ok": True})
        else:
            await _body(receive)
            await _reply(send, 404, {"error": "not found"})

    return app
