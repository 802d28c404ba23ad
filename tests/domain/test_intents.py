"""Intents as plain values: phases, the Sync item, write ordering, ids, the public view."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from flex_bridge.domain.intents import (
    PHASE_RANK,
    STATES,
    UNSETTLED,
    ErrorInfo,
    Intent,
    channel_item,
    iso,
    item_order,
    may_overwrite,
    new_intent_id,
)
from flex_bridge.domain.types import OPS, SOURCES
from tests.support.intents import make_intent

ITEM_SCHEMA = Path(__file__).resolve().parents[2] / "sync" / "schema" / "item.v1.json"

WT = "WT" + "0123456789abcdef" * 2
WR = "WR" + "fedcba9876543210" * 2
WK = "WK" + "00112233445566778899aabbccddeeff"
T0 = 1_714_566_896.789  # 2024-05-01T12:34:56.789Z
ID_RE = re.compile(r"^in_[0-9a-f]{22}$")
# 12 hex digits of milliseconds: the id format holds until the year 10889.
MAX_SECONDS = (16**12 - 1) / 1000


@cache
def validator() -> Draft202012Validator:
    schema = json.loads(ITEM_SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_errors(item: Any) -> list[str]:
    return [e.message for e in validator().iter_errors(item)]


def make(**changes: Any) -> Intent:
    return make_intent(
        at=T0, reservation_sid=WR, task_sid=WT, worker_sid=WK, **{"state": "recorded", **changes}
    )


def item(intent_id: str, phase: str) -> dict[str, Any]:
    return {"intent_id": intent_id, "phase": phase}


# ------------------------------------------------------------------------------ phases
@pytest.mark.parametrize(
    ("state", "error", "phase", "outcome"),
    [
        ("recorded", None, "pending", None),
        ("announced", None, "pending", None),
        ("instructed", None, "pending", None),
        ("applied", None, "applied", None),
        ("refused", ErrorInfo(20001, "no"), "failed", None),
        ("refused", None, "failed", None),
        ("settled", None, "applied", "applied"),
        ("settled", ErrorInfo(20001, "no"), "failed", "failed"),
        ("settled", ErrorInfo(None, "deadline passed"), "failed", "failed"),
    ],
)
def test_phase_and_outcome(state: str, error: ErrorInfo | None, phase: str, outcome: Any) -> None:
    intent = make(state=state, error=error)
    assert intent.phase == phase
    assert intent.outcome == outcome
    assert intent.settled is (state == "settled")


def test_states_and_unsettled() -> None:
    assert set(STATES) == UNSETTLED | {"settled"}
    assert "settled" not in UNSETTLED


def test_evolve_returns_a_new_value() -> None:
    intent = make()
    moved = intent.evolve(state="announced", attempts=2)
    assert (intent.state, intent.attempts) == ("recorded", 0)
    assert (moved.state, moved.attempts) == ("announced", 2)
    with pytest.raises(AttributeError):
        intent.state = "settled"  # type: ignore[misc]


# ------------------------------------------------------------------------------ channel_item
KEYS = {
    "v",
    "intent_id",
    "op",
    "phase",
    "task_sid",
    "reservation_sid",
    "worker_sid",
    "source",
    "requested_at",
    "updated_at",
    "reservation_status",
    "error",
}


def test_channel_item_shape() -> None:
    intent = make(state="announced", source="policy")
    data = channel_item(intent, T0 + 1.5)
    assert data == {
        "v": 1,
        "intent_id": intent.intent_id,
        "op": "accept",
        "phase": "pending",
        "task_sid": WT,
        "reservation_sid": WR,
        "worker_sid": WK,
        "source": "policy",
        "requested_at": "2024-05-01T12:34:56.789Z",
        "updated_at": "2024-05-01T12:34:58.289Z",
        "reservation_status": None,
        "error": None,
    }
    assert schema_errors(data) == []
    json.dumps(data, allow_nan=False)  # plain JSON, nothing else


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(
    ("state", "error", "status"),
    [
        ("recorded", None, None),
        ("announced", None, None),
        ("instructed", None, None),
        ("applied", None, "accepted"),
        ("refused", ErrorInfo(20001, "not in expected state"), "accepted"),
        ("refused", None, "timeout"),
        ("settled", None, "wrapping"),
        ("settled", ErrorInfo(None, "deadline passed"), None),
        ("settled", ErrorInfo(40114, ""), "rescinded"),
        ("settled", ErrorInfo(20001, "x" * 5000), "canceled"),
    ],
)
def test_channel_item_validates_against_the_contract(
    op: str, source: str, state: str, error: ErrorInfo | None, status: str | None
) -> None:
    intent = make(op=op, source=source, state=state, error=error, reservation_status=status)
    data = channel_item(intent, T0 + 2)
    assert set(data) == KEYS
    assert schema_errors(data) == []
    assert data["phase"] == intent.phase
    assert (data["error"] is None) == (intent.phase != "failed")


def test_channel_item_error_details() -> None:
    refused = make(state="refused", error=ErrorInfo(20001, "Reservation is not pending"))
    assert channel_item(refused, T0)["error"] == {
        "code": 20001,
        "message": "Reservation is not pending",
    }
    no_reason = make(state="refused")
    assert channel_item(no_reason, T0)["error"] == {
        "code": None,
        "message": "the change was refused",
    }
    empty = make(state="settled", error=ErrorInfo(40114, ""))
    assert channel_item(empty, T0)["error"] == {"code": 40114, "message": "refused"}


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        pytest.param(
            ErrorInfo(503, "not changed: Sync is unavailable and sync.mode is strict"),
            {"code": None, "message": "not changed: Sync is unavailable and sync.mode is strict"},
            id="an HTTP status is the bridge's own: code null",
        ),
        pytest.param(
            ErrorInfo(20404, "The requested resource /v1/Workspaces/WS1/Tasks/WT1 was not found"),
            {"code": 20404, "message": "The requested resource was not found"},
            id="Twilio's path is cut from its message",
        ),
        pytest.param(
            ErrorInfo(None, "POST /v1/Services/IS1/Maps/m/Items: HTTP 503; see https://x.test/a"),
            {"code": None, "message": "HTTP 503; see"},
            id="request lines and URLs never reach the agent",
        ),
    ],
)
def test_agents_see_twilio_codes_and_no_internal_urls(
    error: ErrorInfo, shown: dict[str, object]
) -> None:
    assert channel_item(make(state="refused", error=error), T0)["error"] == shown
    assert make(state="settled", error=error).to_json()["error"] == shown
    long = make(state="settled", error=ErrorInfo(1, "y" * 2000))
    assert len(channel_item(long, T0)["error"]["message"]) == 1024


def test_an_applied_item_carries_no_error_even_if_the_intent_kept_one() -> None:
    # "applied" is the journal state between TaskRouter's yes and the settle write.
    data = channel_item(make(state="applied", error=ErrorInfo(20001, "stale")), T0)
    assert data["error"] is None
    assert schema_errors(data) == []


def test_the_schema_is_not_a_rubber_stamp() -> None:
    good = channel_item(make(state="announced"), T0)
    assert schema_errors(good) == []
    assert schema_errors({**good, "phase": "done"})
    assert schema_errors({**good, "extra": 1})
    assert schema_errors({**good, "phase": "failed"})  # failed needs an error
    assert schema_errors({**good, "error": {"code": 1, "message": "x"}})  # pending has none
    assert schema_errors({**good, "intent_id": "in_XYZ"})
    assert schema_errors({**good, "updated_at": "2024-05-01T12:34:56Z"})


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (T0, "2024-05-01T12:34:56.789Z"),
        (1_704_067_199.5, "2023-12-31T23:59:59.500Z"),
        (1_704_067_200.0, "2024-01-01T00:00:00.000Z"),
    ],
)
def test_iso(ts: float, text: str) -> None:
    assert iso(ts) == text


# ------------------------------------------------------------------------------ ordering
OLD = "in_000000000001" + "0" * 10
NEW = "in_000000000002" + "0" * 10


def test_item_order() -> None:
    assert item_order(None) == ("", -1)
    assert item_order({}) == ("", -1)
    assert item_order(item(OLD, "pending")) == (OLD, 0)
    assert item_order(item(OLD, "failed")) == (OLD, 1)
    assert item_order(item(OLD, "applied")) == (OLD, 2)
    assert item_order(item(OLD, "bogus")) == (OLD, -1)
    assert PHASE_RANK["pending"] < PHASE_RANK["failed"] < PHASE_RANK["applied"]


@pytest.mark.parametrize("phase", ["pending", "applied", "failed"])
def test_anything_may_be_written_where_nothing_is(phase: str) -> None:
    assert may_overwrite(None, item(OLD, phase))
    assert may_overwrite({}, item(OLD, phase))


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("pending", "pending", True),  # the same write again
        ("pending", "applied", True),
        ("pending", "failed", True),
        ("applied", "applied", True),
        ("failed", "failed", True),
        ("applied", "pending", False),
        ("failed", "pending", False),
        # TaskRouter's word can correct a failure; an applied item never turns failed.
        ("failed", "applied", True),
        ("applied", "failed", False),
    ],
)
def test_phases_of_one_intent_never_go_backwards(current: str, new: str, allowed: bool) -> None:
    assert may_overwrite(item(OLD, current), item(OLD, new)) is allowed


PHASES = ["pending", "applied", "failed"]


@pytest.mark.parametrize("old_phase", PHASES)
@pytest.mark.parametrize("new_phase", PHASES)
def test_newer_intents_win_whatever_the_phases(old_phase: str, new_phase: str) -> None:
    assert may_overwrite(item(OLD, old_phase), item(NEW, new_phase))
    assert not may_overwrite(item(NEW, new_phase), item(OLD, old_phase))


def test_ordering_follows_real_channel_items() -> None:
    first = make(intent_id=new_intent_id(T0), state="announced")
    second = make(intent_id=new_intent_id(T0 + 0.002), state="announced")
    pending = channel_item(first, T0)
    settled = channel_item(first.evolve(state="settled"), T0 + 1)
    newer = channel_item(second, T0 + 2)
    assert may_overwrite(pending, settled)
    assert not may_overwrite(settled, pending)
    assert may_overwrite(settled, newer)
    assert not may_overwrite(newer, settled)


ids = st.integers(min_value=0, max_value=16**12 - 1).map(lambda n: f"in_{n:012x}" + "0" * 10)
items = st.builds(item, ids, st.sampled_from(PHASES))


@given(st.lists(items, min_size=1, max_size=30))
def test_a_channel_written_through_may_overwrite_never_moves_backwards(
    writes: list[dict[str, Any]],
) -> None:
    current: dict[str, Any] | None = None
    for new in writes:
        before = item_order(current)
        if may_overwrite(current, new):
            current = new
        assert item_order(current) >= before
    # The channel ends at the greatest item written, whatever the order of the writes.
    assert item_order(current) == max(item_order(w) for w in writes)


@given(items, items)
def test_may_overwrite_is_total(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert may_overwrite(a, b) or may_overwrite(b, a)
    if may_overwrite(a, b) and may_overwrite(b, a):
        assert item_order(a) == item_order(b)


# ------------------------------------------------------------------------------ intent ids
def test_new_intent_id_format() -> None:
    intent_id = new_intent_id(T0)
    assert ID_RE.match(intent_id)
    assert intent_id.startswith("in_" + format(int(T0 * 1000), "012x"))
    assert ID_RE.match(new_intent_id())


def test_new_intent_ids_in_one_millisecond_are_distinct() -> None:
    made = {new_intent_id(T0) for _ in range(200)}
    assert len(made) == 200


seconds = st.floats(min_value=0, max_value=MAX_SECONDS, allow_nan=False)


@given(seconds, seconds)
def test_new_intent_id_sorts_by_time(t1: float, t2: float) -> None:
    a, b = new_intent_id(t1), new_intent_id(t2)
    assert ID_RE.match(a) and ID_RE.match(b)
    if int(t1 * 1000) < int(t2 * 1000):
        assert a < b
    elif int(t1 * 1000) > int(t2 * 1000):
        assert a > b
    else:
        assert a[:15] == b[:15]


# ISO 8601 has four-digit years: up to 9999-12-31T23:59:59.999Z.
four_digit_years = st.floats(min_value=0, max_value=253_402_300_799.999, allow_nan=False)


@given(four_digit_years, four_digit_years)
def test_iso_keeps_the_order_of_time(t1: float, t2: float) -> None:
    if t1 <= t2:
        assert iso(t1) <= iso(t2)


# ------------------------------------------------------------------------------ to_json
def test_to_json_of_a_pending_intent() -> None:
    intent = make(state="announced", attempts=1, via="instruction")
    assert intent.to_json() == {
        "intent_id": intent.intent_id,
        "op": "accept",
        "reservation_sid": WR,
        "task_sid": WT,
        "worker_sid": WK,
        "source": "plugin",
        "via": "instruction",
        "state": "announced",
        "phase": "pending",
        "outcome": None,
        "attempts": 1,
        "reservation_status": None,
        "error": None,
        "created_at": "2024-05-01T12:34:56.789Z",
        "updated_at": "2024-05-01T12:34:56.789Z",
    }


def test_to_json_of_a_settled_failure() -> None:
    intent = make(
        state="settled",
        reservation_status="timeout",
        error=ErrorInfo(20001, "timed out"),
        updated_at=T0 + 3,
    )
    view = intent.to_json()
    assert view["phase"] == "failed"
    assert view["outcome"] == "failed"
    assert view["error"] == {"code": 20001, "message": "timed out"}
    assert view["reservation_status"] == "timeout"
    assert view["updated_at"] == "2024-05-01T12:34:59.789Z"
    # The public view never shows the op's parameters or the internal extras.
    assert "params" not in view and "extra" not in view
    json.dumps(view, allow_nan=False)
