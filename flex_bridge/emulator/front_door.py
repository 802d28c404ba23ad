"""The emulator's front door: Twilio's REST paths served as plain ASGI, in front of Quart.

``/<product>/v1/...`` requests (TaskRouter, Sync, and the 404 of a product the emulator does
not serve) are answered here by the REST core (:func:`flex_bridge.emulator.rest.serve`)
without Quart's and werkzeug's request machinery, which cost more CPU than the emulator's
own work (docs/performance.md, "The emulator's REST front door"). Every other request (the
admin API, IAM, the feed, ``/sdk/``, WebSockets, lifespan) goes to the Quart app unchanged,
and so does any REST request whose handling by Quart's routing is not plain: ``OPTIONS``
(Quart's automatic answer), a path with an empty segment (werkzeug redirects it), a query
that is not UTF-8, a ``multipart/form-data`` body.

The answers are the Quart routes' byte for byte (they share the core and
:mod:`flex_bridge.emulator.answers`), the 1 MiB body limit (413) and wrong methods (405)
included. ``EmulatorConfig.rest_path = "quart"`` leaves the front door out.

Also here: losing a response on purpose (``lose_mode: drop``): :func:`send_dropped` for the
front door, :func:`with_dropped_responses` for the Quart routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from werkzeug.exceptions import (
    InternalServerError,
    MethodNotAllowed,
    RequestEntityTooLarge,
    RequestTimeout,
)

from flex_bridge.emulator.answers import Answer, http_error_answer
from flex_bridge.emulator.core import Emulator
from flex_bridge.emulator.rest import (
    FORM_TYPES,
    METHODS,
    first,
    form_items,
    mimetype,
    query_items,
    serve,
    unknown_product,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DROP_KEY = "flex_bridge.drop"
# ``/<product>/v1/<rest>`` as the Quart rules match it: werkzeug's default converter for the
# product (no slash), its path converter for the rest (a first character that is not a slash).
REST_PATH = re.compile(r"/([^/]+)/v1/([^/].*)")
# The REST rules' methods and the HEAD that Quart adds to a GET rule.
SERVED = frozenset({*METHODS, "HEAD"})


class ResponseLost(Exception):
    """Raised to make the server drop a connection whose request was already applied."""


async def send_dropped(send: Send) -> None:
    """A status line promising a body that never comes; the caller then raises
    :class:`ResponseLost` and the server closes the connection. The client sees a dropped
    connection after its request was committed: the ambiguous case."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"1024")],
        }
    )
    await send({"type": "http.response.body", "body": b"{", "more_body": True})


def with_dropped_responses(app: Any) -> ASGIApp:
    """Let a Quart handler lose its own response after the change was applied.

    The handler sets ``scope[DROP_KEY]["drop"]``; the response it produced is then replaced
    by :func:`send_dropped`, and the connection is closed.
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
            await send_dropped(send)
            raise ResponseLost("response dropped after commit (fault injection)")

    return asgi


class _TooLarge(Exception):
    """The request body is over the limit."""


class _Disconnected(Exception):
    """The client went away before its body was complete."""


class _Late(Exception):
    """The body did not come within the body timeout."""


async def read_body(receive: Receive, declared: int | None, limit: int) -> bytes:
    """The whole request body; :class:`_TooLarge` as soon as it is known to be over
    ``limit`` bytes (by its ``Content-Length``, or as it arrives), as Quart's ``Body``."""
    if declared is not None and declared > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise _TooLarge
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise _Disconnected


