"""TaskRouter expressions and Workflow routing: the subset the emulator implements.

This module is pure (no I/O, no asyncio). :func:`parse_expression` turns the text of a
TaskRouter expression into an :class:`Expression` (parsed once into a small tree of frozen
dataclasses; repeated calls with the same text return the cached object), and
:func:`parse_workflow_configuration` turns a Workflow ``Configuration`` JSON document into a
:class:`WorkflowConfiguration` whose :meth:`~WorkflowConfiguration.route` picks the target for
a task. Everything this module rejects raises :class:`ExpressionError`, whose message says what
is wrong and at which character offset.

Expressions: what is supported
==============================

Grammar (keywords are case-insensitive; whitespace is space, tab, CR, LF, FF, VT)::

    expression := and_expr ( OR and_expr )*
    and_expr   := primary ( AND primary )*           AND binds tighter than OR
    primary    := "(" expression ")" | comparison     at most 64 nested parentheses
    comparison := operand operator operand            exactly one operator, no chaining
    operator   := "==" | "=" | "!=" | ">" | "<" | ">=" | "<="
                | IN | NOT IN | HAS | CONTAINS
    operand    := string | number | true | false | array | attribute
    array      := "[" [ literal ( "," literal )* ] "]"    literals only, no nesting
    string     := '...' | "..."                      no escape sequences; ends at the next
                                                      matching quote
    number     := -?[0-9]+(\\.[0-9]+)?                 integer or decimal
    attribute  := name ( "." name )*                  name := [A-Za-z_][A-Za-z0-9_]*

Attributes resolve in the ``attributes`` mapping given to :meth:`Expression.evaluate`, one
mapping level per dotted name. A path of two or more names starting with ``task`` resolves its
remainder in the ``task`` mapping when one is given, and likewise ``worker`` in ``worker``
(the prefixes are lower case; without the mapping the whole path resolves in ``attributes``).
In a Workflow target expression the attributes are the worker's, so
``task.language IN worker.languages`` compares the task's ``language`` with the worker's
``languages``; :meth:`RoutingTarget.matches_worker` passes the mappings that way.

A key that is absent, a path through a non-object, a JSON ``null`` and a value of a non-JSON
type all give a *missing* value, and every comparison with a missing operand is false,
including ``!=`` and ``NOT IN``. Comparisons between literals only (``1 == 1``, ``1 == 2``)
are evaluated normally.

Comparison semantics (no type coercion anywhere):

* ``==`` / ``=``: same JSON type and equal. Integers and decimals are both numbers
  (``1 == 1.0``); ``true`` is not ``1``; ``'1' == 1`` is false; strings are case-sensitive.
  Arrays and objects are equal element by element under the same rules.
* ``!=``: both operands present and not ``==``, so ``'1' != 1`` is true.
* ``>``, ``<``, ``>=``, ``<=``: two numbers, or two strings (case-sensitive code-point order);
  any other pair of types is false.
* ``IN`` / ``NOT IN``: the left operand is a string, number or boolean and the right an
  array; true when the left is (is not) ``==`` to an element. Any other shape is false for both.
* ``HAS``: the left operand is an array with an element ``==`` to the right (a scalar).
* ``CONTAINS``: the right operand is a string; true when the left is a string containing it
  (case-sensitive), or an array with a string element containing it.

Expressions: what is not supported (each is an :class:`ExpressionError`)
========================================================================

* ``NOT`` on its own (``NOT (a == 1)``), ``NOT HAS``, ``NOT CONTAINS``: only ``NOT IN`` exists.
* Array indexing in attribute paths (``object.array[2]``); hyphens in names (TaskRouter does
  not allow them either); quoted keys; spaces around the dots of a path.
* Escape sequences in strings, a ``null`` literal, exponents (``1e3``), ``.5``, ``1.``, ``+1``,
  arithmetic, functions, nested arrays or attributes inside array literals.
* Bare values as conditions (``true``, ``skills``): every condition is a comparison.

Workflow Configuration: what is supported
=========================================

A JSON object with a required ``task_routing`` object holding:

* ``filters`` (optional, default ``[]``): each an object with a string ``expression`` (over the
  task's attributes; ``task.x`` also names them), an optional string ``filter_friendly_name``,
  and a non-empty ``targets`` array. Each target is an object with a ``queue`` (a TaskQueue SID,
  ``WQ`` and 32 hexadecimal digits) and optional ``expression`` (string; over the worker's
  attributes, ``task.x`` naming the task's), ``priority`` (integer) and ``timeout`` (integer
  seconds, not negative).
* ``default_filter`` (optional): an object with a ``queue``; its other keys are ignored.

Unknown keys anywhere are ignored, and an explicit ``null`` counts as an absent optional key.
:meth:`WorkflowConfiguration.route` evaluates the filters in order against the task's
attributes and returns the *first target* of the first filter that matches, else the
``default_filter`` target, else ``None``.

Workflow Configuration: what is not emulated
============================================

* Only the first target of a matching filter is used: no moving on to the next target when a
  ``timeout`` expires (the value is only reported), no falling through to later targets.
* No time-based routing and no target ``skip_if``, ``order_by``, ``known_worker_sid`` or
  ``known_worker_friendly_name`` (such keys are ignored like any unknown key).
* The target ``expression`` is parsed and checked here but only narrows workers when the
  caller evaluates it (:meth:`RoutingTarget.matches_worker`).
* No check that a queue SID exists in the workspace (:attr:`WorkflowConfiguration.queue_sids`
  lists them for the caller to check).
"""

