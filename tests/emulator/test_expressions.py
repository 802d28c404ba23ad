"""TaskRouter expression subset and Workflow routing (flex_bridge.emulator.expressions)."""

from __future__ import annotations

import dataclasses
import json
import re
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flex_bridge.emulator.expressions import (
    MAX_NESTING,
    Expression,
    ExpressionError,
    RoutingTarget,
    WorkflowConfiguration,
    parse_expression,
    parse_workflow_configuration,
)

# No example database: the tests must not write into the working tree.
PROPERTY = settings(database=None, deadline=None)

QUEUE_VIP = "WQ" + "a" * 32
QUEUE_SUPPORT = "WQ" + "0123456789abcdefABCDEF0123456789"
QUEUE_DEFAULT = "WQ" + "f" * 32


def holds(text: str, attributes: dict[str, Any] | None = None, **mappings: Any) -> bool:
    return parse_expression(text).evaluate(attributes or {}, **mappings)


def error_of(text: str) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        parse_expression(text)
    return info.value


# --------------------------------------------------------------------------------------------
# Literals, keywords, precedence


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 == 1", True),
        ("1==2", False),
        ("0 != 1", True),
        ("'apple' != \"orange\"", True),
        ("'apple' == \"apple\"", True),
        ("'' == \"\"", True),
        ("1 == 1.0", True),
        ("1.00 == 1", True),
        ("3.141529 > 3.14", True),
        ("-1 < 0", True),
        ("-2.5 <= -2.5", True),
        ("true == true", True),
        ("TRUE == True", True),
        ("false != true", True),
        ("1 = 1", True),
        ("1 >= 2", False),
        ("'b' > 'a'", True),
        ("'B' < 'a'", True),  # case-sensitive code-point order
        ("'a' == 'A'", False),
        ("'a b' == 'a b'", True),
        ("'a\\' == \"a\\\"", True),  # no escape sequences: a backslash is itself
        ("'en' IN ['en', \"es\", 3]", True),
        ("3 IN ['en', 3.0]", True),
        ("'fr' IN ['en', 'es']", False),
        ("'fr' NOT IN ['en', 'es']", True),
        ("'en' not in ['en']", False),
        ("[] HAS 1", False),
        ("['a', 'b'] HAS 'b'", True),
        ("[1, 2] == [1, 2.0]", True),
        ("[1, 2] == [2, 1]", False),
        ("'support desk' CONTAINS 'desk'", True),
        ("'support desk' contains 'Desk'", False),
        ("['alpha', 'beta'] CONTAINS 'et'", True),
        ("['alpha', 1] CONTAINS '1'", False),
    ],
)
def test_literal_comparisons(text: str, expected: bool) -> None:
    assert holds(text) is expected


@pytest.mark.parametrize(
    "text",
    [
        "a == 1 and b == 2",
        "a == 1 And b == 2",
        "a == 1 AND b == 2",
        "skills has 'x' OR skills HaS 'x'",
        "name contains 'n' or 1 == 2",
        "1 In [1] aNd 2 NoT iN [1]",
    ],
)
def test_keywords_are_case_insensitive(text: str) -> None:
    assert holds(text, {"a": 1, "b": 2, "skills": ["x"], "name": "n"}) is True


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"a": 1}, True),  # a OR (b AND c)
        ({"b": 1}, False),
        ({"b": 1, "c": 1}, True),
        ({"a": 1, "b": 0, "c": 0}, True),
        ({}, False),
    ],
)
def test_and_binds_tighter_than_or(attributes: dict[str, Any], expected: bool) -> None:
    assert holds("a == 1 OR b == 1 AND c == 1", attributes) is expected
    assert holds("b == 1 AND c == 1 OR a == 1", attributes) is expected


def test_parentheses_override_precedence() -> None:
    assert holds("(a == 1 OR b == 1) AND c == 1", {"a": 1}) is False
    assert holds("(a == 1 OR b == 1) AND c == 1", {"a": 1, "c": 1}) is True
    assert holds("((((a == 1))))", {"a": 1}) is True
    assert holds(
        "(language == 'en' OR language == 'fr') AND skill_rating >= 5.1",
        {
            "language": "fr",
            "skill_rating": 5.1,
        },
    )


