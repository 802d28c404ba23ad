"""The HTTP client under the twilio package: URL rewrite, timeouts and error translation.

Everything but ``rewrite_url`` runs against the emulator on a real socket, with faults
injected through its admin API. No test measures time: a timeout is proven by the exception.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from flex_bridge.adapters.http import BridgeHttpClient, _code, parse_retry_after, rewrite_url
from flex_bridge.errors import AmbiguousOutcomeError, RateLimitedError, TransientUpstreamError
from tests.support.emulator import Admin, RunningEmulator

# ------------------------------------------------------------------------------ rewrite_url
BASE = "http://127.0.0.1:8700"


@pytest.mark.parametrize(
    ("url", "base", "expected"),
    [
        (
            "https://taskrouter.twilio.com/v1/Workspaces/WS1/Tasks",
            BASE,
            f"{BASE}/taskrouter/v1/Workspaces/WS1/Tasks",
        ),
        (
            "https://sync.twilio.com/v1/Services/IS1/Maps/flex-bridge.worker.WK1/Items",
            BASE,
            f"{BASE}/sync/v1/Services/IS1/Maps/flex-bridge.worker.WK1/Items",
        ),
        (
            "https://iam.twilio.com/v1/Accounts/AC1/Tokens/validate",
            BASE + "/",
            f"{BASE}/iam/v1/Accounts/AC1/Tokens/validate",
        ),
        (
            "https://taskrouter.twilio.com/v1/Workspaces?FriendlyName=a%20b&PageSize=50",
            BASE,
            f"{BASE}/taskrouter/v1/Workspaces?FriendlyName=a%20b&PageSize=50",
        ),
        (
            "https://taskrouter.twilio.com/v1/Workspaces",
            "https://proxy.example.com:8443/twilio/",
            "https://proxy.example.com:8443/twilio/taskrouter/v1/Workspaces",
        ),
        # edge and region hosts keep their product
        (
            "https://taskrouter.sydney.au1.twilio.com/v1/Workspaces",
            BASE,
            f"{BASE}/taskrouter/v1/Workspaces",
        ),
        # unset: Twilio itself
        ("https://taskrouter.twilio.com/v1/Workspaces", None, None),
        ("https://taskrouter.twilio.com/v1/Workspaces", "", None),
        # not a Twilio product host: untouched
        ("https://example.com/v1/x", BASE, None),
        ("https://twilio.com/v1/x", BASE, None),
        ("https://taskrouter.twilio.com.evil.example/v1/x", BASE, None),
        ("http://127.0.0.1:9/taskrouter/v1/x", BASE, None),
    ],
)
def test_rewrite_url(url: str, base: str | None, expected: str | None) -> None:
    assert rewrite_url(url, base) == (url if expected is None else expected)


# ------------------------------------------------------------------------------ emulator
@pytest.fixture
async def http(emulator: RunningEmulator) -> AsyncIterator[BridgeHttpClient]:
    client = BridgeHttpClient(emulator.url, timeout=5.0)
    yield client
    await client.close()


def auth(running: RunningEmulator) -> tuple[str, str]:
    return (running.config.account_sid, running.config.auth_token)


def workspace_url(running: RunningEmulator) -> str:
    assert running.state is not None
    return f"https://taskrouter.twilio.com/v1/Workspaces/{running.state.workspace_sid}"


def tasks_url(running: RunningEmulator) -> str:
    return workspace_url(running) + "/Tasks"


async def task_count(http: BridgeHttpClient, running: RunningEmulator) -> int:
    answer = await http.request("GET", tasks_url(running), auth=auth(running))
    assert answer.status_code == 200
    return len(json.loads(answer.text)["tasks"])


async def test_requests_reach_the_emulator(
    http: BridgeHttpClient, emulator: RunningEmulator
) -> None:
    answer = await http.request("GET", workspace_url(emulator), auth=auth(emulator))
    assert answer.status_code == 200
    body = json.loads(answer.text)
    assert emulator.state is not None
    assert body["sid"] == emulator.state.workspace_sid
    # Twilio's own URLs in the body, as Twilio answers
    assert body["url"].startswith("https://taskrouter.twilio.com/v1/")


async def test_query_and_form_go_through(http: BridgeHttpClient, emulator: RunningEmulator) -> None:
    created = await http.request(
        "post",
        tasks_url(emulator),
        data={"Attributes": json.dumps({"n": 1}), "Priority": 5},
        auth=auth(emulator),
    )
    assert created.status_code == 201
    assert json.loads(created.text)["priority"] == 5
    listed = await http.request(
        "GET", tasks_url(emulator), params={"Priority": 5}, auth=auth(emulator)
    )
    assert [t["sid"] for t in json.loads(listed.text)["tasks"]] == [json.loads(created.text)["sid"]]


async def test_a_4xx_is_left_to_the_twilio_package(
    http: BridgeHttpClient, emulator: RunningEmulator
) -> None:
    missing = await http.request("GET", tasks_url(emulator) + "/WT" + "0" * 32, auth=auth(emulator))
    assert missing.status_code == 404
    assert json.loads(missing.text)["code"] == 20404
    anonymous = await http.request("GET", workspace_url(emulator))
    assert anonymous.status_code == 401


async def test_429_is_rate_limited_with_retry_after(
    http: BridgeHttpClient, emulator: RunningEmulator, admin: Admin
) -> None:
    await admin.faults([{"product": "taskrouter", "error_rates": {"429": 1.0}, "retry_after": 3}])
    for method in ("GET", "POST"):
        with pytest.raises(RateLimitedError) as caught:
            await http.request(method, tasks_url(emulator), auth=auth(emulator))
        assert caught.value.status == 429
        assert caught.value.code == 20429
        assert caught.value.retry_after == 3.0
        assert isinstance(caught.value, TransientUpstreamError)


async def test_503_on_a_read_is_transient(
    http: BridgeHttpClient, emulator: RunningEmulator, admin: Admin
) -> None:
    await admin.faults([{"method": "GET", "error_rates": {"503": 1.0}}])
    with pytest.raises(TransientUpstreamError) as caught:
        await http.request("GET", workspace_url(emulator), auth=auth(emulator))
    assert not isinstance(caught.value, RateLimitedError)
    assert (caught.value.status, caught.value.code) == (503, 20503)


@pytest.mark.parametrize("status", ["500", "503"])
async def test_5xx_on_a_write_is_ambiguous(
    http: BridgeHttpClient, emulator: RunningEmulator, admin: Admin, status: str
) -> None:
    await admin.faults([{"method": "POST", "path": "/Tasks$", "error_rates": {status: 1.0}}])
    with pytest.raises(AmbiguousOutcomeError) as caught:
        await http.request("POST", tasks_url(emulator), data={}, auth=auth(emulator))
    assert caught.value.status == int(status)
    assert caught.value.code == 20000 + int(status)
    assert not isinstance(caught.value, TransientUpstreamError)


async def test_a_dropped_answer_to_a_write_is_ambiguous_and_the_write_happened(
    http: BridgeHttpClient, emulator: RunningEmulator, admin: Admin
) -> None:
    await admin.faults([{"method": "POST", "path": "/Tasks$", "lose_after_commit": 1.0}])
    with pytest.raises(AmbiguousOutcomeError, match="may have been applied"):
        await http.request(
            "POST", tasks_url(emulator), data={"Attributes": "{}"}, auth=auth(emulator)
        )
    await admin.faults([])
    assert await task_count(http, emulator) == 1


async def test_a_504_after_commit_is_ambiguous(
    http: BridgeHttpClient, emulator: RunningEmulator, admin: Admin
) -> None:
    await admin.faults(
        [{"method": "POST", "path": "/Tasks$", "lose_after_commit": 1.0, "lose_mode": "504"}]
    )
    with pytest.raises(AmbiguousOutcomeError) as caught:
        await http.request("POST", tasks_url(emulator), data={}, auth=auth(emulator))
    assert (caught.value.status, caught.value.code) == (504, 20504)
    await admin.faults([])
    assert await task_count(http, emulator) == 1


async def test_a_dropped_answer_to_a_read_is_transient(
    http: BridgeHttpClient, emulator: RunningEmulator, admin: Admin
) -> None:
    await admin.faults([{"method": "GET", "lose_after_commit": 1.0}])
    with pytest.raises(TransientUpstreamError, match="connection lost"):
        await http.request("GET", workspace_url(emulator), auth=auth(emulator))


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_refused_connection_is_transient_even_for_a_write(method: str) -> None:
    """Nothing was sent, so nothing can have happened."""
    client = BridgeHttpClient(f"http://127.0.0.1:{closed_port()}", timeout=5.0)
    try:
        with pytest.raises(TransientUpstreamError, match="cannot connect") as caught:
            await client.request(method, "https://taskrouter.twilio.com/v1/Workspaces", data={})
        assert caught.value.status is None
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("method", "error"), [("GET", TransientUpstreamError), ("POST", AmbiguousOutcomeError)]
)
async def test_the_timeout_is_enforced(
    emulator: RunningEmulator, admin: Admin, method: str, error: type[Exception]
) -> None:
    await admin.faults([{"path": "/Tasks$", "latency_ms": 1500}])
    client = BridgeHttpClient(emulator.url, timeout=0.05)
    try:
        with pytest.raises(error, match="no answer in time"):
            await client.request(method, tasks_url(emulator), data={}, auth=auth(emulator))
    finally:
        await client.close()


async def test_a_per_request_timeout_overrides_the_default(
    http: BridgeHttpClient, emulator: RunningEmulator, admin: Admin
) -> None:
    await admin.faults([{"method": "GET", "path": "/Tasks$", "latency_ms": 1500}])
    with pytest.raises(TransientUpstreamError, match="no answer in time"):
        await http.request("GET", tasks_url(emulator), auth=auth(emulator), timeout=0.05)


# ------------------------------------------------------------------------------ post_json (IAM)
def iam_url(running: RunningEmulator) -> str:
    return f"https://iam.twilio.com/v1/Accounts/{running.config.account_sid}/Tokens/validate"


async def test_post_json_sends_json(
    http: BridgeHttpClient, emulator: RunningEmulator, admin: Admin
) -> None:
    token = await admin.token(None, ["agent"])
    status, body = await http.post_json(iam_url(emulator), {"token": token}, auth(emulator))
    assert status == 200
    assert body["valid"] is True
    status, body = await http.post_json(iam_url(emulator), {"token": "nope"}, auth(emulator))
    assert (status, body["valid"]) == (200, False)
    status, _ = await http.post_json(iam_url(emulator), {"token": token}, ("AC" + "0" * 32, "x"))
    assert status == 401


@pytest.mark.parametrize(
    "rule",
    [
        {"error_rates": {"503": 1.0}},
        {"error_rates": {"500": 1.0}},
        {"lose_after_commit": 1.0},
        {"lose_after_commit": 1.0, "lose_mode": "504"},
    ],
)
async def test_post_json_failures_are_transient(
    http: BridgeHttpClient, emulator: RunningEmulator, admin: Admin, rule: dict[str, Any]
) -> None:
    """Validating a token changes nothing, so even a lost answer is safe to retry."""
    await admin.faults([{"product": "iam", **rule}])
    with pytest.raises(TransientUpstreamError) as caught:
        await http.post_json(iam_url(emulator), {"token": "t"}, auth(emulator))
    assert not isinstance(caught.value, AmbiguousOutcomeError)


async def test_post_json_429(
    http: BridgeHttpClient, emulator: RunningEmulator, admin: Admin
) -> None:
    await admin.faults([{"product": "iam", "error_rates": {"429": 1.0}, "retry_after": 2}])
    with pytest.raises(RateLimitedError) as caught:
        await http.post_json(iam_url(emulator), {"token": "t"}, auth(emulator))
    assert caught.value.retry_after == 2.0


async def test_post_json_refused_connection() -> None:
    client = BridgeHttpClient(f"http://127.0.0.1:{closed_port()}")
    try:
        with pytest.raises(TransientUpstreamError, match="cannot connect"):
            await client.post_json("https://iam.twilio.com/v1/x", {}, ("a", "b"))
    finally:
        await client.close()


async def test_post_json_timeout(emulator: RunningEmulator, admin: Admin) -> None:
    await admin.faults([{"product": "iam", "latency_ms": 1500}])
    client = BridgeHttpClient(emulator.url, timeout=0.05)
    try:
        with pytest.raises(TransientUpstreamError):
            await client.post_json(iam_url(emulator), {"token": "t"}, auth(emulator))
    finally:
        await client.close()


# ------------------------------------------------------------------------------ the package on top
async def test_the_twilio_package_works_through_it(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    assert emulator.state is not None
    ws = client.taskrouter.v1.workspaces(emulator.state.workspace_sid)
    task = await ws.tasks.create_async(attributes=json.dumps({"k": "v"}))
    assert json.loads((await ws.tasks(task.sid).fetch_async()).attributes) == {"k": "v"}
    # Translated before the package sees it: the package never retries a POST on its own.
    await admin.faults([{"method": "POST", "path": "/Tasks$", "error_rates": {"503": 1.0}}])
    with pytest.raises(AmbiguousOutcomeError):
        await ws.tasks.create_async(attributes="{}")
    posts = [e for e in await admin.log("rest") if e["method"] == "POST"]
    assert len(posts) == 2


# ------------------------------------------------------------------------------ header parsing
@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("3", 3.0),
        ("0.5", 0.5),
        ("0", 0.0),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("", None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_retry_after_header(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"code": 20429, "message": "Too Many Requests", "status": 429}', 20429),
        ('{"code": "20429"}', None),
        ('{"message": "no code"}', None),
        ("[20429]", None),
        ("<html>Bad Gateway</html>", None),
        ("", None),
    ],
)
def test_error_code_from_a_body(text: str, code: int | None) -> None:
    assert _code(text) == code