from __future__ import annotations

import enum
import functools
import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

__all__ = [
    "Expression",
    "ExpressionError",
    "RoutingTarget",
    "WorkflowConfiguration",
    "WorkflowFilter",
    "parse_expression",
    "parse_workflow_configuration",
]

MAX_NESTING: Final = 64
"""Deepest parenthesis nesting :func:`parse_expression` accepts."""


class ExpressionError(ValueError):
    """An expression or Workflow configuration this module cannot accept.

    ``message`` says what is wrong and where. ``offset`` is the character offset of the
    problem in the text that failed: the expression's own text (also for an expression inside
    a Workflow configuration, whose message then starts with the JSON path, e.g.
    ``task_routing.filters[0].expression: ...``), or the configuration text for invalid JSON.
    It is ``None`` when the problem has no position (a wrong JSON shape).
    """

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


# --------------------------------------------------------------------------------------------
# Tokens


class _Kind(enum.Enum):
    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    NAME = "attribute name"
    KEYWORD = "keyword"
    OPERATOR = "operator"
    LPAREN = "'('"
    RPAREN = "')'"
    LBRACKET = "'['"
    RBRACKET = "']'"
    COMMA = "','"
    END = "end of expression"


_Scalar: TypeAlias = str | int | float | bool


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    text: str
    offset: int
    value: _Scalar | None = None


_WHITESPACE: Final = frozenset(" \t\r\n\f\v")
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER_RE: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_NUMBER_TAIL_RE: Final = re.compile(r"[A-Za-z0-9_.]*")
_KEYWORDS: Final = frozenset({"AND", "OR", "IN", "NOT", "HAS", "CONTAINS"})
_BOOLEANS: Final = {"TRUE": True, "FALSE": False}
_SYMBOLS: Final = ("==", "!=", ">=", "<=", "=", ">", "<")  # longest first
_PUNCTUATION: Final = {
    "(": _Kind.LPAREN,
    ")": _Kind.RPAREN,
    "[": _Kind.LBRACKET,
    "]": _Kind.RBRACKET,
    ",": _Kind.COMMA,
}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i >= n:
            tokens.append(_Token(_Kind.END, "", n))
            return tokens
        char = text[i]
        if char in "'\"":
            end = text.find(char, i + 1)
            if end < 0:
                raise ExpressionError(f"unterminated string starting at offset {i}", offset=i)
            tokens.append(_Token(_Kind.STRING, text[i : end + 1], i, text[i + 1 : end]))
            i = end + 1
            continue
        if char in _PUNCTUATION:
            tokens.append(_Token(_PUNCTUATION[char], char, i))
            i += 1
            continue
        number = _NUMBER_RE.match(text, i)
        if number is not None:
            tokens.append(_number_token(text, i, number))
            i = number.end()
            continue
        name = _NAME_RE.match(text, i)
        if name is not None:
            end = name.end()
            while end < n and text[end] == ".":
                segment = _NAME_RE.match(text, end + 1)
                if segment is None:
                    raise ExpressionError(
                        f"malformed attribute name {_clip(text[i : end + 1])!r} at offset {i}: "
                        f"expected a name after the '.' at offset {end}",
                        offset=end,
                    )
                end = segment.end()
            tokens.append(_word_token(text[i:end], i))
            i = end
            continue
        symbol = next((s for s in _SYMBOLS if text.startswith(s, i)), None)
        if symbol is not None:
            tokens.append(_Token(_Kind.OPERATOR, symbol, i, symbol))
            i += len(symbol)
            continue
        hint = " (hyphens are not supported in TaskRouter expressions)" if char == "-" else ""
        raise ExpressionError(f"unexpected character {char!r} at offset {i}{hint}", offset=i)