def test_twilio_documentation_examples() -> None:
    worker = {"skills": ["support", "sales"], "languages": ["english", "spanish"]}
    assert holds("(skills HAS 'support') AND (languages HAS 'english')", worker)
    assert not holds("(skills HAS 'billing') AND (languages HAS 'english')", worker)
    task = {"customer_value": "Gold", "type": "ticket"}
    assert holds("customer_value == 'Gold' AND type == 'ticket'", task)
    assert holds("(condition_a == true) OR (condition_b == true)", {"condition_b": True})


# --------------------------------------------------------------------------------------------
# Attributes and missing values


def test_dotted_paths_resolve_nested_objects() -> None:
    attributes = {"customer": {"tier": "gold", "address": {"country": "NL"}}, "tier": "x"}
    assert holds("customer.tier == 'gold'", attributes)
    assert holds("customer.address.country == 'NL'", attributes)
    assert holds("customer.address == customer.address", attributes)
    assert not holds("customer.tier.name == 'gold'", attributes)  # through a string
    assert not holds("customer.nope == 'gold'", attributes)


def test_attribute_names_may_follow_a_dot_even_when_they_are_keywords() -> None:
    assert holds("object.in == 1 AND object.true == 2", {"object": {"in": 1, "true": 2}})
    assert holds("_private_1 == 'x'", {"_private_1": "x"})


def test_attribute_to_attribute_comparisons() -> None:
    attributes = {"a": 3, "b": 5, "wanted": "en", "spoken": ["en", "nl"]}
    assert holds("a < b", attributes)
    assert holds("wanted IN spoken", attributes)
    assert holds("spoken HAS wanted", attributes)


def test_task_and_worker_prefixes_resolve_in_their_mappings() -> None:
    task = {"language": "en", "priority": 5}
    worker = {"languages": ["en", "fr"], "level": 7}
    expression = parse_expression("task.language IN worker.languages AND level > task.priority")
    assert expression.evaluate(worker, task=task, worker=worker)
    assert not expression.evaluate(worker, task={"language": "de", "priority": 0}, worker=worker)


def test_prefixes_fall_back_to_attributes_without_the_mapping() -> None:
    attributes = {"task": {"language": "en"}, "worker": {"level": 2}}
    assert holds("task.language == 'en'", attributes)
    assert holds("worker.level == 2", attributes)
    assert not holds("task.language == 'en'", attributes, task={"language": "de"})
    # A single name is never a prefix: ``task`` is the attribute called task.
    assert holds("task == task", attributes, task={"other": 1})


@pytest.mark.parametrize(
    "op", ["==", "=", "!=", ">", "<", ">=", "<=", "IN", "NOT IN", "HAS", "CONTAINS"]
)
@pytest.mark.parametrize("other", ["1", "'x'", "true", "[]", "['x', 1]", "present"])
def test_every_comparison_with_a_missing_value_is_false(op: str, other: str) -> None:
    attributes: dict[str, Any] = {"present": ["x"], "null": None, "obj": {}}
    for missing in ("absent", "null", "obj.absent", "present.length", "task.absent"):
        assert holds(f"{missing} {op} {other}", attributes) is False
        assert holds(f"{other} {op} {missing}", attributes) is False


def test_non_json_values_behave_as_missing() -> None:
    assert not holds("when != 'x'", {"when": object()})
    assert not holds("when == when", {"when": {1, 2}})


