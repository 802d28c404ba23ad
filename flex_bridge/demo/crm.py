"""The demo's CRM: ``crm.json`` (shipped with the package) served over HTTP on 127.0.0.1.

``GET /customers?customer_id=C-1000`` answers 200 with the customer's record, 404 when the
customer is unknown (the demo's task stream goes past the 40 customers on file, so some tasks
stay unenriched, as in life), 400 without ``customer_id``. The bridge reaches it through the
built-in ``flex_bridge.adapters.crm:http_crm`` enricher, like any real CRM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web

from flex_bridge.serving import base_url, bind


def load_customers() -> dict[str, dict[str, Any]]:
    text = resources.files("flex_bridge.demo").joinpath("crm.json").read_text("utf-8")
    customers: dict[str, dict[str, Any]] = json.loads(text)["customers"]
    return customers


def crm_app(customers: dict[str, dict[str, Any]]) -> web.Application:
    async def lookup(request: web.Request) -> web.Response:
        customer_id = request.query.get("customer_id")
        if not customer_id:
            return web.json_response({"error": "customer_id is required"}, status=400)
        record = customers.get(customer_id)
        if record is None:
            return web.json_response({"error": "unknown customer"}, status=404)
        return web.json_response({"customer_id": customer_id, **record})

    app = web.Application()
    app.router.add_get("/customers", lookup)
    return app


@dataclass
class DemoCrm:
    runner: web.AppRunner
    url: str  # the lookup URL: http://127.0.0.1:<port>/customers
    size: int

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_crm(host: str = "127.0.0.1") -> DemoCrm:
    """Serve the demo CRM on a free port; ``close()`` it when done."""
    customers = load_customers()
    runner = web.AppRunner(crm_app(customers), access_log=None)
    await runner.setup()
    sock = bind(host, 0)
    await web.SockSite(runner, sock).start()
    return DemoCrm(runner, f"{base_url(sock)}/customers", len(customers))
