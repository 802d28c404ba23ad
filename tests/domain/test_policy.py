"""The policy file: parsing, every error naming its key, and the assignment-rule decision."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flex_bridge.domain.policy import (
    AssignmentRule,
    Match,
    Policy,
    PolicyError,
    RetrySettings,
    RuleOp,
    SyncPolicy,
    choose_rule,
    parse_policy,
    subset_match,
)

WQ = "WQ" + "0" * 32
WQ2 = "WQ" + "1" * 32
WW = "WW" + "0" * 32
WW2 = "WW" + "1" * 32
WA = "WA" + "a" * 32
CA = "CA" + "c" * 32

EXAMPLE = f"""
[sync]
mode = "strict"
announce_timeout = 1.5
item_ttl = 3600

[retry]
max_attempts = 3
base = 0.1
cap = 2

[recovery]
interval = 10

[[assignment.rules]]
name = "vip"
match = {{ task_queue_sid = "{WQ}", task_attributes = {{ tier = "gold", crm = {{ vip = true }} }} }}
op = "accept"
via = "instruction"

[[assignment.rules]]
name = "french"
match = {{ workflow_sid = "{WW}", worker_attributes = {{ languages = ["fr"] }} }}
op = "conference"
params = {{ from = "+15550100", timeout = 20, record = true }}

[[assignment.rules]]
op = "reject"
params = {{ activity_sid = "{WA}" }}

