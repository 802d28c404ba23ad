"""A sweep run every ``interval`` seconds for the life of the process.

Recovery (rule 5), the event inbox and reconciliation are such sweeps: ``once`` does one; a
failed one (a journal or upstream error: the exception tree's) is logged and tried again at
the next interval, so that no single failure ends the sweeps the rules depend on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from flex_bridge.errors import FlexBridgeError

logger = logging.getLogger("flex_bridge.sweeps")


class Periodic:
    name = "sweep"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    async def once(self) -> None:
        raise NotImplementedError

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.once()
            except FlexBridgeError as exc:
                logger.warning("%s failed, trying again in %g s: %s", self.name, interval, exc)

    def start(self, interval: float) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(interval))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
