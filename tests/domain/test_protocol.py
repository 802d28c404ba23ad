"""The coordination protocol's decisions, as tables: pure functions, no event loop.

Each row reads as a sentence (its id says it); the expected values are written out by hand
from the rules in ``flex_bridge/domain/ops.py`` and ``flex_bridge/domain/protocol.py``, never
computed by the code under test.
"""

from __future__ import annotations

from typing import Any, get_args

import pytest

from flex_bridge.domain.intents import ErrorInfo, Intent
from flex_bridge.domain.protocol import (
    DEFAULT_RESERVATION_TIMEOUT,
    ENDED_BY_TASKROUTER,
    ENRICH_MARGIN,
    EVENT_STATUS,
    INSTRUCTION_GRACE,
    OBSERVED_OP,
    STATUS_RANK,
    AnnounceWindow,
    EventAction,
    InstructedAction,
    Move,
    Observation,
    RecoveryAction,
    Verdict,
    after_failed_announce,
    after_sending,
    announce_window,
    behind,
    catch_up,
    enrichment_budget,
    fetch_first,
    instructed_outcome,
    observation,
    observed_intent,
    on_event,
    recovery_action,
    reservation_deadline,
    verdict,
    verdict_on_refusal,
    verdict_when_exhausted,
    verdict_when_gone,
)
from flex_bridge.domain.types import JSON, OPS, Op, ReservationStatus, SyncMode
from tests.support.intents import make_intent

WT = "WT" + "0123456789abcdef" * 2
WR = "WR" + "fedcba9876543210" * 2
WK = "WK" + "00112233445566778899aabbccddeeff"
T0 = 1_714_566_896.0

STATUSES: tuple[str, ...] = get_args(ReservationStatus)
EVENTS = (
    "reservation.accepted",
    "reservation.rejected",
    "reservation.timeout",
    "reservation.canceled",
    "reservation.rescinded",
    "reservation.wrapup",
    "reservation.completed",
)


def make(state: str, **changes: Any) -> Intent:
    """A plugin accept for WR, last changed at T0, in ``state``, changed as a row needs."""
    return make_intent(
        at=T0, reservation_sid=WR, task_sid=WT, worker_sid=WK, state=state, **changes
    )


def params_for(accept: bool | None) -> JSON:
    """An op's params; ``accept`` is the call/redirect ``accept`` flag (None: not given)."""
    return {"task_sid": WT} if accept is None else {"task_sid": WT, "accept": accept}


def test_the_constants_the_rows_are_written_with() -> None:
    assert DEFAULT_RESERVATION_TIMEOUT == 120
    assert INSTRUCTION_GRACE == 10.0
    assert ENRICH_MARGIN == 1.0
    assert STATUSES == (
        "pending",
        "accepted",
        "rejected",
        "timeout",
        "canceled",
        "rescinded",
        "wrapping",
        "completed",
    )


# ---------------------------------------------------------------------- reservation_deadline
@pytest.mark.parametrize(
    ("created_at", "timeout", "now", "deadline"),
    [
        pytest.param(1000.0, 30, 1050.0, 1030.0, id="created at 1000 with a 30 s timeout: 1030"),
        pytest.param(None, 30, 1050.0, 1080.0, id="creation unknown: counted from now"),
        pytest.param(1000.0, None, 1050.0, 1120.0, id="timeout unknown: the default 120 s"),
        pytest.param(None, None, 1050.0, 1170.0, id="both unknown: now plus 120 s"),
        pytest.param(1000.0, 0, 1050.0, 1000.0, id="a zero timeout is known, not the default"),
    ],
)
def test_reservation_deadline(
    created_at: float | None, timeout: int | None, now: float, deadline: float
) -> None:
    assert reservation_deadline(created_at, timeout, now) == deadline


# --------------------------------------------------------------------------- announcing
# now = 100, announce_timeout = 5: the announce bound is 105.
@pytest.mark.parametrize(
    ("mode", "deadline", "retry_until", "wait"),
    [
        pytest.param("strict", None, None, None, id="strict, no deadline: retries, no bound"),
        pytest.param("strict", 103.0, 103.0, None, id="strict, deadline before bound: deadline"),
        pytest.param("strict", 200.0, 200.0, None, id="strict, deadline after bound: deadline"),
        pytest.param("strict", 90.0, 90.0, None, id="strict, deadline passed: the deadline"),
        pytest.param("degrade", None, 105.0, 5.0, id="degrade, no deadline: waits 5 s"),
        pytest.param("degrade", 200.0, 105.0, 5.0, id="degrade, deadline after bound: 5 s"),
        pytest.param(
            "degrade",
            103.0,
            103.0,
            3.0,
            id="degrade, deadline before bound: only until the deadline",
        ),
        pytest.param(
            "degrade",
            90.0,
            90.0,
            0.0,
            id="degrade, deadline passed: no wait",
        ),
    ],
)
def test_announce_window(
    mode: SyncMode, deadline: float | None, retry_until: float | None, wait: float | None
) -> None:
    assert announce_window(mode, 100.0, 5.0, deadline) == AnnounceWindow(retry_until, wait)


