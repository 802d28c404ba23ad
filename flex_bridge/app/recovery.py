"""Rule 5: every intent reaches ``settled``, even across a crash.

``Recovery.sweep`` resumes each unsettled intent from its journal state, as
``protocol.recovery_action`` decides: an intent with no driver is driven again; an instruction
TaskRouter has (a callback reply, or a voice instruction ringing) is checked against TaskRouter
once its grace has passed, and settled if the offer is over: never sent again. The bridge
sweeps at start-up and then every ``[recovery] interval`` seconds.
"""

from __future__ import annotations

import logging

from flex_bridge.app.coordinator import Coordinator, log_intent
from flex_bridge.app.periodic import Periodic
from flex_bridge.domain import protocol
from flex_bridge.errors import UpstreamError

logger = logging.getLogger("flex_bridge.coordinator")
SWEEP_LIMIT = 100_000


class Recovery(Periodic):
    name = "recovery sweep"

    def __init__(self, coordinator: Coordinator) -> None:
        super().__init__()
        self.coordinator = coordinator

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

    async def once(self) -> None:
        resumed = await self.sweep()
        if resumed:
            logger.debug("recovery resumed %d intent(s) (or left them to their owners)", resumed)
