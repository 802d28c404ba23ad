"""Task attributes: strict parsing, JSON Merge Patch (RFC 7396) and the 4,096-character rule.

TaskRouter stores attributes as one free-form string, replaced whole on every update, at most
4,096 characters, with no schema check: a truncated or malformed string silently replaces good
attributes. Everything here exists so that flex-bridge never sends one.

- ``parse_patch`` accepts only a JSON object in valid UTF-8, without NaN or Infinity, without
  duplicate keys, nested at most ``MAX_DEPTH`` deep, and says where it is wrong.
- ``merge_patch`` is RFC 7396: ``null`` deletes a key, objects merge, anything else replaces.
- ``serialise`` writes the result compactly, refuses more than 4,096 characters, and parses
  it back to check it equals what was meant, so nothing truncated or mangled leaves.
- ``parse_existing`` reads what the task holds now, and refuses to build on attributes that
  are not a JSON object unless the caller asked to replace them.
- ``read_attributes`` reads attributes as TaskRouter sends them (callbacks, adopted offers):
  leniently (``{}`` for what is not an object), but never nested deeper than ``MAX_DEPTH``.
- ``BRIDGE_OWNED`` names the keys the bridge itself writes (the escalation); an agent's patch
  touching one is refused (``check_not_owned``).

``MAX_DEPTH`` is the one nesting bound for every JSON document the bridge reads from outside.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

from flex_bridge.domain.types import JSON
from flex_bridge.errors import ForbiddenError, ValidationError

ATTRIBUTES_LIMIT: Final = 4096
MAX_DEPTH: Final = 32

# The top-level attribute keys the bridge itself writes: the escalation state
# (``domain.escalation``). The policy's ``[timeout] routing`` keys are the bridge's too while
# ``action = "escalate"`` (``escalation.owned_keys``). Enrichers' data is not: it is written
# by the operator's enrichers, and the enrichment outcome goes on the channel item, not here.
ESCALATION: Final = "escalation"
BRIDGE_OWNED: Final = frozenset({ESCALATION})


class PatchError(ValidationError):
    """The patch is not acceptable; ``where`` points at the problem.

    ``where`` is a path into the document (``$``, ``$.customer.tags[2]``), a position in the
    text (``line 1 column 9``) or a byte offset (``byte 6``).
    """

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(f"{message} (at {where})" if where else message)
        self.where = where
        self.reason = message


class TooDeep(PatchError):
    """The document is nested deeper than ``MAX_DEPTH``."""


class BridgeOwnedKeys(ForbiddenError):
    """An agent's patch touches keys the bridge owns; ``keys`` names them."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        names = ", ".join(keys)
        super().__init__(
            f"the patch touches attribute(s) the bridge owns: {names}; agents may not set or "
            "delete them"
        )
        self.keys = keys
        self.where = ", ".join(_key_path("$", key) for key in keys)


class TooLarge(ValidationError):
    """The merged attributes would exceed TaskRouter's limit."""

    def __init__(self, size: int, limit: int = ATTRIBUTES_LIMIT) -> None:
        super().__init__(f"the attributes would be {size} characters; the limit is {limit}")
        self.size = size
        self.limit = limit


