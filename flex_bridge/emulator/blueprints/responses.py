"""JSON in and out of the emulator's HTTP surface: answers, Twilio's error shape, strict bodies."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, cast

from quart import Response, request

from flex_bridge.emulator.answers import Answer, error_answer, json_answer
from flex_bridge.emulator.api import ApiError
from flex_bridge.emulator.front_door import DROP_KEY


def to_response(answer: Answer) -> Response:
    """An :class:`Answer` as Quart's response; one to drop marks the request so that
    ``front_door.with_dropped_responses`` loses it."""
    if answer.drop:
        cast(dict[str, Any], request.scope)[DROP_KEY]["drop"] = True
    return Response(answer.body, status=answer.status, headers=dict(answer.headers))


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return to_response(json_answer(body, status, headers))


def error_response(exc: ApiError) -> Response:
    return to_response(error_answer(exc))


def bad_request(message: str) -> Response:
    return error_response(ApiError(400, 20001, message))


class NotJson(ValueError):
    """A body that is not strict JSON; the message says why."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotJson(f"the number {text} is out of range")
    return value


def _no_constant(name: str) -> Any:
    # Python's json module accepts NaN, Infinity and -Infinity; JSON does not.
    raise NotJson(f"{name} is not a JSON value")


def strict_json(raw: str | bytes) -> Any:
    """Parse a request body as strict JSON: finite numbers only. Raises ``NotJson``."""
    try:
        return json.loads(raw, parse_float=_finite_float, parse_constant=_no_constant)
    except NotJson:
        raise
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise NotJson(str(exc)) from None


async def json_body() -> Any:
    """The request's JSON body; a body that is not strict JSON is answered with 400."""
    raw = await request.get_data(as_text=False)
    try:
        return strict_json(raw)
    except NotJson as exc:
        raise ApiError(400, 20001, f"The body is not valid JSON: {exc}") from None
