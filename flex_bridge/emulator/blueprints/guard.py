"""What stands between a Quart request and an emulated API: authentication and injected
faults, read from Quart's ``request`` and handed to the framework-free REST core
(:mod:`flex_bridge.emulator.rest`), which implements them.

A fault rule (see :mod:`flex_bridge.emulator.faults`) may delay a request, refuse it with an
error before it is applied, or lose its response after it was applied: as a 504, or as a
dropped connection (``front_door.with_dropped_responses``).
"""

from __future__ import annotations

from quart import Response, request

from flex_bridge.emulator import rest
from flex_bridge.emulator.blueprints.responses import to_response
from flex_bridge.emulator.core import Emulator
from flex_bridge.emulator.faults import Decision


def request_headers() -> list[tuple[str, str]]:
    """The request's headers in order, names in lower case (with Quart's ``Remote-Addr``)."""
    return [(name.lower(), value) for name, value in request.headers.items()]


def authenticated(emu: Emulator) -> bool:
    """HTTP Basic with the account SID and auth token, or an API key and its secret."""
    return rest.authenticated(emu, request.headers.get("Authorization"))


def unauthenticated() -> Response:
    return to_response(rest.UNAUTHENTICATED)


async def inject(
    emu: Emulator, product: str, method: str, path: str, form: dict[str, str] | None = None
) -> tuple[Decision, Response | None]:
    """Apply the fault rules before the request: a delay, or an error answer (logged)."""
    decision, injected = await rest.inject(
        emu, product, method, path, (form or {}).items(), request_headers()
    )
    return decision, None if injected is None else to_response(injected)


def lose(emu: Emulator, decision: Decision) -> Response | None:
    """Apply the fault rules after the request was applied: lose its response, or not."""
    lost = rest.lose(emu, decision)
    return None if lost is None else to_response(lost)
