"""The reservation ops as pure data: form fields, instruction replies, outcomes, schemas."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema
import pytest

from flex_bridge.domain.ops import (
    INSTRUCTIONS,
    PARAM_SCHEMAS,
    RULES,
    instruction_reply,
    outcome_of,
    rest_params,
)
from flex_bridge.domain.types import OPS
from tests.support.emulator import spec_path

WT = "WT" + "0123456789abcdef" * 2
WA = "WA" + "abcdef0123456789" * 2
CA = "CA" + "00112233445566778899aabbccddeeff"
URL = "https://example.com/twiml"
CALLBACK = "https://example.com/status"

STATUSES = (
    "pending",
    "accepted",
    "rejected",
    "timeout",
    "canceled",
    "rescinded",
    "wrapping",
    "completed",
)

# A body using every parameter each op's schema allows.
FULL: dict[str, dict[str, Any]] = {
    "accept": {"task_sid": WT},
    "reject": {"task_sid": WT, "activity_sid": WA},
    "wrapup": {"task_sid": WT},
    "complete": {"task_sid": WT},
    "conference": {
        "task_sid": WT,
        "from": "+15550100",
        "to": "client:alice",
        "timeout": 30,
        "record": True,
        "post_work_activity_sid": WA,
        "status_callback": CALLBACK,
        "status_callback_event": ["initiated", "completed"],
        "conference_status_callback": CALLBACK,
        "conference_status_callback_event": ["start", "end"],
        "end_conference_on_exit": False,
        "early_media": True,
    },
    "dequeue": {
        "task_sid": WT,
        "from": "+15550100",
        "to": "client:alice",
        "post_work_activity_sid": WA,
        "record": "record-from-answer",
        "timeout": 20,
        "status_callback_url": CALLBACK,
        "status_callback_event": ["initiated", "completed"],
    },
    "call": {
        "task_sid": WT,
        "from": "+15550100",
        "to": "client:alice",
        "url": URL,
        "accept": True,
        "record": "record-from-answer",
        "timeout": 45,
        "status_callback_url": CALLBACK,
    },
    "redirect": {"task_sid": WT, "call_sid": CA, "url": URL, "accept": True},
}

EXPECTED_FORM: dict[str, dict[str, Any]] = {
    "accept": {"ReservationStatus": "accepted"},
    "reject": {"ReservationStatus": "rejected", "WorkerActivitySid": WA},
    "wrapup": {"ReservationStatus": "wrapping"},
    "complete": {"ReservationStatus": "completed"},
    "conference": {
        "Instruction": "conference",
        "From": "+15550100",
        "To": "client:alice",
        "Timeout": 30,
        "Record": "true",
        "PostWorkActivitySid": WA,
        "StatusCallback": CALLBACK,
        "StatusCallbackEvent": ["initiated", "completed"],
        "ConferenceStatusCallback": CALLBACK,
        "ConferenceStatusCallbackEvent": ["start", "end"],
        "EndConferenceOnExit": "false",
        "EarlyMedia": "true",
    },
    "dequeue": {
        "Instruction": "dequeue",
        "DequeueFrom": "+15550100",
        "DequeueTo": "client:alice",
        "DequeuePostWorkActivitySid": WA,
        "DequeueRecord": "record-from-answer",
        "DequeueTimeout": 20,
        "DequeueStatusCallbackUrl": CALLBACK,
        "DequeueStatusCallbackEvent": ["initiated", "completed"],
    },
    "call": {
        "Instruction": "call",
        "CallFrom": "+15550100",
        "CallTo": "client:alice",
        "CallUrl": URL,
        "CallAccept": "true",
        "CallRecord": "record-from-answer",
        "CallTimeout": 45,
        "CallStatusCallbackUrl": CALLBACK,
    },
    "redirect": {
        "Instruction": "redirect",
        "RedirectCallSid": CA,
        "RedirectUrl": URL,
        "RedirectAccept": "true",
    },
}

EXPECTED_REPLY: dict[str, dict[str, Any]] = {
    "accept": {"instruction": "accept"},
    "reject": {"instruction": "reject", "activity_sid": WA},
    "conference": {
        "instruction": "conference",
        "from": "+15550100",
        "to": "client:alice",
        "timeout": 30,
        "record": True,
        "post_work_activity_sid": WA,
        "status_callback": CALLBACK,
        "status_callback_event": "initiated,completed",
        "conference_status_callback": CALLBACK,
        "conference_status_callback_event": "start,end",
        "end_conference_on_exit": False,
        "early_media": True,
    },
    "dequeue": {
        "instruction": "dequeue",
        "from": "+15550100",
        "to": "client:alice",
        "post_work_activity_sid": WA,
        "record": "record-from-answer",
        "timeout": 20,
        "status_callback_url": CALLBACK,
        "status_callback_events": "initiated,completed",
    },
    "call": {
        "instruction": "call",
        "from": "+15550100",
        "to": "client:alice",
        "url": URL,
        "accept": True,
        "record": "record-from-answer",
        "timeout": 45,
        "status_callback_url": CALLBACK,
    },
    "redirect": {"instruction": "redirect", "call_sid": CA, "url": URL, "accept": True},
}


@cache
def reservation_update_fields() -> dict[str, Any]:
    """TaskRouter's reservation-update form fields, from Twilio's OpenAPI document."""
    doc = json.loads(spec_path("twilio_taskrouter_v1.json").read_text())
    post = doc["paths"]["/v1/Workspaces/{WorkspaceSid}/Tasks/{TaskSid}/Reservations/{Sid}"]["post"]
    schema = post["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    properties: dict[str, Any] = schema["properties"]
    return properties


def test_every_op_has_a_schema_a_rule_and_an_example() -> None:
    assert set(OPS) == set(PARAM_SCHEMAS) == set(RULES) == set(FULL) == set(EXPECTED_FORM)
    assert {"conference", "dequeue", "call", "redirect"} == INSTRUCTIONS


# ------------------------------------------------------------------------------ rest_params
@pytest.mark.parametrize("op", OPS)
def test_rest_params_maps_every_parameter_to_taskrouter_fields(op: str) -> None:
    jsonschema.validate(FULL[op], PARAM_SCHEMAS[op])
    assert rest_params(op, FULL[op]) == EXPECTED_FORM[op]


@pytest.mark.parametrize("op", OPS)
def test_rest_params_uses_only_documented_fields_with_their_documented_types(op: str) -> None:
    fields = reservation_update_fields()
    for name, value in rest_params(op, FULL[op]).items():
        assert name in fields, f"{op}: {name} is not a TaskRouter reservation-update field"
        kind = fields[name].get("type")
        if kind == "boolean":
            assert value in ("true", "false"), f"{op}: {name}={value!r}"
        elif kind == "integer":
            assert isinstance(value, int) and not isinstance(value, bool)
        elif kind == "array":
            assert isinstance(value, list)
        else:
            assert isinstance(value, str), f"{op}: {name}={value!r}"


@pytest.mark.parametrize("op", OPS)
def test_no_accepted_parameter_is_dropped_on_the_way_to_rest(op: str) -> None:
    """Each parameter the schema accepts (but task_sid) becomes exactly one form field."""
    allowed = set(PARAM_SCHEMAS[op]["properties"]) - {"task_sid"}
    assert set(FULL[op]) - {"task_sid"} == allowed
    status_or_instruction = 1
    assert len(rest_params(op, FULL[op])) == len(allowed) + status_or_instruction


def test_rest_params_minimal_bodies() -> None:
    assert rest_params("accept", {"task_sid": WT}) == {"ReservationStatus": "accepted"}
    assert rest_params("reject", {"task_sid": WT}) == {"ReservationStatus": "rejected"}
    assert rest_params("call", {"task_sid": WT, "from": "+1", "url": URL}) == {
        "Instruction": "call",
        "CallFrom": "+1",
        "CallUrl": URL,
    }
    assert rest_params("dequeue", {"task_sid": WT, "from": "+1"}) == {
        "Instruction": "dequeue",
        "DequeueFrom": "+1",
    }
    assert rest_params("conference", {"task_sid": WT}) == {"Instruction": "conference"}


@pytest.mark.parametrize(("value", "form"), [(True, "true"), (False, "false")])
def test_rest_params_booleans_are_lowercase_strings(value: bool, form: str) -> None:
    params = {"task_sid": WT, "call_sid": CA, "url": URL, "accept": value}
    assert rest_params("redirect", params)["RedirectAccept"] == form


def test_rest_params_ignores_task_sid_and_unknown_names() -> None:
    form = rest_params("accept", {"task_sid": WT, "activity_sid": WA, "junk": 1})
    assert form == {"ReservationStatus": "accepted"}


def test_rest_params_does_not_change_its_input() -> None:
    params = dict(FULL["call"])
    rest_params("call", params)
    assert params == FULL["call"]


# ------------------------------------------------------------------------------ instruction_reply
@pytest.mark.parametrize("op", sorted(EXPECTED_REPLY))
def test_instruction_reply_names(op: str) -> None:
    assert instruction_reply(op, FULL[op]) == EXPECTED_REPLY[op]


@pytest.mark.parametrize("op", ["wrapup", "complete", "supervise", "nope"])
def test_instruction_reply_refuses_ops_that_are_not_instructions(op: str) -> None:
    with pytest.raises(ValueError, match=op):
        instruction_reply(op, {"task_sid": WT})


def test_instruction_reply_minimal() -> None:
    assert instruction_reply("accept", {"task_sid": WT}) == {"instruction": "accept"}
    assert instruction_reply("reject", {}) == {"instruction": "reject"}


# ------------------------------------------------------------------------------ outcome_of
A, R, X, U = "applied", "retry", "refused", "unknown"


def row(**given: str) -> dict[str, str]:
    assert set(given) == set(STATUSES)
    return given


ACCEPTING = row(
    pending=R,
    accepted=A,
    rejected=X,
    timeout=X,
    canceled=X,
    rescinded=X,
    wrapping=A,
    completed=A,
)
# A call or redirect that does not accept leaves the reservation pending: whether it happened
# cannot be told from a pending reservation. Once it is accepted (by the call's TwiML, the
# agent, or Flex) or has moved on past accepted, the instruction was taken.
NOT_ACCEPTING = row(
    pending=U,
    accepted=A,
    rejected=X,
    timeout=X,
    canceled=X,
    rescinded=X,
    wrapping=A,
    completed=A,
)
TABLE: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("accept", {}, ACCEPTING),
    ("conference", {}, ACCEPTING),
    ("dequeue", {"from": "+1"}, ACCEPTING),
    ("call", {"accept": True}, ACCEPTING),
    ("redirect", {"accept": True}, ACCEPTING),
    ("call", {}, NOT_ACCEPTING),
    ("call", {"accept": False}, NOT_ACCEPTING),
    ("redirect", {"accept": False}, NOT_ACCEPTING),
    (
        "reject",
        {},
        row(
            pending=R,
            accepted=X,
            rejected=A,
            timeout=X,
            canceled=X,
            rescinded=X,
            wrapping=X,
            completed=X,
        ),
    ),
    (
        "wrapup",
        {},
        row(
            pending=X,
            accepted=R,
            rejected=X,
            timeout=X,
            canceled=X,
            rescinded=X,
            wrapping=A,
            completed=X,
        ),
    ),
    (
        "complete",
        {},
        row(
            pending=X,
            accepted=R,
            rejected=X,
            timeout=X,
            canceled=X,
            rescinded=X,
            wrapping=R,
            completed=A,
        ),
    ),
]


@pytest.mark.parametrize(
    ("op", "params", "status", "expected"),
    [(op, params, s, want[s]) for op, params, want in TABLE for s in STATUSES],
)
def test_outcome_of(op: str, params: dict[str, Any], status: str, expected: str) -> None:
    assert outcome_of(op, {"task_sid": WT, **params}, status) == expected


def test_outcome_table_covers_every_op() -> None:
    assert {op for op, _, _ in TABLE} == set(OPS)


@pytest.mark.parametrize("op", OPS)
def test_retry_only_where_the_op_can_start(op: str) -> None:
    """``retry`` exactly for the statuses the op requires (except the untraceable case)."""
    params = {"task_sid": WT, "accept": True} if op in ("call", "redirect") else {"task_sid": WT}
    retry = {s for s in STATUSES if outcome_of(op, params, s) == "retry"}
    assert retry == set(RULES[op].requires)


# ------------------------------------------------------------------------------ schemas
@pytest.mark.parametrize("op", OPS)
def test_schema_accepts_the_minimal_and_the_full_body(op: str) -> None:
    schema = PARAM_SCHEMAS[op]
    jsonschema.Draft202012Validator.check_schema(schema)
    minimal = {k: FULL[op][k] for k in schema["required"]}
    jsonschema.validate(minimal, schema)
    jsonschema.validate(FULL[op], schema)


@pytest.mark.parametrize("op", OPS)
def test_schema_rejects_extra_keys(op: str) -> None:
    with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
        jsonschema.validate({**FULL[op], "extra": 1}, PARAM_SCHEMAS[op])


@pytest.mark.parametrize("op", OPS)
def test_schema_requires_task_sid(op: str) -> None:
    body = {k: v for k, v in FULL[op].items() if k != "task_sid"}
    with pytest.raises(jsonschema.ValidationError, match="'task_sid' is a required property"):
        jsonschema.validate(body, PARAM_SCHEMAS[op])


@pytest.mark.parametrize(
    "task_sid",
    [
        "WT" + "0" * 31,
        "WT" + "0" * 33,
        "WX" + "0" * 32,
        "wt" + "0" * 32,
        "WT" + "g" * 32,
        " WT" + "0" * 32,
        "WT" + "0" * 32 + "\n",
        42,
        None,
    ],
)
@pytest.mark.parametrize("op", OPS)
def test_schema_rejects_bad_task_sids(op: str, task_sid: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**FULL[op], "task_sid": task_sid}, PARAM_SCHEMAS[op])


@pytest.mark.parametrize(
    ("op", "changes"),
    [
        ("reject", {"activity_sid": "WA123"}),
        ("reject", {"activity_sid": "WK" + "0" * 32}),
        ("conference", {"post_work_activity_sid": "nope"}),
        ("dequeue", {"post_work_activity_sid": "CA" + "0" * 32}),
        ("redirect", {"call_sid": "CA" + "0" * 31}),
        ("redirect", {"call_sid": "WA" + "0" * 32}),
        ("conference", {"timeout": 0}),
        ("conference", {"timeout": 601}),
        ("call", {"timeout": "30"}),
        ("call", {"timeout": 1.5}),
        ("call", {"accept": "true"}),
        ("call", {"record": 1}),
        ("conference", {"record": "true"}),
        ("dequeue", {"record": True}),
        ("conference", {"status_callback_event": "start"}),
        ("conference", {"status_callback_event": ["x"] * 17}),
        ("call", {"url": ""}),
        ("call", {"url": "https://example.com/" + "x" * 2048}),
        ("dequeue", {"from": ""}),
        ("call", {"to": 15550100}),
    ],
)
def test_schema_rejects_bad_values(op: str, changes: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**FULL[op], **changes}, PARAM_SCHEMAS[op])


@pytest.mark.parametrize(
    ("op", "missing"),
    [("dequeue", "from"), ("call", "from"), ("call", "url"), ("redirect", "call_sid")],
)
def test_schema_requires_the_ops_own_fields(op: str, missing: str) -> None:
    body = {k: v for k, v in FULL[op].items() if k != missing}
    with pytest.raises(jsonschema.ValidationError, match=f"'{missing}' is a required property"):
        jsonschema.validate(body, PARAM_SCHEMAS[op])


@pytest.mark.parametrize("op", ["accept", "wrapup", "complete"])
def test_ops_without_parameters_take_only_the_task_sid(op: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"task_sid": WT, "activity_sid": WA}, PARAM_SCHEMAS[op])


def test_schema_rejects_a_body_that_is_not_an_object() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([WT], PARAM_SCHEMAS["accept"])