@pytest.mark.parametrize(
    ("text", "attributes", "expected"),
    [
        ("n == '1'", {"n": 1}, False),
        ("n != '1'", {"n": 1}, True),
        ("s == 1", {"s": "1"}, False),
        ("flag == 1", {"flag": True}, False),
        ("flag == true", {"flag": True}, True),
        ("n == true", {"n": 1}, False),
        ("n > '0'", {"n": 1}, False),
        ("n < '9'", {"n": 1}, False),
        ("s >= 0", {"s": "1"}, False),
        ("flag > 0", {"flag": True}, False),
        ("n > 0.5", {"n": 1}, True),
        ("big > 1.5", {"big": 10**30}, True),
        ("n <= 1", {"n": 1.0}, True),
        ("nan == nan", {"nan": float("nan")}, False),
        ("nan != nan", {"nan": float("nan")}, True),
        ("nan > 0", {"nan": float("nan")}, False),
        ("s > 'a'", {"s": "b"}, True),
        ("list == ['a', 1]", {"list": ["a", 1]}, True),
        ("list == ['a', true]", {"list": ["a", 1]}, False),
        ("list != ['a']", {"list": ["a", 1]}, True),
        ("tuple HAS 'a'", {"tuple": ("a",)}, True),
        ("obj == obj", {"obj": {"a": [1]}}, True),
        ("obj == 'obj'", {"obj": {"a": [1]}}, False),
        ("obj != 'obj'", {"obj": {"a": [1]}}, True),
        ("list > 1", {"list": [2]}, False),
    ],
)
def test_type_rules(text: str, attributes: dict[str, Any], expected: bool) -> None:
    assert holds(text, attributes) is expected


def test_objects_compare_strictly_by_key_and_value() -> None:
    attributes = {"a": {"x": 1, "y": "2"}, "b": {"x": 1.0, "y": "2"}, "c": {"x": True, "y": "2"}}
    attributes["d"] = {"x": 1, "z": "2"}
    assert holds("a == b", attributes)
    assert not holds("a == c", attributes)
    assert not holds("a == d", attributes)


@pytest.mark.parametrize(
    ("text", "attributes", "expected"),
    [
        ("lang IN ['en', 'fr']", {"lang": "en"}, True),
        ("lang IN ['en', 'fr']", {"lang": "EN"}, False),
        ("lang NOT IN ['en', 'fr']", {"lang": "de"}, True),
        ("lang IN langs", {"lang": "en", "langs": "english"}, False),  # right is not an array
        ("lang NOT IN langs", {"lang": "en", "langs": "english"}, False),
        ("langs IN nested", {"langs": ["en"], "nested": [["en"]]}, False),  # not scalar
        ("langs NOT IN ['x']", {"langs": ["en"]}, False),
        ("n IN [1, 2]", {"n": 2.0}, True),
        ("flag IN [1]", {"flag": True}, False),
        ("skills HAS 'support'", {"skills": ["support", "sales"]}, True),
        ("skills HAS 'Support'", {"skills": ["support"]}, False),
        ("skills HAS 'support'", {"skills": "support"}, False),  # left is not an array
        ("skills HAS skills", {"skills": ["a"]}, False),  # right must be a scalar
        ("ids HAS 2", {"ids": [1, 2]}, True),
        ("name CONTAINS 'ali'", {"name": "Alice and alia"}, True),
        ("name CONTAINS ''", {"name": "x"}, True),
        ("name CONTAINS 1", {"name": "1"}, False),
        ("n CONTAINS '1'", {"n": 1}, False),
        ("tags CONTAINS 'vip'", {"tags": ["normal", "super-vip"]}, True),
        ("tags CONTAINS 'vip'", {"tags": ["normal", 7]}, False),
    ],
)
def test_array_and_string_operators(text: str, attributes: dict[str, Any], expected: bool) -> None:
    assert holds(text, attributes) is expected


# --------------------------------------------------------------------------------------------
# Parse errors


