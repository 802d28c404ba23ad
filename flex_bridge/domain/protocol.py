"""The coordination protocol's decisions, as pure functions: the sans-I/O core.

``flex_bridge.app.coordinator.Coordinator`` is the thin driver: it reads the journal, calls
Sync and TaskRouter, and asks this module what each answer means and what to do next. Every
function here takes plain facts (statuses, journal states, times, the mode) and returns a
decision; nothing here awaits, sleeps, logs or reads a clock, so each decision has a table
test (``tests/domain/test_protocol.py``) that needs no event loop.

The decisions, in the order an intent meets them:

- ``reservation_deadline``: when a reservation stops taking changes (rule 4).
- ``announce_window`` and ``after_failed_announce``: how long an announce may take, and what a
  failed one means under ``strict`` or ``degrade`` (rule 7).
- ``fetch_first``, ``verdict``, ``verdict_on_refusal``, ``verdict_when_exhausted``: what a
  fetched status, a refusal or running out of attempts says about the change (rule 3: an
  ambiguous outcome is settled by a fetch, never by a blind resend).
- ``on_event`` and ``observation``: what TaskRouter's event does to the channel (rule 6).
- ``after_sending`` and ``instructed_outcome``: a voice instruction TaskRouter took rings the
  agent's leg, its item pending until the reservation is accepted or the offer ends; an
  instruction handed over (in a callback reply, or a voice one over REST) is never resent.
- ``recovery_action``: what recovery does with an unsettled intent (rule 5).
- ``catch_up``: whether an event that came while an intent was being settled must be shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from flex_bridge.domain.intents import ErrorInfo, Intent, State
from flex_bridge.domain.ops import INSTRUCTIONS, VOICE, outcome_of
from flex_bridge.domain.types import JSON, Op, Outcome, ReservationStatus, SyncMode

DEFAULT_RESERVATION_TIMEOUT: Final = 120
"""TaskRouter's default ``TaskReservationTimeout``, used when the workflow's is unknown."""
SETTLE_WINDOW: Final = 30.0
"""How long one settle may keep retrying Sync before it is left to recovery."""
ENRICH_MARGIN: Final = 1.0
"""Seconds kept for the REST call after enrichment, before the reservation's deadline."""
INSTRUCTION_GRACE: Final = 10.0
"""How long an instruction intent belongs to the callback answering with it."""

CONFLICT_CODES: Final = frozenset({20001, 40114, 40123, 40135, 40136, 40144})
"""Twilio's codes for "the reservation's state does not allow this change": 20001 (the state
does not allow it), 40114 call, 40123 redirect, 40135 dequeue and 40136 conference on a
reservation no longer pending, 40144 (a reservation no longer in the expected state)."""
EVENT_STATUS: Final[dict[str, ReservationStatus]] = {
    "reservation.accepted": "accepted",
    "reservation.rejected": "rejected",
    "reservation.timeout": "timeout",
    "reservation.canceled": "canceled",
    "reservation.rescinded": "rescinded",
    "reservation.wrapup": "wrapping",
    "reservation.completed": "completed",
}
ENDED_BY_TASKROUTER: Final = frozenset({"timeout", "canceled", "rescinded"})
"""Statuses nobody asked for: a reservation that reached one can take no more changes."""
OBSERVED_OP: Final[dict[str, Op]] = {
    "accepted": "accept",
    "rejected": "reject",
    "wrapping": "wrapup",
    "completed": "complete",
    "timeout": "accept",
    "canceled": "accept",
    "rescinded": "accept",
}
"""The op an item shows when TaskRouter changed a reservation with no intent of ours."""
STATUS_RANK: Final[dict[str, int]] = {
    "pending": 0,
    "accepted": 1,
    "wrapping": 2,
    "completed": 3,
    "rejected": 3,
    "timeout": 3,
    "canceled": 3,
    "rescinded": 3,
}
"""How far along its lifecycle a reservation status is: an event whose status is behind what
the channel already shows is a late delivery, and must not move the channel back."""


