"""Task attributes as pure logic: RFC 7396 merge, strict parsing, the 4,096-character rule.

``merge_patch`` is checked against a reference written straight from the RFC's pseudo-code
over generated JSON values, and against the RFC's own examples. ``parse_patch`` is checked
against a corpus of bad inputs, each of which must be refused with a ``PatchError`` that says
where the problem is.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from flex_bridge.domain.attributes import (
    ATTRIBUTES_LIMIT,
    MAX_DEPTH,
    MalformedExisting,
    PatchError,
    TooLarge,
    merge_patch,
    parse_existing,
    parse_json_object,
    parse_patch,
    serialise,
)
from flex_bridge.errors import ValidationError

# ------------------------------------------------------------------------------- reference


_ABSENT = object()


def reference_merge(target: Any, patch: Any) -> Any:
    """RFC 7396, section 2, as written (on a deep copy, so the inputs stay as they are)::

    define MergePatch(Target, Patch):
      if Patch is an Object:
        if Target is not an Object:
          Target = {} # Ignore the contents and set it to an empty Object
        for each Name/Value pair in Patch:
          if Value is null:
            if Name exists in Target:
              remove the Name/Value pair from Target
          else:
            Target[Name] = MergePatch(Target[Name], Value)
        return Target
      else:
        return Patch
    """
    if isinstance(patch, dict):
        target = copy.deepcopy(target) if isinstance(target, dict) else {}
        for name, value in patch.items():
            if value is None:
                if name in target:
                    del target[name]
            else:
                target[name] = reference_merge(target.get(name, _ABSENT), value)
        return target
    return copy.deepcopy(patch)


def depth(value: Any) -> int:
    """Nesting depth in containers: a scalar is 0, ``{}`` and ``[]`` are 1."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


# ------------------------------------------------------------------------------ strategies

# A few shared keys so that patches really meet the target's keys, plus any text at all.
keys = st.sampled_from(["a", "b", "c", "name", "é", ""]) | st.text(max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(keys, json_values, max_size=6)


def within_limits(value: Any) -> bool:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text) <= ATTRIBUTES_LIMIT and depth(value) <= MAX_DEPTH


# ------------------------------------------------------------------------ merge properties


@pytest.mark.slow
@given(json_values, json_values)
def test_merge_matches_the_rfc_reference(target: Any, patch: Any) -> None:
    assert merge_patch(target, patch) == reference_merge(target, patch)


@pytest.mark.slow
@given(json_objects, json_objects)
def test_merge_of_objects_matches_the_reference(target: Any, patch: Any) -> None:
    result = merge_patch(target, patch)
    assert result == reference_merge(target, patch)
    assert isinstance(result, dict)


@given(json_values, json_values)
def test_merge_never_mutates_its_inputs(target: Any, patch: Any) -> None:
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    merge_patch(target, patch)
    assert target == target_before
    assert patch == patch_before
    # Not only equal: the very same JSON text (key order included).
    assert json.dumps(target) == json.dumps(target_before)
    assert json.dumps(patch) == json.dumps(patch_before)


@given(json_values, json_values)
def test_merge_is_idempotent(target: Any, patch: Any) -> None:
    """Re-applying a patch to its own result changes nothing: what makes a write whose
    answer was lost safe to re-apply after a fetch."""
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


@given(json_objects)
def test_merging_an_empty_patch_changes_nothing(target: Any) -> None:
    assert merge_patch(target, {}) == target


@given(json_objects, keys)
def test_null_deletes_a_key(target: Any, key: str) -> None:
    result = merge_patch(target, {key: None})
    assert key not in result
    assert result == {k: v for k, v in target.items() if k != key}


# ------------------------------------------------------------------- RFC 7396 appendix A

