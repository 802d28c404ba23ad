"""Who is calling the ``/flex`` API: the Flex token, and what it may touch."""

from __future__ import annotations

from typing import Any

from quart import request

from flex_bridge.adapters.flex_tokens import FlexIdentity, TokenValidationBusy
from flex_bridge.errors import AuthenticationError, UpstreamError
from flex_bridge.web.context import services
from flex_bridge.web.errors import ApiProblem


def bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def identify(body: dict[str, Any] | None) -> FlexIdentity:
    """The caller's identity from ``Authorization: Bearer``, or a ``Token`` field of the JSON
    ``body`` (or of a form body) when one is given."""
    token = bearer()
    if token is None and body is not None and isinstance(body.get("Token"), str):
        token = body["Token"]
    if token is None and body is not None:
        form = await request.form
        token = form.get("Token")
    if not token:
        raise ApiProblem(401, "missing_token", "a Flex token is required (Authorization: Bearer)")
    try:
        return await services().tokens.validate(token)
    except AuthenticationError as exc:
        raise ApiProblem(401, "invalid_token", str(exc)) from None
    except TokenValidationBusy:
        # Token checks have a small budget of their own (adapters.flex_tokens): a flood of
        # them waits its turn there, never ahead of real changes.
        raise ApiProblem(
            503, "token_validation_busy", "too many token checks at once; try again shortly"
        ) from None
    except UpstreamError as exc:
        # exc names the IAM request; the caller learns only that Twilio is unavailable.
        raise ApiProblem(
            503, exc.code, "cannot validate the token now: Twilio is unavailable"
        ) from None