def behind(status: str | None, other: str | None) -> bool:
    """True when ``status`` is earlier in the reservation lifecycle than ``other``."""
    return STATUS_RANK.get(status or "", -1) < STATUS_RANK.get(other or "", -1)


def reservation_deadline(created_at: float | None, timeout: int | None, now: float) -> float:
    """When the reservation stops taking changes: its creation (``now`` when unknown) plus the
    workflow's reservation timeout (TaskRouter's default when unknown)."""
    start = now if created_at is None else created_at
    return start + (DEFAULT_RESERVATION_TIMEOUT if timeout is None else timeout)


# ------------------------------------------------------------------------------ announcing
@dataclass(frozen=True, slots=True)
class AnnounceWindow:
    """``retry_until``: the Sync write retries until then (None: no deadline). ``wait``: the
    announce is abandoned after this many seconds (None: no bound but ``retry_until``)."""

    retry_until: float | None
    wait: float | None


def announce_window(
    mode: SyncMode, now: float, announce_timeout: float, deadline: float | None
) -> AnnounceWindow:
    """``strict`` may retry Sync up to the reservation's deadline; ``degrade`` waits only
    ``announce_timeout``, and never past the deadline, before it goes ahead without the
    announcement."""
    bound = now + announce_timeout
    until: float | None = deadline if mode == "strict" else bound
    if until is not None and deadline is not None:
        until = min(until, deadline)
    wait = max(0.0, (bound if until is None else until) - now) if mode == "degrade" else None
    return AnnounceWindow(until, wait)


@dataclass(frozen=True, slots=True)
class Move:
    """A journal transition: the new ``state`` and the fields that change with it."""

    state: State
    error: ErrorInfo | None = None
    late_announce: bool = False

    def changes(self) -> JSON:
        out: JSON = {"state": self.state}
        if self.error is not None:
            out["error"] = self.error
        if self.late_announce:
            out["late_announce"] = True
        return out


def after_failed_announce(mode: SyncMode) -> Move:
    """Rule 7: ``strict`` makes no change without an announcement; ``degrade`` goes ahead and
    announces late (the settle writes the item, so the channel still converges)."""
    if mode == "strict":
        return Move(
            "refused", ErrorInfo(503, "not changed: Sync is unavailable and sync.mode is strict")
        )
    return Move("announced", late_announce=True)


# What ``flex_bridge_intents_total{outcome}`` says of a settled intent: a change that failed
# because the offer ended by itself (nobody asked: it timed out, the task was canceled, or
# TaskRouter rescinded it) is counted apart from a change TaskRouter refused.
ENDED_BY_ITSELF: Final = frozenset({"timeout", "canceled", "rescinded"})


def metric_outcome(outcome: str | None, reservation_status: str | None) -> str:
    """``applied``, ``failed``, or (a failure whose offer ended by itself) its status."""
    if outcome == "failed" and reservation_status in ENDED_BY_ITSELF:
        return reservation_status
    return outcome or "unknown"


# ------------------------------------------------------------------------- TaskRouter's word
@dataclass(frozen=True, slots=True)
class Verdict:
    """What the bridge concludes about an intent's change, and the reservation's status."""

    outcome: Outcome
    status: str | None
    error: ErrorInfo | None = None


def fetch_first(attempts: int, observed: str | None) -> bool:
    """Fetch before sending: after an attempt that may have gone through (rule 3), or when an
    event says TaskRouter ended the reservation (confirm before giving up)."""
    return attempts > 0 or observed in ENDED_BY_TASKROUTER