def _number_token(text: str, start: int, match: re.Match[str]) -> _Token:
    tail = _NUMBER_TAIL_RE.match(text, match.end())
    if tail is not None and tail.end() > match.end():
        bad = _clip(text[start : tail.end()])
        raise ExpressionError(f"malformed number {bad!r} at offset {start}", offset=start)
    literal = match.group()
    try:
        value: int | float = float(literal) if "." in literal else int(literal)
    except ValueError:  # more digits than int() accepts (sys.get_int_max_str_digits)
        raise ExpressionError(
            f"number at offset {start} has too many digits", offset=start
        ) from None
    return _Token(_Kind.NUMBER, literal, start, value)


def _word_token(word: str, start: int) -> _Token:
    upper = word.upper()
    if upper in _KEYWORDS:
        return _Token(_Kind.KEYWORD, word, start, upper)
    if upper in _BOOLEANS:
        return _Token(_Kind.BOOLEAN, word, start, _BOOLEANS[upper])
    return _Token(_Kind.NAME, word, start, word)


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Tree and evaluation


class _Missing(enum.Enum):
    MISSING = enum.auto()


_MISSING: Final = _Missing.MISSING


@dataclass(frozen=True, slots=True)
class _Context:
    attributes: Mapping[str, Any]
    task: Mapping[str, Any] | None
    worker: Mapping[str, Any] | None


def _normalize(value: object) -> object:
    """JSON values pass; None and anything that is not JSON-like become missing."""
    if isinstance(value, str | int | float | list | tuple | Mapping):
        return value
    return _MISSING


@dataclass(frozen=True, slots=True)
class _Literal:
    value: _Scalar | tuple[_Scalar, ...]

    def resolve(self, context: _Context) -> object:
        return self.value


@dataclass(frozen=True, slots=True)
class _Attribute:
    path: tuple[str, ...]

    def resolve(self, context: _Context) -> object:
        path = self.path
        current: object = context.attributes
        if len(path) > 1:
            if path[0] == "task" and context.task is not None:
                current, path = context.task, path[1:]
            elif path[0] == "worker" and context.worker is not None:
                current, path = context.worker, path[1:]
        for name in path:
            if not isinstance(current, Mapping):
                return _MISSING
            try:
                current = current[name]
            except KeyError:
                return _MISSING
        return _normalize(current)


_Operand: TypeAlias = _Literal | _Attribute


class _Op(enum.Enum):
    EQ = "=="
    NE = "!="
    GT = ">"
    LT = "<"
    GE = ">="
    LE = "<="
    IN = "IN"
    NOT_IN = "NOT IN"
    HAS = "HAS"
    CONTAINS = "CONTAINS"


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float)  # bool is an int


def _equal(left: object, right: object) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, int | float):
        return isinstance(right, int | float) and left == right
    if isinstance(left, str):
        return isinstance(right, str) and left == right
    if isinstance(left, list | tuple):
        return (
            isinstance(right, list | tuple)
            and len(left) == len(right)
            and all(_equal(a, b) for a, b in zip(left, right, strict=True))
        )
    if isinstance(left, Mapping):
        return (
            isinstance(right, Mapping)
            and len(left) == len(right)
            and all(key in right and _equal(value, right[key]) for key, value in left.items())
        )
    return False