@pytest.mark.parametrize(
    ("text", "offset", "fragment"),
    [
        ("", 0, "empty expression"),
        ("   ", 0, "empty expression"),
        ("a ==", 4, "unexpected end of expression"),
        ("a b", 2, "unexpected 'b'"),
        ("a", 1, "expected a comparison operator"),
        ("true", 4, "expected a comparison operator"),
        ("NOT a == 1", 0, "NOT is only supported as part of NOT IN"),
        ("NOT (a == 1)", 0, "unexpected 'NOT'"),
        ("a NOT HAS 'x'", 6, "unexpected 'HAS'"),
        ("a NOT CONTAINS 'x'", 6, "NOT is only supported as part of NOT IN"),
        ("first-name == 'x'", 5, "hyphens are not supported"),
        ("a.b. == 1", 3, "malformed attribute name 'a.b.'"),
        ("a..b == 1", 1, "expected a name after the '.'"),
        ("a . b == 1", 2, "unexpected character '.'"),
        ("a.1 == 1", 1, "malformed attribute name"),
        ("object.array[2] == 'c'", 12, "array indexing"),
        ("a == 'abc", 5, "unterminated string starting at offset 5"),
        ("a == \"abc'", 5, "unterminated string"),
        ("1.2.3 == 1", 0, "malformed number '1.2.3'"),
        ("1. == 1", 0, "malformed number '1.'"),
        ("1e3 == 1", 0, "malformed number '1e3'"),
        ("12abc == 1", 0, "malformed number"),
        (".5 == 1", 0, "unexpected character '.'"),
        ("+1 == 1", 0, "unexpected character '+'"),
        ("(a == 1", 7, "to close the '(' at offset 0"),
        ("a == 1)", 6, "unexpected ')'"),
        ("a == 1 == 2", 7, "unexpected '=='"),
        ("a === 1", 4, "unexpected '='"),
        ("a ! b", 2, "unexpected character '!'"),
        ("a <> 1", 3, "unexpected '>'"),
        ("a == 1 AND", 10, "unexpected end of expression"),
        ("a == 1 OR OR b == 1", 10, "unexpected 'OR'"),
        ("AND a == 1", 0, "unexpected 'AND'"),
        ("a == 1 && b == 2", 7, "unexpected character '&'"),
        ("a == [1, b]", 9, "in the array"),
        ("a == [1,]", 8, "in the array"),
        ("a == [1 2]", 8, "',' or ']' to close the '[' at offset 5"),
        ("a == [[1]]", 6, "in the array"),
        ("a == null", -1, ""),  # null is an attribute name, so this parses
        ("(1) == 1", 2, "expected a comparison operator"),
        ("a == 1 ()", 7, "unexpected '('"),
        ("a == €", 5, "unexpected character '€'"),
    ],
)
def test_parse_errors_name_the_token_and_offset(text: str, offset: int, fragment: str) -> None:
    if offset < 0:
        parse_expression(text)
        return
    error = error_of(text)
    assert error.offset == offset
    assert f"offset {offset}" in str(error)
    assert fragment in str(error)
    assert error.message == str(error)
    assert isinstance(error, ValueError)


def test_parentheses_nesting_is_bounded() -> None:
    depth = MAX_NESTING
    assert holds("(" * depth + "1 == 1" + ")" * depth)
    error = error_of("(" * (depth + 1) + "1 == 1" + ")" * (depth + 1))
    assert error.offset == depth
    assert "nested deeper" in str(error)
    error_of("(" * 100_000)  # no RecursionError


def test_oversized_numbers_are_rejected_not_crashed() -> None:
    error = error_of("n == " + "9" * 10_000)
    assert error.offset == 5
    assert "too many digits" in str(error)
    assert holds("n < " + "9" * 300 + ".5", {"n": 1})


def test_long_flat_chains_do_not_recurse() -> None:
    text = " OR ".join(f"a == {i}" for i in range(5_000))
    assert holds(text, {"a": 4_999})
    assert not holds(text, {"a": -1})