def verdict(op: Op, params: JSON, status: str, *, attempted: bool = False) -> Verdict | None:
    """What a fetched ``status`` says about the intent; None when the op may (still) be sent.

    ``attempted``: the op may have been sent already (an attempt was journaled). A voice
    instruction that may have been sent, on a reservation still pending, may be ringing the
    agent's leg: it is taken, never sent again (rule 8); if TaskRouter never got it, the
    reservation times out and the policy meets the next offer."""
    if op in VOICE and status == "pending":
        return Verdict("taken", status) if attempted else None
    found = outcome_of(op, params, status)
    if found == "retry":
        return None
    if found == "applied":
        return Verdict("applied", status)
    if found == "unknown":
        return Verdict(
            "refused",
            status,
            ErrorInfo(None, "the outcome of the instruction cannot be known; not resent"),
        )
    return Verdict(
        "refused", status, ErrorInfo(20001, f"reservation is {status}; {op} can no longer happen")
    )


def after_sending(op: Op, status: str) -> Verdict:
    """TaskRouter answered the change with the reservation's ``status``: a voice instruction
    on a reservation still pending rings the agent's leg (taken), anything else is applied."""
    return Verdict("taken" if op in VOICE and status == "pending" else "applied", status)


def verdict_when_gone(op: Op, last_seen: str | None) -> Verdict:
    """TaskRouter no longer knows the reservation (404, 20404): its task was deleted.

    Twilio deletes completed and canceled tasks after a short retention, so a ``complete`` or
    ``wrapup`` resumed late (after a crash, a long retry) meets a 404 for a task that is done:
    the agent has nothing left to do, and the item settles applied, showing the last status
    the bridge saw (as Flex's own template treats 20404 on completion). Any other op can no
    longer happen."""
    if op in ("complete", "wrapup"):
        return Verdict("applied", last_seen)
    return Verdict("refused", last_seen, ErrorInfo(20404, "the reservation no longer exists"))


def verdict_on_refusal(op: Op, fetched: Verdict | None, code: int | None, message: str) -> Verdict:
    """TaskRouter refused the change (4xx); ``fetched`` is what a fetch then said, if it could.

    The change may have been made already (by an earlier attempt of ours, or by Flex): then it
    is applied. Not for an instruction: a refused conference/dequeue/call/redirect did not
    happen, even when someone else has since accepted the reservation."""
    if fetched is not None and fetched.outcome == "applied" and op not in INSTRUCTIONS:
        return fetched
    return Verdict("refused", fetched.status if fetched else None, ErrorInfo(code, message))


def verdict_when_exhausted(
    last_look: Verdict | None, seen: str | None, code: int | None, http_status: int | None
) -> Verdict:
    """Out of attempts or time: one last look decides, without sending again. When it could
    not tell, the change did not happen; when it saw the reservation (still pending, say), the
    item says so and the plugin may act on it again (sync/README.md)."""
    if last_look is not None:
        return last_look
    resolved = code or (503 if http_status is None else http_status)
    why = f"HTTP {http_status}" if http_status else "no answer"
    return Verdict("refused", seen, ErrorInfo(resolved, f"TaskRouter is unavailable ({why})"))


# ---------------------------------------------------------------------------------- events
EventAction = Literal["ignore", "leave_to_driver", "resolve_instructed", "observe"]


def on_event(status: str, latest: Intent | None) -> EventAction:
    """Rule 6: TaskRouter's word settles the matching item, whoever caused the change.

    ``latest`` is the reservation's newest intent in the journal. An unsettled one is its
    driver's to settle (an instruction handed over in a callback reply is settled from the
    event itself); a channel that already shows this status, or a later one, stays; anything
    else (nothing known, another status, an intent that settled *failed* while TaskRouter says
    the change happened after all) makes the channel follow TaskRouter."""
    if latest is not None and not latest.settled:
        return "resolve_instructed" if latest.state == "instructed" else "leave_to_driver"
    if latest is None:
        return "observe"
    if latest.reservation_status == status or behind(status, latest.reservation_status):
        return "ignore"
    if status == "accepted" and latest.op == "accept" and latest.outcome == "applied":
        return "ignore"
    return "observe"


