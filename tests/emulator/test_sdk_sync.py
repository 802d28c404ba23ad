"""The SDK surface's Sync side: tokens with a Sync service, ``/sdk/sync/v1/Maps``, Map item
pages, CORS, and the ``/sdk/sync/v1/ws`` WebSocket (docs/emulator.md, "The SDK surface")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from flex_bridge.emulator.blueprints import sdk_ws
from flex_bridge.emulator.core import Emulator
from flex_bridge.emulator.iam import ANSWER_FIELDS
from tests.support.emulator import Admin, RunningEmulator, header

TIMEOUT = 10.0
ORIGIN = "https://agent.example.test"
MAPS = "/sdk/sync/v1/Maps"


# ------------------------------------------------------------------------------- helpers
async def issue(admin: Admin, **body: Any) -> dict[str, Any]:
    status, issued, _ = await admin.request("POST", "/_emulator/tokens", json_body=body)
    assert status == 201, issued
    return dict(issued)


async def new_token(admin: Admin, **body: Any) -> str:
    body.setdefault("roles", ["agent"])
    return str((await issue(admin, **body))["token"])


async def sdk(
    admin: Admin,
    method: str,
    path: str,
    token: str | None,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    sent = {"Origin": ORIGIN, **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return await admin.request(method, path, json_body=json_body, auth=False, headers=sent)


def service_sid(running: RunningEmulator) -> str:
    assert running.state is not None
    return running.state.sync_service_sid


def sync_path(running: RunningEmulator, tail: str) -> str:
    return f"/sync/v1/Services/{service_sid(running)}{tail}"


async def rest(admin: Admin, method: str, path: str, **form: str) -> Any:
    """A REST Sync call with the account's Basic auth, as the bridge writes."""
    status, body, _ = await admin.request(method, path, data=form or None)
    assert status < 300, body
    return body


async def rest_map(admin: Admin, running: RunningEmulator, name: str, **form: str) -> str:
    body = await rest(admin, "POST", sync_path(running, "/Maps"), UniqueName=name, **form)
    return str(body["sid"])


async def put_item(
    admin: Admin, running: RunningEmulator, map_ref: str, key: str, data: Any, **form: str
) -> Any:
    path = sync_path(running, f"/Maps/{map_ref}/Items")
    return await rest(admin, "POST", path, Key=key, Data=json.dumps(data), **form)


def ws_url(running: RunningEmulator) -> str:
    return running.url.replace("http://", "ws://", 1) + "/sdk/sync/v1/ws"


async def receive(conn: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(conn.recv(), TIMEOUT))
    return message


async def send(conn: ClientConnection, message: Any) -> None:
    await conn.send(message if isinstance(message, str) else json.dumps(message))


async def close_code(conn: ClientConnection) -> int | None:
    """Wait for the server to close; the code it closed with."""
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(conn.recv(), TIMEOUT)
    return conn.close_code


@asynccontextmanager
async def socket(running: RunningEmulator) -> AsyncIterator[ClientConnection]:
    headers = {"Origin": "https://anywhere.example.test"}
    async with connect(ws_url(running), open_timeout=TIMEOUT, additional_headers=headers) as c:
        yield c


@asynccontextmanager
async def session(running: RunningEmulator, token: str) -> AsyncIterator[ClientConnection]:
    """An authenticated connection."""
    async with socket(running) as conn:
        await send(conn, {"type": "auth", "token": token})
        connected = await receive(conn)
        assert connected["type"] == "connected", connected
        yield conn


async def subscribe(conn: ClientConnection, ref: str) -> str:
    await send(conn, {"type": "subscribe", "map_sid": ref})
    answer = await receive(conn)
    assert answer["type"] == "subscribed", answer
    return str(answer["map_sid"])


async def nothing_pending(conn: ClientConnection) -> None:
    """Prove that no event is queued for the client: the session forwards every feed message
    already published before it answers a client message, so the next message must be the
    answer to this one."""
    await send(conn, {"type": "ping?"})
    answer = await receive(conn)
    assert (answer["type"], answer["code"]) == ("error", 20001), answer