def test_parse_expression_rejects_non_strings() -> None:
    with pytest.raises(TypeError):
        parse_expression(1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# The Expression value


def test_parse_is_cached_and_expressions_compare_by_source() -> None:
    first = parse_expression("skills HAS 'cached'")
    assert parse_expression("skills HAS 'cached'") is first
    direct = Expression("skills HAS 'cached'")
    assert direct == first
    assert hash(direct) == hash(first)
    assert direct.source == "skills HAS 'cached'"
    assert "skills HAS 'cached'" in repr(direct)
    assert Expression("1 == 1") != Expression("1==1")


def test_expression_is_frozen_and_validates_on_construction() -> None:
    expression = parse_expression("1 == 1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        expression.source = "1 == 2"  # type: ignore[misc]
    with pytest.raises(ExpressionError):
        Expression("1 ==")


def test_evaluate_accepts_any_mapping() -> None:
    attributes = MappingProxyType({"a": MappingProxyType({"b": (1, 2)})})
    expression = parse_expression("a.b HAS 1 AND a.b == [1, 2]")
    assert expression.evaluate(attributes)
    assert expression.evaluate({}, task=attributes) is False


# --------------------------------------------------------------------------------------------
# Workflow configuration

FILTERS: list[dict[str, Any]] = [
    {
        "filter_friendly_name": "VIP",
        "expression": "tier == 'gold'",
        "targets": [
            {
                "queue": QUEUE_VIP,
                "expression": "task.language IN worker.languages",
                "priority": 10,
                "timeout": 30,
            },
            {"queue": QUEUE_SUPPORT},
        ],
    },
    {
        "filter_friendly_name": "Support",
        "expression": "type == 'support' OR tier == 'gold'",
        "targets": [{"queue": QUEUE_SUPPORT, "priority": 1}],
    },
]
CONFIGURATION = {"task_routing": {"filters": FILTERS, "default_filter": {"queue": QUEUE_DEFAULT}}}


def configuration(document: object) -> WorkflowConfiguration:
    return parse_workflow_configuration(json.dumps(document))


def test_route_returns_the_first_target_of_the_first_matching_filter() -> None:
    workflow = configuration(CONFIGURATION)
    vip = workflow.route({"tier": "gold", "type": "support", "language": "en"})
    assert vip == RoutingTarget(
        queue_sid=QUEUE_VIP,
        expression=parse_expression("task.language IN worker.languages"),
        priority=10,
        timeout=30,
        filter_friendly_name="VIP",
    )
    support = workflow.route({"type": "support"})
    assert support is not None
    assert (support.queue_sid, support.filter_friendly_name) == (QUEUE_SUPPORT, "Support")
    assert (support.expression, support.priority, support.timeout) == (None, 1, None)


def test_route_falls_back_to_the_default_filter_then_to_none() -> None:
    workflow = configuration(CONFIGURATION)
    assert workflow.route({"type": "sales"}) == RoutingTarget(
        queue_sid=QUEUE_DEFAULT,
        expression=None,
        priority=None,
        timeout=None,
        filter_friendly_name=None,
    )
    without_default = configuration({"task_routing": {"filters": FILTERS}})
    assert without_default.route({"type": "sales"}) is None
    assert configuration({"task_routing": {}}).route({"tier": "gold"}) is None


def test_filter_expressions_see_task_attributes_also_as_task_prefix() -> None:
    workflow = configuration(
        {
            "task_routing": {
                "filters": [
                    {"expression": "task.channel == 'voice'", "targets": [{"queue": QUEUE_VIP}]}
                ]
            }
        }
    )
    target = workflow.route({"channel": "voice"})
    assert target is not None
    assert target.queue_sid == QUEUE_VIP
    assert target.filter_friendly_name is None
    assert workflow.route({"channel": "chat"}) is None


def test_target_expression_narrows_workers() -> None:
    target = configuration(CONFIGURATION).route({"tier": "gold", "language": "nl"})
    assert target is not None
    assert target.matches_worker({"languages": ["nl", "en"]}, {"language": "nl"})
    assert not target.matches_worker({"languages": ["en"]}, {"language": "nl"})
    assert not target.matches_worker({}, {"language": "nl"})
    default = configuration(CONFIGURATION).route({})
    assert default is not None
    assert default.matches_worker({}, {})


def test_configuration_exposes_filters_and_queue_sids() -> None:
    workflow = configuration(CONFIGURATION)
    assert [f.friendly_name for f in workflow.filters] == ["VIP", "Support"]
    assert [len(f.targets) for f in workflow.filters] == [2, 1]
    assert workflow.filters[0].targets[1].filter_friendly_name == "VIP"
    assert workflow.queue_sids == (QUEUE_VIP, QUEUE_SUPPORT, QUEUE_DEFAULT)
    assert workflow.default_target is not None
    assert workflow == parse_workflow_configuration(workflow.source)


def test_unknown_keys_and_nulls_are_ignored() -> None:
    document = {
        "task_routing": {
            "filters": [
                {
                    "filter_friendly_name": None,
                    "expression": "1 == 1",
                    "targets": [
                        {
                            "queue": QUEUE_VIP,
                            "skip_if": "workers.available == 0",
                            "order_by": "worker.level DESC",
                            "known_worker_sid": "task.worker_sid",
                            "priority": None,
                        }
                    ],
                    "extra": {"anything": [1, 2]},
                }
            ],
            "default_filter": {"queue": QUEUE_DEFAULT, "expression": "not even valid ("},
            "future_feature": True,
        },
        "another": 1,
    }
    target = configuration(document).route({})
    assert target is not None
    assert (target.queue_sid, target.priority, target.filter_friendly_name) == (
        QUEUE_VIP,
        None,
        None,
    )
    assert (
        configuration({"task_routing": {"filters": None, "default_filter": None}}).route({}) is None
    )


def _with_filter(**changes: Any) -> dict[str, Any]:
    workflow_filter: dict[str, Any] = {"expression": "1 == 1", "targets": [{"queue": QUEUE_VIP}]}
    workflow_filter.update(changes)
    return {"task_routing": {"filters": [workflow_filter]}}


def _with_target(**changes: Any) -> dict[str, Any]:
    target: dict[str, Any] = {"queue": QUEUE_VIP}
    target.update(changes)
    return _with_filter(targets=[target])


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "configuration: expected an object, got array"),
        ("text", "configuration: expected an object, got string"),
        ({}, "configuration: missing required key 'task_routing'"),
        ({"task_routing": []}, "task_routing: expected an object, got array"),
        ({"task_routing": {"filters": {}}}, "task_routing.filters: expected an array, got object"),
        (
            {"task_routing": {"filters": [1]}},
            "task_routing.filters[0]: expected an object, got number",
        ),
        (
            {"task_routing": {"default_filter": "WQ"}},
            "task_routing.default_filter: expected an object, got string",
        ),
        (
            {"task_routing": {"default_filter": {}}},
            "task_routing.default_filter: missing required key 'queue'",
        ),
        (
            {"task_routing": {"default_filter": {"queue": "WQ123"}}},
            "task_routing.default_filter.queue: expected a TaskQueue SID",
        ),
        (
            _with_filter(expression=None),
            "task_routing.filters[0]: missing required key 'expression'",
        ),
        (_with_filter(expression=True), "task_routing.filters[0].expression: expected a string"),
        (_with_filter(targets=None), "task_routing.filters[0]: missing required key 'targets'"),
        (_with_filter(targets=[]), "task_routing.filters[0].targets: expected at least one target"),
        (
            _with_filter(targets={}),
            "task_routing.filters[0].targets: expected an array, got object",
        ),
        (_with_filter(targets=["x"]), "task_routing.filters[0].targets[0]: expected an object"),
        (
            _with_filter(filter_friendly_name=3),
            "task_routing.filters[0].filter_friendly_name: expected a string, got number",
        ),
        (
            _with_target(queue=None),
            "task_routing.filters[0].targets[0]: missing required key 'queue'",
        ),
        (_with_target(queue=7), "targets[0].queue: expected a TaskQueue SID string, got number"),
        (_with_target(queue="WQ" + "g" * 32), "got 'WQgggg"),
        (_with_target(queue="wq" + "a" * 32), "targets[0].queue: expected a TaskQueue SID"),
        (_with_target(queue=QUEUE_VIP + "0"), "targets[0].queue: expected a TaskQueue SID"),
        (_with_target(queue=QUEUE_VIP + "\n"), "targets[0].queue: expected a TaskQueue SID"),
        (_with_target(priority="1"), "targets[0].priority: expected an integer, got string"),
        (_with_target(priority=1.5), "targets[0].priority: expected an integer, got number"),
        (_with_target(priority=True), "targets[0].priority: expected an integer, got boolean"),
        (_with_target(timeout=-1), "targets[0].timeout: expected a non-negative integer, got -1"),
        (_with_target(expression=["a"]), "targets[0].expression: expected a string, got array"),
    ],
)
def test_configuration_shape_errors_name_the_json_path(document: object, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        configuration(document)
    assert message in str(info.value)
    assert info.value.offset is None


def test_invalid_json_reports_its_offset() -> None:
    with pytest.raises(ExpressionError) as info:
        parse_workflow_configuration('{"task_routing": ')
    assert info.value.offset == 17
    assert str(info.value).startswith("configuration is not valid JSON: ")
    assert "offset 17" in str(info.value)


def test_deeply_nested_json_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError):
        parse_workflow_configuration("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize(
    ("document", "prefix", "offset"),
    [
        (_with_filter(expression="tier = = 'gold'"), "task_routing.filters[0].expression: ", 7),
        (
            _with_target(expression="task.x IN"),
            "task_routing.filters[0].targets[0].expression: ",
            9,
        ),
        (_with_filter(expression="a == 'open"), "task_routing.filters[0].expression: ", 5),
    ],
)
def test_bad_expressions_in_configuration(document: object, prefix: str, offset: int) -> None:
    with pytest.raises(ExpressionError) as info:
        configuration(document)
    assert str(info.value).startswith(prefix)
    assert f"offset {offset}" in str(info.value)
    assert info.value.offset == offset
    assert isinstance(info.value.__cause__, ExpressionError)


