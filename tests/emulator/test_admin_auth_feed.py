"""Authentication, refused inputs, Flex token validation, the admin API and the live feed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from flex_bridge.adapters.http import BridgeHttpClient
from flex_bridge.emulator.core import DEFAULT_API_KEY, DEFAULT_API_SECRET
from tests.support.emulator import Admin, RunningEmulator, header, refused, ws, ws_path

FEED_TIMEOUT = 10.0


def iam_path(account_sid: str) -> str:
    return f"/iam/v1/Accounts/{account_sid}/Tokens/validate"


async def with_client(
    running: RunningEmulator, username: str, password: str, account_sid: str | None = None
) -> Client:
    http = BridgeHttpClient(running.url, timeout=10)
    return Client(username, password, account_sid=account_sid, http_client=http)


async def all_workers_offline(client: Any, running: RunningEmulator) -> None:
    assert running.state is not None
    for worker in await ws(client, running).workers.list_async():
        await (
            ws(client, running)
            .workers(worker.sid)
            .update_async(activity_sid=running.state.activities["Offline"])
        )


# ------------------------------------------------------------------------------------- auth
async def test_wrong_password_is_401_20003(emulator: RunningEmulator) -> None:
    client = await with_client(emulator, emulator.config.account_sid, "not-the-token")
    try:
        with pytest.raises(TwilioRestException) as caught:
            await ws(client, emulator).fetch_async()
    finally:
        await client.http_client.close()
    assert caught.value.status == 401
    assert caught.value.code == 20003


async def test_api_key_and_secret_work(emulator: RunningEmulator) -> None:
    assert emulator.config.api_keys == {DEFAULT_API_KEY: DEFAULT_API_SECRET}
    assert emulator.state is not None
    client = await with_client(
        emulator, DEFAULT_API_KEY, DEFAULT_API_SECRET, account_sid=emulator.config.account_sid
    )
    wrong = await with_client(
        emulator, DEFAULT_API_KEY, "wrong-secret", account_sid=emulator.config.account_sid
    )
    try:
        fetched = await ws(client, emulator).fetch_async()
        assert fetched.sid == emulator.state.workspace_sid
        task = await ws(client, emulator).tasks.create_async(attributes='{"via": "key"}')
        assert task.attributes == '{"via": "key"}'
        with pytest.raises(TwilioRestException) as caught:
            await ws(wrong, emulator).fetch_async()
        assert (caught.value.status, caught.value.code) == (401, 20003)
    finally:
        await client.http_client.close()
        await wrong.http_client.close()


@pytest.mark.parametrize(
    "path",
    ["/taskrouter/v1/Workspaces", "/sync/v1/Services", "/taskrouter/v1/Workspaces/WS0"],
)
async def test_missing_auth_is_401(admin: Admin, path: str) -> None:
    status, body, headers = await admin.request("GET", path, auth=False)
    assert status == 401
    assert body["code"] == 20003
    assert body["more_info"] == "https://www.twilio.com/docs/errors/20003"
    assert header(headers, "WWW-Authenticate") == 'Basic realm="Twilio API"'


async def test_bearer_auth_is_not_basic_auth(admin: Admin) -> None:
    status, body, _ = await admin.request(
        "GET",
        "/taskrouter/v1/Workspaces",
        auth=False,
        headers={"Authorization": "Bearer emulator-auth-token"},
    )
    assert (status, body["code"]) == (401, 20003)


# ------------------------------------------------------------------------------- bad inputs
async def test_unknown_form_field_is_400_naming_it(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    status, body, _ = await admin.request(
        "POST", ws_path(emulator) + "/Tasks", data={"Attributes": "{}", "Colour": "red"}
    )
    assert status == 400
    assert body["code"] == 20001
    assert "'Colour'" in body["message"]
    assert await ws(client, emulator).tasks.list_async() == []
    posts = [e for e in await admin.log("rest") if e["method"] == "POST"]
    assert [(e["status"], e["applied"]) for e in posts] == [(400, False)]


async def test_bad_enum_value_is_400(client: Any, emulator: RunningEmulator) -> None:
    with pytest.raises(TwilioRestException) as caught:
        await ws(client, emulator).update_async(prioritize_queue_order="RANDOM")
    assert caught.value.status == 400
    assert "PrioritizeQueueOrder must be one of" in caught.value.msg
    assert "'RANDOM'" in caught.value.msg

    task = await ws(client, emulator).tasks.create_async(attributes="{}")
    with pytest.raises(TwilioRestException) as caught:
        await ws(client, emulator).tasks(task.sid).update_async(assignment_status="finished")
    assert caught.value.status == 400
    assert "AssignmentStatus" in caught.value.msg
    fetched = await ws(client, emulator).tasks(task.sid).fetch_async()
    assert fetched.assignment_status == "reserved"


@pytest.mark.parametrize(
    "sid", ["WT123", "WK" + "0" * 32, "wt" + "0" * 32, "WT" + "g" * 32, "WT" + "0" * 33]
)
async def test_malformed_sid_in_path_is_404(
    client: Any, emulator: RunningEmulator, sid: str
) -> None:
    with pytest.raises(TwilioRestException) as caught:
        await ws(client, emulator).tasks(sid).fetch_async()
    assert caught.value.status == 404
    assert caught.value.code == 20404


async def test_unknown_workspace_is_404(client: Any) -> None:
    with pytest.raises(TwilioRestException) as caught:
        await client.taskrouter.v1.workspaces("WS" + "0" * 32).fetch_async()
    assert (caught.value.status, caught.value.code) == (404, 20404)


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/taskrouter/v2/Workspaces", 404, 20404),
        ("GET", "/nowhere", 404, 20404),
        ("GET", "/_emulator/nothing", 404, 20404),
        ("PUT", "/_emulator/faults", 405, 20004),
        ("PUT", "/taskrouter/v1/Workspaces", 405, 20004),
    ],
)
async def test_unknown_paths_and_methods_answer_in_twilio_shape(
    admin: Admin, method: str, path: str, status: int, code: int
) -> None:
    answer_status, body, headers = await admin.request(method, path)
    assert answer_status == status
    assert header(headers, "Content-Type") == "application/json"
    assert body["code"] == code
    assert body["status"] == status
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"


async def test_task_attributes_over_4096_characters_are_refused(
    client: Any, emulator: RunningEmulator
) -> None:
    original = '{"keep": "me"}'
    task = await ws(client, emulator).tasks.create_async(attributes=original)
    before = await ws(client, emulator).tasks(task.sid).fetch_with_http_info_async()

    too_long = json.dumps({"pad": "x" * 4100})
    assert len(too_long) > 4096
    with pytest.raises(TwilioRestException) as caught:
        await ws(client, emulator).tasks(task.sid).update_async(attributes=too_long)
    assert caught.value.status == 400
    assert "4096" in caught.value.msg

    after = await ws(client, emulator).tasks(task.sid).fetch_with_http_info_async()
    assert after.data.attributes == original
    assert header(after.headers, "ETag") == header(before.headers, "ETag")

    with pytest.raises(TwilioRestException):
        await ws(client, emulator).tasks.create_async(attributes=too_long)
    assert len(await ws(client, emulator).tasks.list_async()) == 1

    exactly = json.dumps({"pad": "y" * (4096 - len('{"pad": ""}'))})
    assert len(exactly) == 4096
    updated = await ws(client, emulator).tasks(task.sid).update_async(attributes=exactly)
    assert updated.attributes == exactly


async def test_task_if_match_mismatch_is_412_and_the_etag_works(
    client: Any, emulator: RunningEmulator
) -> None:
    task = await ws(client, emulator).tasks.create_async(attributes='{"v": 0}')
    info = await ws(client, emulator).tasks(task.sid).fetch_with_http_info_async()
    assert info.status_code == 200
    etag = header(info.headers, "ETag")
    assert etag is not None

    with pytest.raises(TwilioRestException) as caught:
        await (
            ws(client, emulator)
            .tasks(task.sid)
            .update_async(attributes='{"v": "stale"}', if_match=etag + "0")
        )
    assert caught.value.status == 412
    assert caught.value.code == 20412

    updated = (
        await ws(client, emulator)
        .tasks(task.sid)
        .update_async(attributes='{"v": 1}', if_match=etag)
    )
    assert updated.attributes == '{"v": 1}'

    # The write moved the ETag on: the old one is now stale.
    with pytest.raises(TwilioRestException) as caught:
        await (
            ws(client, emulator).tasks(task.sid).update_async(attributes='{"v": 2}', if_match=etag)
        )
    assert (caught.value.status, caught.value.code) == (412, 20412)
    fetched = await ws(client, emulator).tasks(task.sid).fetch_with_http_info_async()
    assert fetched.data.attributes == '{"v": 1}'
    assert header(fetched.headers, "ETag") != etag


async def test_invalid_task_transitions_are_refused(client: Any, emulator: RunningEmulator) -> None:
    task = await ws(client, emulator).tasks.create_async(attributes="{}")
    res = (await ws(client, emulator).tasks(task.sid).reservations.list_async())[0]
    with pytest.raises(TwilioRestException) as caught:
        await ws(client, emulator).tasks(task.sid).update_async(assignment_status="completed")
    assert (caught.value.status, caught.value.code) == (400, 20001)
    assert "reserved" in caught.value.msg

    await (
        ws(client, emulator)
        .tasks(task.sid)
        .reservations(res.sid)
        .update_async(reservation_status="accepted")
    )
    with pytest.raises(TwilioRestException) as caught:
        await ws(client, emulator).tasks(task.sid).update_async(assignment_status="canceled")
    assert (caught.value.status, caught.value.code) == (400, 20001)
    assert "assigned" in caught.value.msg
    fetched = await ws(client, emulator).tasks(task.sid).fetch_async()
    assert fetched.assignment_status == "assigned"

    await all_workers_offline(client, emulator)
    pending = await ws(client, emulator).tasks.create_async(attributes="{}")
    assert pending.assignment_status == "pending"
    for status in ("completed", "wrapping"):
        with pytest.raises(TwilioRestException) as caught:
            await ws(client, emulator).tasks(pending.sid).update_async(assignment_status=status)
        assert (caught.value.status, caught.value.code) == (400, 20001)
    canceled = (
        await ws(client, emulator).tasks(pending.sid).update_async(assignment_status="canceled")
    )
    assert canceled.assignment_status == "canceled"


async def test_duplicate_worker_friendly_name_is_409(
    client: Any, emulator: RunningEmulator
) -> None:
    with pytest.raises(TwilioRestException) as caught:
        await ws(client, emulator).workers.create_async(friendly_name="Alice")
    assert caught.value.status == 409
    assert "Alice" in caught.value.msg

    bob = (await ws(client, emulator).workers.list_async(friendly_name="Bob"))[0]
    with pytest.raises(TwilioRestException) as caught:
        await ws(client, emulator).workers(bob.sid).update_async(friendly_name="Alice")
    assert caught.value.status == 409
    assert (await ws(client, emulator).workers(bob.sid).fetch_async()).friendly_name == "Bob"
    assert len(await ws(client, emulator).workers.list_async()) == 3


# -------------------------------------------------------------------------------------- IAM
async def test_token_validation(emulator: RunningEmulator, admin: Admin) -> None:
    assert emulator.state is not None
    worker_sid = emulator.state.workers[0]["sid"]
    token = await admin.token(worker_sid, ["agent", "supervisor"], ttl=600)
    path = iam_path(emulator.config.account_sid)

    status, body, _ = await admin.request("POST", path, json_body={"token": token})
    assert status == 200
    assert body["valid"] is True
    assert body["worker_sid"] == worker_sid
    assert body["identity"] == worker_sid
    assert body["roles"] == ["agent", "supervisor"]
    assert body["realm_user_id"].startswith("US")
    assert body["expiration"].endswith("Z")

    status, body, _ = await admin.request("POST", path, json_body={"token": "flex-emulator.nope"})
    assert status == 200
    assert body["valid"] is False
    assert body["message"]

    await admin.advance(601)
    status, body, _ = await admin.request("POST", path, json_body={"token": token})
    assert status == 200
    assert body["valid"] is False
    assert "expired" in body["message"]

    rest = [e for e in await admin.log("rest") if e["product"] == "iam"]
    assert [e["valid"] for e in rest] == [True, False, False]
    # The token itself is never written to the log.
    assert token not in json.dumps(await admin.log())


async def test_token_validation_with_an_api_key(emulator: RunningEmulator, admin: Admin) -> None:
    token = await admin.token(None, ["admin"])
    status, body, _ = await admin.request(
        "POST",
        iam_path(emulator.config.account_sid),
        json_body={"token": token},
        auth=False,
        headers={"Authorization": aiohttp.encode_basic_auth(DEFAULT_API_KEY, DEFAULT_API_SECRET)},
    )
    assert status == 200
    assert body["valid"] is True
    assert body["roles"] == ["admin"]
    assert body["worker_sid"] is None
    assert body["identity"] == "flex-user"


async def test_token_validation_refusals(emulator: RunningEmulator, admin: Admin) -> None:
    token = await admin.token(None, ["agent"])
    path = iam_path(emulator.config.account_sid)

    status, body, _ = await admin.request(
        "POST", iam_path("AC" + "0" * 32), json_body={"token": token}
    )
    assert (status, body["code"]) == (404, 20404)

    for bad in ({"jwt": token}, {"token": 5}, ["token"], "token"):
        status, body, _ = await admin.request("POST", path, json_body=bad)
        assert status == 400, bad
        assert body["code"] == 20001
        assert '{"token": "..."}' in body["message"]
    status, body, _ = await admin.request(
        "POST", path, data="token=" + token, headers={"Content-Type": "text/plain"}
    )
    assert status == 400

    status, body, _ = await admin.request("POST", path, json_body={"token": token}, auth=False)
    assert (status, body["code"]) == (401, 20003)


@pytest.mark.parametrize(
    "body",
    [
        {"roles": ["root"]},
        {"roles": []},
        {"roles": "agent"},
        {"ttl": 0},
        {"ttl": "1h"},
        {"worker_sid": 7},
        {"ttl": 1e300},
        ["agent"],
        "NaN",
        '{"ttl": Infinity}',
    ],
)
async def test_bad_token_requests_are_400(admin: Admin, body: Any) -> None:
    if isinstance(body, str):
        status, answer, _ = await admin.request(
            "POST", "/_emulator/tokens", data=body, headers={"Content-Type": "application/json"}
        )
    else:
        status, answer, _ = await admin.request("POST", "/_emulator/tokens", json_body=body)
    assert status == 400
    assert answer["code"] == 20001
    assert await admin.log("rest") == []  # nothing was issued, nothing else happened


# ------------------------------------------------------------------------------------ admin
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{}", '{"seconds": <a non-negative number>}'),
        ('{"secs": 5}', '{"seconds": <a non-negative number>}'),
        ('{"seconds": -1}', '{"seconds": <a non-negative number>}'),
        ('{"seconds": "5"}', '{"seconds": <a non-negative number>}'),
        ('{"seconds": true}', '{"seconds": <a non-negative number>}'),
        ("[5]", '{"seconds": <a non-negative number>}'),
        ("seconds=5", "not valid JSON"),
        ("", "not valid JSON"),
        ('{"seconds": NaN}', "NaN is not a JSON value"),
        ('{"seconds": Infinity}', "Infinity is not a JSON value"),
        ('{"seconds": 1e400}', "out of range"),
        ('{"seconds": 1e300}', "at most"),
    ],
)
async def test_clock_advance_with_a_bad_body_is_400(
    client: Any, emulator: RunningEmulator, admin: Admin, raw: str, message: str
) -> None:
    status, answer, _ = await admin.request(
        "POST", "/_emulator/clock/advance", data=raw, headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert answer["code"] == 20001
    assert message in answer["message"]
    status, clock, _ = await admin.request("GET", "/_emulator/clock")
    assert status == 200
    assert clock["offset"] == 0
    # The clock was left alone: dates still render.
    assert emulator.state is not None
    assert (await ws(client, emulator).fetch_async()).sid == emulator.state.workspace_sid


async def test_clock_advance_moves_the_clock(admin: Admin) -> None:
    body = await admin.advance(30)
    assert body["offset"] == 30
    body = await admin.advance(0.5)
    assert body["offset"] == 30.5
    _, clock, _ = await admin.request("GET", "/_emulator/clock")
    assert clock["offset"] == 30.5


async def test_state_dump_has_the_workspace(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    assert emulator.state is not None
    task = await ws(client, emulator).tasks.create_async(attributes='{"dump": 1}')
    status, state, _ = await admin.request("GET", "/_emulator/state")
    assert status == 200
    assert state["account_sid"] == emulator.config.account_sid
    workspaces = state["taskrouter"]["workspaces"]
    assert [w["sid"] for w in workspaces] == [emulator.state.workspace_sid]
    workspace = workspaces[0]
    assert workspace["friendly_name"] == "flex-bridge"
    assert sorted(w["friendly_name"] for w in workspace["workers"]) == ["Alice", "Bob", "Carol"]
    assert {a["friendly_name"] for a in workspace["activities"]} == {
        "Available",
        "Unavailable",
        "Offline",
    }
    assert [q["sid"] for q in workspace["task_queues"]] == [emulator.state.task_queue_sid]
    assert [w["sid"] for w in workspace["workflows"]] == [emulator.state.workflow_sid]
    assert [(t["sid"], t["attributes"]) for t in workspace["tasks"]] == [(task.sid, '{"dump": 1}')]
    assert [r["task_sid"] for r in workspace["reservations"]] == [task.sid]
    assert state["faults"]["rules"] == []
    assert [svc["sid"] for svc in state["sync"]["services"]] == [emulator.state.sync_service_sid]
    assert state["clock"]["offset"] == 0


async def test_log_is_ordered_and_records_applied(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    status, _, _ = await admin.request("DELETE", "/_emulator/log")
    assert status == 204
    assert await admin.log() == []

    task = await ws(client, emulator).tasks.create_async(attributes='{"a": 1}')
    with pytest.raises(TwilioRestException):
        await ws(client, emulator).tasks("WT" + "0" * 32).fetch_async()
    await ws(client, emulator).tasks(task.sid).update_async(attributes='{"a": 2}')

    entries = await admin.log()
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    rest = [e for e in entries if e["kind"] == "rest"]
    assert [(e["method"], e["status"], e["applied"]) for e in rest] == [
        ("POST", 201, True),
        ("GET", 404, False),
        ("POST", 200, True),
    ]
    assert rest[0]["template"] == "/v1/Workspaces/{WorkspaceSid}/Tasks"
    assert rest[0]["form"] == {"Attributes": '{"a": 1}'}
    assert rest[1]["code"] == 20404
    assert rest[2]["path"].endswith(task.sid)

    later = await admin.log(since=rest[0]["seq"])
    assert [e["seq"] for e in later] == [e["seq"] for e in entries if e["seq"] > rest[0]["seq"]]
    assert all(e["kind"] == "rest" for e in await admin.log("rest"))
    status, body, _ = await admin.request("GET", "/_emulator/log?since=first")
    assert status == 400
    assert "since" in body["message"]


async def test_settings_toggle_the_sync_rate_limit(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    assert emulator.state is not None
    service_sid = emulator.state.sync_service_sid
    status, settings, _ = await admin.request("GET", "/_emulator/settings")
    assert status == 200
    assert settings["sync_rate_limit"] is True

    sync = client.sync.v1.services(service_sid)
    await sync.sync_maps.create_async(unique_name="busy")
    items = sync.sync_maps("busy").sync_map_items

    # Empty the map's write bucket, as a long burst would: the next write is refused.
    def drain(emu: Any) -> None:
        bucket = emu.sync.services[service_sid].maps.find("busy").bucket
        bucket.tokens = 0.0

    emulator.call(drain)
    assert await refused(items.create_async(key="first", data={"n": 0})) == (429, 54009)

    assert (await admin.settings(sync_rate_limit=False))["sync_rate_limit"] is False
    results = await asyncio.gather(
        *(items.create_async(key=f"k{n}", data={"n": n}) for n in range(25))
    )
    assert sorted(r.key for r in results) == sorted(f"k{n}" for n in range(25))
    assert len(await items.list_async()) == 25

    assert (await admin.settings(sync_rate_limit=True))["sync_rate_limit"] is True
    status, settings, _ = await admin.request("GET", "/_emulator/settings")
    assert settings["sync_rate_limit"] is True


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"rate_limit": False}, "unknown setting(s): rate_limit"),
        ({"sync_rate_limit": False, "zeta": 1, "alpha": 2}, "unknown setting(s): alpha, zeta"),
        ({"sync_rate_limit": "no"}, "sync_rate_limit must be true or false"),
        ({"assignment_timeout": 0}, "assignment_timeout must be a positive number"),
        ({"assignment_timeout": True}, "assignment_timeout must be a positive number"),
        (["sync_rate_limit"], "JSON object"),
        ('{"assignment_timeout": NaN}', "NaN is not a JSON value"),
    ],
)
async def test_settings_refuse_unknown_keys_and_bad_values(
    admin: Admin, body: Any, message: str
) -> None:
    if isinstance(body, str):
        status, answer, _ = await admin.request(
            "POST", "/_emulator/settings", data=body, headers={"Content-Type": "application/json"}
        )
    else:
        status, answer, _ = await admin.request("POST", "/_emulator/settings", json_body=body)
    assert status == 400
    assert message in answer["message"]
    status, settings, _ = await admin.request("GET", "/_emulator/settings")
    assert settings["sync_rate_limit"] is True  # nothing was half-applied
    assert settings["assignment_timeout"] == 5.0


async def test_settings_change_the_assignment_timeout(admin: Admin) -> None:
    assert (await admin.settings(assignment_timeout=2.5))["assignment_timeout"] == 2.5


# ------------------------------------------------------------------------------- live feed
async def next_matching(
    feed: ClientConnection, predicate: Callable[[dict[str, Any]], bool], seen: list[dict[str, Any]]
) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(await feed.recv())
            seen.append(message)
            if predicate(message):
                return message

    return await asyncio.wait_for(read(), FEED_TIMEOUT)


async def test_live_feed_carries_taskrouter_and_sync_changes(
    client: Any, emulator: RunningEmulator
) -> None:
    assert emulator.state is not None
    ws_url = emulator.url.replace("http://", "ws://", 1) + "/_emulator/ws"
    seen: list[dict[str, Any]] = []
    async with connect(ws_url, open_timeout=FEED_TIMEOUT) as feed:
        hello = json.loads(await asyncio.wait_for(feed.recv(), FEED_TIMEOUT))
        assert hello == {"type": "hello", "product": "emulator"}

        task = await ws(client, emulator).tasks.create_async(attributes='{"live": true}')

        def about_task(kind: str) -> Callable[[dict[str, Any]], bool]:
            return lambda m: m.get("type") == kind and m["data"].get("TaskSid") == task.sid

        created = await next_matching(feed, about_task("task.created"), seen)
        assert created["product"] == "taskrouter"
        assert created["data"]["TaskAttributes"] == '{"live": true}'
        assert created["data"]["WorkspaceSid"] == emulator.state.workspace_sid
        reserved = await next_matching(feed, about_task("reservation.created"), seen)
        assert reserved["data"]["ReservationSid"].startswith("WR")
        assert reserved["data"]["WorkerSid"] in {w["sid"] for w in emulator.state.workers}

        sync = client.sync.v1.services(emulator.state.sync_service_sid)
        sync_map = await sync.sync_maps.create_async(unique_name="agents")
        items = sync.sync_maps("agents").sync_map_items
        added = await items.create_async(key="alice", data={"v": 1})
        updated = await items("alice").update_async(data={"v": 2})

        def about_item(kind: str) -> Callable[[dict[str, Any]], bool]:
            return lambda m: m.get("type") == kind and m.get("key") == "alice"

        item_added = await next_matching(feed, about_item("map_item.added"), seen)
        assert item_added["product"] == "sync"
        assert item_added["map_sid"] == sync_map.sid
        assert item_added["map_unique_name"] == "agents"
        assert item_added["service_sid"] == emulator.state.sync_service_sid
        assert item_added["data"] == {"v": 1}
        assert item_added["revision"] == added.revision
        item_updated = await next_matching(feed, about_item("map_item.updated"), seen)
        assert item_updated["data"] == {"v": 2}
        assert item_updated["revision"] == updated.revision != added.revision

    seqs = [m["seq"] for m in seen]
    assert seqs == sorted(seqs)
    kinds = [m["type"] for m in seen]
    assert kinds.index("task.created") < kinds.index("reservation.created")
    assert (
        kinds.index("map.created") < kinds.index("map_item.added") < kinds.index("map_item.updated")
    )


async def test_a_websocket_to_an_unknown_path_is_refused_with_404(
    emulator: RunningEmulator,
) -> None:
    ws_url = emulator.url.replace("http://", "ws://", 1) + "/_emulator/nowhere"
    with pytest.raises(InvalidStatus) as caught:
        async with connect(ws_url, open_timeout=FEED_TIMEOUT):
            pass
    assert caught.value.response.status_code == 404
    body = json.loads(bytes(caught.value.response.body or b""))
    assert (body["code"], body["status"]) == (20404, 404)
    assert "/_emulator/nowhere" in body["message"]