@pytest.mark.parametrize(
    ("mode", "deadline", "retry_until"),
    [
        pytest.param("degrade", 103.0, 103.0, id="degrade retries Sync no later than a deadline"),
        pytest.param("degrade", 90.0, 90.0, id="degrade starts no retry past a passed deadline"),
    ],
)
def test_degrade_retries_stop_at_the_deadline(
    mode: SyncMode, deadline: float, retry_until: float
) -> None:
    assert announce_window(mode, 100.0, 5.0, deadline).retry_until == retry_until


STRICT_REFUSAL = ErrorInfo(503, "not changed: Sync is unavailable and sync.mode is strict")


@pytest.mark.parametrize(
    ("mode", "move", "changes"),
    [
        pytest.param(
            "strict",
            Move("refused", STRICT_REFUSAL),
            {"state": "refused", "error": STRICT_REFUSAL},
            id="strict: refused with 503, naming strict mode (no internal detail)",
        ),
        pytest.param(
            "degrade",
            Move("announced", late_announce=True),
            {"state": "announced", "late_announce": True},
            id="degrade: goes ahead as announced, to be announced late",
        ),
    ],
)
def test_after_failed_announce(mode: SyncMode, move: Move, changes: JSON) -> None:
    found = after_failed_announce(mode)
    assert found == move
    assert found.changes() == changes


@pytest.mark.parametrize(
    ("move", "changes"),
    [
        pytest.param(Move("settled"), {"state": "settled"}, id="a bare state changes only it"),
        pytest.param(
            Move("refused", ErrorInfo(None, "x"), late_announce=True),
            {"state": "refused", "error": ErrorInfo(None, "x"), "late_announce": True},
            id="an error and a late announce change with it",
        ),
    ],
)
def test_move_changes(move: Move, changes: JSON) -> None:
    assert move.changes() == changes


# ---------------------------------------------------------------------------- fetch_first
@pytest.mark.parametrize(
    ("attempts", "observed", "fetch"),
    [
        pytest.param(0, None, False, id="first attempt, no event: send"),
        pytest.param(0, "pending", False, id="first attempt, pending seen: send"),
        pytest.param(0, "accepted", False, id="first attempt, accepted seen: send"),
        pytest.param(0, "rejected", False, id="first attempt, rejected seen (asked for): send"),
        pytest.param(0, "timeout", True, id="first attempt, timeout seen: confirm first"),
        pytest.param(0, "canceled", True, id="first attempt, canceled seen: confirm first"),
        pytest.param(0, "rescinded", True, id="first attempt, rescinded seen: confirm first"),
        pytest.param(1, None, True, id="after an attempt, no event: fetch first"),
        pytest.param(1, "pending", True, id="after an attempt, pending seen: fetch first"),
        pytest.param(1, "accepted", True, id="after an attempt, accepted seen: fetch first"),
        pytest.param(1, "timeout", True, id="after an attempt, timeout seen: fetch first"),
        pytest.param(1, "canceled", True, id="after an attempt, canceled seen: fetch first"),
        pytest.param(1, "rescinded", True, id="after an attempt, rescinded seen: fetch first"),
    ],
)
def test_fetch_first(attempts: int, observed: str | None, fetch: bool) -> None:
    assert fetch_first(attempts, observed) is fetch


# -------------------------------------------------------------------------------- verdict
SEND = "may be sent"
APPLIED = "applied"
GONE = "refused, can no longer happen"
UNKNOWABLE = "refused, cannot be known"
UNKNOWABLE_MESSAGE = "the outcome of the instruction cannot be known; not resent"


def row(op: str, accept: bool | None, status: str, expect: str) -> pytest.ParameterSet:
    flag = "" if accept is None else f" (accept={str(accept).lower()})"
    return pytest.param(op, accept, status, expect, id=f"{op}{flag} on {status}: {expect}")