def test_configuration_rejects_non_strings() -> None:
    with pytest.raises(TypeError):
        parse_workflow_configuration({"task_routing": {}})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Properties

GRAMMAR_ALPHABET = st.sampled_from(
    [
        *"()[],.'\"=!<>- \t\n_aAbnNoOrRdDiIsShHcCtTeEfFlLuU0123456789",
        *["AND", "OR", "NOT", "IN", "HAS", "CONTAINS", "true", "task.", "worker."],
    ]
)
KEYWORDS = {"and", "or", "not", "in", "has", "contains", "true", "false"}
NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,4}", fullmatch=True).filter(
    lambda name: name not in KEYWORDS
)
JSON_KEYS = st.sampled_from(["a", "b", "tier", "skills", "task", "worker", "x"])
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["", "a", "b", "gold", "en"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(JSON_KEYS, children, max_size=3)
    ),
    max_leaves=12,
)
ATTRIBUTES = st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=5)


def _randomize_case(draw: st.DrawFn, word: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c.lower() for c in word)


@st.composite
def literals(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["string", "int", "decimal", "bool"]))
    if kind == "string":
        quote = draw(st.sampled_from(["'", '"']))
        body = draw(st.text(max_size=5).filter(lambda text: quote not in text))
        return f"{quote}{body}{quote}"
    if kind == "int":
        return str(draw(st.integers(-20, 20)))
    if kind == "decimal":
        return f"{draw(st.integers(-20, 20))}.{draw(st.integers(0, 99))}"
    return _randomize_case(draw, draw(st.sampled_from(["true", "false"])))


