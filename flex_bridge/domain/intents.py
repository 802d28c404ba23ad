"""Intents and the coordination protocol's states, as plain values.

An intent is one requested change to one reservation. Its journal ``state`` moves
``recorded -> announced -> applied | refused -> settled`` (rule 5 of the protocol: every
intent reaches ``settled``); ``instructed`` stands for "announced and handed to TaskRouter in
the assignment-callback reply", settled when TaskRouter's event (or a fetch) tells the truth.
The Sync item ``phase`` is ``pending`` until settled, then ``applied`` or ``failed``.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from flex_bridge.domain.types import JSON, Op, Phase, Source, Via

State = Literal["recorded", "announced", "instructed", "applied", "refused", "settled"]
STATES: Final = ("recorded", "announced", "instructed", "applied", "refused", "settled")
UNSETTLED: Final = frozenset({"recorded", "announced", "instructed", "applied", "refused"})
# States in which TaskRouter may still be changed for the intent: they hold the reservation.
IN_FLIGHT: Final = frozenset({"recorded", "announced", "instructed"})
# Settled phases rank above pending; applied above failed, so TaskRouter's word (an event
# showing the change did happen) can correct a failure, but an applied item never turns failed.
PHASE_RANK: Final = {"pending": 0, "failed": 1, "applied": 2}


def new_intent_id(now: float | None = None) -> str:
    """``in_`` + 12 hex digits of milliseconds + 10 random hex digits: sortable by creation."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"in_{millis:012x}{os.urandom(5).hex()}"


# What must never reach an agent: URLs and request lines (they carry account, workspace and
# service SIDs, and say nothing an agent can act on).
_INTERNAL = re.compile(r"(?:(?:GET|POST|PUT|DELETE) )?(?:https?://\S+|/v\d+/\S*)")


def ordered_after(intent_id: str, previous: str | None) -> str:
    """``intent_id``, or a fresh id one millisecond after ``previous`` when it would not sort
    after it. A reservation's intents must sort in the order they were made (items are
    ordered by intent id), even when two instances' clocks disagree by a few milliseconds."""
    if previous is None or intent_id > previous:
        return intent_id
    millis = int(previous[3:15], 16) + 1
    return f"in_{millis:012x}{os.urandom(5).hex()}"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why an intent failed. ``code`` is Twilio's error code, or, for a failure of the
    bridge's own, an HTTP status the ``/flex`` API answers with (or None)."""

    code: int | None
    message: str

    @property
    def public_code(self) -> int | None:
        """Twilio's code (five digits), or None: an HTTP status is not shown to agents."""
        return self.code if self.code is not None and self.code >= 10_000 else None

    @property
    def public_message(self) -> str:
        """The message without URLs or request lines, fit to show an agent."""
        cleaned = " ".join(_INTERNAL.sub("", self.message).split()).strip(" :;,")
        return cleaned[:1024] or "refused"

    def to_json(self) -> JSON:
        return {"code": self.public_code, "message": self.public_message}


@dataclass(frozen=True, slots=True)
class Intent:
    intent_id: str
    op: Op
    reservation_sid: str
    task_sid: str
    worker_sid: str
    source: Source
    params: JSON
    state: State
    deadline: float | None
    created_at: float
    updated_at: float
    via: Via = "rest"
    attempts: int = 0
    reservation_status: str | None = None
    error: ErrorInfo | None = None
    late_announce: bool = False
    extra: JSON = field(default_factory=dict)

    @property
    def settled(self) -> bool:
        return self.state == "settled"

    @property
    def phase(self) -> Phase:
        """The Sync item phase this intent shows."""
        if self.state in ("applied",) or (self.state == "settled" and self.error is None):
            return "applied"
        if self.state == "refused" or (self.state == "settled" and self.error is not None):
            return "failed"
        return "pending"

    @property
    def outcome(self) -> str | None:
        if self.state != "settled":
            return None
        return "applied" if self.error is None else "failed"

    def evolve(self, **changes: Any) -> Intent:
        return replace(self, **changes)

    def to_json(self) -> JSON:
        """The public view (``GET /flex/intents/<id>``)."""
        return {
            "intent_id": self.intent_id,
            "op": self.op,
            "reservation_sid": self.reservation_sid,
            "task_sid": self.task_sid,
            "worker_sid": self.worker_sid,
            "source": self.source,
            "via": self.via,
            "state": self.state,
            "phase": self.phase,
            "outcome": self.outcome,
            "attempts": self.attempts,
            "reservation_status": self.reservation_status,
            "error": self.error.to_json() if self.error else None,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def channel_item(intent: Intent, now: float) -> JSON:
    """The Sync map item data, version 1, of ``sync/schema/item.v1.json``."""
    return {
        "v": 1,
        "intent_id": intent.intent_id,
        "op": intent.op,
        "phase": intent.phase,
        "task_sid": intent.task_sid,
        "reservation_sid": intent.reservation_sid,
        "worker_sid": intent.worker_sid,
        "source": intent.source,
        "requested_at": iso(intent.created_at),
        "updated_at": iso(now),
        "reservation_status": intent.reservation_status,
        "error": _item_error(intent),
        **({"enrichment": intent.extra["enrichment"]} if "enrichment" in intent.extra else {}),
    }


def _item_error(intent: Intent) -> JSON | None:
    if intent.phase != "failed":
        return None
    if intent.error is None:
        return {"code": None, "message": "the change was refused"}
    return intent.error.to_json()


def item_order(data: JSON | None) -> tuple[str, int]:
    """Where an item stands: a newer intent, or a later phase of the same one, is ahead."""
    if not data:
        return ("", -1)
    return (str(data.get("intent_id", "")), PHASE_RANK.get(str(data.get("phase")), -1))


def may_overwrite(current: JSON | None, new: JSON) -> bool:
    """A write never moves an item backwards (rule: phase order, per intent, intents in order)."""
    return item_order(new) >= item_order(current)