VERDICTS = [
    # accept needs pending and leads to accepted; accepted and beyond mean it happened.
    row("accept", None, "pending", SEND),
    row("accept", None, "accepted", APPLIED),
    row("accept", None, "wrapping", APPLIED),
    row("accept", None, "completed", APPLIED),
    row("accept", None, "rejected", GONE),
    row("accept", None, "timeout", GONE),
    row("accept", None, "canceled", GONE),
    row("accept", None, "rescinded", GONE),
    # reject needs pending and leads to rejected.
    row("reject", None, "pending", SEND),
    row("reject", None, "rejected", APPLIED),
    row("reject", None, "accepted", GONE),
    row("reject", None, "wrapping", GONE),
    row("reject", None, "completed", GONE),
    row("reject", None, "timeout", GONE),
    row("reject", None, "canceled", GONE),
    row("reject", None, "rescinded", GONE),
    # conference and dequeue: like accept.
    row("conference", None, "pending", SEND),
    row("conference", None, "accepted", APPLIED),
    row("conference", None, "wrapping", APPLIED),
    row("conference", None, "completed", APPLIED),
    row("conference", None, "rejected", GONE),
    row("conference", None, "timeout", GONE),
    row("conference", None, "canceled", GONE),
    row("conference", None, "rescinded", GONE),
    row("dequeue", None, "pending", SEND),
    row("dequeue", None, "accepted", APPLIED),
    row("dequeue", None, "wrapping", APPLIED),
    row("dequeue", None, "completed", APPLIED),
    row("dequeue", None, "rejected", GONE),
    row("dequeue", None, "timeout", GONE),
    row("dequeue", None, "canceled", GONE),
    row("dequeue", None, "rescinded", GONE),
    # call and redirect that accept: like accept.
    row("call", True, "pending", SEND),
    row("call", True, "accepted", APPLIED),
    row("call", True, "wrapping", APPLIED),
    row("call", True, "completed", APPLIED),
    row("call", True, "rejected", GONE),
    row("call", True, "timeout", GONE),
    row("call", True, "canceled", GONE),
    row("call", True, "rescinded", GONE),
    row("redirect", True, "pending", SEND),
    row("redirect", True, "accepted", APPLIED),
    row("redirect", True, "wrapping", APPLIED),
    row("redirect", True, "completed", APPLIED),
    row("redirect", True, "rejected", GONE),
    row("redirect", True, "timeout", GONE),
    row("redirect", True, "canceled", GONE),
    row("redirect", True, "rescinded", GONE),
    # call and redirect that do not accept leave no trace on pending: never resent.
    row("call", False, "pending", SEND),  # never sent yet: voice, see the attempted table
    row("call", False, "accepted", APPLIED),
    row("call", False, "wrapping", APPLIED),
    row("call", False, "completed", APPLIED),
    row("call", False, "rejected", GONE),
    row("call", False, "timeout", GONE),
    row("call", False, "canceled", GONE),
    row("call", False, "rescinded", GONE),
    row("redirect", False, "pending", UNKNOWABLE),
    row("redirect", False, "accepted", APPLIED),
    row("redirect", False, "wrapping", APPLIED),
    row("redirect", False, "completed", APPLIED),
    row("redirect", False, "rejected", GONE),
    row("redirect", False, "timeout", GONE),
    row("redirect", False, "canceled", GONE),
    row("redirect", False, "rescinded", GONE),
    # without the flag, a call or redirect does not accept.
    row("call", None, "pending", SEND),
    row("call", None, "accepted", APPLIED),
    row("redirect", None, "pending", UNKNOWABLE),
    row("redirect", None, "timeout", GONE),
    # wrapup needs accepted and leads to wrapping; pending is not yet, completed moved on.
    row("wrapup", None, "accepted", SEND),
    row("wrapup", None, "wrapping", APPLIED),
    row("wrapup", None, "pending", GONE),
    row("wrapup", None, "completed", GONE),
    row("wrapup", None, "rejected", GONE),
    row("wrapup", None, "timeout", GONE),
    row("wrapup", None, "canceled", GONE),
    row("wrapup", None, "rescinded", GONE),
    # complete needs accepted or wrapping and leads to completed.
    row("complete", None, "accepted", SEND),
    row("complete", None, "wrapping", SEND),
    row("complete", None, "completed", APPLIED),
    row("complete", None, "pending", GONE),
    row("complete", None, "rejected", GONE),
    row("complete", None, "timeout", GONE),
    row("complete", None, "canceled", GONE),
    row("complete", None, "rescinded", GONE),
]


def expected_verdict(op: str, status: str, expect: str) -> Verdict | None:
    if expect == SEND:
        return None
    if expect == APPLIED:
        return Verdict("applied", status)
    if expect == UNKNOWABLE:
        message = UNKNOWABLE_MESSAGE
        return Verdict("refused", status, ErrorInfo(None, message))
    message = f"reservation is {status}; {op} can no longer happen"
    return Verdict("refused", status, ErrorInfo(20001, message))


@pytest.mark.parametrize(("op", "accept", "status", "expect"), VERDICTS)
def test_verdict(op: Op, accept: bool | None, status: str, expect: str) -> None:
    assert verdict(op, params_for(accept), status) == expected_verdict(op, status, expect)


TAKEN = Verdict("taken", "pending")