def _ordering(compare: Callable[[Any, Any], bool]) -> Callable[[object, object], bool]:
    def ordered(left: object, right: object) -> bool:
        numbers = (
            isinstance(left, int | float)
            and isinstance(right, int | float)
            and not isinstance(left, bool)
            and not isinstance(right, bool)
        )
        if numbers or (isinstance(left, str) and isinstance(right, str)):
            return compare(left, right)
        return False

    return ordered


def _in(left: object, right: object) -> bool:
    return (
        _is_scalar(left)
        and isinstance(right, list | tuple)
        and any(_equal(left, item) for item in right)
    )


def _not_in(left: object, right: object) -> bool:
    return (
        _is_scalar(left)
        and isinstance(right, list | tuple)
        and not any(_equal(left, item) for item in right)
    )


def _has(left: object, right: object) -> bool:
    return (
        isinstance(left, list | tuple)
        and _is_scalar(right)
        and any(_equal(item, right) for item in left)
    )


def _contains(left: object, right: object) -> bool:
    if not isinstance(right, str):
        return False
    if isinstance(left, str):
        return right in left
    if isinstance(left, list | tuple):
        return any(isinstance(item, str) and right in item for item in left)
    return False


_COMPARATORS: Final[dict[_Op, Callable[[object, object], bool]]] = {
    _Op.EQ: _equal,
    _Op.NE: lambda left, right: not _equal(left, right),
    _Op.GT: _ordering(operator.gt),
    _Op.LT: _ordering(operator.lt),
    _Op.GE: _ordering(operator.ge),
    _Op.LE: _ordering(operator.le),
    _Op.IN: _in,
    _Op.NOT_IN: _not_in,
    _Op.HAS: _has,
    _Op.CONTAINS: _contains,
}


@dataclass(frozen=True, slots=True)
class _Comparison:
    op: _Op
    left: _Operand
    right: _Operand
    offset: int

    def evaluate(self, context: _Context) -> bool:
        left = self.left.resolve(context)
        if left is _MISSING:
            return False
        right = self.right.resolve(context)
        if right is _MISSING:
            return False
        return _COMPARATORS[self.op](left, right)


@dataclass(frozen=True, slots=True)
class _And:
    operands: tuple[_Node, ...]

    def evaluate(self, context: _Context) -> bool:
        return all(operand.evaluate(context) for operand in self.operands)


@dataclass(frozen=True, slots=True)
class _Or:
    operands: tuple[_Node, ...]

    def evaluate(self, context: _Context) -> bool:
        return any(operand.evaluate(context) for operand in self.operands)


_Node: TypeAlias = _Comparison | _And | _Or


# --------------------------------------------------------------------------------------------
# Parser

_EXPECTED_VALUE: Final = "a value (string, number, true/false, [array] or attribute name)"
_EXPECTED_OPERATOR: Final = (
    "a comparison operator (==, =, !=, >, <, >=, <=, IN, NOT IN, HAS, CONTAINS)"
)
_SYMBOL_OPS: Final = {
    "==": _Op.EQ,
    "=": _Op.EQ,
    "!=": _Op.NE,
    ">": _Op.GT,
    "<": _Op.LT,
    ">=": _Op.GE,
    "<=": _Op.LE,
}
_KEYWORD_OPS: Final = {"IN": _Op.IN, "HAS": _Op.HAS, "CONTAINS": _Op.CONTAINS}
_LITERAL_KINDS: Final = frozenset({_Kind.STRING, _Kind.NUMBER, _Kind.BOOLEAN})


