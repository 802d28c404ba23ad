"""A clock a test moves by hand: ``clock.now += 30``."""

from __future__ import annotations

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
