"""CORS on ``/flex`` only: a Flex plugin on Flex's origin may call the bridge from the browser;
other origins get no ``Access-Control-Allow-*`` header, so the browser refuses the call."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import OpenEnv

FLEX = "https://flex.twilio.com"
WR = "WR" + "0" * 32


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type",
    }


@pytest.mark.parametrize(
    ("path", "method"),
    [
        (f"/flex/reservations/{WR}/accept", "POST"),
        ("/flex/tasks/WT" + "0" * 32 + "/attributes", "PATCH"),
        ("/flex/intents/in_" + "0" * 22, "GET"),
    ],
)
async def test_a_preflight_from_flex_is_allowed(open_env: OpenEnv, path: str, method: str) -> None:
    env = await open_env()
    status, _, headers = await env.request("OPTIONS", path, headers=preflight(FLEX, method))
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == FLEX
    assert method in headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "Access-Control-Allow-Credentials" not in headers  # no cookies


async def test_the_answer_itself_carries_the_origin(open_env: OpenEnv) -> None:
    env = await open_env()
    status, body, headers = await env.request(
        "POST", f"/flex/reservations/{WR}/accept", json_body={}, headers={"Origin": FLEX}
    )
    assert status == 401, body  # no token: refused, and the browser may read why
    assert headers["Access-Control-Allow-Origin"] == FLEX


async def test_a_foreign_origin_is_not_allowed(open_env: OpenEnv) -> None:
    env = await open_env()
    _, _, headers = await env.request(
        "OPTIONS", f"/flex/reservations/{WR}/accept", headers=preflight("https://evil.example")
    )
    assert "Access-Control-Allow-Origin" not in headers
    _, _, headers = await env.request(
        "POST",
        f"/flex/reservations/{WR}/accept",
        json_body={},
        headers={"Origin": "https://evil.example"},
    )
    assert "Access-Control-Allow-Origin" not in headers


async def test_configured_origins_replace_the_default(open_env: OpenEnv) -> None:
    env = await open_env(cors_origins=("https://flex.example.com",))
    _, _, headers = await env.request(
        "OPTIONS", f"/flex/reservations/{WR}/accept", headers=preflight("https://flex.example.com")
    )
    assert headers["Access-Control-Allow-Origin"] == "https://flex.example.com"
    _, _, headers = await env.request(
        "OPTIONS", f"/flex/reservations/{WR}/accept", headers=preflight(FLEX)
    )
    assert "Access-Control-Allow-Origin" not in headers


@pytest.mark.parametrize("path", ["/taskrouter/assignment", "/taskrouter/events", "/healthz"])
async def test_no_cors_outside_flex(open_env: OpenEnv, path: str) -> None:
    env = await open_env()
    _, _, headers = await env.request("OPTIONS", path, headers=preflight(FLEX))
    assert "Access-Control-Allow-Origin" not in headers