@st.composite
def operands(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["literal", "array", "path"]))
    if kind == "literal":
        return draw(literals())
    if kind == "array":
        return "[" + ", ".join(draw(st.lists(literals(), max_size=3))) + "]"
    names = draw(st.lists(st.one_of(NAMES, JSON_KEYS), min_size=1, max_size=3))
    return ".".join(names)


OPERATORS = ["==", "=", "!=", ">", "<", ">=", "<=", "IN", "NOT IN", "HAS", "CONTAINS"]


@st.composite
def comparisons(draw: st.DrawFn) -> str:
    op = _randomize_case(draw, draw(st.sampled_from(OPERATORS)))
    space = draw(st.sampled_from([" ", "  ", "\t", "\n"]))
    return f"{draw(operands())}{space}{op}{space}{draw(operands())}"


@st.composite
def expressions(draw: st.DrawFn, depth: int = 3) -> str:
    if depth == 0 or draw(st.booleans()):
        return draw(comparisons())
    left = draw(expressions(depth - 1))
    right = draw(expressions(depth - 1))
    joiner = _randomize_case(draw, draw(st.sampled_from(["AND", "OR"])))
    text = f"{left} {joiner} {right}"
    return f"({text})" if draw(st.booleans()) else text


@PROPERTY
@given(st.text(max_size=60) | st.lists(GRAMMAR_ALPHABET, max_size=30).map("".join))
def test_parser_raises_only_expression_error(text: str) -> None:
    try:
        expression = parse_expression(text)
    except ExpressionError as error:
        assert error.offset is not None
        assert 0 <= error.offset <= len(text)
        assert re.search(rf"offset {error.offset}\b", str(error))
    else:
        assert isinstance(expression.evaluate({"a": 1, "task": {"x": [1]}}), bool)