@dataclass(frozen=True, slots=True)
class Observation:
    """How an item shows a change TaskRouter made without an intent of ours."""

    op: Op
    source: Literal["taskrouter"]
    state: State
    error: ErrorInfo | None


def observation(status: str) -> Observation:
    ended = status in ENDED_BY_TASKROUTER
    return Observation(
        op=OBSERVED_OP[status],
        source="taskrouter",
        state="refused" if ended else "applied",
        error=ErrorInfo(None, f"reservation {status}") if ended else None,
    )


def observed_intent(
    intent_id: str,
    now: float,
    reservation_sid: str,
    task_sid: str,
    worker_sid: str,
    status: str,
) -> Intent:
    """The journal record of a change TaskRouter made with no intent of ours, ready to be
    settled on the channel."""
    seen = observation(status)
    return Intent(
        intent_id=intent_id,
        op=seen.op,
        reservation_sid=reservation_sid,
        task_sid=task_sid,
        worker_sid=worker_sid,
        source=seen.source,
        params={},
        state=seen.state,
        deadline=None,
        created_at=now,
        updated_at=now,
        reservation_status=status,
        error=seen.error,
    )


InstructedAction = Literal["wait", "applied", "refused"]


def instructed_outcome(op: Op, params: JSON, status: str) -> InstructedAction:
    """What ``status`` says about an instruction TaskRouter has (in a callback reply, or a
    voice instruction taken over REST).

    Still pending: wait, however long. The agent's leg may be ringing; or the reply never
    reached TaskRouter, and then the reservation times out and the policy meets the next
    offer. Either way the instruction is never sent again (rule 8). Left pending: applied
    when TaskRouter shows the op done (an instruction leaving no trace in the status, a call
    that does not accept, was taken as given), refused when the offer ended otherwise."""
    if status == "pending":
        return "wait"
    return "applied" if outcome_of(op, params, status) in ("applied", "unknown") else "refused"


# -------------------------------------------------------------------------------- recovery
RecoveryAction = Literal["skip", "start", "check_instructed"]


def recovery_action(intent: Intent, now: float, *, running: bool) -> RecoveryAction:
    """Rule 5: what recovery does with an unsettled intent.

    An instruction intent still ``recorded`` or ``announced`` belongs to the assignment
    callback answering with it, here or in another instance, until ``INSTRUCTION_GRACE`` has
    passed since its last step: driving it sooner would send the op over REST as well as in
    the reply, a double accept. After the grace that reply has long gone out without the
    instruction (the callback's budget is far shorter, and it instructs only when there is
    time to record that it did), or never went out (the process died), so the op goes over
    REST. An ``instructed`` intent is checked against TaskRouter after the grace, in case its
    event was lost (``instructed_outcome``): never sent again."""
    if running:
        return "skip"
    recent = now - intent.updated_at < INSTRUCTION_GRACE
    if intent.state == "instructed":
        return "skip" if recent else "check_instructed"
    if intent.via == "instruction" and intent.state in ("recorded", "announced") and recent:
        return "skip"
    return "start"


def catch_up(settled: Intent, started_at: float, observed: tuple[str, float] | None) -> str | None:
    """The status the channel must follow after ``settled`` was written, or None.

    Rule 6 for an event that came while the intent was unsettled (``on_event`` leaves such an
    intent to its driver): when TaskRouter reported a later status since the intent was
    created (``started_at``), the channel follows it. For example, Sync
    was down, the bridge's accept was refused (strict), and the agent accepted in Flex."""
    if observed is None:
        return None
    status, at = observed
    if at < started_at or not behind(settled.reservation_status, status):
        return None
    return status


def enrichment_budget(budget: float, deadline: float | None, now: float) -> float:
    """Enrich within the budget, leaving ``ENRICH_MARGIN`` for the REST call before the
    reservation's deadline."""
    if deadline is None:
        return budget
    return max(0.0, min(budget, deadline - now - ENRICH_MARGIN))
