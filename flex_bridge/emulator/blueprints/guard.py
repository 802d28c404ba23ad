"""What stands between a request and an emulated API: authentication and injected faults.

A fault rule (see :mod:`flex_bridge.emulator.faults`) may delay a request, refuse it with an
error before it is applied, or lose its response after it was applied: as a 504, or as a
dropped connection (:func:`with_dropped_responses`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

from quart import Response, request

from flex_bridge.emulator.api import ApiError
from flex_bridge.emulator.blueprints.responses import error_response
from flex_bridge.emulator.core import Emulator
from flex_bridge.emulator.faults import Decision, fault_error
from flex_bridge.emulator.log import mask

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DROP_KEY = "flex_bridge.drop"


class ResponseLost(Exception):
    """Raised to make the server drop a connection whose request was already applied."""


def authenticated(emu: Emulator) -> bool:
    """HTTP Basic with the account SID and auth token, or an API key and its secret."""
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return False
    return emu.credentials_ok(auth.username or "", auth.password or "")


def unauthenticated() -> Response:
    return error_response(
        ApiError(
            401,
            20003,
            "Authentication Error - invalid username or password",
            {"WWW-Authenticate": 'Basic realm="Twilio API"'},
        )
    )


async def inject(
    emu: Emulator, product: str, method: str, path: str, form: dict[str, str] | None = None
) -> tuple[Decision, Response | None]:
    """Apply the fault rules before the request: a delay, or an error answer (logged)."""
    decision = emu.faults.decide(product, method, path)
    if decision.latency:
        await asyncio.sleep(decision.latency)
    if decision.error_status is None:
        return decision, None
    status = decision.error_status
    err = fault_error(status, decision.retry_after)
    emu.log.append(
        "rest",
        product=product,
        method=method,
        path=path,
        status=status,
        code=err.code,
        form=mask(form or {}),
        if_match=request.headers.get("If-Match"),
        fault=f"error_{status}",
        applied=False,
    )
    return decision, error_response(err)


def lose(emu: Emulator, decision: Decision) -> Response | None:
    """Apply the fault rules after the request was applied: lose its response, or not."""
    if decision.lose_mode is not None:
        emu.faults.count(f"lose_{decision.lose_mode}")
    if decision.lose_mode == "504":
        return error_response(fault_error(504))
    if decision.lose_mode == "drop":
        cast(dict[str, Any], request.scope)[DROP_KEY]["drop"] = True
    return None


def with_dropped_responses(app: Any) -> ASGIApp:
    """Let a handler lose its own response after the change was applied.

    The handler sets ``scope[DROP_KEY]``; the response it produced is then replaced by a
    status line promising a body that never comes, and the connection is closed. The client
    sees a dropped connection after its request was committed: the ambiguous case.
    """

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        flag: dict[str, bool] = {}
        scope[DROP_KEY] = flag

        async def guarded(message: Message) -> None:
            if not flag.get("drop"):
                await send(message)

        await app(scope, receive, guarded)
        if flag.get("drop"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"1024"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b"{", "more_body": True})
            raise ResponseLost("response dropped after commit (fault injection)")

    return asgi
