"""Rule 9: an intent is driven by one instance at a time, under a lease with fencing.

Any instance may take a callback or a plugin action, and any may resume an intent; the
journal's lease named by the intent id decides which one drives it. The driver takes the lease
(``acquire``), renews it in the background while it drives (every third of its life), and
hands each of its journal transitions the lease's fencing token: once the lease has passed to
another instance (this one stalled past its life, say), the journal refuses this one's late
transitions, and it stops. When the driving instance dies, another takes the intent over at
its next recovery sweep after the lease expires.

The lease lives ``LEASE_TTL`` seconds: far longer than any single step holds the event loop
(renewal is a task of its own, so even a REST call that takes its whole 10-s timeout keeps
it), and short enough that a dead instance's intents move on well inside a reservation's
life (takeover within a lease plus one recovery interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator

from flex_bridge.adapters.journal import Journal
from flex_bridge.errors import FlexBridgeError

logger = logging.getLogger("flex_bridge.coordinator")
LEASE_TTL = 15.0


def instance_id() -> str:
    """This process, as lease owner: host, pid and a random part (a restarted process with
    the same pid is another owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


class LeaseLost(Exception):
    """This instance no longer holds the lease of the intent it was driving."""


class Ownership:
    def __init__(self, journal: Journal, owner: str | None = None, ttl: float = LEASE_TTL):
        self.journal = journal
        self.owner = owner or instance_id()
        self.ttl = ttl

    @contextlib.asynccontextmanager
    async def holding(self, name: str) -> AsyncIterator[int | None]:
        """The lease ``name``'s fencing token while this instance holds it, renewed in the
        background; None (and nothing held) when another instance holds it."""
        token = await self.journal.acquire_lease(name, self.owner, self.ttl)
        if token is None:
            yield None
            return
        renewing = asyncio.get_running_loop().create_task(
            self._renew(name, token, asyncio.current_task())
        )
        try:
            yield token
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            with contextlib.suppress(FlexBridgeError):
                await self.journal.release_lease(name, self.owner)

    async def _renew(self, name: str, token: int, driver: asyncio.Task[object] | None) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                renewed = await self.journal.acquire_lease(name, self.owner, self.ttl)
            except FlexBridgeError as exc:
                logger.warning("lease %s: renewal failed, will try again: %s", name, exc)
                continue
            if renewed != token and driver is not None:
                # Another instance holds it, or it lapsed and came back with a new token:
                # either way this driver's transitions would be refused.
                logger.warning("lease %s: lost; stopping", name)
                driver.cancel()
                return