RFC_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    # Section 3's example.
    (
        {
            "title": "Goodbye!",
            "author": {"givenName": "John", "familyName": "Doe"},
            "tags": ["example", "sample"],
            "content": "This will be unchanged",
        },
        {
            "title": "Hello!",
            "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": None},
            "tags": ["example"],
        },
        {
            "title": "Hello!",
            "author": {"givenName": "John"},
            "tags": ["example"],
            "content": "This will be unchanged",
            "phoneNumber": "+01-123-456-7890",
        },
    ),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC_EXAMPLES)
def test_rfc_7396_examples(target: Any, patch: Any, expected: Any) -> None:
    before = copy.deepcopy(target)
    assert merge_patch(target, patch) == expected
    assert reference_merge(target, patch) == expected
    assert target == before


# ------------------------------------------------------------------- serialise and parse


@given(json_objects)
def test_serialise_round_trips(value: dict[str, Any]) -> None:
    assume(within_limits(value))
    text = serialise(value)
    assert parse_json_object(text) == value
    assert parse_patch(text.encode("utf-8")) == value
    # Compact, and not escaped: what is counted is what is stored.
    assert text == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert serialise(parse_json_object(text)) == text


@given(json_objects)
def test_parse_patch_reads_any_valid_object_however_formatted(value: dict[str, Any]) -> None:
    assume(depth(value) <= MAX_DEPTH)
    for text in (
        json.dumps(value),
        json.dumps(value, indent=2),
        json.dumps(value, ensure_ascii=False),
    ):
        assert parse_patch(text) == value
        assert parse_patch(text.encode("utf-8")) == value


@pytest.mark.slow
@given(json_objects, json_objects)
def test_a_merged_result_within_the_limit_serialises_and_round_trips(
    target: dict[str, Any], patch: dict[str, Any]
) -> None:
    merged = merge_patch(target, patch)
    assume(within_limits(merged))
    assert parse_json_object(serialise(merged)) == merged


# ------------------------------------------------------------------------- the bad corpus


def refused(raw: bytes | str) -> PatchError:
    with pytest.raises(PatchError) as caught:
        parse_patch(raw)
    exc = caught.value
    assert isinstance(exc, ValidationError)
    assert exc.where, f"no location for {raw!r}: {exc}"
    assert exc.where in str(exc)
    assert exc.reason and exc.reason in str(exc)
    return exc


MALFORMED = [
    "",
    "   ",
    "{",
    "}",
    "{a: 1}",
    "{'a': 1}",
    '{"a": 1,}',
    '{"a":}',
    '{"a" 1}',
    '{"a": 1}}',
    '{"a": 1} {"b": 2}',
    '{"a": tru}',
    '{"a": 01}',
    '{"a": .5}',
    '{"a": +1}',
    '{"a": 0x10}',
    '{"a": 1 /* comment */}',
    '{"a": "tab\tinside"}',
    '{"a": "\\x41"}',
    '{"a": "\\u12"}',
    '{"a": "unterminated}',
    '{"a": [1, 2}',
    '{"a": undefined}',
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_json_is_refused_with_a_position(raw: str) -> None:
    exc = refused(raw)
    assert exc.where.startswith("line ")
    assert "not valid JSON" in str(exc)
    refused(raw.encode("utf-8"))


def test_the_position_is_line_and_column() -> None:
    exc = refused('{\n  "a": 1,\n  "b": ?\n}')
    assert exc.where == "line 3 column 8"


VALID_SAMPLES = [
    '{"customer": {"name": "Zoë", "tags": ["vip", "fr"], "score": 9.5}, "from": "+1555"}',
    '{\n  "a": [1, 2, {"b": null}],\n  "c": true\n}\n',
    '{"é": "日本語", "nested": {"deeper": {"deepest": [[], {}]}}}',
    "{}",
]


@pytest.mark.parametrize("text", VALID_SAMPLES)
def test_every_prefix_of_a_valid_object_is_refused_or_is_itself_valid(text: str) -> None:
    full = parse_patch(text)
    for end in range(len(text)):
        prefix = text[:end]
        try:
            value = parse_patch(prefix)
        except PatchError as exc:
            assert exc.where, prefix
            continue
        # Only trailing whitespace can be cut off and leave a valid object: the same one.
        assert prefix.strip() == text.strip(), prefix
        assert value == full
    raw = text.encode("utf-8")
    for end in range(len(raw)):
        try:
            value = parse_patch(raw[:end])
        except PatchError as exc:
            assert exc.where, raw[:end]
            continue
        assert raw[:end].strip() == raw.strip()
        assert value == full


@pytest.mark.slow
@given(json_objects)
def test_every_truncation_of_a_generated_object_is_refused(value: dict[str, Any]) -> None:
    assume(depth(value) <= MAX_DEPTH)
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8")
    for end in range(len(raw)):
        with pytest.raises(PatchError) as caught:
            parse_patch(raw[:end])
        assert caught.value.where


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("[]", "an array"),
        ('[{"a": 1}]', "an array"),
        ('"a string"', "a string"),
        ('""', "a string"),
        ("1", "a number"),
        ("-1.5e3", "a number"),
        ("1" * 5000, "a number"),
        ("null", "null"),
        ("true", "a boolean"),
        ("false", "a boolean"),
    ],
)
def test_anything_but_an_object_is_refused(raw: str, kind: str) -> None:
    exc = refused(raw)
    assert exc.where == "$"
    assert f"must be a JSON object, not {kind}" in str(exc)