@pytest.mark.parametrize(
    ("op", "accept", "status", "expected"),
    [
        # A voice instruction that may have been sent, on a reservation still pending, may be
        # ringing: taken, never sent again (rule 8).
        pytest.param("conference", None, "pending", TAKEN, id="conference, pending: taken"),
        pytest.param("dequeue", None, "pending", TAKEN, id="dequeue, pending: taken"),
        pytest.param("call", True, "pending", TAKEN, id="call, pending: taken"),
        pytest.param("call", False, "pending", TAKEN, id="call not accepting, pending: taken"),
        # Not voice: the same answers as before any attempt.
        pytest.param("accept", None, "pending", None, id="accept, pending: may be sent"),
        pytest.param(
            "redirect",
            False,
            "pending",
            Verdict("refused", "pending", ErrorInfo(None, UNKNOWABLE_MESSAGE)),
            id="redirect not accepting, pending: cannot be known",
        ),
        pytest.param(
            "conference",
            None,
            "accepted",
            Verdict("applied", "accepted"),
            id="conference, accepted: applied",
        ),
    ],
)
def test_verdict_after_an_attempt(
    op: Op, accept: bool | None, status: str, expected: Verdict | None
) -> None:
    assert verdict(op, params_for(accept), status, attempted=True) == expected


@pytest.mark.parametrize(
    ("op", "status", "expected"),
    [
        pytest.param("conference", "pending", TAKEN, id="conference answered pending: ringing"),
        pytest.param("dequeue", "pending", TAKEN, id="dequeue answered pending: ringing"),
        pytest.param("call", "pending", TAKEN, id="call answered pending: ringing"),
        pytest.param(
            "conference", "accepted", Verdict("applied", "accepted"), id="answered at once"
        ),
        pytest.param(
            "redirect", "pending", Verdict("applied", "pending"), id="redirect: not voice"
        ),
        pytest.param("accept", "accepted", Verdict("applied", "accepted"), id="accept: applied"),
    ],
)
def test_after_sending(op: Op, status: str, expected: Verdict) -> None:
    assert after_sending(op, status) == expected


def test_the_verdict_table_covers_every_op_and_status() -> None:
    rows = {(p.values[0], p.values[1], p.values[2]) for p in VERDICTS}
    for op in OPS:
        flags: tuple[bool | None, ...] = (True, False) if op in ("call", "redirect") else (None,)
        for accept in flags:
            for status in STATUSES:
                assert (op, accept, status) in rows, (op, accept, status)


# ------------------------------------------------------------------------ verdict_on_refusal
NO = ErrorInfo(20001, "Reservation is not pending")


@pytest.mark.parametrize(
    ("op", "fetched", "expected"),
    [
        pytest.param(
            "accept", None, Verdict("refused", None, NO), id="accept, fetch failed: refused"
        ),
        pytest.param(
            "conference",
            None,
            Verdict("refused", None, NO),
            id="conference, fetch failed: refused",
        ),
        pytest.param(
            "accept",
            Verdict("applied", "accepted"),
            Verdict("applied", "accepted"),
            id="accept refused, yet the reservation is accepted: applied",
        ),
        pytest.param(
            "reject",
            Verdict("applied", "rejected"),
            Verdict("applied", "rejected"),
            id="reject refused, yet the reservation is rejected: applied",
        ),
        pytest.param(
            "wrapup",
            Verdict("applied", "wrapping"),
            Verdict("applied", "wrapping"),
            id="wrapup refused, yet the reservation is wrapping: applied",
        ),
        pytest.param(
            "complete",
            Verdict("applied", "completed"),
            Verdict("applied", "completed"),
            id="complete refused, yet the reservation is completed: applied",
        ),
        pytest.param(
            "conference",
            Verdict("applied", "accepted"),
            Verdict("refused", "accepted", NO),
            id="a refused conference stays refused though the reservation is now accepted",
        ),
        pytest.param(
            "dequeue",
            Verdict("applied", "accepted"),
            Verdict("refused", "accepted", NO),
            id="a refused dequeue stays refused though the reservation is now accepted",
        ),
        pytest.param(
            "call",
            Verdict("applied", "accepted"),
            Verdict("refused", "accepted", NO),
            id="a refused call stays refused though the reservation is now accepted",
        ),
        pytest.param(
            "redirect",
            Verdict("applied", "wrapping"),
            Verdict("refused", "wrapping", NO),
            id="a refused redirect stays refused though the reservation moved on",
        ),
        pytest.param(
            "accept",
            Verdict("refused", "timeout", ErrorInfo(20001, "reservation is timeout; …")),
            Verdict("refused", "timeout", NO),
            id="accept refused, reservation timed out: refused with TaskRouter's error",
        ),
    ],
)
def test_verdict_on_refusal(op: Op, fetched: Verdict | None, expected: Verdict) -> None:
    assert verdict_on_refusal(op, fetched, NO.code, NO.message) == expected


def test_verdict_on_refusal_keeps_a_refusal_without_a_code() -> None:
    assert verdict_on_refusal("accept", None, None, "no") == Verdict(
        "refused", None, ErrorInfo(None, "no")
    )