# -------------------------------------------------------------------------------- tokens
async def test_a_token_grants_the_oldest_sync_service_by_default(
    emulator: RunningEmulator, admin: Admin
) -> None:
    other = await rest(admin, "POST", "/sync/v1/Services", FriendlyName="second")
    issued = await issue(admin, roles=["agent"], identity="ann")
    assert issued["sync_service_sid"] == service_sid(emulator)
    chosen = await issue(admin, roles=["agent"], sync_service_sid=other["sid"])
    assert chosen["sync_service_sid"] == other["sid"]
    # Twilio's validation answer keeps its own fields.
    status, body, _ = await admin.request(
        "POST",
        f"/iam/v1/Accounts/{emulator.config.account_sid}/Tokens/validate",
        json_body={"token": chosen["token"]},
    )
    assert status == 200
    assert list(body) == list(ANSWER_FIELDS)


@pytest.mark.parametrize("value", ["IS" + "0" * 32, 7, ""])
async def test_a_token_for_an_unknown_sync_service_is_refused(admin: Admin, value: Any) -> None:
    status, body, _ = await admin.request(
        "POST", "/_emulator/tokens", json_body={"roles": ["agent"], "sync_service_sid": value}
    )
    assert (status, body["code"]) == (400, 20001)
    assert "sync_service_sid" in body["message"]


async def test_a_token_without_a_sync_service_is_403_on_the_sync_surface(
    start_emulator: Callable[..., RunningEmulator], emulator: RunningEmulator, admin: Admin
) -> None:
    bare = Admin(start_emulator(options=None), admin.session)
    issued = await issue(bare, roles=["agent"])
    assert issued["sync_service_sid"] is None
    # And a token whose service was deleted since.
    token = await new_token(admin)
    await rest(admin, "DELETE", f"/sync/v1/Services/{service_sid(emulator)}")

    for who, used in ((bare, issued["token"]), (admin, token)):
        for method, path, body in (
            ("POST", MAPS, {"id": "agents"}),
            ("GET", MAPS + "/agents/Items", None),
        ):
            status, answer, headers = await sdk(who, method, path, used, body)
            assert (status, answer["code"]) == (403, 20403), answer
            assert answer["message"] == "The token grants no Sync service"
            assert header(headers, "Access-Control-Allow-Origin") == ORIGIN
    async with socket(bare.running) as conn:
        await send(conn, {"type": "auth", "token": issued["token"]})
        assert (await receive(conn))["code"] == 20403
        assert await close_code(conn) == 4001