class MalformedExisting(ValidationError):
    """The task's current attributes are not a JSON object; they are not built upon."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.where = where


# Structural characters outside strings; a string is skipped whole (escapes included).
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Python refuses to convert longer integers; no such number fits in the attributes anyway.
MAX_NUMBER_DIGITS: Final = 4000


class _LongNumber:
    """An integer literal too long to convert; reported with its path once parsing is done."""

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))


def _parse_int(text: str) -> int | _LongNumber:
    return int(text) if len(text) <= MAX_NUMBER_DIGITS else _LongNumber(text)


def _position(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"line {line} column {column}"


def check_depth(text: str, what: str, limit: int = MAX_DEPTH) -> None:
    """Refuse nesting deeper than ``limit`` before parsing (so no RecursionError either):
    ``TooDeep`` says where."""
    depth = 0
    for match in _STRUCTURE.finditer(text):
        char = match.group()
        if char in "{[":
            depth += 1
            if depth > limit:
                raise TooDeep(
                    f"{what} is nested deeper than {limit} levels",
                    _position(text, match.start()),
                )
        elif char in "}]":
            depth -= 1


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if _IDENTIFIER.fullmatch(key) else f"{path}[{json.dumps(key)}]"


def _check_string(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PatchError("a string holds a lone surrogate (not valid Unicode)", path) from None


def _check_values(value: Any, path: str, duplicates: Mapping[int, tuple[JSON, str]]) -> None:
    """NaN and Infinity, numbers too long, duplicate keys and lone surrogates, with paths."""
    if isinstance(value, dict):
        duplicate = duplicates.get(id(value))
        if duplicate is not None:
            key = duplicate[1]
            raise PatchError(f"duplicate key {key!r}", _key_path(path, key))
        for key, item in value.items():
            where = _key_path(path, key)
            _check_string(key, where)
            _check_values(item, where, duplicates)
    elif isinstance(value, list):
        for n, item in enumerate(value):
            _check_values(item, f"{path}[{n}]", duplicates)
    elif isinstance(value, str):
        _check_string(value, path)
    elif isinstance(value, float) and not math.isfinite(value):
        name = "NaN" if math.isnan(value) else "Infinity"
        raise PatchError(f"{name} is not allowed: numbers in JSON must be finite", path)
    elif isinstance(value, _LongNumber):
        raise PatchError(f"a number of {value.digits} digits is too long", path)


def parse_json_object(raw: bytes | str, *, what: str = "the patch") -> JSON:
    """Strictly parse one JSON object; ``PatchError`` says what and where."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PatchError(f"{what} is not valid UTF-8", f"byte {exc.start}") from None
    else:
        text = raw
    if text.startswith("\ufeff"):
        raise PatchError(f"{what} starts with a byte-order mark", "byte 0")
    check_depth(text, what)
    # id(object) -> (the object, its first repeated key). Holding the object keeps its id
    # from being reused by a later one when a duplicate key drops it from the tree.
    duplicates: dict[int, tuple[JSON, str]] = {}

    def pairs(items: list[tuple[str, Any]]) -> JSON:
        obj: JSON = {}
        for key, item in items:
            if key in obj and id(obj) not in duplicates:
                duplicates[id(obj)] = (obj, key)
            obj[key] = item
        return obj

    try:
        value = json.loads(
            text, object_pairs_hook=pairs, parse_constant=float, parse_int=_parse_int
        )
    except json.JSONDecodeError as exc:
        raise PatchError(f"{what} is not valid JSON: {exc.msg}", _position(text, exc.pos)) from None
    except (ValueError, RecursionError) as exc:  # not expected after the checks above
        raise PatchError(f"{what} cannot be read: {exc}") from None
    if not isinstance(value, dict):
        raise PatchError(f"{what} must be a JSON object, not {_kind(value)}", "$")
    _check_values(value, "$", duplicates)
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | _LongNumber):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"


def parse_patch(raw: bytes | str) -> JSON:
    return parse_json_object(raw, what="the patch")


def read_attributes(raw: str | None, what: str = "the attributes", limit: int = MAX_DEPTH) -> JSON:
    """Attributes as TaskRouter sends them (a JSON string): ``{}`` when empty, not JSON or not
    an object (TaskRouter does not check them); ``TooDeep`` when nested deeper than ``limit``
    (``MAX_DEPTH``: no attributes the bridge can act on are)."""
    text = raw or ""
    check_depth(text, what, limit)
    try:
        value = json.loads(text or "{}")
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def owned_keys_touched(
    patch: Mapping[str, Any], owned: frozenset[str] = BRIDGE_OWNED
) -> tuple[str, ...]:
    """The keys of ``owned`` a merge patch sets or deletes (``null``), sorted."""
    return tuple(sorted(key for key in patch if key in owned))


def check_not_owned(patch: Mapping[str, Any], owned: frozenset[str] = BRIDGE_OWNED) -> None:
    """``BridgeOwnedKeys`` when the patch touches a key of ``owned``."""
    touched = owned_keys_touched(patch, owned)
    if touched:
        raise BridgeOwnedKeys(touched)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch; neither argument is modified."""
    if not isinstance(patch, Mapping):
        return patch
    result: JSON = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def serialise(attributes: Mapping[str, Any], limit: int = ATTRIBUTES_LIMIT) -> str:
    """Compact JSON, checked against the limit and by a round trip."""
    if not isinstance(attributes, Mapping):
        raise PatchError("the attributes must be a JSON object")
    try:
        text = json.dumps(attributes, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PatchError(f"the attributes cannot be written as JSON: {exc}") from None
    if len(text) > limit:
        raise TooLarge(len(text), limit)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PatchError("the attributes hold a lone surrogate (not valid Unicode)") from None
    if json.loads(text) != attributes:
        raise PatchError("the attributes do not survive a JSON round trip")
    return text


def parse_existing(text: str | None, *, replace_malformed: bool = False) -> JSON:
    """The task's current attributes as an object (``{}`` when empty)."""
    if text is None or text.strip() == "":
        return {}
    try:
        return parse_json_object(text, what="the text")
    except PatchError as exc:
        if replace_malformed:
            return {}
        raise MalformedExisting(
            f"the task's current attributes are not a valid JSON object: {exc}. They were left "
            "untouched (send replace_malformed=true to replace them)",
            exc.where,
        ) from None
