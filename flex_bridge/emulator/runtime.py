"""What every emulated product runs on, passed around as one value."""

from __future__ import annotations

from dataclasses import dataclass

from flex_bridge.emulator.clock import Clock, Scheduler
from flex_bridge.emulator.feed import Feed
from flex_bridge.emulator.log import RequestLog
from flex_bridge.emulator.webhooks import WebhookSender


@dataclass(frozen=True, slots=True)
class Runtime:
    """The account served, the clock and its timers, the live feed, the log, the webhooks out."""

    account_sid: str
    clock: Clock
    scheduler: Scheduler
    feed: Feed
    log: RequestLog
    sender: WebhookSender

    def now(self) -> float:
        """The emulator clock's time."""
        return self.clock.now()