# ------------------------------------------------------------------------ authentication
async def test_requests_without_a_valid_bearer_token_are_401(admin: Admin) -> None:
    expiring = await new_token(admin, ttl=60)
    await admin.advance(60)
    basic = admin.running.auth_header["Authorization"]
    cases: list[tuple[str | None, dict[str, str], int]] = [
        (None, {}, 20101),
        ("flex-emulator.never-issued", {}, 20101),
        (None, {"Authorization": basic}, 20101),  # the account's credentials are not a token
        (None, {"Authorization": "Bearer "}, 20101),
        (expiring, {}, 20104),
    ]
    for token, headers, code in cases:
        for method, path, body in (
            ("POST", MAPS, {"id": "agents"}),
            ("GET", MAPS + "/agents/Items", None),
        ):
            status, answer, got = await sdk(admin, method, path, token, body, headers)
            assert (status, answer["code"]) == (401, code), (token, headers, answer)
            assert answer["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
            assert header(got, "Access-Control-Allow-Origin") == ORIGIN
    messages = {
        (await sdk(admin, "POST", MAPS, token, {"id": "x"}))[1]["message"]
        for token in (None, expiring)
    }
    assert messages == {"Invalid Access Token", "Access Token expired or expiration date invalid"}
    # Nothing was created, and no token reached the log.
    state = admin.running.call(lambda emu: emu.sync.dump())
    assert state["services"][0]["maps"] == []
    log = json.dumps(await admin.log())
    assert expiring not in log


# ---------------------------------------------------------------------------------- Maps
async def test_open_or_create_creates_then_opens(emulator: RunningEmulator, admin: Admin) -> None:
    token = await new_token(admin)
    status, created, _ = await sdk(admin, "POST", MAPS, token, {"id": "agents"})
    assert status == 201
    assert set(created) == {"sid", "unique_name", "revision", "date_expires"}
    assert created["sid"].startswith("MP")
    assert (created["unique_name"], created["revision"], created["date_expires"]) == (
        "agents",
        "0",
        None,
    )
    again = await sdk(admin, "POST", MAPS, token, {"id": "agents", "mode": "open_or_create"})
    by_sid = await sdk(admin, "POST", MAPS, token, {"id": created["sid"], "mode": "open_existing"})
    assert (again[0], again[1]) == (200, created)
    assert (by_sid[0], by_sid[1]) == (200, created)
    # The map is the REST API's map, in the token's service.
    fetched = await rest(admin, "GET", sync_path(emulator, "/Maps/agents"))
    assert fetched["sid"] == created["sid"]
    await put_item(admin, emulator, "agents", "alice", {"v": 1})
    written = await rest(admin, "GET", sync_path(emulator, "/Maps/agents"))
    reopened = await sdk(admin, "POST", MAPS, token, {"id": "agents"})
    assert reopened[1]["revision"] == written["revision"] != created["revision"]


async def test_map_modes_refuse_as_documented(emulator: RunningEmulator, admin: Admin) -> None:
    token = await new_token(admin)
    status, body, _ = await sdk(
        admin, "POST", MAPS, token, {"id": "ghost", "mode": "open_existing"}
    )
    assert (status, body["code"]) == (404, 54200)
    assert "ghost" in body["message"]
    sid = await rest_map(admin, emulator, "taken")
    for ref in ("taken", sid):
        status, body, _ = await sdk(admin, "POST", MAPS, token, {"id": ref, "mode": "create_new"})
        assert (status, body["code"]) == (409, 54301), body
    # A SID cannot become a unique name: the store's rule.
    missing_sid = "MP" + "0" * 32
    for mode in ("create_new", "open_or_create"):
        status, body, _ = await sdk(admin, "POST", MAPS, token, {"id": missing_sid, "mode": mode})
        assert (status, body["code"]) == (400, 54302), body
    status, body, _ = await sdk(admin, "POST", MAPS, token, {"id": "fresh", "mode": "create_new"})
    assert (status, body["unique_name"]) == (201, "fresh")


async def test_a_map_of_another_service_is_not_found(
    emulator: RunningEmulator, admin: Admin
) -> None:
    other = await rest(admin, "POST", "/sync/v1/Services", FriendlyName="other")
    body = await rest(admin, "POST", f"/sync/v1/Services/{other['sid']}/Maps", UniqueName="theirs")
    token = await new_token(admin)  # the seeded service
    for ref in ("theirs", body["sid"]):
        status, answer, _ = await sdk(
            admin, "POST", MAPS, token, {"id": ref, "mode": "open_existing"}
        )
        assert (status, answer["code"]) == (404, 54200)
        status, answer, _ = await sdk(admin, "GET", f"{MAPS}/{ref}/Items", token)
        assert (status, answer["code"]) == (404, 54200)
        assert ref in answer["message"]


async def test_an_expired_map_is_gone_and_its_name_free(
    emulator: RunningEmulator, admin: Admin
) -> None:
    token = await new_token(admin, ttl=86_400)
    old = await rest_map(admin, emulator, "brief", Ttl="60")
    status, opened, _ = await sdk(admin, "POST", MAPS, token, {"id": "brief"})
    assert (status, opened["sid"]) == (200, old)
    assert opened["date_expires"] is not None
    await admin.advance(60)
    status, body, _ = await sdk(
        admin, "POST", MAPS, token, {"id": "brief", "mode": "open_existing"}
    )
    assert (status, body["code"]) == (404, 54200)
    status, created, _ = await sdk(admin, "POST", MAPS, token, {"id": "brief"})
    assert status == 201
    assert created["sid"] != old


@pytest.mark.parametrize(
    ("body", "naming"),
    [
        ("not json", "not valid JSON"),
        ([], "JSON object"),
        ({}, "id"),
        ({"id": ""}, "id"),
        ({"id": 5}, "id"),
        ({"id": "a", "mode": "open"}, "mode"),
        ({"id": "a", "ttl": 5}, "ttl"),
    ],
)
async def test_a_bad_map_body_is_400_naming_the_problem(
    admin: Admin, body: Any, naming: str
) -> None:
    token = await new_token(admin)
    if isinstance(body, str):
        status, answer, _ = await admin.request(
            "POST",
            MAPS,
            data=body,
            auth=False,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
    else:
        status, answer, _ = await sdk(admin, "POST", MAPS, token, body)
    assert (status, answer["code"]) == (400, 20001)
    assert naming in answer["message"]


# --------------------------------------------------------------------------- Map items
async def test_items_come_in_key_order_page_by_page(
    emulator: RunningEmulator, admin: Admin
) -> None:
    token = await new_token(admin)
    sid = await rest_map(admin, emulator, "roster")
    keys = ["delta", "alpha", "echo", "charlie", "bravo"]
    for n, key in enumerate(keys):
        await put_item(admin, emulator, "roster", key, {"n": n})
    await put_item(admin, emulator, "roster", "foxtrot", {"n": 9}, ItemTtl="30")
    await admin.advance(30)  # foxtrot expires: live items only

    pages: list[list[dict[str, Any]]] = []
    page_token: str | None = None
    for ref in (sid, "roster"):
        pages.clear()
        while True:
            query = "?pageSize=2" + (f"&pageToken={page_token}" if page_token else "")
            status, body, _ = await sdk(admin, "GET", f"{MAPS}/{ref}/Items{query}", token)
            assert status == 200, body
            pages.append(body["items"])
            page_token = body["next_page_token"]
            if page_token is None:
                break
        assert [[item["key"] for item in page] for page in pages] == [
            ["alpha", "bravo"],
            ["charlie", "delta"],
            ["echo"],
        ]
    item = pages[0][0]
    assert set(item) == {"key", "data", "revision", "date_updated", "date_expires"}
    fetched = await rest(admin, "GET", sync_path(emulator, "/Maps/roster/Items/alpha"))
    assert (item["data"], item["revision"], item["date_expires"]) == (
        {"n": 1},
        fetched["revision"],
        None,
    )
    assert item["date_updated"] == fetched["date_updated"]
    # The default page holds up to 50.
    status, body, _ = await sdk(admin, "GET", f"{MAPS}/roster/Items", token)
    assert (len(body["items"]), body["next_page_token"]) == (5, None)


@pytest.mark.parametrize(
    "query",
    [
        "?pageSize=0",
        "?pageSize=101",
        "?pageSize=x",
        "?pageSize=-1",
        "?pageToken=%%%",
        "?pageToken=bm90LWEtdG9rZW4",
        "?page=2",
    ],
)
async def test_a_bad_items_query_is_400(
    emulator: RunningEmulator, admin: Admin, query: str
) -> None:
    token = await new_token(admin)
    await rest_map(admin, emulator, "roster")
    status, body, _ = await sdk(admin, "GET", f"{MAPS}/roster/Items{query}", token)
    assert (status, body["code"]) == (400, 20001)


async def test_items_of_a_missing_map_are_404(admin: Admin) -> None:
    token = await new_token(admin)
    status, body, _ = await sdk(admin, "GET", f"{MAPS}/nowhere/Items", token)
    assert (status, body["code"]) == (404, 54200)
    assert "nowhere" in body["message"]


# ---------------------------------------------------------------------------------- CORS
def cors_of(headers: dict[str, str]) -> dict[str, str | None]:
    names = (
        "Access-Control-Allow-Origin",
        "Access-Control-Allow-Credentials",
        "Access-Control-Allow-Methods",
        "Access-Control-Allow-Headers",
        "Access-Control-Max-Age",
        "Vary",
    )
    return {name: header(headers, name) for name in names}


async def test_every_sdk_answer_carries_cors_for_any_origin(admin: Admin) -> None:
    token = await new_token(admin)
    expected = {
        "Access-Control-Allow-Origin": ORIGIN,
        "Access-Control-Allow-Credentials": None,
        "Access-Control-Allow-Methods": None,
        "Access-Control-Allow-Headers": None,
        "Access-Control-Max-Age": None,
        "Vary": "Origin",
    }
    answers = [
        await sdk(admin, "POST", MAPS, token, {"id": "agents"}),  # 201
        await sdk(admin, "GET", f"{MAPS}/agents/Items", token),  # 200
        await sdk(admin, "GET", f"{MAPS}/agents/Items", None),  # 401
        await sdk(admin, "POST", MAPS, token, {"id": ""}),  # 400
        await sdk(admin, "GET", MAPS, token),  # 405
        await sdk(admin, "GET", "/sdk/nowhere", token),  # 404
    ]
    assert [status for status, _, _ in answers] == [201, 200, 401, 400, 405, 404]
    for _, _, headers in answers:
        assert cors_of(headers) == expected
    # Without an Origin: any.
    status, _, headers = await admin.request(
        "GET", f"{MAPS}/agents/Items", auth=False, headers={"Authorization": f"Bearer {token}"}
    )
    assert (status, header(headers, "Access-Control-Allow-Origin")) == (200, "*")


@pytest.mark.parametrize(
    "path",
    [MAPS, f"{MAPS}/agents/Items", "/sdk/taskrouter/v1/Reservations/WR0/accept", "/sdk/other"],
)
async def test_a_preflight_under_sdk_is_204(admin: Admin, path: str) -> None:
    status, body, headers = await admin.request(
        "OPTIONS",
        path,
        auth=False,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert (status, body) == (204, None)
    assert cors_of(headers) == {
        "Access-Control-Allow-Origin": ORIGIN,
        "Access-Control-Allow-Credentials": None,
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_emulator/health"),
        ("OPTIONS", "/_emulator/health"),
        ("GET", "/sync/v1/Services"),
        ("POST", "/iam/v1/Accounts/AC0/Tokens/validate"),
        ("GET", "/sdkx/sync"),
    ],
)
async def test_nothing_outside_sdk_has_cors(admin: Admin, method: str, path: str) -> None:
    _, _, headers = await admin.request(method, path, headers={"Origin": ORIGIN})
    cors = cors_of(headers)
    assert "Origin" not in (cors.pop("Vary") or "")
    assert set(cors.values()) == {None}, headers


# ----------------------------------------------------------------------------- WebSocket
async def test_events_of_a_subscribed_map_follow_rest_writes(
    emulator: RunningEmulator, admin: Admin
) -> None:
    issued = await issue(admin, roles=["agent"], identity="ann")
    sid = await rest_map(admin, emulator, "agents")
    other = await rest_map(admin, emulator, "elsewhere")
    async with socket(emulator) as conn:
        await send(conn, {"type": "auth", "token": issued["token"]})
        connected = await receive(conn)
        assert connected == {
            "type": "connected",
            "identity": "ann",
            "expires": issued["expiration"],
        }
        assert await subscribe(conn, "agents") == sid  # a unique name, answered with the SID

        await put_item(admin, emulator, "elsewhere", "x", {"not": "mine"})
        added = await put_item(admin, emulator, "agents", "alice", {"v": 1})
        path = sync_path(emulator, "/Maps/agents/Items/alice")
        updated = await rest(admin, "POST", path, Data=json.dumps({"v": 2}))
        await rest(admin, "DELETE", path)

        events = [await receive(conn) for _ in range(3)]
        assert events == [
            {
                "type": "itemAdded",
                "map_sid": sid,
                "key": "alice",
                "data": {"v": 1},
                "revision": added["revision"],
                "date_updated": events[0]["date_updated"],
            },
            {
                "type": "itemUpdated",
                "map_sid": sid,
                "key": "alice",
                "data": {"v": 2},
                "revision": updated["revision"],
                "date_updated": events[1]["date_updated"],
            },
            {
                "type": "itemRemoved",
                "map_sid": sid,
                "key": "alice",
                "data": None,
                "revision": updated["revision"],
                "date_updated": events[2]["date_updated"],
            },
        ]
        assert events[0]["date_updated"] == added["date_updated"]
        assert events[1]["date_updated"] == updated["date_updated"]
        await nothing_pending(conn)  # nothing from "elsewhere"

        await send(conn, {"type": "unsubscribe", "map_sid": "agents"})
        assert await receive(conn) == {"type": "unsubscribed", "map_sid": sid}
        await put_item(admin, emulator, "agents", "bob", {"v": 3})
        await nothing_pending(conn)
        assert await subscribe(conn, other) == other
        await put_item(admin, emulator, "elsewhere", "y", {"v": 4})
        event = await receive(conn)
        assert (event["type"], event["map_sid"], event["key"]) == ("itemAdded", other, "y")


async def test_an_expired_item_is_removed_on_the_socket(
    emulator: RunningEmulator, admin: Admin
) -> None:
    token = await new_token(admin, ttl=86_400)
    sid = await rest_map(admin, emulator, "agents")
    async with session(emulator, token) as conn:
        await subscribe(conn, sid)
        added = await put_item(admin, emulator, "agents", "alice", {"v": 1}, ItemTtl="60")
        assert (await receive(conn))["type"] == "itemAdded"
        await admin.advance(60)
        removed = await receive(conn)
        assert removed["type"] == "itemRemoved"
        assert (removed["key"], removed["data"], removed["revision"]) == (
            "alice",
            None,
            added["revision"],
        )


async def test_subscribe_errors_keep_the_connection(
    emulator: RunningEmulator, admin: Admin
) -> None:
    token = await new_token(admin)
    sid = await rest_map(admin, emulator, "agents")
    async with session(emulator, token) as conn:
        await send(conn, {"type": "subscribe", "map_sid": "ghost"})
        error = await receive(conn)
        assert (error["type"], error["code"], error["map_sid"]) == ("error", 54200, "ghost")
        assert "ghost" in error["message"]
        for bad in ("not json", "[1]", json.dumps({"type": "dance"}), json.dumps({"x": 1})):
            await send(conn, bad)
            error = await receive(conn)
            assert (error["type"], error["code"]) == ("error", 20001), error
            assert isinstance(error["message"], str)
        await send(conn, {"type": "subscribe"})
        assert (await receive(conn))["code"] == 20001
        assert await subscribe(conn, sid) == sid


@pytest.mark.parametrize(
    "first", ["not json", {"type": "subscribe", "map_sid": "x"}, {"type": "auth"}]
)
async def test_the_first_message_must_authenticate(emulator: RunningEmulator, first: Any) -> None:
    async with socket(emulator) as conn:
        await send(conn, first)
        error = await receive(conn)
        assert (error["type"], error["code"]) == ("error", 20101)
        assert await close_code(conn) == 4001


async def test_an_unknown_or_expired_token_is_refused(
    emulator: RunningEmulator, admin: Admin
) -> None:
    expired = await new_token(admin, ttl=10)
    await admin.advance(10)
    for token, code in (("flex-emulator.unknown", 20101), (expired, 20104)):
        async with socket(emulator) as conn:
            await send(conn, {"type": "auth", "token": token})
            error = await receive(conn)
            assert (error["type"], error["code"]) == ("error", code)
            assert await close_code(conn) == 4001


async def test_no_auth_message_in_time_closes_4001(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdk_ws, "AUTH_TIMEOUT", 0.2)  # the emulator runs in this process
    async with socket(emulator) as conn:
        assert await close_code(conn) == 4001


async def test_expiry_is_announced_then_closes(emulator: RunningEmulator, admin: Admin) -> None:
    token = await new_token(admin, ttl=100, identity="ann")
    async with session(emulator, token) as conn:
        await admin.advance(60)  # 40 s left: nothing yet
        await nothing_pending(conn)
        await admin.advance(15)  # 25 s left
        warning = await receive(conn)
        assert warning["type"] == "tokenAboutToExpire"
        await admin.advance(1)
        await nothing_pending(conn)  # once
        await admin.advance(24)
        assert await receive(conn) == {"type": "tokenExpired"}
        assert await close_code(conn) == 4001


async def test_update_token_moves_the_expiry(emulator: RunningEmulator, admin: Admin) -> None:
    first = await new_token(admin, ttl=100, identity="ann")
    async with session(emulator, first) as conn:
        await admin.advance(80)
        assert (await receive(conn))["type"] == "tokenAboutToExpire"
        second = await issue(admin, roles=["agent"], identity="ann", ttl=200)
        await send(conn, {"type": "updateToken", "token": second["token"]})
        assert await receive(conn) == {"type": "tokenUpdated", "expires": second["expiration"]}
        await admin.advance(30)  # the first token has expired; the second has 170 s left
        await nothing_pending(conn)
        # An update that is itself within 30 s is announced again.
        third = await issue(admin, roles=["agent"], identity="ann", ttl=20)
        await send(conn, {"type": "updateToken", "token": third["token"]})
        assert (await receive(conn))["type"] == "tokenUpdated"
        assert await receive(conn) == {"type": "tokenAboutToExpire", "expires": third["expiration"]}


@pytest.mark.parametrize("change", ["unknown", "expired", "identity", "service", "not a string"])
async def test_a_bad_update_token_closes_4001(
    emulator: RunningEmulator, admin: Admin, change: str
) -> None:
    token = await new_token(admin, identity="ann")
    other = await rest(admin, "POST", "/sync/v1/Services", FriendlyName="other")
    replacement: Any = {
        "unknown": "flex-emulator.unknown",
        "expired": await new_token(admin, identity="ann", ttl=5),
        "identity": await new_token(admin, identity="bob"),
        "service": await new_token(admin, identity="ann", sync_service_sid=other["sid"]),
        "not a string": 42,
    }[change]
    async with session(emulator, token) as conn:
        if change == "expired":
            await admin.advance(5)
        await send(conn, {"type": "updateToken", "token": replacement})
        error = await receive(conn)
        expected = {"unknown": 20101, "expired": 20104, "not a string": 20101}.get(change, 20403)
        assert (error["type"], error["code"]) == ("error", expected)
        assert await close_code(conn) == 4001


async def test_a_subscriber_that_falls_behind_is_closed_1008(
    emulator: RunningEmulator, admin: Admin
) -> None:
    token = await new_token(admin)
    async with session(emulator, token) as conn:

        def flood(emu: Emulator) -> None:
            # All at once on the emulator's loop: the session reads none of them meanwhile.
            for _ in range(emu.feed.queue_size + 1):
                emu.feed.publish({"product": "sync", "type": "map_item.added"})

        emulator.call(flood)
        assert await close_code(conn) == 1008


async def test_events_keep_the_feeds_order_when_they_come_one_tick_apart(
    emulator: RunningEmulator, admin: Admin
) -> None:
    """While the session awaits a send, the feed goes on publishing. A second reader of the
    feed's queue used to take the next message meanwhile, and two events went out swapped
    (an ``itemRemoved`` before the ``itemUpdated`` it followed)."""
    sid = await rest_map(admin, emulator, "agents")
    count = 300
    async with session(emulator, await new_token(admin)) as conn:
        assert await subscribe(conn, "agents") == sid

        def trickle(emu: Emulator) -> asyncio.Task[None]:
            async def publish() -> None:
                for revision in range(1, count + 1):
                    emu.feed.publish(
                        {
                            "product": "sync",
                            "type": "map_item.updated",
                            "map_sid": sid,
                            "key": "alice",
                            "revision": str(revision),
                            "data": {"v": revision},
                        }
                    )
                    await asyncio.sleep(0)  # one loop tick: the session runs in between

            return asyncio.get_running_loop().create_task(publish())

        emulator.call(trickle)
        revisions = [int((await receive(conn))["revision"]) for _ in range(count)]
        assert revisions == list(range(1, count + 1))
        await nothing_pending(conn)