# -------------------------------------------------------------------- verdict_when_exhausted
LOOK_APPLIED = Verdict("applied", "accepted")
LOOK_GONE = Verdict("refused", "timeout", ErrorInfo(20001, "reservation is timeout; …"))


def unavailable(code: int | None, http_status: int | None) -> ErrorInfo:
    why = f"HTTP {http_status}" if http_status else "no answer"
    return ErrorInfo(code, f"TaskRouter is unavailable ({why})")


@pytest.mark.parametrize(
    ("last_look", "seen", "code", "http_status", "expected"),
    [
        pytest.param(
            LOOK_APPLIED, "accepted", None, 503, LOOK_APPLIED, id="a last look seeing it done wins"
        ),
        pytest.param(
            LOOK_GONE, "timeout", 20001, 503, LOOK_GONE, id="a last look seeing it gone wins"
        ),
        pytest.param(
            None,
            None,
            20001,
            400,
            Verdict("refused", None, unavailable(20001, 400)),
            id="no look: refused with TaskRouter's code",
        ),
        pytest.param(
            None,
            None,
            20429,
            429,
            Verdict("refused", None, unavailable(20429, 429)),
            id="no look: the code wins over the HTTP status",
        ),
        pytest.param(
            None,
            None,
            None,
            429,
            Verdict("refused", None, unavailable(429, 429)),
            id="no look, no code: the HTTP status",
        ),
        pytest.param(
            None,
            None,
            None,
            None,
            Verdict("refused", None, unavailable(503, None)),
            id="no look, no code, no HTTP status (connection refused): 503",
        ),
        pytest.param(
            None,
            "pending",
            None,
            502,
            Verdict("refused", "pending", unavailable(502, 502)),
            id="seen still pending (may be sent): refused, showing pending",
        ),
    ],
)
def test_verdict_when_exhausted(
    last_look: Verdict | None,
    seen: str | None,
    code: int | None,
    http_status: int | None,
    expected: Verdict,
) -> None:
    found = verdict_when_exhausted(last_look, seen, code, http_status)
    assert found == expected


# --------------------------------------------------------------------------------- on_event
FAILED = ErrorInfo(20001, "no")


@pytest.mark.parametrize(
    ("status", "latest", "action"),
    [
        pytest.param("accepted", None, "observe", id="accepted, nothing journaled: observe"),
        pytest.param("timeout", None, "observe", id="timeout, nothing journaled: observe"),
        pytest.param(
            "accepted", make("recorded"), "leave_to_driver", id="accepted, accept recorded: driver"
        ),
        pytest.param(
            "accepted", make("announced"), "leave_to_driver", id="accepted, announced: driver"
        ),
        pytest.param(
            "accepted", make("applied"), "leave_to_driver", id="accepted, applied: driver"
        ),
        pytest.param(
            "accepted",
            make("refused", error=FAILED),
            "leave_to_driver",
            id="accepted, refused unsettled: driver",
        ),
        pytest.param(
            "timeout", make("recorded"), "leave_to_driver", id="timeout, recorded: driver"
        ),
        pytest.param(
            "accepted",
            make("instructed", op="conference", via="instruction"),
            "resolve_instructed",
            id="accepted, conference instructed: resolve it from the event",
        ),
        pytest.param(
            "timeout",
            make("instructed", op="conference", via="instruction"),
            "resolve_instructed",
            id="timeout, conference instructed: resolve it from the event",
        ),
        pytest.param(
            "accepted",
            make("settled", reservation_status="accepted"),
            "ignore",
            id="accepted, settled showing accepted: ignore",
        ),
        pytest.param(
            "timeout",
            make("settled", error=FAILED, reservation_status="timeout"),
            "ignore",
            id="timeout, settled failed showing timeout: ignore",
        ),
        pytest.param(
            "rejected",
            make("settled", op="reject", reservation_status="rejected"),
            "ignore",
            id="rejected, settled reject showing rejected: ignore",
        ),
        pytest.param(
            "accepted",
            make("settled", op="wrapup", reservation_status="wrapping"),
            "ignore",
            id="late accepted, settled wrapup showing wrapping: ignore",
        ),
        pytest.param(
            "wrapping",
            make("settled", op="complete", reservation_status="completed"),
            "ignore",
            id="late wrapping, settled complete showing completed: ignore",
        ),
        pytest.param(
            "accepted",
            make("settled", reservation_status=None),
            "ignore",
            id="accepted, settled applied accept not showing a status: ignore",
        ),
        pytest.param(
            "accepted",
            make("settled", reservation_status="pending"),
            "ignore",
            id="accepted, settled applied accept showing pending: ignore",
        ),
        pytest.param(
            "accepted",
            make("settled", error=FAILED, reservation_status=None),
            "observe",
            id="accepted, settled failed accept (strict refusal): observe",
        ),
        pytest.param(
            "accepted",
            make("settled", error=FAILED, reservation_status="pending"),
            "observe",
            id="accepted, settled failed accept showing pending: observe",
        ),
        pytest.param(
            "accepted",
            make("settled", op="reject", error=FAILED, reservation_status="pending"),
            "observe",
            id="accepted, settled failed reject showing pending: observe",
        ),
        pytest.param(
            "accepted",
            make("settled", op="conference", via="instruction", reservation_status="pending"),
            "observe",
            id="accepted, settled conference showing pending: observe",
        ),
        pytest.param(
            "wrapping",
            make("settled", reservation_status="accepted"),
            "observe",
            id="wrapping, settled accept showing accepted: observe",
        ),
        pytest.param(
            "completed",
            make("settled", op="wrapup", reservation_status="wrapping"),
            "observe",
            id="completed, settled wrapup showing wrapping: observe",
        ),
        pytest.param(
            "timeout",
            make("settled", error=FAILED, reservation_status="pending"),
            "observe",
            id="timeout, settled failed accept showing pending: observe",
        ),
    ],
)
def test_on_event(status: str, latest: Intent | None, action: EventAction) -> None:
    assert on_event(status, latest) == action


