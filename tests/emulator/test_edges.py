"""Edges where Twilio is harder than a lenient emulator would be.

- Event callbacks are sent once: no retry unless the ``event_retry`` setting asks for one.
- Flex token validation answers carry ``code``, ``flex_instance_sid`` and ``flex_user_sid``,
  and fault rules can make IAM refuse a validation with 400, 401 or 403.
- Webhooks can be signed with a shared key (HMAC-SHA256 by default) instead of the auth token,
  announced by ``X-Twilio-Webhooks-Signature-Settings``.
- Sync limits reads (20/s per object) and object creation (20/s per service), as it limits
  writes.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

from flex_bridge.emulator.iam import ANSWER_FIELDS
from flex_bridge.emulator.seed import SeedOptions
from flex_bridge.emulator.webhooks import SharedKey
from tests.emulator.test_callbacks import drained, failing, of_type
from tests.emulator.test_sync_store import Emulator as SyncHarness
from tests.support.emulator import (
    Admin,
    CallbackServer,
    Received,
    RunningEmulator,
    refused,
    twilio_client,
    ws,
)

KEY_ID = "webhooks_sharedkey_01jc0000000000000000000001"
OTHER_KEY_ID = "webhooks_sharedkey_01jc0000000000000000000002"


def iam_path(running: RunningEmulator) -> str:
    return f"/iam/v1/Accounts/{running.config.account_sid}/Tokens/validate"


def webhook_log(entries: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["params"].get("EventType") == event_type]


# ------------------------------------------------------------------ event callbacks: no retry
@pytest.fixture
async def quick_events(
    start_emulator: Callable[..., RunningEmulator], callbacks: CallbackServer
) -> AsyncIterator[tuple[RunningEmulator, Any]]:
    """An emulator sending events to ``callbacks`` with the default settings (retry base
    shortened in case a test turns the retry on)."""
    running = start_emulator(
        event_retry_base=0.01, options=SeedOptions(event_url=callbacks.url + "/events")
    )
    client = twilio_client(running)
    yield running, client
    await client.http_client.close()


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_a_failed_event_is_not_retried_by_default(
    quick_events: tuple[RunningEmulator, Any],
    callbacks: CallbackServer,
    session: aiohttp.ClientSession,
    status: int,
) -> None:
    running, client = quick_events
    admin = Admin(running, session)
    assert (await admin.request("GET", "/_emulator/settings"))[1]["event_retry"] is False
    callbacks.answer = failing({"task.created": [status, status, status]})

    task = await ws(client, running).tasks.create_async(attributes="{}")
    await callbacks.wait_for(lambda _: len(of_type(callbacks, "reservation.created")) >= 1)
    await drained(running)

    got = of_type(callbacks, "task.created")
    assert [r.form["TaskSid"] for r in got] == [task.sid]  # sent once: the event is lost
    log = webhook_log(await admin.log("webhook"), "task.created")
    assert [(e["attempt"], e["status"]) for e in log] == [(1, status)]


async def test_an_unreachable_event_url_is_tried_once_by_default(
    start_emulator: Callable[..., RunningEmulator], session: aiohttp.ClientSession
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{probe.getsockname()[1]}"
        running = start_emulator(
            event_retry_base=0.01,
            options=SeedOptions(workers=("Ann",), event_url=gone + "/events"),
        )
        await drained(running)
    log = await Admin(running, session).log("webhook")
    assert [e["attempt"] for e in log] == [1]
    assert log[0]["status"] is None and "ClientConnectorError" in log[0]["error"]


async def test_the_event_retry_setting_turns_the_retry_rule_on_and_off(
    quick_events: tuple[RunningEmulator, Any],
    callbacks: CallbackServer,
    session: aiohttp.ClientSession,
) -> None:
    running, client = quick_events
    admin = Admin(running, session)
    workspace = ws(client, running)
    callbacks.answer = failing({"task.created": [500, 500, 500, 500]})

    assert (await admin.settings(event_retry=True))["event_retry"] is True
    first = await workspace.tasks.create_async(attributes="{}")
    await callbacks.wait_for(lambda _: len(of_type(callbacks, "task.created")) >= 3)
    await drained(running)
    assert [r.form["TaskSid"] for r in of_type(callbacks, "task.created")] == [first.sid] * 3

    assert (await admin.settings(event_retry=False))["event_retry"] is False
    second = await workspace.tasks.create_async(attributes="{}")
    await callbacks.wait_for(lambda _: len(of_type(callbacks, "task.created")) >= 4)
    await drained(running)
    sent = [r.form["TaskSid"] for r in of_type(callbacks, "task.created")]
    assert sent == [first.sid] * 3 + [second.sid]  # the fourth answer (500) was final
    log = webhook_log(await admin.log("webhook"), "task.created")
    assert [e["attempt"] for e in log] == [1, 2, 3, 1]


async def test_event_retry_must_be_a_boolean(admin: Admin) -> None:
    status, body, _ = await admin.request(
        "POST", "/_emulator/settings", json_body={"event_retry": "yes"}
    )
    assert status == 400
    assert "event_retry must be true or false" in body["message"]


# -------------------------------------------------------------------- Flex token validation
async def test_a_valid_token_answer_carries_every_field(
    emulator: RunningEmulator, admin: Admin
) -> None:
    assert emulator.state is not None
    worker_sid = emulator.state.workers[0]["sid"]
    status, issued, _ = await admin.request(
        "POST",
        "/_emulator/tokens",
        json_body={"worker_sid": worker_sid, "roles": ["agent"], "identity": "ann"},
    )
    assert status == 201
    again = await admin.request(
        "POST", "/_emulator/tokens", json_body={"roles": ["admin"], "identity": "ann"}
    )
    other = await admin.request(
        "POST", "/_emulator/tokens", json_body={"roles": ["agent"], "identity": "bob"}
    )

    status, body, _ = await admin.request(
        "POST", iam_path(emulator), json_body={"token": issued["token"]}
    )
    assert status == 200
    assert list(body) == list(ANSWER_FIELDS)
    assert (body["valid"], body["code"], body["message"]) == (True, 0, None)
    assert (body["identity"], body["worker_sid"], body["roles"]) == ("ann", worker_sid, ["agent"])
    assert body["expiration"] == issued["expiration"]
    for name, prefix in (("flex_instance_sid", "GO"), ("flex_user_sid", "FU")):
        assert body[name] == issued[name]
        assert body[name].startswith(prefix) and len(body[name]) == 34
        int(body[name][2:], 16)
    # One Flex instance; one Flex user per identity, whatever token it holds.
    assert again[1]["flex_user_sid"] == body["flex_user_sid"]
    assert other[1]["flex_user_sid"] != body["flex_user_sid"]
    assert {again[1]["flex_instance_sid"], other[1]["flex_instance_sid"]} == {
        body["flex_instance_sid"]
    }


async def test_unknown_and_expired_tokens_answer_a_code_and_nulls(
    emulator: RunningEmulator, admin: Admin
) -> None:
    token = await admin.token(None, ["agent"], ttl=60)
    status, unknown, _ = await admin.request(
        "POST", iam_path(emulator), json_body={"token": "flex-emulator.unknown"}
    )
    assert status == 200
    await admin.advance(60)
    status, expired, _ = await admin.request("POST", iam_path(emulator), json_body={"token": token})
    assert status == 200

    for body, code, message in (
        (unknown, 20101, "Invalid Access Token"),
        (expired, 20104, "Access Token expired or expiration date invalid"),
    ):
        assert list(body) == list(ANSWER_FIELDS)
        assert (body["valid"], body["code"], body["message"]) == (False, code, message)
        assert all(body[name] is None for name in ANSWER_FIELDS[3:])
    codes = [e["token_code"] for e in await admin.log("rest") if e["product"] == "iam"]
    assert codes == [20101, 20104]


@pytest.mark.parametrize(
    ("status", "code"), [(400, 20001), (401, 20003), (403, 20403), (429, 20429)]
)
async def test_iam_can_be_made_to_refuse_a_validation(
    emulator: RunningEmulator, admin: Admin, status: int, code: int
) -> None:
    token = await admin.token(None, ["agent"])
    described = await admin.faults(
        [{"product": "iam", "error_rates": {str(status): 1}, "count": 1}]
    )
    assert described["rules"][0]["error_rates"] == {str(status): 1}

    answer, body, headers = await admin.request(
        "POST", iam_path(emulator), json_body={"token": token}
    )
    assert answer == status
    assert body == {
        "code": code,
        "message": body["message"],
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    assert body["message"]
    assert ("WWW-Authenticate" in headers) is (status == 401)
    assert ("Retry-After" in headers) is (status == 429)
    [entry] = [e for e in await admin.log("rest") if e["product"] == "iam"]
    assert (entry["status"], entry["code"], entry["fault"]) == (status, code, f"error_{status}")
    assert entry["applied"] is False
    assert (await admin.request("GET", "/_emulator/faults"))[1]["injected"] == {str(status): 1}

    # The rule was for one request: the next validation is answered as usual.
    answer, body, _ = await admin.request("POST", iam_path(emulator), json_body={"token": token})
    assert (answer, body["valid"]) == (200, True)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            {"product": "taskrouter", "error_rates": {"401": 1}},
            "status 401 is not one of 429, 500, 503 (400, 401 and 403 need product iam)",
        ),
        ({"error_rates": {"403": 1}}, "(400, 401 and 403 need product iam)"),
        (
            {"product": "iam", "error_rates": {"404": 1}},
            "status 404 is not one of 400, 401, 403, 429, 500, 503",
        ),
        ({"product": "iam", "error_rates": {"400": 0.6, "503": 0.6}}, "add up to at most 1"),
    ],
)
async def test_refusal_faults_are_for_iam_only(
    admin: Admin, rule: dict[str, Any], message: str
) -> None:
    status, body, _ = await admin.request("POST", "/_emulator/faults", json_body={"rules": [rule]})
    assert status == 400
    assert message in body["message"]


# --------------------------------------------------------------------- webhook signatures
def signature_ok(got: Received, url: str, secret: str) -> bool:
    algorithm = get_signature_algorithm(got.headers.get(SIGNATURE_SETTINGS_HEADER))
    validator = RequestValidator(secret)
    return bool(validator.validate(url, got.form, got.headers[SIGNATURE_HEADER], algorithm))


def signed_with_auth_token(running: RunningEmulator, got: Received, url: str) -> bool:
    """Valid as the auth token signs (HMAC-SHA1), whatever the headers claim."""
    validator = RequestValidator(running.config.auth_token)
    return bool(validator.validate(url, got.form, got.headers[SIGNATURE_HEADER]))


async def run_one_task(running: RunningEmulator, callbacks: CallbackServer) -> str:
    """Create a task, wait for its assignment callback and events, and return its SID."""
    client = twilio_client(running)
    try:
        task = await ws(client, running).tasks.create_async(attributes="{}")
    finally:
        await client.http_client.close()

    def arrived(got: list[Received]) -> bool:
        assignment = any(r.path == "/assignment" and r.form["TaskSid"] == task.sid for r in got)
        kinds = {r.form.get("EventType") for r in got if r.form.get("TaskSid") == task.sid}
        return assignment and {"task.created", "reservation.created"} <= kinds

    await callbacks.wait_for(arrived)
    await drained(running)
    return str(task.sid)


def of_task(callbacks: CallbackServer, task_sid: str) -> list[Received]:
    return [r for r in callbacks.received if r.form.get("TaskSid") == task_sid]


def both_urls(callbacks: CallbackServer) -> SeedOptions:
    return SeedOptions(
        assignment_url=callbacks.url + "/assignment", event_url=callbacks.url + "/events"
    )


async def test_webhooks_are_signed_with_the_auth_token_by_default(
    start_emulator: Callable[..., RunningEmulator], callbacks: CallbackServer
) -> None:
    running = start_emulator(options=both_urls(callbacks))
    task_sid = await run_one_task(running, callbacks)
    got = of_task(callbacks, task_sid)
    assert {r.path for r in got} == {"/assignment", "/events"}
    for r in got:
        assert SIGNATURE_SETTINGS_HEADER not in r.headers
        assert signed_with_auth_token(running, r, callbacks.url + r.path)


@pytest.mark.parametrize("algorithm", ["HMAC_SHA256", "HMAC_SHA1"])
async def test_a_shared_key_signs_assignment_and_event_callbacks(
    start_emulator: Callable[..., RunningEmulator],
    callbacks: CallbackServer,
    session: aiohttp.ClientSession,
    algorithm: str,
) -> None:
    key = SharedKey(KEY_ID, "shared-secret", algorithm)
    running = start_emulator(webhook_signing=(key,), options=both_urls(callbacks))
    task_sid = await run_one_task(running, callbacks)

    got = of_task(callbacks, task_sid)
    assert {r.path for r in got} == {"/assignment", "/events"}
    for r in got:
        url = callbacks.url + r.path
        assert r.headers[SIGNATURE_SETTINGS_HEADER] == f"key={KEY_ID},algorithm={algorithm}"
        assert signature_ok(r, url, "shared-secret")
        assert not signed_with_auth_token(running, r, url)
        assert not RequestValidator(running.config.auth_token).validate(
            url, r.form, r.headers[SIGNATURE_HEADER], algorithm
        )
        tampered = {**r.form, "TaskSid": "WT" + "0" * 32}
        assert not RequestValidator("shared-secret").validate(
            url, tampered, r.headers[SIGNATURE_HEADER], algorithm
        )
    log = await Admin(running, session).log("webhook")
    assert {e["signature_settings"] for e in log} == {f"key={KEY_ID},algorithm={algorithm}"}
    assert "shared-secret" not in str(log)


async def test_the_signing_setting_switches_keys_at_runtime(
    start_emulator: Callable[..., RunningEmulator],
    callbacks: CallbackServer,
    session: aiohttp.ClientSession,
) -> None:
    running = start_emulator(options=both_urls(callbacks))
    admin = Admin(running, session)
    settings = await admin.settings(webhook_signing={"key": KEY_ID, "secret": "s1"})
    assert settings["webhook_signing"] == [
        {"key": KEY_ID, "algorithm": "HMAC_SHA256", "percent": 100.0}
    ]
    _, shown, _ = await admin.request("GET", "/_emulator/settings")
    assert shown["webhook_signing"] == settings["webhook_signing"]  # the secret is not shown
    first = await run_one_task(running, callbacks)
    for r in of_task(callbacks, first):
        assert signature_ok(r, callbacks.url + r.path, "s1")

    assert (await admin.settings(webhook_signing=None))["webhook_signing"] is None
    second = await run_one_task(running, callbacks)
    for r in of_task(callbacks, second):
        assert SIGNATURE_SETTINGS_HEADER not in r.headers
        assert signed_with_auth_token(running, r, callbacks.url + r.path)


async def test_two_shared_keys_split_webhooks_while_a_key_is_rotated(
    start_emulator: Callable[..., RunningEmulator],
    callbacks: CallbackServer,
    session: aiohttp.ClientSession,
) -> None:
    running = start_emulator(options=both_urls(callbacks))
    secrets = {KEY_ID: "old-secret", OTHER_KEY_ID: "new-secret"}
    await Admin(running, session).settings(
        webhook_signing=[
            {"key": KEY_ID, "secret": "old-secret", "percent": 50},
            {"key": OTHER_KEY_ID, "secret": "new-secret", "percent": 50},
        ]
    )
    got: list[Received] = []
    for _ in range(3):  # one per seeded worker: each task is offered to a free worker
        got += of_task(callbacks, await run_one_task(running, callbacks))
    used = set()
    for r in got:
        settings = r.headers[SIGNATURE_SETTINGS_HEADER]
        key = settings.removeprefix("key=").split(",")[0]
        used.add(key)
        url = callbacks.url + r.path
        assert signature_ok(r, url, secrets[key])
        other = next(secret for name, secret in secrets.items() if name != key)
        assert not signature_ok(r, url, other)
    assert used == set(secrets)  # both keys are in use during the rotation


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"key": KEY_ID}, "needs a non-empty key (its id) and secret"),
        ({"key": "", "secret": "s"}, "needs a non-empty key (its id) and secret"),
        ({"key": KEY_ID, "secret": "s", "algorithm": "MD5"}, "algorithm must be one of"),
        ({"key": KEY_ID, "secret": "s", "scope": "all"}, "unknown shared key field(s): scope"),
        ({"key": KEY_ID, "secret": "s", "percent": 90}, "must add up to 100"),
        ({"key": KEY_ID, "secret": "s", "percent": True}, "percent must be a number"),
        ([], "null, one shared key or a list of one or two"),
        ([{"key": "a", "secret": "s"}] * 3, "null, one shared key or a list of one or two"),
        ("webhooks_sharedkey_x", "must be an object"),
    ],
)
async def test_bad_signing_settings_are_refused(admin: Admin, value: Any, message: str) -> None:
    status, body, _ = await admin.request(
        "POST", "/_emulator/settings", json_body={"webhook_signing": value}
    )
    assert status == 400
    assert message in body["message"]
    status, settings, _ = await admin.request("GET", "/_emulator/settings")
    assert settings["webhook_signing"] is None  # nothing was applied


# ------------------------------------------------------------ Sync: reads and creations
@pytest.fixture
def sync() -> SyncHarness:
    return SyncHarness()


@pytest.fixture
def svc(sync: SyncHarness) -> str:
    return sync.service()


def test_reads_are_limited_per_object(sync: SyncHarness, svc: str) -> None:
    base = f"/v1/Services/{svc}"
    sync.post(f"{base}/Maps", {"UniqueName": "busy"})
    sync.post(f"{base}/Maps", {"UniqueName": "quiet"})
    sync.post(f"{base}/Documents", {"UniqueName": "doc"})
    items = f"{base}/Maps/busy/Items"
    sync.post(items, {"Key": "k", "Data": {"n": 0}})

    # A fetch of the map, of one of its items and of a page of items: one read each.
    for n in range(200):
        path = (f"{base}/Maps/busy", f"{items}/k", items)[n % 3]
        sync.get(path)
    for path in (f"{base}/Maps/busy", f"{items}/k", items):
        error = sync.fails("GET", path, status=429, code=54009)
        assert error.headers == {"Retry-After": "1"}
        assert "reads" in error.message

    # Reads and writes have separate allowances; other objects have their own.
    sync.post(f"{items}/k", {"Data": {"n": 1}})
    sync.post(items, {"Key": "j", "Data": {}})
    sync.get(f"{base}/Maps/quiet")
    sync.get(f"{base}/Documents/doc")
    sync.get(f"{base}/Maps")  # listing a service's maps reads no one object

    # Real (monotonic) time refills the bucket, the emulator clock does not.
    sync.scheduler.advance(3600)
    sync.fails("GET", f"{base}/Maps/busy", status=429, code=54009)
    sync.monotonic.value += 1.0
    for _ in range(20):
        sync.get(f"{items}/j")
    sync.fails("GET", f"{items}/j", status=429, code=54009)


def test_object_creation_is_limited_per_service(sync: SyncHarness, svc: str) -> None:
    base = f"/v1/Services/{svc}"
    kinds = ("Documents", "Maps", "Lists", "Streams")
    for n in range(200):
        sync.post(f"{base}/{kinds[n % 4]}", {"UniqueName": f"o{n}"})
    for kind in kinds:
        error = sync.fails("POST", f"{base}/{kind}", {"UniqueName": "x"}, status=429, code=54009)
        assert error.headers == {"Retry-After": "1"}
        assert "created" in error.message
    assert all(len(sync.get(f"{base}/{kind}")[kind.lower()]) == 50 for kind in kinds)

    # Items are not objects: adding one is a write to its Map, not a creation.
    sync.post(f"{base}/Maps/o1/Items", {"Key": "k", "Data": {}})
    # Another service has its own allowance.
    other = sync.service()
    sync.post(f"/v1/Services/{other}/Maps", {"UniqueName": "x"})

    sync.monotonic.value += 0.5
    for n in range(10):
        sync.post(f"{base}/Documents", {"UniqueName": f"later{n}"})
    sync.fails("POST", f"{base}/Documents", {"UniqueName": "x"}, status=429, code=54009)


def test_a_refused_creation_still_counts(sync: SyncHarness, svc: str) -> None:
    base = f"/v1/Services/{svc}/Maps"
    sync.post(base, {"UniqueName": "m"})
    for _ in range(199):
        sync.fails("POST", base, {"UniqueName": "m"}, status=409, code=54301)
    sync.fails("POST", base, {"UniqueName": "n"}, status=429, code=54009)


def test_the_sync_rate_limit_switch_covers_reads_and_creations() -> None:
    sync = SyncHarness(rate_limit=False)
    base = f"/v1/Services/{sync.service()}"
    for n in range(300):
        sync.post(f"{base}/Documents", {"UniqueName": f"d{n}"})
    for _ in range(300):
        sync.get(f"{base}/Documents/d0")
    sync.store.rate_limit = True
    for _ in range(200):
        sync.get(f"{base}/Documents/d1")
    sync.fails("GET", f"{base}/Documents/d1", status=429, code=54009)


async def test_a_read_over_the_limit_is_a_429_over_http(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    assert emulator.state is not None
    service_sid = emulator.state.sync_service_sid
    sync = client.sync.v1.services(service_sid)
    await sync.documents.create_async(unique_name="read-me", data={"n": 1})

    def drain(emu: Any) -> None:
        emu.sync.services[service_sid].documents.find("read-me").read_bucket.tokens = 0.0

    await sync.documents("read-me").fetch_async()
    emulator.call(drain)
    assert await refused(sync.documents("read-me").fetch_async()) == (429, 54009)
    emulator.call(drain)
    status, body, headers = await admin.request(
        "GET", f"/sync/v1/Services/{service_sid}/Documents/read-me"
    )
    assert (status, body["code"]) == (429, 54009)
    assert int(headers["Retry-After"]) >= 1

    await admin.settings(sync_rate_limit=False)
    assert (await sync.documents("read-me").fetch_async()).data == {"n": 1}
