"""The built-in HTTP CRM enricher against a scripted CRM on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from flex_bridge.adapters.crm import HttpCrm, http_crm
from flex_bridge.app.enrichment import Enrichment
from flex_bridge.domain.enrichment import EnricherResult, TaskContext
from flex_bridge.domain.policy import EnricherSpec, EnrichmentPolicy
from flex_bridge.errors import (
    ConfigError,
    RateLimitedError,
    RejectedError,
    TransientUpstreamError,
    UpstreamError,
)
from tests.support.fakes import WT, FakeTasks

PHONE = "+15557654321"
CUSTOMER = {"name": "Ada Sato", "tier": "gold", "open_cases": 2}


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: CUSTOMER)
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    raw: bytes | None = None


@dataclass
class Seen:
    method: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


class ScriptedCrm:
    """Answers each request with the next scripted reply (the last one repeats)."""

    def __init__(self) -> None:
        self.replies: list[Reply] = [Reply()]
        self.seen: list[Seen] = []
        self.release = asyncio.Event()
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        text = await request.text()
        self.seen.append(
            Seen(
                request.method,
                dict(request.query),
                json.loads(text) if text else None,
                dict(request.headers),
            )
        )
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if reply.hang:
            await self.release.wait()
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, headers=reply.headers)
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/customers"))

    def script(self, *replies: Reply) -> None:
        self.replies = list(replies)


@pytest.fixture
async def crm() -> AsyncIterator[ScriptedCrm]:
    scripted = ScriptedCrm()
    app = web.Application()
    app.router.add_route("*", "/customers", scripted.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    scripted.server = server
    yield scripted
    scripted.release.set()
    await server.close()


@pytest.fixture
async def make() -> AsyncIterator[Any]:
    """``http_crm(options)``, closed at teardown."""
    built: list[HttpCrm] = []

    def build(**options: Any) -> HttpCrm:
        enricher = http_crm(options)
        built.append(enricher)
        return enricher

    yield build
    for enricher in built:
        await enricher.aclose()


def context(**attributes: Any) -> TaskContext:
    return TaskContext(WT, attributes)


# ------------------------------------------------------------------------------ lookups
async def test_get_sends_the_first_key_present_as_a_query_parameter(
    crm: ScriptedCrm, make: Any
) -> None:
    enricher = make(url=crm.url, keys=["customer_id", "from"])
    patch = await enricher(context(**{"from": PHONE, "type": "support"}))
    assert patch == {"crm": CUSTOMER}
    assert [(s.method, s.query) for s in crm.seen] == [("GET", {"from": PHONE})]

    patch = await enricher(context(customer_id="C-1000", **{"from": PHONE}))
    assert crm.seen[-1].query == {"customer_id": "C-1000"}


async def test_numbers_are_sent_as_text_and_objects_are_not_keys(
    crm: ScriptedCrm, make: Any
) -> None:
    enricher = make(url=crm.url, keys=["account", "customer_id"])
    await enricher(context(account={"id": 1}, customer_id=1042))
    assert crm.seen[-1].query == {"customer_id": "1042"}


async def test_post_sends_a_json_body_and_the_headers(crm: ScriptedCrm, make: Any) -> None:
    enricher = make(
        url=crm.url,
        keys=["customer_id"],
        method="post",
        target="customer",
        headers={"X-Api-Key": "s3cret"},
    )
    patch = await enricher(context(customer_id=1042))
    assert patch == {"customer": CUSTOMER}
    seen = crm.seen[-1]
    assert (seen.method, seen.body, seen.query) == ("POST", {"customer_id": 1042}, {})
    assert seen.headers["X-Api-Key"] == "s3cret"
    assert "s3cret" not in repr(enricher)


async def test_an_unknown_customer_is_empty(crm: ScriptedCrm, make: Any) -> None:
    crm.script(Reply(404, {"error": "unknown customer"}))
    assert await make(url=crm.url, keys=["customer_id"])(context(customer_id="C-9")) == {}
    assert len(crm.seen) == 1


async def test_no_lookup_key_means_no_call(crm: ScriptedCrm, make: Any) -> None:
    enricher = make(url=crm.url, keys=["customer_id", "from"])
    assert await enricher(context(type="support", customer_id="")) == {}
    assert crm.seen == []


async def test_a_task_enriched_before_is_not_looked_up_again(crm: ScriptedCrm, make: Any) -> None:
    enricher = make(url=crm.url, keys=["customer_id"], target="crm")
    assert await enricher(context(customer_id="C-1", crm={"tier": "gold"})) == {}
    assert crm.seen == []


# ------------------------------------------------------------------------------ failures
async def test_a_503_then_200_is_retried(crm: ScriptedCrm, make: Any) -> None:
    crm.script(Reply(503, {"error": "busy"}), Reply())
    patch = await make(url=crm.url, keys=["customer_id"])(context(customer_id="C-1"))
    assert patch == {"crm": CUSTOMER}
    assert len(crm.seen) == 2


async def test_a_429_is_retried(crm: ScriptedCrm, make: Any) -> None:
    crm.script(Reply(429, {"error": "slow down"}, headers={"Retry-After": "0"}), Reply())
    patch = await make(url=crm.url, keys=["customer_id"])(context(customer_id="C-1"))
    assert patch == {"crm": CUSTOMER}
    assert len(crm.seen) == 2


async def test_429s_past_the_retries_raise_rate_limited(crm: ScriptedCrm, make: Any) -> None:
    crm.script(Reply(429, {}, headers={"Retry-After": "0"}))
    with pytest.raises(RateLimitedError):
        await make(url=crm.url, keys=["customer_id"], retries=1)(context(customer_id="C-1"))
    assert len(crm.seen) == 2


async def test_5xx_past_the_retries_raises_transient(crm: ScriptedCrm, make: Any) -> None:
    crm.script(Reply(500, {"error": "down"}))
    with pytest.raises(TransientUpstreamError) as caught:
        await make(url=crm.url, keys=["customer_id"], retries=2)(context(customer_id="C-1"))
    assert caught.value.status == 500
    assert len(crm.seen) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 409])
async def test_other_4xx_is_an_error_without_retries(
    crm: ScriptedCrm, make: Any, status: int
) -> None:
    crm.script(Reply(status, {"error": "no"}))
    with pytest.raises(RejectedError) as caught:
        await make(url=crm.url, keys=["customer_id"])(context(customer_id="C-1"))
    assert caught.value.status == status
    assert len(crm.seen) == 1


@pytest.mark.parametrize(
    "reply",
    [
        Reply(raw=b"<html>oops</html>"),
        Reply(body=["not", "an", "object"]),
        Reply(raw=b'{"a":1,"a":2}'),
        Reply(raw=b'{"n":NaN}'),
        Reply(raw=b'{"big":"' + b"x" * 70_000 + b'"}'),
    ],
    ids=["html", "array", "duplicate-keys", "nan", "too-large"],
)
async def test_an_answer_that_is_not_a_json_object_is_an_error(
    crm: ScriptedCrm, make: Any, reply: Reply
) -> None:
    crm.script(reply)
    with pytest.raises(UpstreamError) as caught:
        await make(url=crm.url, keys=["customer_id"])(context(customer_id="C-1"))
    assert not isinstance(caught.value, TransientUpstreamError)
    assert len(crm.seen) == 1


async def test_a_hung_crm_times_out_after_its_retries(crm: ScriptedCrm, make: Any) -> None:
    crm.script(Reply(hang=True))
    enricher = make(url=crm.url, keys=["from"], timeout=0.05, retries=1)
    with pytest.raises(TransientUpstreamError) as caught:
        await enricher(context(**{"from": PHONE}))
    assert "did not answer within 0.05 s" in str(caught.value)
    assert caught.value.__cause__ is None
    assert len(crm.seen) == 2


async def test_a_refused_connection_is_transient_and_names_no_value(make: Any) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    enricher = make(url=f"http://127.0.0.1:{port}/customers", keys=["from"], retries=1)
    with pytest.raises(TransientUpstreamError) as caught:
        await enricher(context(**{"from": PHONE}))
    assert "could not be reached" in str(caught.value)
    assert PHONE not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_a_hung_crm_inside_enrichment_is_a_timeout_that_blocks_nothing(
    crm: ScriptedCrm, caplog: pytest.LogCaptureFixture
) -> None:
    crm.script(Reply(hang=True))
    tr = FakeTasks.holding(json.dumps({"from": PHONE}))
    spec = EnricherSpec(
        "crm",
        "flex_bridge.adapters.crm:http_crm",
        0.1,
        {"url": crm.url, "keys": ["from"], "timeout": 5.0},
    )
    enrichment = Enrichment(EnrichmentPolicy(enrichers=(spec,)), tr)
    with caplog.at_level(logging.DEBUG):
        outcome = await enrichment.enrich(WT, budget=1.0)
    await enrichment.close()
    assert outcome.status == "failed"
    assert outcome.results == (
        EnricherResult("crm", "timeout", "no answer within its timeout (0.1 s)"),
    )
    assert outcome.to_json() == {"status": "failed", "enrichers": {"crm": "timeout"}}
    assert tr.writes == []
    assert PHONE not in caplog.text


async def test_errors_and_logs_never_carry_the_looked_up_value(
    crm: ScriptedCrm, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    crm.script(Reply(500, {"error": f"no such number {PHONE}"}))
    tr = FakeTasks.holding(json.dumps({"from": PHONE}))
    spec = EnricherSpec(
        "crm", "flex_bridge.adapters.crm:http_crm", 5.0, {"url": crm.url, "keys": ["from"]}
    )
    enrichment = Enrichment(EnrichmentPolicy(enrichers=(spec,)), tr)
    with caplog.at_level(logging.DEBUG):
        outcome = await enrichment.enrich(WT, budget=5.0)
    await enrichment.close()
    assert outcome.results == (
        EnricherResult("crm", "error", "TransientUpstreamError: the CRM answered 500"),
    )
    assert PHONE not in caplog.text


async def test_the_session_is_made_on_first_use_and_closed_by_aclose(crm: ScriptedCrm) -> None:
    enricher = http_crm({"url": crm.url, "keys": ["customer_id"]})
    assert enricher._session is None
    await enricher(context(customer_id="C-1"))
    session = enricher._session
    assert session is not None and not session.closed
    await enricher.aclose()
    assert session.closed and enricher._session is None
    await enricher.aclose()  # twice is fine


# ------------------------------------------------------------------------------ options
def test_defaults() -> None:
    enricher = http_crm({"url": "https://crm.example.com/c", "keys": ["from"]})
    assert (enricher.target, enricher.method, enricher.timeout, enricher.retries) == (
        "crm",
        "GET",
        1.0,
        2,
    )
    assert enricher.policy.max_attempts == 3
    assert enricher._session is None  # built outside any event loop: nothing opened yet


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"keys": ["from"]}, "'url'"),
        ({"url": "ftp://crm/x", "keys": ["from"]}, "'url'"),
        ({"url": "http://", "keys": ["from"]}, "'url'"),
        ({"url": 5, "keys": ["from"]}, "'url'"),
        ({"url": "http://crm/x"}, "'keys'"),
        ({"url": "http://crm/x", "keys": []}, "'keys'"),
        ({"url": "http://crm/x", "keys": "from"}, "'keys'"),
        ({"url": "http://crm/x", "keys": ["from", ""]}, "'keys'"),
        ({"url": "http://crm/x", "keys": ["from"], "target": ""}, "'target'"),
        ({"url": "http://crm/x", "keys": ["from"], "method": "PUT"}, "'method'"),
        ({"url": "http://crm/x", "keys": ["from"], "timeout": 0}, "'timeout'"),
        ({"url": "http://crm/x", "keys": ["from"], "timeout": "1"}, "'timeout'"),
        ({"url": "http://crm/x", "keys": ["from"], "timeout": float("inf")}, "'timeout'"),
        ({"url": "http://crm/x", "keys": ["from"], "retries": -1}, "'retries'"),
        ({"url": "http://crm/x", "keys": ["from"], "retries": 1.5}, "'retries'"),
        ({"url": "http://crm/x", "keys": ["from"], "retries": True}, "'retries'"),
        ({"url": "http://crm/x", "keys": ["from"], "headers": {"X": 1}}, "'headers'"),
        ({"url": "http://crm/x", "keys": ["from"], "headres": {}}, "headres"),
    ],
)
def test_options_are_validated_at_factory_time(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        http_crm(options)
    assert named in str(caught.value)


def test_a_bad_option_in_the_policy_is_a_config_error_naming_enricher_and_option() -> None:
    spec = EnricherSpec("crm", "flex_bridge.adapters.crm:http_crm", 1.0, {"keys": ["from"]})
    with pytest.raises(ConfigError) as caught:
        Enrichment(EnrichmentPolicy(enrichers=(spec,)), FakeTasks.holding())
    assert str(caught.value).startswith("enricher 'crm': http_crm option 'url'")