async def _gone(receive: Receive) -> None:
    """Returns once the client has gone (what is left of a body is dropped, as Quart does)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def sleep_unless_gone(receive: Receive, seconds: float) -> None:
    """Wait ``seconds``; :class:`_Disconnected` if the client goes away meanwhile. Quart
    cancels a handler whose client went away, so a request held by an injected latency is
    then never applied."""
    watch = asyncio.ensure_future(_gone(receive))
    try:
        done, _ = await asyncio.wait([watch], timeout=seconds)
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
    if done:
        raise _Disconnected


def declared_length(headers: Iterable[tuple[str, str]]) -> int | None:
    """``Content-Length`` as werkzeug reads it: None when absent or the body is chunked, 0
    when it is not a plain number."""
    length = encoding = None
    for name, value in headers:
        if name == "content-length" and length is None:
            length = value
        elif name == "transfer-encoding" and encoding is None:
            encoding = value
    if length is None or (
        encoding is not None and "chunked" in (p.strip().lower() for p in encoding.split(","))
    ):
        return None
    length = length.strip(" \t")
    return int(length) if length.isascii() and length.isdigit() else 0


def reserved_prefixes(rules: Iterable[tuple[str, str]], rest_endpoints: set[str]) -> frozenset[str]:
    """The first path segments the Quart app routes elsewhere than to the REST API (``iam``,
    ``sdk``, ``_emulator``, ``static``): ``/<product>/v1/...`` under them stays Quart's.
    ``rules`` are (rule, endpoint) pairs."""
    reserved = set()
    for rule, endpoint in rules:
        if endpoint in rest_endpoints:
            continue
        segment = rule.split("/")[1]
        if "<" in segment:
            raise ValueError(
                f"the rule {rule} takes any first path segment: the front door "
                "cannot tell its requests from the REST API's"
            )
        reserved.add(segment)
    return frozenset(reserved)


class RestFrontDoor:
    """The REST API as ASGI, in front of the Quart app ``app`` that serves the rest."""

    def __init__(
        self,
        emu: Emulator,
        app: Any,
        *,
        reserved: frozenset[str],
        max_body: int,
        body_timeout: float | None,
        logger: logging.Logger,
    ) -> None:
        self.emu = emu
        self.app: ASGIApp = app
        self.products = frozenset(emu.routers)
        self.reserved = reserved
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        match = REST_PATH.fullmatch(path)
        if match is None or "//" in path or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        product = match[1]
        method: str = scope["method"]
        if product in self.reserved or method == "OPTIONS":
            await self.app(scope, receive, send)
            return
        if product not in self.products:
            answer = unknown_product(product) if method in SERVED else self._not_allowed(path)
            await self._send(send, answer)
            return
        if method not in SERVED:
            await self._send(send, self._not_allowed(path))
            return
        try:
            query = query_items(scope["query_string"].decode())
        except UnicodeDecodeError:  # werkzeug fails on it, later: Quart's answer it is
            await self.app(scope, receive, send)
            return
        # As Quart's request headers: the peer's address first, then the request's.
        client = scope.get("client")
        headers = [("remote-addr", client[0] if client else "<local>")]
        headers += [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        form_type = ""
        if method == "POST":
            form_type = mimetype(first(headers, "content-type"))
            if form_type == "multipart/form-data":
                await self.app(scope, receive, send)
                return

        async def read_form() -> list[tuple[str, str]]:
            if form_type not in FORM_TYPES:  # Quart parses no other body as a form
                return []
            try:
                async with asyncio.timeout(self.body_timeout):
                    body = await read_body(receive, declared_length(headers), self.max_body)
            except TimeoutError:
                raise _Late from None
            return form_items(body)

        async def sleep(seconds: float) -> None:
            await sleep_unless_gone(receive, seconds)

        try:
            answer = await serve(
                self.emu, product, method, "/v1/" + match[2], headers, read_form, query, sleep
            )
        except _TooLarge:
            answer = http_error_answer(413, RequestEntityTooLarge.description, path)
        except _Late:
            answer = http_error_answer(408, RequestTimeout.description, path)
        except _Disconnected:
            return
        except Exception:
            self.logger.error(f"Exception on request {method} {path}", exc_info=True)
            answer = http_error_answer(500, InternalServerError.description, path)
        if answer.drop:
            await send_dropped(send)
            raise ResponseLost("response dropped after commit (fault injection)")
        await self._send(send, answer)

    @staticmethod
    def _not_allowed(path: str) -> Answer:
        return http_error_answer(405, MethodNotAllowed.description, path)

    @staticmethod
    async def _send(send: Send, answer: Answer) -> None:
        headers = [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()]
        headers.append((b"content-length", str(len(answer.body)).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})
