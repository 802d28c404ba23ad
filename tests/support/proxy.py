"""A tiny round-robin HTTP reverse proxy, as a load balancer in front of several bridges.

Each request goes, unchanged (method, path, query, headers, body), to the next target in
turn, and its answer comes back unchanged. A target that refuses the connection (a dead
instance) is skipped for the next one; with every target refusing, the answer is 502.
``prefer(url)`` sends every request to that target first (still skipping it when it refuses),
for a test that needs one instance to take a callback.

``lose(rate, seed)`` makes it drop a seeded share of the requests it is given, as Twilio
sees a lost callback: the request is not forwarded and its sender gets a connection reset or
a 502 (one or the other, drawn from the same seed). ``dropped`` lists them. By default
nothing is dropped.

Served by aiohttp in the test's event loop.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

# Hop-by-hop headers, and those aiohttp sets itself from the body it sends.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


class RoundRobinProxy:
    def __init__(self) -> None:
        self.targets: list[str] = []
        self.url = ""
        self.forwarded: list[tuple[str, str, int]] = []  # (target, path, status)
        self.dropped: list[tuple[str, str, dict[str, str]]] = []  # (path, how, form)
        self._preferred: str | None = None
        self._loss = 0.0
        self._random = random.Random(0)
        self._turn = itertools.count()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> RoundRobinProxy:
        """Listen on a free port of 127.0.0.1; ``url`` is then its base URL."""
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=60)
        )
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def route_to(self, targets: Sequence[str]) -> None:
        self.targets = list(targets)

    def prefer(self, target: str | None) -> None:
        assert target is None or target in self.targets, target
        self._preferred = target

    def lose(self, rate: float, seed: int = 0) -> None:
        """Drop a seeded ``rate`` (0 to 1) of the requests from now on; 0 forwards them all."""
        assert 0.0 <= rate <= 1.0, rate
        self._loss = rate
        self._random = random.Random(seed)

    def _drop(self, request: web.Request, body: bytes) -> web.StreamResponse | None:
        if not self._loss or self._random.random() >= self._loss:
            return None
        how = self._random.choice(("reset", "502"))
        form = dict(parse_qsl(body.decode(errors="replace")))
        self.dropped.append((request.path, how, form))
        if how == "reset" and request.transport is not None:
            request.transport.abort()  # the connection reset by peer, without an answer
        return web.Response(status=502, text="callback dropped by the test proxy")

    def _order(self) -> list[str]:
        if not self.targets:
            return []
        start = next(self._turn) % len(self.targets)
        order = self.targets[start:] + self.targets[:start]
        if self._preferred is not None:
            order.remove(self._preferred)
            order.insert(0, self._preferred)
        return order

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        dropped = self._drop(request, body)
        if dropped is not None:
            return dropped
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        for target in self._order():
            try:
                async with self._session.request(
                    request.method,
                    target + request.path_qs,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                ) as answer:
                    payload = await answer.read()
                    self.forwarded.append((target, request.path, answer.status))
                    return web.Response(
                        status=answer.status,
                        body=payload,
                        headers={
                            k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP
                        },
                    )
            except aiohttp.ClientConnectorError:
                continue  # refused: a dead instance; the next one takes it
        return web.Response(status=502, text="no instance answered")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
