"""Test support: the emulator on a real socket, the official client, a callback receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from flex_bridge.adapters.http import BridgeHttpClient
from flex_bridge.emulator.app import create_emulator_app
from flex_bridge.emulator.core import Emulator, EmulatorConfig
from flex_bridge.emulator.seed import SeedOptions, SeedState, seed
from flex_bridge.errors import UpstreamError
from flex_bridge.serving import DEFAULT_LOOP, DEFAULT_SERVER
from tests.support.threaded import ThreadedServer

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "twilio-oai"
PACKAGED = Path(__file__).resolve().parents[2] / "flex_bridge" / "emulator" / "specs"


def spec_path(name: str) -> Path:
    """The OpenAPI document from ../shared (the source of truth), else the packaged copy."""
    shared = SHARED / name
    return shared if shared.exists() else PACKAGED / name


class RunningEmulator:
    """An emulator served in its own thread; use ``call`` to touch its state safely."""

    def __init__(
        self,
        config: EmulatorConfig,
        options: SeedOptions | None,
        *,
        server: str = DEFAULT_SERVER,
        loop: str = DEFAULT_LOOP,
    ) -> None:
        """``server`` and ``loop``: what it is served on (``flex_bridge.serving``)."""
        self.config = config
        self.emu: Emulator | None = None
        self.state: SeedState | None = None
        self._options = options

        def factory() -> Any:
            self.emu = Emulator(config)
            if options is not None:
                self.state = seed(self.emu, options)
            return create_emulator_app(self.emu)

        self.server = ThreadedServer(factory, server=server, loop=loop)
        self.url = self.server.url

    def start(self) -> RunningEmulator:
        self.server.start()
        if self.state is not None:
            self.state = replace(self.state, base_url=self.url)
        return self

    def stop(self) -> None:
        self.server.stop()

    def call(self, fn: Callable[[Emulator], Any]) -> Any:
        assert self.emu is not None
        emu = self.emu
        return self.server.call(lambda: fn(emu))

    @property
    def auth_header(self) -> dict[str, str]:
        token = aiohttp.encode_basic_auth(self.config.account_sid, self.config.auth_token)
        return {"Authorization": token}


class Admin:
    """The emulator's admin API and raw REST calls, over HTTP."""

    def __init__(self, running: RunningEmulator, session: aiohttp.ClientSession) -> None:
        self.running = running
        self.url = running.url
        self.session = session

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Any = None,
        auth: bool = True,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        sent = {**(self.running.auth_header if auth else {}), **(headers or {})}
        token = self.running.config.admin_token
        if (
            auth
            and token
            and path.startswith("/_emulator")
            and "Authorization" not in (headers or {})
        ):
            sent["Authorization"] = f"Bearer {token}"  # the admin API's own credentials
        async with self.session.request(
            method, self.url + path, json=json_body, data=data, headers=sent
        ) as response:
            text = await response.text()
            body = json.loads(text) if text else None
            return response.status, body, dict(response.headers)

    async def advance(self, seconds: float) -> Any:
        status, body, _ = await self.request(
            "POST", "/_emulator/clock/advance", json_body={"seconds": seconds}
        )
        assert status == 200, body
        return body

    async def faults(self, rules: list[dict[str, Any]], seed: int = 1) -> Any:
        status, body, _ = await self.request(
            "POST", "/_emulator/faults", json_body={"rules": rules, "seed": seed}
        )
        assert status == 200, body
        return body

    async def log(self, kind: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        query = f"?since={since}" + (f"&kind={kind}" if kind else "")
        status, body, _ = await self.request("GET", "/_emulator/log" + query)
        assert status == 200
        entries: list[dict[str, Any]] = body["entries"]
        return entries

    async def token(self, worker_sid: str | None, roles: list[str], ttl: float = 3600) -> str:
        status, body, _ = await self.request(
            "POST",
            "/_emulator/tokens",
            json_body={"worker_sid": worker_sid, "roles": roles, "ttl": ttl},
        )
        assert status == 201, body
        return str(body["token"])

    async def settings(self, **values: Any) -> Any:
        status, body, _ = await self.request("POST", "/_emulator/settings", json_body=values)
        assert status == 200, body
        return body


def twilio_client(running: RunningEmulator, timeout: float = 10.0) -> Client:
    http = BridgeHttpClient(running.url, timeout=timeout)
    return Client(running.config.account_sid, running.config.auth_token, http_client=http)


@dataclass
class Received:
    path: str
    form: dict[str, str]
    headers: dict[str, str]
    url: str


@dataclass
class CallbackServer:
    """Receives webhooks on a real socket and answers them as told."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    answer: Callable[[Received], Awaitable[web.StreamResponse]] | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0
    ) -> None:
        async def loop() -> None:
            while not predicate(self.received):
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(loop(), timeout)


async def start_callback_server() -> CallbackServer:
    server = CallbackServer()

    async def handle(request: web.Request) -> web.StreamResponse:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        item = Received(request.path, form, dict(request.headers), str(request.url))
        server.received.append(item)
        server.arrived.set()
        if server.answer is not None:
            return await server.answer(item)
        if request.path.endswith("/assignment"):
            return web.json_response({})
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}"
    server.runner = runner
    return server


def ws(client: Any, running: RunningEmulator) -> Any:
    """The seeded workspace, through the official client."""
    assert running.state is not None
    return client.taskrouter.v1.workspaces(running.state.workspace_sid)


def ws_path(running: RunningEmulator) -> str:
    """The seeded workspace's raw REST path on the emulator."""
    assert running.state is not None
    return f"/taskrouter/v1/Workspaces/{running.state.workspace_sid}"


async def refused(call: Awaitable[Any]) -> tuple[int | None, int | None]:
    """Run a client call that must fail; its HTTP status and Twilio code.

    The ``twilio`` package raises ``TwilioRestException`` for an error answer, unless the HTTP
    adapter translated it first (429 and 5xx become flex-bridge ``UpstreamError``s): either
    way the status and the code are what the emulator answered.
    """
    try:
        await call
    except (TwilioRestException, UpstreamError) as exc:
        return exc.status, exc.code
    raise AssertionError("the call succeeded")


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A response header, looked up case-insensitively."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None
