"""Rule 9: an intent is driven by one instance at a time, under a lease with fencing.

Any instance may take a callback or a plugin action, and any may resume an intent; the
journal's lease named by the intent id decides which one drives it. The driver takes the lease
(``acquire``, or the submit took it), one background task renews every lease held (every
third of their life), and the driver hands each of its journal transitions the lease's
fencing token: once the lease has passed to another instance (this one stalled past its
life, say), the journal refuses this one's late transitions, and it stops. The settle
releases the lease in its own transaction. When the driving instance dies, another takes the
intent over at its next recovery sweep after the lease expires.

The lease lives ``LEASE_TTL`` seconds: far longer than any single step holds the event loop
(renewal is a task of its own, so even a REST call that takes its whole 10-s timeout keeps
it), and short enough that a dead instance's intents move on well inside a reservation's
life (takeover within a lease plus one recovery interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

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


@dataclass(slots=True)
class Lease:
    """A lease this instance holds while it drives: its fencing token, and whether a journal
    transition released it already (the settle does, in its own transaction)."""

    name: str
    token: int
    driver: asyncio.Task[Any] | None
    released: bool = False


class Ownership:
    def __init__(self, journal: Journal, owner: str | None = None, ttl: float = LEASE_TTL):
        self.journal = journal
        self.owner = owner or instance_id()
        self.ttl = ttl
        self._held: dict[str, Lease] = {}
        self._renewer: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def holding(self, name: str, token: int | None = None) -> AsyncIterator[Lease | None]:
        """The lease ``name`` while this instance holds it, renewed in the background; None
        (and nothing held) when another instance holds it. ``token``: the lease was taken
        already (with the submit)."""
        if token is None:
            token = await self.journal.acquire_lease(name, self.owner, self.ttl)
        if token is None:
            yield None
            return
        lease = self._held[name] = Lease(name, token, asyncio.current_task())
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew(), context=contextvars.Context()
            )
        try:
            yield lease
        finally:
            if self._held.get(name) is lease:
                del self._held[name]
            if not lease.released:
                with contextlib.suppress(FlexBridgeError):
                    await self.journal.release_lease(name, self.owner)

    def lease(self, name: str) -> Lease | None:
        """The lease ``name`` while a driver here holds it (``holding``); else None."""
        return self._held.get(name)

    async def _renew(self) -> None:
        """One task renews every lease held, every third of their life (one journal batch),
        and stops any driver whose lease was lost; it ends when none is held."""
        while self._held:
            await asyncio.sleep(self.ttl / 3)
            held = list(self._held.values())
            renewed = await asyncio.gather(
                *(self._renew_one(lease) for lease in held), return_exceptions=True
            )
            for lease, token in zip(held, renewed, strict=True):
                if isinstance(token, BaseException):
                    logger.warning(
                        "lease %s: renewal failed, will try again: %s", lease.name, token
                    )
                elif token != lease.token and lease.driver is not None:
                    # Another instance holds it, or it lapsed and came back with a new token:
                    # either way this driver's transitions would be refused.
                    logger.warning("lease %s: lost; stopping", lease.name)
                    lease.driver.cancel()
        self._renewer = None

    async def _renew_one(self, lease: Lease) -> int | None:
        if self._held.get(lease.name) is not lease or lease.released:
            return lease.token  # let go meanwhile: not taken again
        return await self.journal.acquire_lease(lease.name, self.owner, self.ttl)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