@pytest.mark.parametrize(
    ("raw", "where", "name"),
    [
        ('{"a": NaN}', "$.a", "NaN"),
        ('{"a": Infinity}', "$.a", "Infinity"),
        ('{"a": -Infinity}', "$.a", "Infinity"),
        ('{"a": [1, 2, NaN]}', "$.a[2]", "NaN"),
        ('{"a": {"b": {"c": -Infinity}}}', "$.a.b.c", "Infinity"),
        ('{"a b": NaN}', '$["a b"]', "NaN"),
        ('{"a": 1e999}', "$.a", "Infinity"),  # out of range: it would read as Infinity
        ('{"a": -1e999}', "$.a", "Infinity"),
    ],
)
def test_nan_and_infinity_are_refused_where_they_are(raw: str, where: str, name: str) -> None:
    exc = refused(raw)
    assert exc.where == where
    assert name in str(exc)
    assert "finite" in str(exc)


def test_nan_and_infinity_alone_are_not_objects() -> None:
    for raw in ("NaN", "Infinity", "-Infinity"):
        assert refused(raw).where == "$"


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ('{"a": 1, "a": 2}', "$.a"),
        ('{"a": 1, "b": 2, "a": 1}', "$.a"),  # even with the same value
        ('{"x": {"b": 1, "b": 2}}', "$.x.b"),
        ('{"x": [{"ok": 1}, {"k": 1, "k": 2}]}', "$.x[1].k"),
        ('{"x": {"y": {"z": {"k k": 1, "k k": 2}}}}', '$.x.y.z["k k"]'),
        ('{"a": {"n": 1, "n": 2}, "a": 5}', "$.a"),  # the inner object is dropped by the outer
    ],
)
def test_duplicate_keys_are_refused_with_their_path(raw: str, where: str) -> None:
    exc = refused(raw)
    assert exc.where == where
    assert "duplicate key" in str(exc)