class _Parser:
    """Recursive descent over the token list; one instance parses one text."""

    __slots__ = ("_pos", "_tokens")

    def __init__(self, text: str) -> None:
        self._tokens = _tokenize(text)
        self._pos = 0

    def parse(self) -> _Node:
        if self._peek().kind is _Kind.END:
            raise ExpressionError("empty expression at offset 0", offset=0)
        node = self._or(0)
        token = self._peek()
        if token.kind is not _Kind.END:
            raise self._unexpected(token, "AND, OR or the end of the expression")
        return node

    def _peek(self) -> _Token:
        return self._tokens[self._pos]

    def _advance(self) -> _Token:
        token = self._tokens[self._pos]
        if token.kind is not _Kind.END:
            self._pos += 1
        return token

    def _accept_keyword(self, keyword: str) -> bool:
        token = self._peek()
        if token.kind is _Kind.KEYWORD and token.value == keyword:
            self._pos += 1
            return True
        return False

    @staticmethod
    def _unexpected(token: _Token, expected: str, hint: str = "") -> ExpressionError:
        found = "end of expression" if token.kind is _Kind.END else repr(_clip(token.text))
        return ExpressionError(
            f"unexpected {found} at offset {token.offset}; expected {expected}{hint}",
            offset=token.offset,
        )

    def _or(self, depth: int) -> _Node:
        operands = [self._and(depth)]
        while self._accept_keyword("OR"):
            operands.append(self._and(depth))
        return operands[0] if len(operands) == 1 else _Or(tuple(operands))

    def _and(self, depth: int) -> _Node:
        operands = [self._primary(depth)]
        while self._accept_keyword("AND"):
            operands.append(self._primary(depth))
        return operands[0] if len(operands) == 1 else _And(tuple(operands))

    def _primary(self, depth: int) -> _Node:
        token = self._peek()
        if token.kind is not _Kind.LPAREN:
            return self._comparison()
        if depth >= MAX_NESTING:
            raise ExpressionError(
                f"parentheses nested deeper than {MAX_NESTING} levels at offset {token.offset}",
                offset=token.offset,
            )
        self._advance()
        node = self._or(depth + 1)
        closing = self._peek()
        if closing.kind is not _Kind.RPAREN:
            raise self._unexpected(
                closing, f"AND, OR or ')' to close the '(' at offset {token.offset}"
            )
        self._advance()
        return node

    def _comparison(self) -> _Comparison:
        left = self._operand()
        token = self._peek()
        op = self._operator(after_attribute=isinstance(left, _Attribute))
        right = self._operand()
        return _Comparison(op, left, right, token.offset)

    def _operator(self, *, after_attribute: bool) -> _Op:
        token = self._peek()
        if token.kind is _Kind.OPERATOR and isinstance(token.value, str):
            self._advance()
            return _SYMBOL_OPS[token.value]
        if token.kind is _Kind.KEYWORD and isinstance(token.value, str):
            if token.value in _KEYWORD_OPS:
                self._advance()
                return _KEYWORD_OPS[token.value]
            if token.value == "NOT":
                self._advance()
                if self._accept_keyword("IN"):
                    return _Op.NOT_IN
                raise self._unexpected(
                    self._peek(), "IN after NOT", " (NOT is only supported as part of NOT IN)"
                )
        hint = ""
        if token.kind is _Kind.LBRACKET and after_attribute:
            hint = " (array indexing in attribute names is not supported)"
        raise self._unexpected(token, _EXPECTED_OPERATOR, hint)

    def _operand(self) -> _Operand:
        token = self._peek()
        if token.kind in _LITERAL_KINDS and token.value is not None:
            self._advance()
            return _Literal(token.value)
        if token.kind is _Kind.NAME:
            self._advance()
            return _Attribute(tuple(token.text.split(".")))
        if token.kind is _Kind.LBRACKET:
            return self._array()
        hint = ""
        if token.kind is _Kind.KEYWORD and token.value == "NOT":
            hint = " (NOT is only supported as part of NOT IN)"
        raise self._unexpected(token, _EXPECTED_VALUE, hint)

    def _array(self) -> _Literal:
        opening = self._advance()
        items: list[_Scalar] = []
        if self._peek().kind is _Kind.RBRACKET:
            self._advance()
            return _Literal(())
        while True:
            token = self._peek()
            if token.kind not in _LITERAL_KINDS or token.value is None:
                raise self._unexpected(token, "a string, number, true or false in the array")
            self._advance()
            items.append(token.value)
            token = self._peek()
            if token.kind is _Kind.COMMA:
                self._advance()
                continue
            if token.kind is _Kind.RBRACKET:
                self._advance()
                return _Literal(tuple(items))
            raise self._unexpected(token, f"',' or ']' to close the '[' at offset {opening.offset}")


