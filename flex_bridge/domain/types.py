"""The protocol's words, typed once: every module that speaks them imports them from here."""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias

JSON: TypeAlias = dict[str, Any]
"""A JSON object as Python holds it."""

Op = Literal["accept", "reject", "redirect", "conference", "dequeue", "call", "wrapup", "complete"]
Source = Literal["policy", "plugin", "timeout", "recovery", "taskrouter"]
ReservationStatus = Literal[
    "pending", "accepted", "rejected", "timeout", "canceled", "rescinded", "wrapping", "completed"
]
Phase = Literal["pending", "applied", "failed"]
Outcome = Literal["applied", "refused", "taken"]
"""What the bridge concludes about one intent's change: it happened, it did not, or TaskRouter
took a voice instruction and the reservation stays pending while the agent's leg rings."""
Via = Literal["rest", "instruction"]
SyncMode = Literal["strict", "degrade"]

OPS: Final[tuple[Op, ...]] = (
    "accept",
    "reject",
    "redirect",
    "conference",
    "dequeue",
    "call",
    "wrapup",
    "complete",
)
SOURCES: Final[tuple[Source, ...]] = ("policy", "plugin", "timeout", "recovery", "taskrouter")