@pytest.mark.parametrize(
    ("raw", "offset"),
    [
        (b'{"a": "\xff"}', 7),  # never valid in UTF-8
        (b'{"a": "\xc3"}', 7),  # a two-byte sequence cut short
        (b'{"a": "\xc0\xaf"}', 7),  # an overlong encoding of "/"
        (b'{"a": "\xed\xa0\x80"}', 7),  # an encoded surrogate (U+D800)
        (b'{"a": "\xf4\x90\x80\x80"}', 7),  # beyond U+10FFFF
        (b'{"a": "\xf8\x88\x80\x80\x80"}', 7),  # a five-byte form
        (b'{"\x80": 1}', 2),  # a stray continuation byte, in a key
        (b'{"a": "ok", "b": "\xe2\x82"}', 18),  # a three-byte sequence cut short
        (b"\xff\xfe{\x00}\x00", 0),  # UTF-16 with its byte-order mark
    ],
)
def test_invalid_utf8_is_refused_at_its_byte(raw: bytes, offset: int) -> None:
    exc = refused(raw)
    assert exc.where == f"byte {offset}"
    assert "UTF-8" in str(exc)


@pytest.mark.parametrize("raw", [b'\xef\xbb\xbf{"a": 1}', '\ufeff{"a": 1}'])
def test_a_byte_order_mark_is_refused(raw: bytes | str) -> None:
    exc = refused(raw)
    assert exc.where == "byte 0"
    assert "byte-order mark" in str(exc)


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ('{"a": "\\ud800"}', "$.a"),
        ('{"a": ["ok", "\\udfff"]}', "$.a[1]"),
        ('{"\\ud83d": 1}', '$["\\ud83d"]'),
    ],
)
def test_lone_surrogate_escapes_are_refused(raw: str, where: str) -> None:
    """Valid JSON syntax, but no valid Unicode: such a string cannot be sent as UTF-8."""
    exc = refused(raw)
    assert exc.where == where
    assert "surrogate" in str(exc)


def test_a_surrogate_pair_escape_is_fine() -> None:
    assert parse_patch('{"a": "\\ud83d\\ude00"}') == {"a": "😀"}


def test_an_integer_too_long_to_read_is_refused_where_it_is() -> None:
    exc = refused('{"a": [1, ' + "9" * 5000 + "]}")
    assert exc.where == "$.a[1]"
    assert "5000 digits" in str(exc)
    assert parse_patch('{"a": ' + "9" * 300 + "}") == {"a": int("9" * 300)}


def nested(levels: int, kind: str = "object") -> str:
    if kind == "object":
        return '{"k": ' * (levels - 1) + "{}" + "}" * (levels - 1)
    return '{"k": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


@pytest.mark.parametrize("kind", ["object", "array"])
def test_nesting_up_to_max_depth_is_fine_and_deeper_is_refused(kind: str) -> None:
    ok = parse_patch(nested(MAX_DEPTH, kind))
    assert depth(ok) == MAX_DEPTH
    exc = refused(nested(MAX_DEPTH + 1, kind))
    assert f"deeper than {MAX_DEPTH}" in str(exc)
    assert exc.where == f"line 1 column {MAX_DEPTH * 6 + 1 if kind == 'object' else 6 + MAX_DEPTH}"


def test_scalars_at_max_depth_do_not_count_as_a_level() -> None:
    text = '{"k": ' * (MAX_DEPTH - 1) + '{"leaf": 1, "text": "[{"}' + "}" * (MAX_DEPTH - 1)
    assert depth(parse_patch(text)) == MAX_DEPTH


@pytest.mark.parametrize("raw", ["[" * 100_000, '{"a": ' * 100_000, "[" * 50 + "]" * 50])
def test_pathological_nesting_is_refused_without_recursing(raw: str) -> None:
    exc = refused(raw)
    assert f"deeper than {MAX_DEPTH}" in str(exc)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"a": "[" * 100 + "{" * 100, "b": '\\"[[[[', "c": '"{{{{'})
    assert parse_patch(text)["a"] == "[" * 100 + "{" * 100


def test_what_names_the_document() -> None:
    with pytest.raises(PatchError) as caught:
        parse_json_object("[1]", what="the CRM's answer")
    assert str(caught.value).startswith("the CRM's answer must be a JSON object")


# --------------------------------------------------------------------- the 4,096 characters


def padded(size: int, char: str = "x") -> dict[str, str]:
    """An object whose compact serialisation is exactly ``size`` characters."""
    overhead = len('{"p":""}')
    return {"p": char * (size - overhead)}