# --------------------------------------------------------------------------------------------
# Public API: expressions


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed TaskRouter expression; construct with :func:`parse_expression`.

    Equal (and hashing equal) when the source text is equal. Constructing one directly parses
    ``source`` too, raising :class:`ExpressionError`.
    """

    source: str
    _root: _Node = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise TypeError(f"expression must be a str, not {type(self.source).__name__}")
        object.__setattr__(self, "_root", _Parser(self.source).parse())

    def evaluate(
        self,
        attributes: Mapping[str, Any],
        *,
        task: Mapping[str, Any] | None = None,
        worker: Mapping[str, Any] | None = None,
    ) -> bool:
        """Whether the expression holds for ``attributes`` (never raises on odd values).

        ``task.x`` / ``worker.x`` resolve ``x`` in ``task`` / ``worker`` when given; see the
        module docstring for missing values and comparison rules.
        """
        return self._root.evaluate(_Context(attributes, task, worker))


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str) -> Expression:
    return Expression(text)


def parse_expression(text: str) -> Expression:
    """Parse a TaskRouter expression (cached by text); raises :class:`ExpressionError`."""
    if not isinstance(text, str):
        raise TypeError(f"expression must be a str, not {type(text).__name__}")
    return _parse_cached(text)


# --------------------------------------------------------------------------------------------
# Public API: Workflow configuration


@dataclass(frozen=True, slots=True)
class RoutingTarget:
    """Where a task goes: a queue, optionally narrowed by a worker expression."""

    queue_sid: str
    expression: Expression | None
    priority: int | None
    timeout: int | None
    filter_friendly_name: str | None

    def matches_worker(
        self, worker_attributes: Mapping[str, Any], task_attributes: Mapping[str, Any]
    ) -> bool:
        """Whether a worker of the queue is eligible under this target's expression.

        Unqualified names and ``worker.x`` resolve in the worker's attributes, ``task.x`` in
        the task's. True when the target has no expression.
        """
        if self.expression is None:
            return True
        return self.expression.evaluate(
            worker_attributes, task=task_attributes, worker=worker_attributes
        )


@dataclass(frozen=True, slots=True)
class WorkflowFilter:
    """One entry of ``task_routing.filters``."""

    friendly_name: str | None
    expression: Expression
    targets: tuple[RoutingTarget, ...]


@dataclass(frozen=True, slots=True)
class WorkflowConfiguration:
    """A parsed Workflow ``Configuration``; construct with :func:`parse_workflow_configuration`.

    Equal when the source text is equal. Constructing one directly parses ``source`` too.
    """

    source: str
    filters: tuple[WorkflowFilter, ...] = field(init=False, repr=False, compare=False)
    default_target: RoutingTarget | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise TypeError(f"configuration must be a str, not {type(self.source).__name__}")
        filters, default_target = _parse_configuration(self.source)
        object.__setattr__(self, "filters", filters)
        object.__setattr__(self, "default_target", default_target)

    @property
    def queue_sids(self) -> tuple[str, ...]:
        """Every queue SID the configuration names, in order of appearance, once each."""
        sids = [target.queue_sid for f in self.filters for target in f.targets]
        if self.default_target is not None:
            sids.append(self.default_target.queue_sid)
        return tuple(dict.fromkeys(sids))

    def route(self, task_attributes: Mapping[str, Any]) -> RoutingTarget | None:
        """The first target of the first matching filter, else the default, else None."""
        for workflow_filter in self.filters:
            if workflow_filter.expression.evaluate(task_attributes, task=task_attributes):
                return workflow_filter.targets[0]
        return self.default_target


def parse_workflow_configuration(text: str) -> WorkflowConfiguration:
    """Parse a Workflow ``Configuration`` JSON document; raises :class:`ExpressionError`."""
    return WorkflowConfiguration(text)


_QUEUE_SID_RE: Final = re.compile(r"WQ[0-9a-fA-F]{32}")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _shape_error(where: str, expected: str, value: object) -> ExpressionError:
    return ExpressionError(f"{where}: expected {expected}, got {_json_type(value)}")


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _shape_error(where, "an object", value)
    return value


def _parse_configuration(
    text: str,
) -> tuple[tuple[WorkflowFilter, ...], RoutingTarget | None]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExpressionError(
            f"configuration is not valid JSON: {exc.msg} at offset {exc.pos} "
            f"(line {exc.lineno}, column {exc.colno})",
            offset=exc.pos,
        ) from None
    except RecursionError:
        raise ExpressionError("configuration is not valid JSON: nested too deeply") from None
    root = _object(document, "configuration")
    if root.get("task_routing") is None:
        raise ExpressionError("configuration: missing required key 'task_routing'")
    routing = _object(root["task_routing"], "task_routing")

    raw_filters = routing.get("filters")
    if raw_filters is None:
        raw_filters = []
    if not isinstance(raw_filters, list):
        raise _shape_error("task_routing.filters", "an array", raw_filters)
    filters = tuple(
        _parse_filter(raw, f"task_routing.filters[{index}]")
        for index, raw in enumerate(raw_filters)
    )

    default_target = None
    raw_default = routing.get("default_filter")
    if raw_default is not None:
        where = "task_routing.default_filter"
        default_target = RoutingTarget(
            queue_sid=_queue_sid(_object(raw_default, where), where),
            expression=None,
            priority=None,
            timeout=None,
            filter_friendly_name=None,
        )
    return filters, default_target


def _parse_filter(raw: object, where: str) -> WorkflowFilter:
    obj = _object(raw, where)
    friendly_name = obj.get("filter_friendly_name")
    if friendly_name is not None and not isinstance(friendly_name, str):
        raise _shape_error(f"{where}.filter_friendly_name", "a string", friendly_name)
    if obj.get("expression") is None:
        raise ExpressionError(f"{where}: missing required key 'expression'")
    expression = _expression(obj["expression"], f"{where}.expression")
    raw_targets = obj.get("targets")
    if raw_targets is None:
        raise ExpressionError(f"{where}: missing required key 'targets'")
    if not isinstance(raw_targets, list):
        raise _shape_error(f"{where}.targets", "an array", raw_targets)
    if not raw_targets:
        raise ExpressionError(f"{where}.targets: expected at least one target, got []")
    targets = tuple(
        _parse_target(target, f"{where}.targets[{index}]", friendly_name)
        for index, target in enumerate(raw_targets)
    )
    return WorkflowFilter(friendly_name, expression, targets)


def _parse_target(raw: object, where: str, friendly_name: str | None) -> RoutingTarget:
    obj = _object(raw, where)
    raw_expression = obj.get("expression")
    expression = (
        None if raw_expression is None else _expression(raw_expression, f"{where}.expression")
    )
    priority = _optional_int(obj, "priority", where)
    timeout = _optional_int(obj, "timeout", where)
    if timeout is not None and timeout < 0:
        raise ExpressionError(f"{where}.timeout: expected a non-negative integer, got {timeout}")
    return RoutingTarget(
        queue_sid=_queue_sid(obj, where),
        expression=expression,
        priority=priority,
        timeout=timeout,
        filter_friendly_name=friendly_name,
    )


def _queue_sid(obj: dict[str, Any], where: str) -> str:
    value = obj.get("queue")
    if value is None:
        raise ExpressionError(f"{where}: missing required key 'queue'")
    if not isinstance(value, str):
        raise _shape_error(f"{where}.queue", "a TaskQueue SID string", value)
    if _QUEUE_SID_RE.fullmatch(value) is None:
        raise ExpressionError(
            f"{where}.queue: expected a TaskQueue SID ('WQ' and 32 hexadecimal digits), "
            f"got {_clip(value)!r}"
        )
    return value


def _optional_int(obj: dict[str, Any], key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _shape_error(f"{where}.{key}", "an integer", value)
    return value


def _expression(value: object, where: str) -> Expression:
    if not isinstance(value, str):
        raise _shape_error(where, "a string", value)
    try:
        return parse_expression(value)
    except ExpressionError as exc:
        raise ExpressionError(f"{where}: {exc.message}", offset=exc.offset) from exc
