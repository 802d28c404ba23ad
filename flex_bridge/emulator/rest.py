"""Twilio's REST APIs, without a web framework: one request in, one :class:`Answer` out.

``/<product>/v1/...`` is authenticated, put through the fault rules, resolved against the
product's OpenAPI document, checked, applied by its handler and logged (:func:`serve`). The
inputs are plain values (method, path, headers, the form, the query) and so is the answer
(status, headers, body bytes, and whether to drop it), so that both ways in share this one
implementation: the Quart routes (``blueprints/rest.py``, ``blueprints/iam.py``) and the ASGI
front door (``front_door.py``).

Parsing follows werkzeug's, which the Quart routes have always used (see :func:`query_items`
and :func:`form_items`), with the standard library.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote

from flex_bridge.emulator.answers import DROPPED, Answer, error_answer, json_answer
from flex_bridge.emulator.api import ApiError, Call, parse_fields
from flex_bridge.emulator.core import Emulator
from flex_bridge.emulator.faults import Decision, fault_error
from flex_bridge.emulator.log import mask

Headers = Sequence[tuple[str, str]]  # as received, in order; names in lower case
FormReader = Callable[[], Awaitable[Iterable[tuple[str, str]]]]
Sleep = Callable[[float], Awaitable[None]]
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "application/x-url-encoded"})
# The methods of the REST API (the Quart routes' and the front door's).
METHODS = ("GET", "POST", "DELETE")


def _url_quote(exc: UnicodeError) -> tuple[str, int]:
    """Invalid UTF-8 in a percent-decoded query stays percent-encoded (as werkzeug's
    ``werkzeug.url_quote`` error handler keeps it)."""
    assert isinstance(exc, UnicodeDecodeError)
    return quote(exc.object[exc.start : exc.end], safe=""), exc.end


codecs.register_error("flex_bridge.url_quote", _url_quote)


# ------------------------------------------------------------------------------ parsing
def first(headers: Headers, name: str) -> str | None:
    """The first value of a header (what werkzeug's ``Headers.get`` gives)."""
    for key, value in headers:
        if key == name:
            return value
    return None


def query_items(text: str) -> list[tuple[str, str]]:
    """A query string (already decoded as UTF-8) as werkzeug's ``request.args`` has it:
    repeated keys kept in order, blank values kept, ``+`` a space, invalid UTF-8 in a
    percent-escape left percent-encoded."""
    return parse_qsl(text, keep_blank_values=True, errors="flex_bridge.url_quote")


def mimetype(content_type: str | None) -> str:
    """The media type of a ``Content-Type`` value, in lower case, without parameters."""
    return (content_type or "").partition(";")[0].strip(" \t").lower()


def form_items(body: bytes) -> list[tuple[str, str]]:
    """An ``application/x-www-form-urlencoded`` body as Quart parses it: not UTF-8, no
    form at all; else repeated keys in order, blank values kept, ``+`` a space and invalid
    UTF-8 in a percent-escape replaced (U+FFFD)."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return []
    return parse_qsl(text, keep_blank_values=True)


# ------------------------------------------------------------------------ authentication
def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """The user name and password of an ``Authorization: Basic`` value (werkzeug's
    ``Authorization.from_header``), or None."""
    if not authorization:
        return None
    scheme, _, rest = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(rest.strip(" \t"), validate=True).decode()
    except (binascii.Error, UnicodeError):
        return None
    username, _, password = decoded.partition(":")
    return username, password


def authenticated(emu: Emulator, authorization: str | None) -> bool:
    """HTTP Basic with the account SID and auth token, or an API key and its secret."""
    credentials = basic_credentials(authorization)
    return credentials is not None and emu.credentials_ok(*credentials)


UNAUTHENTICATED = error_answer(
    ApiError(
        401,
        20003,
        "Authentication Error - invalid username or password",
        {"WWW-Authenticate": 'Basic realm="Twilio API"'},
    )
)


def unknown_product(product: str) -> Answer:
    return error_answer(ApiError(404, 20404, f"Unknown product {product!r}"))


# -------------------------------------------------------------------------------- faults
async def inject(
    emu: Emulator,
    product: str,
    method: str,
    path: str,
    form: Iterable[tuple[str, str]] = (),
    headers: Headers = (),
    sleep: Sleep = asyncio.sleep,
) -> tuple[Decision, Answer | None]:
    """Apply the fault rules before the request: a delay (``sleep``, which may raise to
    abandon the request), or an error answer (logged with the request's ``form`` and its
    ``If-Match`` from ``headers``, read only then)."""
    decision = emu.faults.decide(product, method, path)
    if decision.latency:
        await sleep(decision.latency)
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
        form=mask(dict(form)),
        if_match=first(headers, "if-match"),
        fault=f"error_{status}",
        applied=False,
    )
    return decision, error_answer(err)


def lose(emu: Emulator, decision: Decision) -> Answer | None:
    """Apply the fault rules after the request was applied: lose its response (a 504, or
    ``DROPPED``: the connection cut after a partial answer), or not (None)."""
    if decision.lose_mode is None:
        return None
    emu.faults.count(f"lose_{decision.lose_mode}")
    if decision.lose_mode == "504":
        return error_answer(fault_error(504))
    if decision.lose_mode == "drop":
        return DROPPED
    return None


# ---------------------------------------------------------------------------------- serve
async def serve(
    emu: Emulator,
    product: str,
    method: str,
    path: str,
    headers: Headers,
    read_form: FormReader,
    query: Iterable[tuple[str, str]],
    sleep: Sleep = asyncio.sleep,
) -> Answer:
    """Authenticate, inject faults, resolve, check, apply and log one REST request.

    ``path`` starts at ``/v1/``; ``read_form`` gives the form of a POST (it may raise what
    the caller answers itself, such as a body over the limit); ``query`` is read only once
    the operation is known; ``sleep`` waits out an injected latency (the caller's may raise
    when the client goes away meanwhile: Quart cancels such a request, unapplied).
    """
    router = emu.routers[product]
    if not authenticated(emu, first(headers, "authorization")):
        return UNAUTHENTICATED
    form_list: list[tuple[str, str]] = []
    if method == "POST":
        form_list = list(await read_form())
    decision, injected = await inject(emu, product, method, path, form_list, headers, sleep)
    if injected is not None:
        return injected
    entry: dict[str, Any] = {"product": product, "method": method, "path": path}
    try:
        op, params, handler = router.resolve(method, path)
        form = parse_fields(op.form_fields, form_list, where="form", required=op.required)
        query_fields = parse_fields(op.query_params, query, where="query")
        call = Call(op, params, form, query_fields, dict(headers), emu.clock.now(), path)
        entry["template"] = op.template
        entry["form"] = mask(form)
        entry["if_match"] = call.if_match()
        reply = handler(call)
    except ApiError as exc:
        emu.log.append("rest", **entry, status=exc.status, code=exc.code, applied=False)
        return error_answer(exc)
    emu.log.append(
        "rest",
        **entry,
        status=reply.status,
        applied=True,
        fault=f"lose_{decision.lose_mode}" if decision.lose_mode else None,
    )
    lost = lose(emu, decision)
    if lost is not None:
        return lost
    return json_answer(reply.body, reply.status, reply.headers)
