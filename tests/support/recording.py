"""Record every raw HTTP exchange the official client has, and check each against the spec.

``RecordingHttpClient`` is flex-bridge's own ``BridgeHttpClient`` (so the official ``twilio``
package talks to the emulator exactly as it does in production) that keeps the method, the
*original* Twilio URL (``https://<product>.twilio.com/...``), the status and the raw text of
every response. ``Conformance`` then checks each recorded answer:

- a 200/201 JSON body against Twilio's OpenAPI response schema (``schemas.validate_response``:
  every documented field present, with the documented type), plus the ``format`` keywords that
  schema drops (``date-time`` fields are Twilio's ``YYYY-MM-DDTHH:MM:SSZ``, ``uri`` fields are
  absolute ``https`` URLs), and the status must be the operation's documented success status;
- a 204 (DELETE) has an empty body;
- an error has exactly Twilio's error shape ``{code, message, more_info, status}``.

What was answered with success is collected as ``(product, METHOD, template)``, so a suite can
assert that every operation the emulator serves has been through the checks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from twilio.http.response import Response
from twilio.rest import Client

from flex_bridge.adapters.http import BridgeHttpClient
from tests.support.emulator import RunningEmulator
from tests.support.schemas import spec, validate_response

TWILIO_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
SUCCESS = (200, 201)
TWILIO_URL_FIELDS = frozenset(
    {"url", "first_page_url", "next_page_url", "previous_page_url", "actor_url", "resource_url"}
)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request the official client made and the raw answer it got."""

    method: str
    url: str
    params: tuple[tuple[str, str], ...]
    form: tuple[tuple[str, str], ...]
    status: int
    text: str
    headers: Mapping[str, str]

    @property
    def product(self) -> str:
        host = urlsplit(self.url).hostname or ""
        assert host.endswith(".twilio.com"), f"not a Twilio URL: {self.url}"
        return host.split(".", 1)[0]

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> dict[str, list[str]]:
        """The query: the URL's own (next-page URLs carry one) and ``params``."""
        out: dict[str, list[str]] = {}
        for name, value in [*parse_qsl(urlsplit(self.url).query), *self.params]:
            out.setdefault(name, []).append(value)
        return out

    def json(self) -> Any:
        return json.loads(self.text)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None

    def __str__(self) -> str:
        return f"{self.method} {self.url} -> {self.status}"


def _pairs(values: Mapping[str, object] | None) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for name, value in (values or {}).items():
        if isinstance(value, list | tuple):
            pairs.extend((name, str(v)) for v in value)
        else:
            pairs.append((name, str(value)))
    return tuple(pairs)


class RecordingHttpClient(BridgeHttpClient):
    """``BridgeHttpClient`` that keeps every exchange in ``exchanges``."""

    def __init__(self, base_url: str | None = None, *, timeout: float = 10.0) -> None:
        super().__init__(base_url, timeout=timeout)
        self.exchanges: list[Exchange] = []

    async def request(
        self,
        method: str,
        url: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        response: Response = await super().request(
            method, url, params, data, headers, auth, timeout, allow_redirects
        )
        self.exchanges.append(
            Exchange(
                method=method.upper(),
                url=url,
                params=_pairs(params),
                form=_pairs(data),
                status=response.status_code,
                text=response.text,
                headers=dict(response.headers or {}),
            )
        )
        return response


def recording_client(running: RunningEmulator, timeout: float = 10.0) -> Client:
    """The official client over a ``RecordingHttpClient`` pointed at ``running``."""
    http = RecordingHttpClient(running.url, timeout=timeout)
    return Client(running.config.account_sid, running.config.auth_token, http_client=http)


def exchanges_of(client: Client) -> list[Exchange]:
    http = client.http_client
    assert isinstance(http, RecordingHttpClient)
    return http.exchanges


# ------------------------------------------------------------------------------ the checks


def check_error_shape(exchange: Exchange) -> dict[str, Any]:
    """Twilio's REST error body: exactly code, message, more_info and status."""
    body = exchange.json()
    assert isinstance(body, dict), f"{exchange}: error body is not an object: {exchange.text}"
    assert set(body) == {"code", "message", "more_info", "status"}, f"{exchange}: {body}"
    assert isinstance(body["code"], int) and not isinstance(body["code"], bool), body
    assert isinstance(body["message"], str) and body["message"], body
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{body['code']}", body
    assert body["status"] == exchange.status, body
    content_type = exchange.header("Content-Type") or ""
    assert content_type.startswith("application/json"), f"{exchange}: {content_type}"
    return body


def _check_formats(
    product: str, schema: Mapping[str, Any], value: Any, where: str, name: str = ""
) -> None:
    """The ``format`` keywords the JSON-schema conversion drops: date-time, uri and uri-map.

    Resource URLs, links and paging URLs are Twilio's own (``https://<product>.twilio.com``),
    as Twilio answers; other URIs (callback URLs a client set) are absolute URLs.
    """
    doc = spec(product).doc
    while isinstance(schema, Mapping) and "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"][2:].split("/"):
            node = node[part]
        schema = node
    if value is None or not isinstance(schema, Mapping):
        return
    kind = schema.get("format")
    if kind == "date-time" and schema.get("type") == "string":
        assert isinstance(value, str) and TWILIO_DATE_TIME.match(value), (
            f"{where}: {value!r} is not a Twilio date-time"
        )
    elif kind == "uri" and schema.get("type") == "string":
        _check_uri(product, value, where, twilio=name in TWILIO_URL_FIELDS)
    elif kind == "uri-map":
        assert isinstance(value, dict), f"{where}: {value!r} is not a map of links"
        for link_name, link in value.items():
            if link is not None:
                _check_uri(product, link, f"{where}.{link_name}", twilio=True)
    if isinstance(value, dict):
        for prop, sub in schema.get("properties", {}).items():
            if prop in value:
                _check_formats(product, sub, value[prop], f"{where}.{prop}", prop)
    if isinstance(value, list) and "items" in schema:
        for i, sub_value in enumerate(value):
            _check_formats(product, schema["items"], sub_value, f"{where}[{i}]")


