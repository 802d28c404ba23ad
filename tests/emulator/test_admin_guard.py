"""The admin API's guard (issue 13): its own Host and Origin only, JSON bodies, the admin token,
and the published default API key retired by a custom auth token.

Every refusal is checked to change nothing: the clock does not move, no fault is set.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from flex_bridge.cli import build_parser, main
from flex_bridge.emulator.app import create_emulator_app
from flex_bridge.emulator.blueprints.admin_guard import AdminGuard
from flex_bridge.emulator.core import (
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    DEFAULT_AUTH_TOKEN,
    REST_PATHS,
    Emulator,
    EmulatorConfig,
)
from flex_bridge.emulator.settings import (
    ADMIN_TOKEN_ENV,
    EmulatorSettings,
    admin_origins_setting,
    admin_token_setting,
    rest_path_setting,
)
from flex_bridge.errors import ConfigError
from tests.support.emulator import Admin, RunningEmulator, header

TIMEOUT = 10.0
EVIL = "http://evil.example"


def port_of(running: RunningEmulator) -> int:
    port = urlsplit(running.url).port
    assert port is not None
    return port


def ws_url(running: RunningEmulator) -> str:
    return running.url.replace("http://", "ws://", 1) + "/_emulator/ws"


async def clock_offset(running: RunningEmulator) -> float:
    return float(running.call(lambda emu: emu.clock.offset))


def assert_refused(status: int, body: Any, expected: int, code: int) -> None:
    assert status == expected, body
    assert (body["status"], body["code"]) == (expected, code)
    assert body["message"]


# ------------------------------------------------------------------------------------ Origin
@pytest.mark.parametrize(
    "origin",
    [EVIL, "null", "http://127.0.0.1:1", "https://127.0.0.1:{port}", "http://evil.example:{port}"],
)
async def test_a_foreign_origin_is_refused_and_changes_nothing(
    admin: Admin, emulator: RunningEmulator, origin: str
) -> None:
    origin = origin.format(port=port_of(emulator))
    status, body, headers = await admin.request(
        "POST", "/_emulator/clock/advance", json_body={"seconds": 60}, headers={"Origin": origin}
    )
    assert_refused(status, body, 403, 20403)
    assert header(headers, "Content-Type") == "application/json"
    assert await clock_offset(emulator) == 0
    status, body, _ = await admin.request("GET", "/_emulator/state", headers={"Origin": origin})
    assert_refused(status, body, 403, 20403)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_the_emulators_own_origin_is_admitted(
    admin: Admin, emulator: RunningEmulator, host: str
) -> None:
    origin = f"http://{host}:{port_of(emulator)}"
    status, body, _ = await admin.request(
        "POST", "/_emulator/clock/advance", json_body={"seconds": 60}, headers={"Origin": origin}
    )
    assert status == 200, body
    assert await clock_offset(emulator) == 60


async def test_the_feed_refuses_a_foreign_origin(emulator: RunningEmulator) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(ws_url(emulator), origin=EVIL, open_timeout=TIMEOUT):  # type: ignore[arg-type]
            pass
    assert caught.value.response.status_code == 403
    body = json.loads(bytes(caught.value.response.body or b""))
    assert (body["status"], body["code"]) == (403, 20403)
    own = f"http://127.0.0.1:{port_of(emulator)}"
    async with connect(ws_url(emulator), origin=own, open_timeout=TIMEOUT) as feed:  # type: ignore[arg-type]
        hello = json.loads(await asyncio.wait_for(feed.recv(), TIMEOUT))
    assert hello["type"] == "hello"


async def test_the_sdk_surface_keeps_its_cors_for_any_origin(admin: Admin) -> None:
    """``/sdk/`` is token-authenticated for browsers: a foreign Origin is not refused there."""
    status, body, headers = await admin.request(
        "POST",
        "/sdk/sync/v1/Maps",
        json_body={"unique_name": "x"},
        auth=False,
        headers={"Origin": EVIL},
    )
    assert status == 401, body  # no Flex token, as without the Origin
    assert header(headers, "Access-Control-Allow-Origin") == EVIL


# -------------------------------------------------------------------------------------- Host
@pytest.mark.parametrize(
    "host", ["evil.example:{port}", "evil.example", "127.0.0.1:1", "[::2]:{port}"]
)
async def test_a_foreign_host_is_refused(
    admin: Admin, emulator: RunningEmulator, host: str
) -> None:
    """A page on a name rebound to 127.0.0.1 sends its own name as Host (DNS rebinding)."""
    host = host.format(port=port_of(emulator))
    status, body, _ = await admin.request(
        "POST", "/_emulator/clock/advance", json_body={"seconds": 60}, headers={"Host": host}
    )
    assert_refused(status, body, 421, 20421)
    assert await clock_offset(emulator) == 0


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}", "LOCALHOST:{port}"])
async def test_loopback_hosts_are_admitted(
    admin: Admin, emulator: RunningEmulator, host: str
) -> None:
    host = host.format(port=port_of(emulator))
    status, body, _ = await admin.request("GET", "/_emulator/health", headers={"Host": host})
    assert status == 200, body


async def test_the_rest_api_is_not_guarded_by_host(admin: Admin, emulator: RunningEmulator) -> None:
    assert emulator.state is not None
    status, body, _ = await admin.request(
        "GET",
        f"/taskrouter/v1/Workspaces/{emulator.state.workspace_sid}",
        headers={"Host": "taskrouter.example", "Origin": EVIL},
    )
    assert status == 200, body


# ------------------------------------------------------------------------------ JSON bodies
@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", '{"seconds": 60}'),
        ("application/x-www-form-urlencoded", "seconds=60"),
        (None, None),
    ],
)
async def test_admin_bodies_must_be_json(
    admin: Admin, emulator: RunningEmulator, content_type: str | None, data: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    status, body, _ = await admin.request(
        "POST", "/_emulator/clock/advance", data=data, headers=headers
    )
    assert_refused(status, body, 415, 20415)
    assert "application/json" in body["message"]
    if content_type is not None:
        assert body["message"].endswith(f"got {content_type}")
    assert await clock_offset(emulator) == 0
    status, body, _ = await admin.request(
        "POST",
        "/_emulator/faults",
        data='{"rules": [{"product": "taskrouter", "error_rates": {"500": 1.0}}]}',
        headers=headers,
    )
    assert_refused(status, body, 415, 20415)
    _, faults, _ = await admin.request("GET", "/_emulator/faults")
    assert faults["rules"] == []


async def test_json_with_a_charset_is_json(admin: Admin, emulator: RunningEmulator) -> None:
    status, body, _ = await admin.request(
        "POST",
        "/_emulator/clock/advance",
        data='{"seconds": 5}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert status == 200, body
    assert await clock_offset(emulator) == 5


# ------------------------------------------------------------------------------- admin token
@pytest.fixture
def guarded(start_emulator: Callable[..., RunningEmulator]) -> RunningEmulator:
    return start_emulator(admin_token="s3cret-admin")


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "Basic czNjcmV0LWFkbWlu", "s3cret-admin"]
)
async def test_with_an_admin_token_set_admin_requests_need_it(
    guarded: RunningEmulator, session: aiohttp.ClientSession, authorization: str | None
) -> None:
    admin = Admin(guarded, session)
    headers = {"Authorization": authorization} if authorization else {}
    status, body, answer_headers = await admin.request(
        "POST", "/_emulator/clock/advance", json_body={"seconds": 60}, auth=False, headers=headers
    )
    assert_refused(status, body, 401, 20003)
    assert (header(answer_headers, "WWW-Authenticate") or "").startswith("Bearer")
    assert await clock_offset(guarded) == 0
    with pytest.raises(InvalidStatus) as caught:
        async with connect(ws_url(guarded), additional_headers=headers, open_timeout=TIMEOUT):
            pass
    assert caught.value.response.status_code == 401


async def test_with_an_admin_token_the_right_bearer_is_admitted(
    guarded: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    admin = Admin(guarded, session)
    status, body, _ = await admin.request(
        "POST",
        "/_emulator/clock/advance",
        json_body={"seconds": 60},
        headers={"Authorization": "Bearer s3cret-admin"},
    )
    assert status == 200, body
    # The test client sends it by itself when the emulator has one.
    await admin.advance(1)
    token = await admin.token(None, ["supervisor"])
    assert token
    bearer = {"Authorization": "Bearer s3cret-admin"}
    async with connect(ws_url(guarded), additional_headers=bearer, open_timeout=TIMEOUT) as feed:
        hello = json.loads(await asyncio.wait_for(feed.recv(), TIMEOUT))
    assert hello["type"] == "hello"
    # The REST API keeps its Basic auth.
    assert guarded.state is not None
    status, _, _ = await admin.request(
        "GET", f"/taskrouter/v1/Workspaces/{guarded.state.workspace_sid}"
    )
    assert status == 200


# ----------------------------------------------------------------------- admitted origins
async def test_an_admitted_origin_and_its_host_pass(
    start_emulator: Callable[..., RunningEmulator], session: aiohttp.ClientSession
) -> None:
    """A dev server on http://localhost:5173 forwarding /_emulator as it is (Host and Origin
    its own) is let through once admitted; another origin still is not."""
    running = start_emulator(admin_origins=("http://localhost:5173",))
    admin = Admin(running, session)
    forwarded = {"Origin": "http://localhost:5173", "Host": "localhost:5173"}
    status, body, _ = await admin.request("GET", "/_emulator/health", headers=forwarded)
    assert status == 200, body
    status, body, _ = await admin.request(
        "GET", "/_emulator/health", headers={"Origin": "http://localhost:5174"}
    )
    assert_refused(status, body, 403, 20403)


def test_admitted_origins_are_checked_and_normalised() -> None:
    assert admin_origins_setting("X", ["HTTP://LocalHost:5173/", "", "https://a.example:443"]) == (
        "http://localhost:5173",
        "https://a.example",
    )
    for bad in ["localhost:5173", "ftp://a.example", "http://a.example/path", "http://:80"]:
        with pytest.raises(ConfigError, match="X must list origins"):
            admin_origins_setting("X", [bad])
    settings = EmulatorSettings.from_env(
        {
            "FLEX_BRIDGE_EMULATOR_ADMIN_TOKEN": "tok",
            "FLEX_BRIDGE_EMULATOR_ADMIN_ORIGINS": "http://localhost:5173, http://127.0.0.1:3000",
        }
    )
    config = settings.config()
    assert config.admin_token == "tok"
    assert config.admin_origins == ("http://localhost:5173", "http://127.0.0.1:3000")


def test_the_guard_checks_websocket_schemes_and_ipv6() -> None:
    guard = AdminGuard(EmulatorConfig(bind_host="::1"))
    server = ("::1", 8700)
    assert (
        guard.refusal("ws", server, {"host": "[::1]:8700", "origin": "http://[::1]:8700"}) is None
    )
    refused = guard.refusal("ws", server, {"host": "[::1]:8700", "origin": "ws://[::1]:8700"})
    assert refused is not None and refused.status == 403
    refused = guard.refusal("ws", server, {"host": "rebound.example:8700"})
    assert refused is not None and refused.status == 421
    assert guard.refusal("http", server, {}) is None  # no Host, no Origin: not a browser


# ---------------------------------------------------------------------------------- the CLI
def test_the_cli_binds_to_loopback_and_takes_the_admin_options() -> None:
    args = build_parser().parse_args(["emulator"])
    assert args.host == "127.0.0.1"
    assert args.admin_token is None and args.admin_origin is None
    args = build_parser().parse_args(
        [
            "emulator",
            "--admin-token",
            "t",
            "--admin-origin",
            "http://a",
            "--admin-origin",
            "http://b",
        ]
    )
    assert (args.admin_token, args.admin_origin) == ("t", ["http://a", "http://b"])


@pytest.mark.parametrize(
    "flags", [["--admin-origin", "javascript:alert(1)"], ["--admin-token", " "]]
)
def test_the_cli_refuses_bad_admin_options_in_one_line(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["emulator", "--port", "0", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flex-bridge: configuration error: --admin-")
    assert "\n" not in err


# --------------------------------------------------------------- the published default key
async def test_a_custom_auth_token_retires_the_published_api_key(
    start_emulator: Callable[..., RunningEmulator], session: aiohttp.ClientSession
) -> None:
    running = start_emulator(auth_token="my-own-token")
    assert running.state is not None
    path = f"{running.url}/taskrouter/v1/Workspaces/{running.state.workspace_sid}"
    published = {"Authorization": aiohttp.encode_basic_auth(DEFAULT_API_KEY, DEFAULT_API_SECRET)}
    async with session.get(path, headers=published) as response:
        assert response.status == 401
        assert (await response.json())["code"] == 20003
    own = {"Authorization": aiohttp.encode_basic_auth(running.config.account_sid, "my-own-token")}
    async with session.get(path, headers=own) as response:
        assert response.status == 200


def test_the_published_api_key_is_usable_only_with_the_published_auth_token() -> None:
    assert EmulatorConfig().usable_api_keys() == {DEFAULT_API_KEY: DEFAULT_API_SECRET}
    assert EmulatorConfig(auth_token="custom").usable_api_keys() == {}
    assert EmulatorConfig(auth_token="custom", api_keys={"SK1": "s"}).usable_api_keys() == {
        "SK1": "s"
    }
    # One rule, EmulatorConfig's: the settings keep the keys configured, the config says
    # which are accepted, and the emulator reads that once.
    custom = EmulatorSettings.from_env({"TWILIO_AUTH_TOKEN": "custom"}).config()
    assert custom.usable_api_keys() == {}
    assert Emulator(custom).api_keys == {}
    published = EmulatorSettings.from_env({"TWILIO_AUTH_TOKEN": DEFAULT_AUTH_TOKEN}).config()
    assert published.usable_api_keys() == {DEFAULT_API_KEY: DEFAULT_API_SECRET}
    assert Emulator(published).api_keys == {DEFAULT_API_KEY: DEFAULT_API_SECRET}
    own = EmulatorSettings.from_env(
        {"TWILIO_AUTH_TOKEN": "custom", "TWILIO_API_KEY": "SK1", "TWILIO_API_SECRET": "s"}
    )
    assert Emulator(own.config()).api_keys == {"SK1": "s"}


def test_the_published_api_key_is_refused_with_a_custom_auth_token() -> None:
    emu = Emulator(EmulatorConfig(auth_token="custom"))
    assert not emu.credentials_ok(DEFAULT_API_KEY, DEFAULT_API_SECRET)
    assert emu.credentials_ok(emu.config.account_sid, "custom")
    emu = Emulator(EmulatorConfig())
    assert emu.credentials_ok(DEFAULT_API_KEY, DEFAULT_API_SECRET)
    assert not emu.credentials_ok(DEFAULT_API_KEY, "wrong")


# ------------------------------------------------------------- the admin token's one rule
def test_the_admin_token_setting_trims_and_refuses_a_blank_one() -> None:
    assert admin_token_setting("X", None) is None
    assert admin_token_setting("X", "tok") == "tok"
    assert admin_token_setting("X", " \ttok \n") == "tok"
    for blank in ["", " ", "\t\n"]:
        with pytest.raises(ConfigError, match=r"^X must not be empty$"):
            admin_token_setting("X", blank)


@pytest.mark.parametrize(
    ("raw", "token"), [(" tok ", "tok"), ("tok", "tok"), ("", None), ("  ", None)]
)
def test_the_admin_token_variable_is_trimmed_and_blank_is_unset(
    raw: str, token: str | None
) -> None:
    """As every FLEX_BRIDGE_* variable, an empty or blank one counts as unset."""
    settings = EmulatorSettings.from_env({ADMIN_TOKEN_ENV: raw})
    assert settings.admin_token == token
    assert settings.config().admin_token == token
    assert EmulatorSettings.from_env({}).admin_token is None


async def test_an_admin_token_with_surrounding_whitespace_works_through_the_guard() -> None:
    """``FLEX_BRIDGE_EMULATOR_ADMIN_TOKEN=" tok "``: the admin API takes ``Bearer tok`` (the
    guard trims what it is sent) and still refuses anything else."""
    settings = EmulatorSettings.from_env({ADMIN_TOKEN_ENV: "  s3cret-admin \t"})
    client = create_emulator_app(Emulator(settings.config())).test_client()
    for authorization in ["Bearer s3cret-admin", "Bearer  s3cret-admin ", "bearer s3cret-admin"]:
        response = await client.get("/_emulator/health", headers={"Authorization": authorization})
        assert response.status_code == 200, authorization
    for headers in [{}, {"Authorization": "Bearer s3cret-admin \t x"}, {"Authorization": "Bearer"}]:
        response = await client.get("/_emulator/health", headers=headers)
        assert response.status_code == 401, headers
        body = await response.get_json()
        assert (body["status"], body["code"]) == (401, 20003)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_rest_path_is_checked_by_the_config_itself() -> None:
    for rest_path in REST_PATHS:
        assert EmulatorConfig(rest_path=rest_path).rest_path == rest_path
    with pytest.raises(ValueError, match=r"^rest_path must be asgi or quart; got 'flask'$"):
        EmulatorConfig(rest_path="flask")
    with pytest.raises(ConfigError, match=r"^X must be asgi or quart; got 'flask'$"):
        rest_path_setting("X", "flask")