# ------------------------------------------------------------------------------ observation
OBSERVATIONS = [
    pytest.param(
        "accepted", Observation("accept", "taskrouter", "applied", None), id="accepted: accept"
    ),
    pytest.param(
        "rejected", Observation("reject", "taskrouter", "applied", None), id="rejected: reject"
    ),
    pytest.param(
        "wrapping", Observation("wrapup", "taskrouter", "applied", None), id="wrapping: wrapup"
    ),
    pytest.param(
        "completed",
        Observation("complete", "taskrouter", "applied", None),
        id="completed: complete applied",
    ),
    pytest.param(
        "timeout",
        Observation("accept", "taskrouter", "refused", ErrorInfo(None, "reservation timeout")),
        id="timeout: accept refused, observed from TaskRouter",
    ),
    pytest.param(
        "canceled",
        Observation("accept", "taskrouter", "refused", ErrorInfo(None, "reservation canceled")),
        id="canceled: accept refused",
    ),
    pytest.param(
        "rescinded",
        Observation("accept", "taskrouter", "refused", ErrorInfo(None, "reservation rescinded")),
        id="rescinded: accept refused",
    ),
]


@pytest.mark.parametrize(("status", "expected"), OBSERVATIONS)
def test_observation(status: str, expected: Observation) -> None:
    assert observation(status) == expected


@pytest.mark.parametrize(("status", "expected"), OBSERVATIONS)
def test_observed_intent(status: str, expected: Observation) -> None:
    intent = observed_intent("in_x", T0, WR, WT, WK, status)
    assert (intent.op, intent.source, intent.state, intent.error) == (
        expected.op,
        expected.source,
        expected.state,
        expected.error,
    )
    assert (intent.intent_id, intent.reservation_sid, intent.task_sid, intent.worker_sid) == (
        "in_x",
        WR,
        WT,
        WK,
    )
    assert (intent.created_at, intent.updated_at, intent.deadline) == (T0, T0, None)
    assert intent.reservation_status == status
    assert intent.params == {}


# ------------------------------------------------------------------------ instructed_outcome
def instructed(op: str, accept: bool | None, status: str, action: str) -> pytest.ParameterSet:
    flag = "" if accept is None else f" (accept={str(accept).lower()})"
    return pytest.param(op, accept, status, action, id=f"{op}{flag} on {status}: {action}")


@pytest.mark.parametrize(
    ("op", "accept", "status", "action"),
    [
        # Still pending: wait, however long (ringing, or the reply never reached TaskRouter and
        # the offer will time out). Never sent again: there is no "send" outcome at all.
        instructed("conference", None, "pending", "wait"),
        instructed("dequeue", None, "pending", "wait"),
        instructed("call", True, "pending", "wait"),
        instructed("redirect", True, "pending", "wait"),
        instructed("accept", None, "pending", "wait"),
        instructed("reject", None, "pending", "wait"),
        instructed("call", False, "pending", "wait"),
        instructed("redirect", False, "pending", "wait"),
        # Accepted, or moved on since: it happened (a call or redirect that does not accept
        # itself was taken as given). Ended otherwise: refused.
        instructed("conference", None, "accepted", "applied"),
        instructed("conference", None, "wrapping", "applied"),
        instructed("conference", None, "completed", "applied"),
        instructed("dequeue", None, "accepted", "applied"),
        instructed("call", True, "accepted", "applied"),
        instructed("call", False, "accepted", "applied"),
        instructed("redirect", False, "completed", "applied"),
        instructed("accept", None, "accepted", "applied"),
        instructed("reject", None, "rejected", "applied"),
        instructed("conference", None, "rejected", "refused"),
        instructed("conference", None, "timeout", "refused"),
        instructed("conference", None, "canceled", "refused"),
        instructed("conference", None, "rescinded", "refused"),
        instructed("dequeue", None, "timeout", "refused"),
        instructed("call", True, "canceled", "refused"),
        instructed("call", False, "rejected", "refused"),
        instructed("redirect", True, "rescinded", "refused"),
        instructed("accept", None, "timeout", "refused"),
        instructed("reject", None, "accepted", "refused"),
        instructed("reject", None, "timeout", "refused"),
    ],
)
def test_instructed_outcome(
    op: Op, accept: bool | None, status: str, action: InstructedAction
) -> None:
    assert instructed_outcome(op, params_for(accept), status) == action