def _check_meta(exchange: Exchange, list_key: str, body: dict[str, Any]) -> None:
    """A list answer's paging block describes the page that was asked for."""
    meta = body["meta"]
    assert meta["key"] == list_key, f"{exchange}: meta.key {meta['key']!r}, not {list_key!r}"
    query = exchange.query
    if "PageSize" in query:
        assert meta["page_size"] == int(query["PageSize"][0]), f"{exchange}: {meta}"
    assert meta["page"] == int(query.get("Page", ["0"])[0]), f"{exchange}: {meta}"
    assert len(body[list_key]) <= meta["page_size"], f"{exchange}: page larger than page_size"
    for name in ("url", "first_page_url", "next_page_url", "previous_page_url"):
        if meta[name] is not None:
            assert urlsplit(meta[name]).path == exchange.path, f"{exchange}: meta.{name}"
    assert (meta["previous_page_url"] is None) == (meta["page"] == 0), f"{exchange}: {meta}"


def _check_uri(product: str, value: Any, where: str, *, twilio: bool) -> None:
    assert isinstance(value, str), f"{where}: {value!r} is not a URI"
    parts = urlsplit(value)
    assert parts.scheme in ("http", "https") and parts.netloc, f"{where}: {value!r} is relative"
    if twilio:
        assert value.startswith(f"https://{product}.twilio.com/v1/"), (
            f"{where}: {value!r} is not Twilio's own URL"
        )


@dataclass
class Conformance:
    """The checks above, applied to recorded exchanges, and what they covered."""

    exercised: set[tuple[str, str, str]] = field(default_factory=set)
    validated: int = 0
    errors: int = 0
    seen: int = 0

    def check(self, exchanges: list[Exchange]) -> None:
        for exchange in exchanges[self.seen :]:
            self.check_one(exchange)
        self.seen = len(exchanges)

    def check_one(self, exchange: Exchange) -> None:
        product = exchange.product
        op, _, _ = spec(product).match(exchange.method, exchange.path)
        assert op is not None, f"{exchange}: not a documented {product} operation"
        if exchange.status in SUCCESS:
            assert exchange.status == op.response_status, (
                f"{exchange}: documented success status is {op.response_status}"
            )
            content_type = exchange.header("Content-Type") or ""
            assert content_type.startswith("application/json"), f"{exchange}: {content_type}"
            body = exchange.json()
            try:
                template = validate_response(
                    product, exchange.method, exchange.path, exchange.status, body
                )
            except Exception as exc:
                raise AssertionError(f"{exchange}: {exc}") from exc
            operation = spec(product).doc["paths"][template][exchange.method.lower()]
            content = operation["responses"][str(exchange.status)]["content"]
            _check_formats(product, content["application/json"]["schema"], body, str(exchange))
            if op.list_key is not None:
                _check_meta(exchange, op.list_key, body)
            self.validated += 1
            self.exercised.add((product, exchange.method, op.template))
        elif exchange.status == 204:
            assert exchange.method == "DELETE", f"{exchange}: 204 for a {exchange.method}"
            assert op.response_status == 204, f"{exchange}: documented as {op.response_status}"
            assert exchange.text == "", f"{exchange}: 204 with a body: {exchange.text!r}"
            self.exercised.add((product, exchange.method, op.template))
        else:
            assert exchange.status >= 400, f"{exchange}: unexpected status"
            check_error_shape(exchange)
            self.errors += 1

    def covered(self, product: str) -> set[tuple[str, str]]:
        return {(method, template) for p, method, template in self.exercised if p == product}
