"""A round-robin HTTP balancer in front of the demo's bridges, as a load balancer would be:
the emulator's callbacks go to it, and it hands each to the next bridge (the next one still,
if that one refuses the connection). It counts what each bridge answered."""

from __future__ import annotations

import itertools
from collections import Counter

import aiohttp
from aiohttp import web

HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "host", "content-length"})


class Balancer:
    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.answered: Counter[str] = Counter()
        self._next = itertools.cycle(range(len(backends)))
        self._session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.Response:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        for _ in self.backends:
            backend = self.backends[next(self._next)]
            try:
                async with self._session.request(
                    request.method, backend + request.path_qs, data=body, headers=headers
                ) as answer:
                    payload = await answer.read()
                    self.answered[backend] += 1
                    kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
                    return web.Response(status=answer.status, body=payload, headers=kept)
            except aiohttp.ClientConnectorError:
                continue
        return web.Response(status=502, text="no bridge answered")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