# --------------------------------------------------------------------------- recovery_action
@pytest.mark.parametrize(
    ("intent", "age", "running", "action"),
    [
        pytest.param(
            make("instructed", op="conference", via="instruction"),
            60.0,
            True,
            "skip",
            id="driven here (instructed, old): skip",
        ),
        pytest.param(make("recorded"), 60.0, True, "skip", id="driven here (recorded): skip"),
        pytest.param(
            make("instructed", op="conference", via="instruction"),
            3.0,
            False,
            "skip",
            id="instructed 3 s ago: still the callback's",
        ),
        pytest.param(
            make("instructed", op="conference", via="instruction"),
            10.0,
            False,
            "check_instructed",
            id="instructed 10 s ago (the grace): check with TaskRouter",
        ),
        pytest.param(
            make("instructed", op="conference", via="instruction"),
            60.0,
            False,
            "check_instructed",
            id="instructed 60 s ago: check with TaskRouter",
        ),
        pytest.param(
            make("recorded", op="conference", via="instruction"),
            3.0,
            False,
            "skip",
            id="instruction recorded 3 s ago: the callback's",
        ),
        pytest.param(
            make("announced", op="conference", via="instruction"),
            3.0,
            False,
            "skip",
            id="instruction announced 3 s ago: the callback's",
        ),
        pytest.param(
            make("recorded", op="conference", via="instruction"),
            60.0,
            False,
            "start",
            id="instruction recorded 60 s ago: over REST",
        ),
        pytest.param(
            make("announced", op="conference", via="instruction"),
            10.0,
            False,
            "start",
            id="instruction announced 10 s ago (the grace): over REST",
        ),
        pytest.param(
            make("applied", op="conference", via="instruction"),
            3.0,
            False,
            "start",
            id="instruction applied 3 s ago: settle it",
        ),
        pytest.param(
            make("refused", op="conference", via="instruction", error=FAILED),
            3.0,
            False,
            "start",
            id="instruction refused 3 s ago: settle it",
        ),
        pytest.param(make("recorded"), 3.0, False, "start", id="REST recorded, no driver: start"),
        pytest.param(make("announced"), 3.0, False, "start", id="REST announced, no driver: start"),
        pytest.param(make("applied"), 3.0, False, "start", id="REST applied, no driver: start"),
        pytest.param(make("refused", error=FAILED), 3.0, False, "start", id="REST refused: start"),
        pytest.param(make("recorded"), 60.0, False, "start", id="REST recorded, old: start"),
    ],
)
def test_recovery_action(intent: Intent, age: float, running: bool, action: RecoveryAction) -> None:
    assert recovery_action(intent, T0 + age, running=running) == action


# --------------------------------------------------------------------------------- catch_up
@pytest.mark.parametrize(
    ("shown", "observed", "status"),
    [
        pytest.param(None, None, None, id="no event: nothing to follow"),
        pytest.param(
            None, ("accepted", T0 - 1), None, id="accepted before the settle began: not followed"
        ),
        pytest.param(
            None, ("accepted", T0), "accepted", id="accepted as the settle began: followed"
        ),
        pytest.param(
            None, ("accepted", T0 + 1), "accepted", id="strict refusal, then accepted: followed"
        ),
        pytest.param(
            "pending", ("accepted", T0 + 1), "accepted", id="shows pending, accepted: followed"
        ),
        pytest.param(
            "pending", ("timeout", T0 + 1), "timeout", id="shows pending, timed out: followed"
        ),
        pytest.param(
            "accepted", ("wrapping", T0 + 1), "wrapping", id="shows accepted, wrapping: followed"
        ),
        pytest.param(
            "accepted", ("accepted", T0 + 1), None, id="shows accepted, accepted: not ahead"
        ),
        pytest.param(
            "completed", ("accepted", T0 + 1), None, id="shows completed, accepted: behind"
        ),
        pytest.param(
            "rejected", ("timeout", T0 + 1), None, id="shows rejected, timeout: not ahead"
        ),
    ],
)
def test_catch_up(
    shown: str | None, observed: tuple[str, float] | None, status: str | None
) -> None:
    settled = make("settled", error=FAILED, reservation_status=shown)
    assert catch_up(settled, T0, observed) == status


