"""Rule 5: every intent reaches ``settled``, even across a crash.

``Recovery.sweep`` resumes each unsettled intent from its journal state, as
``protocol.recovery_action`` decides: an intent with no driver is driven again; an instruction
TaskRouter has (a callback reply, or a voice instruction ringing) is checked against TaskRouter
once its grace has passed, and settled if the offer is over: never sent again. The bridge
sweeps at start-up and then every ``[recovery] interval`` seconds, and each periodic sweep
also forgets the webhook dedupe keys whose TTL has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from flex_bridge.app.coordinator import Coordinator, log_intent
from flex_bridge.domain import protocol
from flex_bridge.errors import FlexBridgeError, UpstreamError

logger = logging.getLogger("flex_bridge.coordinator")
SWEEP_LIMIT = 100_000


class Recovery:
    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> int:
        """Resume every unsettled intent; returns how many were resumed."""
        co = self.coordinator
        resumed = 0
        for intent in await co.journal.unsettled(limit=SWEEP_LIMIT):
            running = co.running(intent.intent_id)
            action = protocol.recovery_action(intent, co.clock(), running=running)
            if action == "skip":
                continue
            if action == "check_instructed":
                try:
                    status = await co.fetch_status(intent)
                except UpstreamError as exc:
                    log_intent(intent, "recovery fetch failed: %s", exc, level=logging.WARNING)
                    continue
                await co.resolve_instructed(intent, status)
            else:
                co.start(intent.intent_id)
            resumed += 1
        return resumed

    async def run(self, interval: float) -> None:
        while True:
            try:
                resumed = await self.sweep()
                if resumed:
                    logger.info("recovery resumed %d intent(s)", resumed)
                await self.coordinator.journal.purge_seen()
            except FlexBridgeError as exc:
                # Journal and upstream errors are typed; a failed sweep is tried again at the
                # next interval, for the life of the process.
                logger.warning("recovery sweep failed: %s", exc)
            await asyncio.sleep(interval)

    def start(self, interval: float) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(interval))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
