"""Twilio's errors as flex-bridge's, in one place for every adapter over the official client.

``call`` awaits one official-client call and translates what it raises: ``TwilioRestException``
by HTTP status and Twilio code (``translate``), and the plain ``TwilioException`` that list
calls raise, whose response is read for the same facts.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from twilio.base.exceptions import TwilioException, TwilioRestException

from flex_bridge.domain.protocol import CONFLICT_CODES
from flex_bridge.errors import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    PreconditionFailed,
    RateLimitedError,
    RejectedError,
    TransientUpstreamError,
    UpstreamError,
)

T = TypeVar("T")


def translate(exc: TwilioRestException) -> Exception:
    """A Twilio REST error as flex-bridge's exception hierarchy."""
    status, code = int(exc.status), exc.code
    message = exc.msg or f"HTTP {status}"
    if status == 404:
        return NotFoundError(message, status=status, code=code)
    if status == 409:
        return AlreadyExistsError(message, status=status, code=code)
    if status == 412:
        return PreconditionFailed(message, status=status, code=code)
    if status == 429:
        return RateLimitedError(message, status=status, code=code)
    if status >= 500:
        return TransientUpstreamError(message, status=status, code=code)
    if code in CONFLICT_CODES:
        return ConflictError(message, status=status, code=code)
    return RejectedError(message, status=status, code=code)


async def call(make: Callable[[], Awaitable[T]]) -> T:
    try:
        return await make()
    except TwilioRestException as exc:
        raise translate(exc) from exc
    except TwilioException as exc:
        # List calls raise a plain TwilioException("Unable to fetch page", response).
        response = exc.args[1] if len(exc.args) > 1 else None
        status = getattr(response, "status_code", None)
        if not isinstance(status, int):
            raise UpstreamError(str(exc)) from exc
        body: Any = None
        with contextlib.suppress(ValueError):
            body = json.loads(getattr(response, "text", "") or "null")
        code = body.get("code") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
        raise translate(
            TwilioRestException(status, "", msg=str(message or exc.args[0]), code=code)
        ) from exc