# ------------------------------------------------------------------------ enrichment_budget
@pytest.mark.parametrize(
    ("deadline", "budget"),
    [
        pytest.param(None, 5.0, id="no deadline: the whole budget"),
        pytest.param(200.0, 5.0, id="deadline far: the whole budget"),
        pytest.param(106.0, 5.0, id="deadline exactly budget plus margin away: the whole budget"),
        pytest.param(103.0, 2.0, id="deadline 3 s away: 2 s, keeping 1 s for the REST call"),
        pytest.param(101.0, 0.0, id="deadline a margin away: nothing"),
        pytest.param(100.5, 0.0, id="deadline within the margin: nothing"),
        pytest.param(90.0, 0.0, id="deadline passed: nothing"),
    ],
)
def test_enrichment_budget(deadline: float | None, budget: float) -> None:
    assert enrichment_budget(5.0, deadline, 100.0) == budget


# ------------------------------------------------------------------ behind and STATUS_RANK
@pytest.mark.parametrize(
    ("status", "other", "is_behind"),
    [
        pytest.param("pending", "accepted", True, id="pending is behind accepted"),
        pytest.param("accepted", "wrapping", True, id="accepted is behind wrapping"),
        pytest.param("wrapping", "completed", True, id="wrapping is behind completed"),
        pytest.param("accepted", "timeout", True, id="accepted is behind timeout"),
        pytest.param("pending", "rejected", True, id="pending is behind rejected"),
        pytest.param("accepted", "pending", False, id="accepted is not behind pending"),
        pytest.param("completed", "wrapping", False, id="completed is not behind wrapping"),
        pytest.param("accepted", "accepted", False, id="a status is not behind itself"),
        pytest.param("rejected", "timeout", False, id="terminal statuses are level"),
        pytest.param("canceled", "completed", False, id="canceled is level with completed"),
        pytest.param(None, "pending", True, id="nothing known is behind pending"),
        pytest.param("pending", None, False, id="pending is not behind nothing known"),
        pytest.param(None, None, False, id="nothing known is not behind nothing known"),
        pytest.param("created", "pending", True, id="an unknown status is behind pending"),
    ],
)
def test_behind(status: str | None, other: str | None, is_behind: bool) -> None:
    assert behind(status, other) is is_behind


def test_status_rank_orders_the_lifecycle() -> None:
    assert set(STATUS_RANK) == set(STATUSES)
    assert STATUS_RANK["pending"] < STATUS_RANK["accepted"] < STATUS_RANK["wrapping"]
    assert STATUS_RANK["wrapping"] < STATUS_RANK["completed"]
    ends = {STATUS_RANK[s] for s in ("completed", "rejected", "timeout", "canceled", "rescinded")}
    assert ends == {STATUS_RANK["completed"]}


# ------------------------------------------------------------------------- event tables
@pytest.mark.parametrize(
    ("event", "status"),
    [
        pytest.param("reservation.accepted", "accepted", id="accepted event: accepted"),
        pytest.param("reservation.rejected", "rejected", id="rejected event: rejected"),
        pytest.param("reservation.timeout", "timeout", id="timeout event: timeout"),
        pytest.param("reservation.canceled", "canceled", id="canceled event: canceled"),
        pytest.param("reservation.rescinded", "rescinded", id="rescinded event: rescinded"),
        pytest.param("reservation.wrapup", "wrapping", id="wrapup event: wrapping"),
        pytest.param("reservation.completed", "completed", id="completed event: completed"),
    ],
)
def test_event_status(event: str, status: str) -> None:
    assert EVENT_STATUS[event] == status


def test_event_tables_cover_the_seven_reservation_events() -> None:
    assert set(EVENT_STATUS) == set(EVENTS)
    assert set(EVENT_STATUS.values()) == set(STATUSES) - {"pending"}
    assert set(OBSERVED_OP) == set(EVENT_STATUS.values())
    assert frozenset({"timeout", "canceled", "rescinded"}) == ENDED_BY_TASKROUTER


# ------------------------------------------------------------------------- verdict_when_gone
GONE_MESSAGE = ErrorInfo(20404, "the reservation no longer exists")


@pytest.mark.parametrize(
    ("op", "last_seen", "expected"),
    [
        pytest.param(
            "complete",
            "wrapping",
            Verdict("applied", "wrapping"),
            id="complete: done",
        ),
        pytest.param("complete", None, Verdict("applied", None), id="complete, nothing seen"),
        pytest.param("wrapup", "accepted", Verdict("applied", "accepted"), id="wrapup: done"),
        pytest.param(
            "accept", "pending", Verdict("refused", "pending", GONE_MESSAGE), id="accept: gone"
        ),
        pytest.param(
            "conference", None, Verdict("refused", None, GONE_MESSAGE), id="conference: gone"
        ),
    ],
)
def test_verdict_when_gone(op: Op, last_seen: str | None, expected: Verdict) -> None:
    assert verdict_when_gone(op, last_seen) == expected