[events.handlers]
"task.canceled" = ["mypackage.hooks:on_task_canceled", "mypackage.hooks:audit"]
"reservation.timeout" = "mypackage.hooks:on_timeout"
"""


def test_parse_the_documented_example() -> None:
    policy = parse_policy(tomllib.loads(EXAMPLE))
    assert policy.sync == SyncPolicy(mode="strict", announce_timeout=1.5, item_ttl=3600)
    assert policy.retry == RetrySettings(max_attempts=3, base=0.1, cap=2.0)
    assert isinstance(policy.retry.cap, float)
    assert policy.recovery_interval == 10.0
    assert policy.rules == (
        AssignmentRule(
            name="vip",
            op="accept",
            via="instruction",
            params={},
            match=Match(task_queue_sid=WQ, task_attributes={"tier": "gold", "crm": {"vip": True}}),
        ),
        AssignmentRule(
            name="french",
            op="conference",
            via="rest",
            params={"from": "+15550100", "timeout": 20, "record": True},
            match=Match(workflow_sid=WW, worker_attributes={"languages": ["fr"]}),
        ),
        AssignmentRule(name="rule 2", op="reject", params={"activity_sid": WA}, match=None),
    )
    assert policy.event_handlers == {
        "task.canceled": ("mypackage.hooks:on_task_canceled", "mypackage.hooks:audit"),
        "reservation.timeout": ("mypackage.hooks:on_timeout",),
    }


def test_an_empty_policy_is_the_default() -> None:
    policy = parse_policy({})
    assert policy == Policy()
    assert policy.sync.mode == "degrade"
    assert policy.sync.item_ttl == 86_400
    assert policy.retry == RetrySettings(5, 0.2, 5.0)
    assert policy.recovery_interval == 30.0
    assert policy.rules == ()


@pytest.mark.parametrize("op", ["accept", "reject", "conference", "defer"])
def test_ops_without_required_params(op: str) -> None:
    policy = parse_policy({"assignment": {"rules": [{"op": op}]}})
    assert policy.rules[0].op == op
    assert policy.rules[0].name == "rule 0"


def test_rule_params_do_not_need_a_task_sid() -> None:
    rule = {"op": "call", "params": {"from": "+1", "url": "https://example.com/t"}}
    policy = parse_policy({"assignment": {"rules": [rule]}})
    assert policy.rules[0].params == {"from": "+1", "url": "https://example.com/t"}


def test_parsing_copies_its_input() -> None:
    params = {"activity_sid": WA}
    attributes = {"tier": "gold"}
    raw = {"op": "reject", "params": params, "match": {"task_attributes": attributes}}
    policy = parse_policy({"assignment": {"rules": [raw]}})
    params["activity_sid"] = "changed"
    attributes["tier"] = "changed"
    rule = policy.rules[0]
    assert rule.params == {"activity_sid": WA}
    assert rule.match is not None and rule.match.task_attributes == {"tier": "gold"}


def rules(*items: Any) -> dict[str, Any]:
    return {"assignment": {"rules": list(items)}}


ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"bogus": 1}, "policy: unknown key(s) bogus"),
    ({"sync": 1}, "sync must be a table"),
    ({"sync": {"speed": 1}}, "sync: unknown key(s) speed"),
    ({"sync": {"mode": "fast"}}, "sync.mode must be 'strict' or 'degrade'"),
    ({"sync": {"announce_timeout": "2"}}, "sync.announce_timeout must be a number"),
    ({"sync": {"announce_timeout": True}}, "sync.announce_timeout must be a number"),
    ({"sync": {"announce_timeout": -1}}, "sync.announce_timeout must be at least 0"),
    ({"sync": {"announce_timeout": float("nan")}}, "sync.announce_timeout must be finite"),
    ({"sync": {"announce_timeout": float("inf")}}, "sync.announce_timeout must be finite"),
    ({"sync": {"item_ttl": 1.5}}, "sync.item_ttl must be an integer"),
    ({"sync": {"item_ttl": 0}}, "sync.item_ttl must be at least 1"),
    ({"retry": []}, "retry must be a table"),
    ({"retry": {"jitter": 1}}, "retry: unknown key(s) jitter"),
    ({"retry": {"max_attempts": 0}}, "retry.max_attempts must be at least 1"),
    ({"retry": {"max_attempts": 2.5}}, "retry.max_attempts must be an integer"),
    ({"retry": {"base": "fast"}}, "retry.base must be a number"),
    ({"retry": {"base": float("nan")}}, "retry.base must be finite"),
    ({"retry": {"cap": -0.5}}, "retry.cap must be at least 0"),
    ({"retry": {"cap": float("inf")}}, "retry.cap must be finite"),
    ({"recovery": "often"}, "recovery must be a table"),
    ({"recovery": {"every": 1}}, "recovery: unknown key(s) every"),
    ({"recovery": {"interval": 0.01}}, "recovery.interval must be at least 0.1"),
    ({"recovery": {"interval": float("nan")}}, "recovery.interval must be finite"),
    ({"assignment": 1}, "assignment must be a table"),
    ({"assignment": {"rule": []}}, "assignment: unknown key(s) rule"),
    ({"assignment": {"rules": {"op": "accept"}}}, "assignment.rules must be an array of tables"),
    (rules("accept"), "assignment.rules[0] must be a table"),
    (rules({"op": "accept"}, {"op": "accept", "when": 1}), "assignment.rules[1]: unknown key(s)"),
    (rules({}), "assignment.rules[0].op must be one of"),
    (rules({"op": "wrapup"}), "assignment.rules[0].op must be one of"),
    (rules({"op": "accept", "via": "sms"}), "assignment.rules[0].via must be 'rest' or"),
    (rules({"op": "accept", "params": "x"}), "assignment.rules[0].params must be a table"),
    (rules({"op": "defer", "params": {"a": 1}}), "assignment.rules[0]: defer takes no params"),
    (
        rules({"op": "reject", "params": {"activity_sid": "WA1"}}),
        "assignment.rules[0].params.activity_sid:",
    ),
    (
        rules({"op": "accept", "params": {"activity_sid": WA}}),
        "assignment.rules[0].params: Additional properties are not allowed ('activity_sid'",
    ),
    (
        rules({"op": "call", "params": {"from": "+1"}}),
        "assignment.rules[0].params: 'url' is a required property",
    ),
    (
        rules({"op": "conference", "params": {"timeout": 0}}),
        "assignment.rules[0].params.timeout:",
    ),
    (
        rules({"op": "redirect", "params": {"call_sid": CA, "url": "https://x", "accept": 1}}),
        "assignment.rules[0].params.accept:",
    ),
    (rules({"op": "accept", "match": "all"}), "assignment.rules[0].match must be a table"),
    (
        rules({"op": "accept", "match": {"queue": WQ}}),
        "assignment.rules[0].match: unknown key(s) queue",
    ),
    (
        rules({"op": "accept", "match": {"task_queue_sid": 1}}),
        "assignment.rules[0].match.task_queue_sid must be a string",
    ),
    (
        rules({"op": "accept", "match": {"workflow_sid": None}}),
        "assignment.rules[0].match.workflow_sid must be a string",
    ),
    (
        rules({"op": "accept", "match": {"task_attributes": "vip"}}),
        "assignment.rules[0].match.task_attributes must be a table",
    ),
    (
        rules({"op": "accept", "match": {"worker_attributes": []}}),
        "assignment.rules[0].match.worker_attributes must be a table",
    ),
    ({"events": 1}, "events must be a table"),
    ({"events": {"hooks": {}}}, "events: unknown key(s) hooks"),
    ({"events": {"handlers": "x"}}, "events.handlers must be a table"),
    (
        {"events": {"handlers": {"task.canceled": 3}}},
        "events.handlers.task.canceled must be a dotted path or a list",
    ),
    (
        {"events": {"handlers": {"task.canceled": ["a:b", 3]}}},
        "events.handlers.task.canceled must be a dotted path or a list",
    ),
]


@pytest.mark.parametrize(("data", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_every_error_names_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(data)
    assert message in str(caught.value)


def test_policy_error_is_a_value_error() -> None:
    assert issubclass(PolicyError, ValueError)


def test_nan_from_toml_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"recovery\.interval"):
        parse_policy(tomllib.loads("[recovery]\ninterval = nan\n"))


# ------------------------------------------------------------------------------ choose_rule
def rule(name: str, match: Match | None = None, op: RuleOp = "accept") -> AssignmentRule:
    return AssignmentRule(name=name, op=op, match=match)


def choose(policy: Policy, **facts: Any) -> str | None:
    args: dict[str, Any] = {
        "task_queue_sid": WQ,
        "workflow_sid": WW,
        "task_attributes": {},
        "worker_attributes": {},
        **facts,
    }
    chosen = choose_rule(policy, **args)
    return chosen.name if chosen else None


def test_no_rules_means_defer() -> None:
    assert choose(Policy()) is None


def test_first_matching_rule_wins() -> None:
    policy = Policy(
        rules=(
            rule("gold", Match(task_attributes={"tier": "gold"})),
            rule("queue", Match(task_queue_sid=WQ)),
            rule("all"),
            rule("never reached"),
        )
    )
    assert choose(policy, task_attributes={"tier": "gold"}) == "gold"
    assert choose(policy, task_attributes={"tier": "silver"}) == "queue"
    assert choose(policy, task_queue_sid=WQ2) == "all"


def test_a_rule_without_match_matches_everything() -> None:
    policy = Policy(rules=(rule("all"), rule("gold", Match(task_attributes={"tier": "gold"}))))
    assert choose(policy, task_attributes={"tier": "gold"}) == "all"
    assert choose(policy, task_queue_sid=None, workflow_sid=None) == "all"


def test_an_empty_match_matches_everything() -> None:
    assert choose(Policy(rules=(rule("empty", Match()),)), task_queue_sid=None) == "empty"


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({}, "both"),
        ({"task_queue_sid": WQ2}, None),
        ({"task_queue_sid": None}, None),
        ({"workflow_sid": WW2}, None),
        ({"task_attributes": {"tier": "silver"}}, None),
        ({"worker_attributes": {}}, None),
    ],
)
def test_every_part_of_a_match_must_hold(facts: dict[str, Any], expected: str | None) -> None:
    match = Match(
        task_queue_sid=WQ,
        workflow_sid=WW,
        task_attributes={"tier": "gold"},
        worker_attributes={"skills": ["vip"]},
    )
    base = {"task_attributes": {"tier": "gold"}, "worker_attributes": {"skills": ["vip"]}}
    assert choose(Policy(rules=(rule("both", match),)), **{**base, **facts}) == expected


def test_choose_rule_from_a_parsed_policy() -> None:
    policy = parse_policy(tomllib.loads(EXAMPLE))
    gold = {"tier": "gold", "crm": {"vip": True, "id": 7}}
    assert choose(policy, task_attributes=gold) == "vip"
    assert choose(policy, task_attributes=gold, task_queue_sid=WQ2) == "rule 2"
    assert choose(policy, worker_attributes={"languages": ["fr"]}) == "french"
    # The list is matched as a whole value, not as "contains".
    assert choose(policy, worker_attributes={"languages": ["fr", "en"]}) == "rule 2"


# ------------------------------------------------------------------------------ subset_match
@pytest.mark.parametrize(
    ("expected", "actual", "matches"),
    [
        ({}, {}, True),
        ({}, {"a": 1}, True),
        ({"a": 1}, {}, False),
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": 1, "b": 2}, {"a": 1}, False),
        ({"a": None}, {"a": None}, True),
        ({"a": None}, {}, False),
        ({"a": None}, {"a": 0}, False),
        # nested tables match nested objects as subsets
        ({"crm": {"vip": True}}, {"crm": {"vip": True, "id": 1}}, True),
        ({"crm": {"vip": True}}, {"crm": {"vip": False}}, False),
        ({"crm": {"vip": True}}, {"crm": "vip"}, False),
        ({"crm": {}}, {"crm": {"x": 1}}, True),
        ({"crm": {}}, {"crm": 1}, False),
        ({"a": {"b": {"c": "d"}}}, {"a": {"b": {"c": "d", "e": 1}, "f": 2}}, True),
        ({"a": {"b": {"c": "d"}}}, {"a": {"b": {"c": "x"}}}, False),
        # a scalar wanted, an object found
        ({"crm": 1}, {"crm": {"x": 1}}, False),
        # type strictness: 1, true and "1" are three different values
        ({"a": 1}, {"a": True}, False),
        ({"a": True}, {"a": 1}, False),
        ({"a": 0}, {"a": False}, False),
        ({"a": False}, {"a": 0}, False),
        ({"a": "1"}, {"a": 1}, False),
        ({"a": 1}, {"a": "1"}, False),
        ({"a": "true"}, {"a": True}, False),
        ({"a": True}, {"a": "true"}, False),
        ({"a": True}, {"a": True}, True),
        ({"a": 1}, {"a": 1.0}, True),  # one JSON number
        ({"a": 1.5}, {"a": 1.5}, True),
        ({"a": "x"}, {"a": "x"}, True),
        # arrays are whole values, element types strict too
        ({"a": [1, 2]}, {"a": [1, 2]}, True),
        ({"a": [1, 2]}, {"a": [2, 1]}, False),
        ({"a": [1]}, {"a": [1, 2]}, False),
        ({"a": [1]}, {"a": [True]}, False),
        ({"a": [True]}, {"a": [1]}, False),
        ({"a": ["1"]}, {"a": [1]}, False),
        ({"a": [1]}, {"a": [1.0]}, True),
        ({"a": [[0]]}, {"a": [[False]]}, False),
        ({"a": [{"b": 1}]}, {"a": [{"b": True}]}, False),
        ({"a": [{"b": 1}]}, {"a": [{"b": 1}]}, True),
        ({"a": [{"b": 1}]}, {"a": [{"b": 1, "c": 2}]}, False),
        ({"a": []}, {"a": {}}, False),
    ],
)
def test_subset_match(expected: dict[str, Any], actual: dict[str, Any], matches: bool) -> None:
    assert subset_match(expected, actual) is matches


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=3), json_values, max_size=4)


def merged(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """``b`` with ``a`` deep-merged over it: every value of ``a`` survives."""
    out = dict(b)
    for key, value in a.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(value, out[key])
        else:
            out[key] = value
    return out


@given(json_objects, json_objects)
def test_a_subset_matches_anything_merged_over_it(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert subset_match(a, merged(a, b))


@given(json_objects)
def test_subset_match_is_reflexive(a: dict[str, Any]) -> None:
    assert subset_match(a, a)


@given(json_objects, json_objects)
def test_mutual_subsets_are_equal_objects(a: dict[str, Any], b: dict[str, Any]) -> None:
    if subset_match(a, b) and subset_match(b, a):
        assert set(a) == set(b)


def test_reconcile_and_retention_defaults_and_values() -> None:
    default = parse_policy({})
    assert (default.reconcile.interval, default.reconcile.budget) == (60.0, 200)
    assert default.retention.intents == 7 * 86_400.0
    policy = parse_policy(
        {
            "reconcile": {"interval": 30, "budget": 50, "window": 3600},
            "retention": {"intents": 86_400, "batch": 500},
        }
    )
    assert (policy.reconcile.interval, policy.reconcile.budget) == (30.0, 50)
    assert policy.reconcile.window == 3600.0
    assert (policy.retention.intents, policy.retention.batch) == (86_400.0, 500)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"reconcile": {"interval": 0.5}}, "reconcile.interval must be at least 1"),
        ({"reconcile": {"budget": 0}}, "reconcile.budget must be at least 1"),
        ({"reconcile": {"every": 3}}, "reconcile: unknown key(s) every"),
        ({"retention": {"intents": 60}}, "retention.intents must be at least 3600"),
        ({"retention": {"batch": 1.5}}, "retention.batch must be an integer"),
    ],
)
def test_reconcile_and_retention_errors_name_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(data)
    assert message in str(caught.value)
