"""The REST front door (``rest_path = "asgi"``) answers exactly as Quart's routes
(``rest_path = "quart"``) do.

Each test runs two emulators over real sockets, one per path, with the same seed, the same
SIDs (``uuid4`` counts from 1, and starts again from the same number for each request's
twin) and a clock that stands still; every request goes to both, and the status, the headers
(all but the server's ``Date``), the body and the request log must be the same, byte for
byte.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest

from flex_bridge.emulator.clock import Clock
from flex_bridge.emulator.front_door import RestFrontDoor
from tests.support.emulator import RunningEmulator

T0 = 1_800_000_000.0
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
LOST = b"<the connection was dropped>"


class CountingIds:
    """``uuid.uuid4`` made predictable: 1, 2, 3..."""

    def __init__(self) -> None:
        self.next = 1

    def __call__(self) -> uuid.UUID:
        value = uuid.UUID(int=self.next)
        self.next += 1
        return value


@dataclass(frozen=True)
class Seen:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]  # as received, without Date
    body: bytes  # LOST when the body never came


class Twins:
    """The same emulator on both REST paths."""

    def __init__(
        self,
        asgi: RunningEmulator,
        quart: RunningEmulator,
        ids: CountingIds,
        session: aiohttp.ClientSession,
    ) -> None:
        self.asgi, self.quart, self.ids, self.session = asgi, quart, ids, session
        door = asgi.server.app.asgi_app
        assert isinstance(door, RestFrontDoor)
        assert not isinstance(quart.server.app.asgi_app, RestFrontDoor)
        self.passed: list[str] = []  # the HTTP requests the front door left to Quart
        inner = door.app

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                self.passed.append(f"{scope['method']} {scope['path']}")
            await inner(scope, receive, send)

        door.app = counted
        assert asgi.state is not None and quart.state is not None
        assert replace(asgi.state, base_url="") == replace(quart.state, base_url="")
        self.state = asgi.state
        self.workspace = f"/taskrouter/v1/Workspaces/{self.state.workspace_sid}"
        self.service = f"/sync/v1/Services/{self.state.sync_service_sid}"

    async def _one(
        self,
        running: RunningEmulator,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
        auth: bool,
    ) -> Seen:
        sent = {**(running.auth_header if auth else {}), **headers}
        data = None if body is None else io.BytesIO(body)  # a large body: no warning
        async with self.session.request(
            method, running.url + path, data=data, headers=sent
        ) as answer:
            kept = tuple((k, v) for k, v in answer.raw_headers if k.lower() != b"date")
            try:
                read = await answer.read()
            except aiohttp.ClientPayloadError:
                read = LOST
            return Seen(answer.status, kept, read)

    async def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        auth: bool = True,
    ) -> Seen:
        """The request to both paths; what both answered, the same."""
        start = self.ids.next
        front = await self._one(self.asgi, method, path, body, headers or {}, auth)
        used = self.ids.next
        self.ids.next = start
        routed = await self._one(self.quart, method, path, body, headers or {}, auth)
        assert self.ids.next == used, "the two paths made different objects"
        assert front == routed
        return front

    async def post(self, path: str, form: bytes, **headers: str) -> Seen:
        return await self.send("POST", path, form, {**FORM, **headers})

    async def admin(self, method: str, path: str, body: Any = None) -> list[Any]:
        """An admin API call to both (through Quart either way); both answers."""
        answers = []
        for running in (self.asgi, self.quart):
            async with self.session.request(method, running.url + path, json=body) as answer:
                assert answer.status == 200, await answer.text()
                answers.append(await answer.json())
        return answers

    async def faults(self, rules: list[dict[str, Any]]) -> None:
        await self.admin("POST", "/_emulator/faults", {"rules": rules, "seed": 1})

    async def logs_match(self) -> list[dict[str, Any]]:
        """Both request logs, the same; the REST entries."""
        self.passed.clear()  # earlier admin API calls
        front, routed = await self.admin("GET", "/_emulator/log?kind=rest")
        assert front == routed
        entries: list[dict[str, Any]] = front["entries"]
        return entries


@pytest.fixture
async def twins(
    start_emulator: Callable[..., RunningEmulator],
    monkeypatch: pytest.MonkeyPatch,
    session: aiohttp.ClientSession,
) -> Twins:
    ids = CountingIds()
    monkeypatch.setattr(uuid, "uuid4", ids)
    monkeypatch.setattr(Clock, "now", lambda self: T0 + self.offset)
    asgi = start_emulator(rest_path="asgi")
    ids.next = 1
    quart = start_emulator(rest_path="quart")
    return Twins(asgi, quart, ids, session)


def body_of(seen: Seen) -> Any:
    return json.loads(seen.body)


def header(seen: Seen, name: str) -> str | None:
    for key, value in seen.headers:
        if key.decode().lower() == name.lower():
            return value.decode()
    return None


# ------------------------------------------------------------------------------ success
async def test_taskrouter_create_fetch_list_and_accept(twins: Twins) -> None:
    worker = twins.state.workers[0]["sid"]
    created = await twins.post(
        f"{twins.workspace}/Tasks",
        b"Attributes=%7B%22a%22%3A+%22x+y%22%7D&RoutingTarget=" + worker.encode(),
    )
    assert created.status == 201
    assert header(created, "Content-Type") == "application/json"
    assert header(created, "ETag") is not None
    task = body_of(created)
    assert task["attributes"] == '{"a": "x y"}'  # + is a space, percent-escapes decoded

    fetched = await twins.send("GET", f"{twins.workspace}/Tasks/{task['sid']}")
    assert fetched.status == 200
    listed = await twins.send("GET", f"{twins.workspace}/Tasks/{task['sid']}/Reservations")
    [reservation] = body_of(listed)["reservations"]
    accepted = await twins.post(
        f"{twins.workspace}/Tasks/{task['sid']}/Reservations/{reservation['sid']}",
        b"ReservationStatus=accepted",
    )
    assert accepted.status == 200
    assert body_of(accepted)["reservation_status"] == "accepted"
    assert twins.passed == []  # the front door answered every one
    entries = await twins.logs_match()
    assert [e["status"] for e in entries] == [201, 200, 200, 200]


async def test_sync_item_create_update_with_if_match_and_delete(twins: Twins) -> None:
    await twins.post(f"{twins.service}/Maps", b"UniqueName=m")
    items = f"{twins.service}/Maps/m/Items"
    created = await twins.post(items, b"Key=k&Data=%7B%22n%22%3A1%7D")
    assert created.status == 201
    revision = body_of(created)["revision"]
    updated = await twins.post(f"{items}/k", b"Data=%7B%22n%22%3A2%7D", **{"If-Match": revision})
    assert updated.status == 200
    stale = await twins.post(f"{items}/k", b"Data=%7B%22n%22%3A3%7D", **{"If-Match": revision})
    assert stale.status == 412
    deleted = await twins.send("DELETE", f"{items}/k")
    assert deleted.status == 204
    assert deleted.body == b""
    assert twins.passed == []
    entries = await twins.logs_match()
    assert [e["if_match"] for e in entries] == [None, None, revision, revision, None]


async def test_repeated_query_keys(twins: Twins) -> None:
    await twins.post(f"{twins.workspace}/Tasks", b"Attributes=%7B%7D")
    both = await twins.send(
        "GET", f"{twins.workspace}/Tasks?AssignmentStatus=pending&AssignmentStatus=reserved"
    )
    assert both.status == 200
    assert len(body_of(both)["tasks"]) == 1
    twice = await twins.send("GET", f"{twins.workspace}/Tasks?PageSize=2&PageSize=3")
    assert twice.status == 400
    assert "more than once" in body_of(twice)["message"]
    blank = await twins.send("GET", f"{twins.workspace}/Tasks?PageSize=")
    assert blank.status == 400
    await twins.logs_match()


# ------------------------------------------------------------------------------- errors
async def test_unauthenticated(twins: Twins) -> None:
    for headers in ({}, {"Authorization": "Basic !!"}, {"Authorization": "Bearer x"}):
        refused = await twins.send("GET", twins.workspace, headers=headers, auth=False)
        assert refused.status == 401
        assert header(refused, "WWW-Authenticate") == 'Basic realm="Twilio API"'
        assert body_of(refused)["code"] == 20003
    wrong = aiohttp.encode_basic_auth(twins.state.account_sid, "wrong")
    assert (await twins.send("GET", twins.workspace, headers={"Authorization": wrong})).status == (
        401
    )


async def test_unknown_path_product_and_method(twins: Twins) -> None:
    missing = await twins.send("GET", "/taskrouter/v1/Nothing/Here")
    assert (missing.status, body_of(missing)["code"]) == (404, 20404)
    product = await twins.send("POST", "/voice/v1/Calls", b"To=1", FORM, auth=False)
    assert (product.status, body_of(product)["message"]) == (404, "Unknown product 'voice'")
    for method, path in (("PUT", twins.workspace), ("PATCH", "/voice/v1/Calls")):
        wrong = await twins.send(method, path)
        assert (wrong.status, body_of(wrong)["code"]) == (405, 20004)
    head = await twins.send("HEAD", twins.workspace)
    assert head.status == 405
    assert twins.passed == []
    # Quart's routing answers an empty path itself, and OPTIONS: the front door leaves them.
    empty = await twins.send("GET", "/taskrouter/v1/")
    assert empty.status == 404
    options = await twins.send("OPTIONS", "/voice/v1/Calls")
    assert options.status == 200
    assert twins.passed == ["GET /taskrouter/v1/", "OPTIONS /voice/v1/Calls"]


async def test_a_body_over_one_mebibyte_is_413(twins: Twins) -> None:
    big = b"Attributes=" + b"x" * (1024 * 1024)
    over = await twins.post(f"{twins.workspace}/Tasks", big)
    assert over.status == 413
    assert body_of(over)["code"] == 20001
    at_limit = b"Attributes=" + b"x" * (1024 * 1024 - len("Attributes="))
    limit = await twins.post(f"{twins.workspace}/Tasks", at_limit)
    assert limit.status == 400  # read: the attributes are too long for TaskRouter
    assert await twins.logs_match() != []


async def test_malformed_forms(twins: Twins) -> None:
    items = f"{twins.service}/Maps/m/Items"
    await twins.post(f"{twins.service}/Maps", b"UniqueName=m")
    not_utf8 = await twins.post(items, b"Key=k&Data=\xff")
    assert not_utf8.status == 400  # no form at all: Key and Data are missing
    assert "Missing required parameter" in body_of(not_utf8)["message"]
    escaped = await twins.post(items, b"Key=%ff&Data=%7B%7D")
    assert escaped.status in (201, 400)
    for form in (b"=&&Key", b"Key=a&Key=b&Data=%7B%7D", b"Bogus=1"):
        assert (await twins.post(items, form)).status == 400
    json_body = await twins.send(
        "POST", items, b'{"Key": "k"}', {"Content-Type": "application/json"}
    )
    assert json_body.status == 400
    await twins.logs_match()


# ------------------------------------------------------------------------------- faults
async def test_an_injected_error_carries_retry_after(twins: Twins) -> None:
    await twins.faults([{"product": "taskrouter", "error_rates": {"429": 1}, "retry_after": 2.5}])
    refused = await twins.post(
        f"{twins.workspace}/Tasks", b"Attributes=%7B%7D", **{"If-Match": "3"}
    )
    assert refused.status == 429
    assert header(refused, "Retry-After") == "3"
    assert body_of(refused)["code"] == 20429
    [entry] = await twins.logs_match()
    assert (entry["fault"], entry["if_match"], entry["applied"]) == ("error_429", "3", False)


async def test_lose_504_applies_the_change(twins: Twins) -> None:
    await twins.faults([{"method": "POST", "lose_after_commit": 1, "lose_mode": "504"}])
    lost = await twins.post(f"{twins.workspace}/Tasks", b"Attributes=%7B%7D")
    assert (lost.status, body_of(lost)["code"]) == (504, 20504)
    await twins.admin("DELETE", "/_emulator/faults")
    listed = await twins.send("GET", f"{twins.workspace}/Tasks")
    assert len(body_of(listed)["tasks"]) == 1
    entries = await twins.logs_match()
    assert entries[0]["fault"] == "lose_504"


async def test_lose_drop_cuts_the_connection_after_the_change(twins: Twins) -> None:
    await twins.faults([{"method": "POST", "lose_after_commit": 1, "lose_mode": "drop"}])
    dropped = await twins.post(f"{twins.workspace}/Tasks", b"Attributes=%7B%22d%22%3A1%7D")
    assert dropped.status == 200  # the promise of a body that never comes
    assert header(dropped, "Content-Length") == "1024"
    assert dropped.body == LOST
    await twins.admin("DELETE", "/_emulator/faults")
    listed = await twins.send("GET", f"{twins.workspace}/Tasks")
    assert len(body_of(listed)["tasks"]) == 1  # applied all the same
    entries = await twins.logs_match()
    assert (entries[0]["fault"], entries[0]["status"]) == ("lose_drop", 201)
    counts = await twins.admin("GET", "/_emulator/faults")
    assert [c["injected"] for c in counts] == [{"lose_drop": 1}] * 2


@pytest.mark.slow
async def test_a_request_whose_client_left_during_its_latency_is_not_applied(twins: Twins) -> None:
    """Quart cancels the handler of a client that went away; the front door gives up too.
    The latency is long (2 s) because the servers must notice the client leave before it
    ends: with 300 ms, a loaded machine's stall let one of them apply the POST."""
    await twins.faults([{"method": "POST", "latency_ms": 2000}])
    tasks = f"{twins.workspace}/Tasks"
    for running in (twins.asgi, twins.quart):
        with pytest.raises(TimeoutError):
            async with twins.session.post(
                running.url + tasks,
                data=b"Attributes=%7B%7D",
                headers={**running.auth_header, **FORM},
                timeout=aiohttp.ClientTimeout(total=0.05),
            ):
                pass
    await asyncio.sleep(4.0)  # twice the latency: time enough to have applied it
    await twins.admin("DELETE", "/_emulator/faults")
    listed = await twins.send("GET", tasks)
    assert body_of(listed)["tasks"] == []
    assert [e["method"] for e in await twins.logs_match()] == ["GET"]
