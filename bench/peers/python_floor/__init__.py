"""The bench's Python floor peer: the least work Python can do for an accept with the
official ``twilio`` package (issue 12, docs/performance.md "The Python floor peer").

The same job as the Flask baseline (``bench/baseline``) and the Node peer
(``bench/peers/node``), inline, request for request: check the signature (twilio's
``RequestValidator``), create the worker's map if this process has not seen it (a 409 is
fine), write the item with phase ``pending``, accept the reservation over REST, settle the
item with ``If-Match`` (``applied``, or ``failed`` with TaskRouter's error), reply ``{}``.

With the fastest stack the project has: a raw ASGI app (no framework) on uvicorn with
httptools and uvloop, and the package's async client (``*_async`` methods) over one aiohttp
session with keep-alive. No journal, no retries, no pacing, no log line per request. It is a
lower bound for any Python server that keeps the ``twilio`` package, not a design to ship.

Standalone: it imports nothing from ``flex_bridge``. Run it as ``python -m
bench.peers.python_floor --host H --port P`` with the baseline's environment variables
(``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``, ``FLEX_BRIDGE_WORKSPACE_SID``,
``FLEX_BRIDGE_SYNC_SERVICE_SID``, ``FLEX_BRIDGE_TWILIO_BASE_URL``, ``FLEX_BRIDGE_PUBLIC_URL``).
"""

from bench.peers.python_floor.app import FloorConfig, FloorHttpClient, Peer, create_app

__all__ = ["FloorConfig", "FloorHttpClient", "Peer", "create_app"]