@PROPERTY
@given(expressions(), ATTRIBUTES, ATTRIBUTES)
def test_well_formed_expressions_parse_and_evaluate_to_bool(
    text: str, attributes: dict[str, Any], task: dict[str, Any]
) -> None:
    expression = parse_expression(text)
    assert isinstance(expression.evaluate(attributes), bool)
    assert isinstance(expression.evaluate(attributes, task=task, worker=attributes), bool)


@PROPERTY
@given(comparisons(), comparisons(), comparisons(), ATTRIBUTES)
def test_boolean_structure(a: str, b: str, c: str, attributes: dict[str, Any]) -> None:
    def value(text: str) -> bool:
        return parse_expression(text).evaluate(attributes)

    va, vb, vc = value(a), value(b), value(c)
    assert value(f"{a} AND {b}") is (va and vb)
    assert value(f"{a} OR {b}") is (va or vb)
    assert value(f"{a} OR {b} AND {c}") is (va or (vb and vc))
    assert value(f"({a} OR {b}) AND {c}") is ((va or vb) and vc)
    assert value(f"(({a}))") is va


@PROPERTY
@given(st.sampled_from(OPERATORS), operands())
def test_missing_operands_make_every_comparison_false(op: str, other: str) -> None:
    assert holds(f"missing_key {op} {other}", {"a": 1}) is False
    assert holds(f"{other} {op} missing_key", {"a": 1}) is False


@PROPERTY
@given(
    st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b", ""]), st.booleans()),
    st.lists(st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b"]), st.booleans())),
)
def test_in_and_not_in_are_complements_for_a_scalar_and_an_array(
    value: Any, items: list[Any]
) -> None:
    attributes = {"value": value, "items": items}
    inside = holds("value IN items", attributes)
    assert holds("value NOT IN items", attributes) is (not inside)
    assert holds("items HAS value", attributes) is inside
    assert holds("value == value", attributes)
    assert not holds("value != value", attributes)


@PROPERTY
@given(
    st.text(max_size=40)
    | JSON_VALUES.map(json.dumps)
    | st.fixed_dictionaries(
        {
            "task_routing": st.dictionaries(
                st.sampled_from(["filters", "default_filter"]), JSON_VALUES
            )
        }
    ).map(json.dumps)
)
def test_configuration_parser_raises_only_expression_error(text: str) -> None:
    try:
        workflow = parse_workflow_configuration(text)
    except ExpressionError:
        pass
    else:
        assert workflow.route({}) is None or isinstance(workflow.route({}), RoutingTarget)


@PROPERTY
@given(expressions(depth=2), ATTRIBUTES)
def test_configuration_routes_like_its_filter_expression(
    text: str, attributes: dict[str, Any]
) -> None:
    workflow = configuration(
        {
            "task_routing": {
                "filters": [{"expression": text, "targets": [{"queue": QUEUE_VIP}]}],
                "default_filter": {"queue": QUEUE_DEFAULT},
            }
        }
    )
    expected = QUEUE_VIP if parse_expression(text).evaluate(attributes, task=attributes) else None
    target = workflow.route(attributes)
    assert target is not None
    assert target.queue_sid == (expected or QUEUE_DEFAULT)