def test_exactly_the_limit_is_fine_and_one_more_is_too_large() -> None:
    assert len(serialise(padded(ATTRIBUTES_LIMIT))) == ATTRIBUTES_LIMIT
    with pytest.raises(TooLarge) as caught:
        serialise(padded(ATTRIBUTES_LIMIT + 1))
    assert caught.value.size == ATTRIBUTES_LIMIT + 1
    assert caught.value.limit == ATTRIBUTES_LIMIT
    assert isinstance(caught.value, ValidationError)
    assert str(ATTRIBUTES_LIMIT + 1) in str(caught.value)
    assert str(ATTRIBUTES_LIMIT) in str(caught.value)


@pytest.mark.parametrize("char", ["é", "日", "😀"])
def test_the_limit_counts_characters_not_bytes(char: str) -> None:
    value = padded(ATTRIBUTES_LIMIT, char)
    text = serialise(value)
    assert len(text) == ATTRIBUTES_LIMIT
    assert len(text.encode("utf-8")) > ATTRIBUTES_LIMIT  # bytes would have refused it
    assert char in text  # written as is, not as \\u escapes (which would count six each)
    with pytest.raises(TooLarge) as caught:
        serialise(padded(ATTRIBUTES_LIMIT + 1, char))
    assert caught.value.size == ATTRIBUTES_LIMIT + 1


def test_a_custom_limit() -> None:
    with pytest.raises(TooLarge) as caught:
        serialise({"a": "12345"}, limit=10)
    assert (caught.value.size, caught.value.limit) == (len('{"a":"12345"}'), 10)
    assert serialise({"a": "1234"}, limit=12) == '{"a":"1234"}'


@pytest.mark.parametrize(
    "value",
    [
        {1: "an int key"},  # written as "1": it would not read back the same
        {"a": (1, 2)},  # a tuple becomes a list
        {"a": math.nan},
        {"a": math.inf},
        {"a": {1, 2}},
        {"a": object()},
        {"a": "\ud800"},  # a lone surrogate cannot be sent as UTF-8
        {"a": 10**5000},
    ],
)
def test_serialise_refuses_what_would_not_survive(value: Any) -> None:
    with pytest.raises(PatchError):
        serialise(value)


def test_serialise_refuses_a_non_object() -> None:
    values: tuple[Any, ...] = ([1], "text", None, 1)
    for value in values:
        with pytest.raises(PatchError):
            serialise(value)


# ------------------------------------------------------------------ the existing attributes


@pytest.mark.parametrize("text", [None, "", "   ", "\n"])
def test_empty_existing_attributes_are_an_empty_object(text: str | None) -> None:
    assert parse_existing(text) == {}


def test_valid_existing_attributes_are_read_and_never_replaced() -> None:
    text = '{"a": {"b": [1, 2]}, "é": null}'
    assert parse_existing(text) == {"a": {"b": [1, 2]}, "é": None}
    assert parse_existing(text, replace_malformed=True) == {"a": {"b": [1, 2]}, "é": None}


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"a": 1',  # truncated, as a cut write would leave it
        "[1, 2]",
        '"a string"',
        "null",
        "42",
        '{"a": 1, "a": 2}',
        '{"a": NaN}',
        "\ufeff{}",
        nested(MAX_DEPTH + 1),
    ],
)
def test_malformed_existing_attributes_are_refused_unless_replacing(text: str) -> None:
    with pytest.raises(MalformedExisting) as caught:
        parse_existing(text)
    message = str(caught.value)
    assert "current attributes" in message
    assert "replace_malformed" in message
    assert caught.value.where and caught.value.where in message
    assert isinstance(caught.value, ValidationError)
    assert not isinstance(caught.value, PatchError)  # a 409, not a 400: the patch is fine
    assert parse_existing(text, replace_malformed=True) == {}
