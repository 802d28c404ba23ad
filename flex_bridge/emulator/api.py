"""The REST layer shared by every emulated product: typed form parsing, errors, paging.

A handler is a plain function ``(Call) -> Reply``. It runs without awaiting anything, so each
request is applied atomically with respect to every other: that is how the in-memory state
stays correct under concurrent requests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flex_bridge.emulator.spec import HOSTS, Operation, Spec

JSON = dict[str, Any]
MORE_INFO = "https://www.twilio.com/docs/errors/{code}"


class ApiError(Exception):
    """An error answered in Twilio's JSON shape."""

    def __init__(
        self, status: int, code: int, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> JSON:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": MORE_INFO.format(code=self.code),
            "status": self.status,
        }


def not_found(what: str, sid: str) -> ApiError:
    return ApiError(404, 20404, f"The requested resource {what} {sid} was not found")


def invalid(message: str, code: int = 20001) -> ApiError:
    return ApiError(400, code, message)


@dataclass(slots=True)
class Call:
    """One parsed REST request."""

    op: Operation
    path: dict[str, str]
    form: dict[str, Any]
    query: dict[str, Any]
    headers: Mapping[str, str]  # names in lower case
    now: float
    url_path: str

    def if_match(self) -> str | None:
        value = self.headers.get("if-match")
        return value.strip() if value else None


@dataclass(slots=True)
class Reply:
    status: int
    body: JSON | None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Call], Reply]
Route = tuple[str, str, Handler]


def crud(
    path: str,
    listing: Handler | None = None,
    create: Handler | None = None,
    fetch: Handler | None = None,
    update: Handler | None = None,
    delete: Handler | None = None,
    *,
    member: str = "{Sid}",
) -> list[Route]:
    """The routes of one REST collection: list and create at ``path``; fetch, update and
    delete at ``path/member``. An operation given no handler (None) is not served."""
    one = f"{path}/{member}"
    routes = [
        ("GET", path, listing),
        ("POST", path, create),
        ("GET", one, fetch),
        ("POST", one, update),
        ("DELETE", one, delete),
    ]
    return [(method, template, handler) for method, template, handler in routes if handler]


def _coerce(name: str, schema: JSON, raw: str) -> Any:
    kind = schema.get("type")
    if "enum" in schema and raw not in schema["enum"]:
        allowed = ", ".join(schema["enum"])
        raise invalid(f"{name} must be one of {allowed}; got {raw!r}")
    if kind in ("integer", "number"):
        try:
            value: float = int(raw) if kind == "integer" else float(raw)
        except ValueError:
            raise invalid(
                f"{name} must be {'an integer' if kind == 'integer' else 'a number'}; got {raw!r}"
            ) from None
        if not math.isfinite(value):
            raise invalid(f"{name} must be a finite number")
        low, high = schema.get("minimum"), schema.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            raise invalid(f"{name} must be between {low} and {high}; got {raw}")
        return value
    if kind == "boolean":
        lowered = raw.lower()
        if lowered not in ("true", "false"):
            raise invalid(f"{name} must be true or false; got {raw!r}")
        return lowered == "true"
    pattern = schema.get("pattern")
    if pattern and kind == "string":
        import re

        if not re.match(pattern, raw):
            raise invalid(f"{name} is not a valid SID or value: {raw!r}")
    return raw


def parse_fields(
    fields: Mapping[str, JSON],
    items: Iterable[tuple[str, str]],
    *,
    where: str,
    required: Iterable[str] = (),
    ignore: Iterable[str] = (),
) -> dict[str, Any]:
    """Check names, types and enums of form or query fields against the spec."""
    collected: dict[str, list[str]] = {}
    for name, value in items:
        collected.setdefault(name, []).append(value)
    skip = set(ignore)
    out: dict[str, Any] = {}
    for name, values in collected.items():
        if name in skip:
            continue
        schema = fields.get(name)
        if schema is None:
            raise invalid(f"Unknown {where} parameter {name!r}")
        if schema.get("type") == "array":
            item_schema = schema.get("items", {})
            out[name] = [_coerce(name, item_schema, v) for v in values]
        else:
            if len(values) > 1:
                raise invalid(f"{where} parameter {name!r} was given more than once")
            out[name] = _coerce(name, schema, values[0])
    missing = [name for name in required if name not in out]
    if missing:
        raise invalid(f"Missing required parameter {', '.join(sorted(missing))}")
    return out


def check_path(op: Operation, params: Mapping[str, str], what: str) -> None:
    for name, pattern in op.path_params.items():
        value = params.get(name, "")
        if pattern is not None and not pattern.match(value):
            raise ApiError(404, 20404, f"The requested resource {what} was not found")


class Router:
    """Handlers registered per operation of a product's spec."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.handlers: dict[tuple[str, str], Handler] = {}

    def add(self, method: str, template: str, handler: Handler) -> None:
        self.spec.operation(method, template)  # KeyError: not a documented operation
        self.handlers[(method, template)] = handler

    def add_all(self, routes: Iterable[Route]) -> None:
        for method, template, handler in routes:
            self.add(method, template, handler)

    def resolve(self, method: str, path: str) -> tuple[Operation, dict[str, str], Handler]:
        op, params, exists = self.spec.match(method, path)
        if op is None:
            if exists:
                raise ApiError(405, 20004, f"Method {method} is not allowed on {path}")
            raise ApiError(404, 20404, f"The requested resource {path} was not found")
        handler = self.handlers.get((method, op.template))
        if handler is None:
            raise ApiError(
                404,
                20404,
                f"{method} {op.template} is documented by Twilio but not emulated by "
                "flex-bridge (see docs/emulator.md)",
            )
        check_path(op, params, path)
        return op, params, handler


def resource_url(product: str, path: str) -> str:
    return HOSTS[product] + path


def page(
    spec: Spec,
    call: Call,
    rows: Sequence[JSON],
    *,
    extra_query: Mapping[str, str] | None = None,
) -> Reply:
    """A list answer with Twilio's ``meta`` paging block."""
    op = call.op
    assert op.list_key is not None
    size = call.query.get("PageSize", 50)
    if not 1 <= size <= 1000:
        raise invalid("PageSize must be between 1 and 1000")
    number = call.query.get("Page", 0)
    if number < 0:
        raise invalid("Page must not be negative")
    start = number * size
    chunk = rows[start : start + size]
    base = resource_url(op.product, call.url_path)
    kept = {k: str(v) for k, v in (extra_query or {}).items()}

    def url(n: int) -> str:
        query = {**kept, "PageSize": str(size), "Page": str(n)}
        if n > 0:
            query["PageToken"] = f"PT{n * size}"
        return f"{base}?{urlencode(query)}"

    meta = {
        "first_page_url": url(0),
        "key": op.list_key,
        "next_page_url": url(number + 1) if start + size < len(rows) else None,
        "page": number,
        "page_size": size,
        "previous_page_url": url(number - 1) if number > 0 else None,
        "url": url(number),
    }
    return Reply(200, {op.list_key: [spec.render(op, r) for r in chunk], "meta": meta})
