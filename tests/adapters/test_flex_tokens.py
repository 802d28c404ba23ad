"""Flex token validation against the emulator's IAM, and its cache.

The validator's clock is a fake one, moved together with the emulator's clock, so expiry and
cache lifetimes are exercised without waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypedDict, Unpack

import pytest

from flex_bridge.adapters.flex_tokens import (
    NEGATIVE_TTL,
    FlexIdentity,
    TwilioTokenValidator,
    _expiry,
)
from flex_bridge.adapters.http import BridgeHttpClient
from flex_bridge.errors import AuthenticationError, TransientUpstreamError
from tests.support.emulator import Admin, RunningEmulator

WK = "WK" + "00112233445566778899aabbccddeeff"


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    validator: TwilioTokenValidator
    clock: FakeClock
    admin: Admin

    async def iam_calls(self) -> int:
        return sum(1 for e in await self.admin.log("rest") if e.get("product") == "iam")

    async def advance(self, seconds: float) -> None:
        """Time passes for both sides: the emulator's IAM and the validator's cache."""
        await self.admin.advance(seconds)
        self.clock.now += seconds


@pytest.fixture
async def http(emulator: RunningEmulator) -> AsyncIterator[BridgeHttpClient]:
    client = BridgeHttpClient(emulator.url, timeout=5.0)
    yield client
    await client.close()


class ValidatorOptions(TypedDict, total=False):
    margin: float
    max_cache: float
    negative_ttl: float
    max_entries: int


def validator_for(
    http: BridgeHttpClient,
    emulator: RunningEmulator,
    clock: FakeClock,
    **options: Unpack[ValidatorOptions],
) -> TwilioTokenValidator:
    config = emulator.config
    return TwilioTokenValidator(
        http, config.account_sid, (config.account_sid, config.auth_token), clock=clock, **options
    )


@pytest.fixture
def setup(http: BridgeHttpClient, emulator: RunningEmulator, admin: Admin) -> Setup:
    clock = FakeClock()
    return Setup(validator_for(http, emulator, clock), clock, admin)


async def test_a_valid_token_gives_the_identity(setup: Setup) -> None:
    token = await setup.admin.token(WK, ["agent"], ttl=3600)
    identity = await setup.validator.validate(token)
    assert identity.identity == WK
    assert identity.worker_sid == WK
    assert identity.roles == frozenset({"agent"})
    assert not identity.is_supervisor
    assert identity.expires is not None
    assert abs(identity.expires - (setup.clock.now + 3600)) < 2


async def test_a_valid_token_is_cached(setup: Setup) -> None:
    token = await setup.admin.token(WK, ["agent"])
    first = await setup.validator.validate(token)
    assert await setup.iam_calls() == 1
    for _ in range(5):
        assert await setup.validator.validate(token) == first
    assert await setup.iam_calls() == 1


async def test_the_cache_is_renewed_after_max_cache(setup: Setup) -> None:
    token = await setup.admin.token(WK, ["agent"], ttl=3600)
    await setup.validator.validate(token)
    await setup.advance(299)
    await setup.validator.validate(token)
    assert await setup.iam_calls() == 1
    await setup.advance(2)
    await setup.validator.validate(token)
    assert await setup.iam_calls() == 2


@pytest.mark.parametrize("token", ["flex-emulator.not-issued", "garbage", "a" * 5000])
async def test_an_invalid_token_is_refused(setup: Setup, token: str) -> None:
    with pytest.raises(AuthenticationError, match=r"(?i)invalid access token"):
        await setup.validator.validate(token)


async def test_an_invalid_token_is_cached_briefly(setup: Setup) -> None:
    for _ in range(5):
        with pytest.raises(AuthenticationError):
            await setup.validator.validate("flex-emulator.bad")
    assert await setup.iam_calls() == 1
    assert NEGATIVE_TTL == 30.0
    setup.clock.now += NEGATIVE_TTL - 0.1
    with pytest.raises(AuthenticationError):
        await setup.validator.validate("flex-emulator.bad")
    assert await setup.iam_calls() == 1
    setup.clock.now += 0.2
    with pytest.raises(AuthenticationError):
        await setup.validator.validate("flex-emulator.bad")
    assert await setup.iam_calls() == 2


async def test_an_empty_token_is_refused_without_asking(setup: Setup) -> None:
    with pytest.raises(AuthenticationError, match="no Flex token"):
        await setup.validator.validate("")
    assert await setup.iam_calls() == 0


async def test_an_expired_token_is_refused_once_the_cache_margin_is_reached(setup: Setup) -> None:
    token = await setup.admin.token(WK, ["agent"], ttl=100)
    await setup.validator.validate(token)
    # Cached until 30 s (the margin) before the expiry: about 70 s from now.
    await setup.advance(68)
    assert (await setup.validator.validate(token)).worker_sid == WK
    assert await setup.iam_calls() == 1
    await setup.advance(33)  # past the expiry (100 s): IAM says expired
    with pytest.raises(AuthenticationError, match="expired"):
        await setup.validator.validate(token)
    assert await setup.iam_calls() == 2


async def test_a_token_inside_the_margin_is_never_served_from_the_cache(setup: Setup) -> None:
    token = await setup.admin.token(WK, ["agent"], ttl=20)
    await setup.validator.validate(token)
    await setup.validator.validate(token)
    assert await setup.iam_calls() == 2


@pytest.mark.parametrize(
    ("roles", "supervisor"),
    [
        (["agent"], False),
        (["supervisor"], True),
        (["admin"], True),
        (["agent", "supervisor"], True),
    ],
)
async def test_supervisor_roles(setup: Setup, roles: list[str], supervisor: bool) -> None:
    token = await setup.admin.token(WK, roles)
    identity = await setup.validator.validate(token)
    assert identity.roles == frozenset(roles)
    assert identity.is_supervisor is supervisor


async def test_a_token_without_a_worker(setup: Setup) -> None:
    status, body, _ = await setup.admin.request(
        "POST",
        "/_emulator/tokens",
        json_body={"worker_sid": None, "roles": ["supervisor"], "identity": "boss@example.com"},
    )
    assert status == 201
    identity = await setup.validator.validate(body["token"])
    assert identity.identity == "boss@example.com"
    assert identity.worker_sid is None


def test_is_supervisor() -> None:
    assert FlexIdentity("x", None, frozenset({"admin"}), None).is_supervisor
    assert not FlexIdentity("x", WK, frozenset(), None).is_supervisor


async def test_a_4xx_from_iam_is_a_refused_token_not_an_outage(
    http: BridgeHttpClient,
    emulator: RunningEmulator,
    admin: Admin,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Twilio answers 4xx when the request or the token is bad: the caller gets 401 (an
    AuthenticationError), never 503; only 5xx, 429 and timeouts mean Twilio is unavailable.
    Here IAM refuses our credentials (401): logged as a warning, without the token."""
    token = await admin.token(WK, ["agent"])
    validator = TwilioTokenValidator(
        http, emulator.config.account_sid, (emulator.config.account_sid, "wrong")
    )
    with (
        caplog.at_level(logging.WARNING, "flex_bridge.tokens"),
        pytest.raises(AuthenticationError, match="refused"),
    ):
        await validator.validate(token)
    assert any("HTTP 401" in r.getMessage() for r in caplog.records)
    assert token not in caplog.text


async def test_iam_outages_are_transient_and_not_cached(setup: Setup) -> None:
    token = await setup.admin.token(WK, ["agent"])
    await setup.admin.faults([{"product": "iam", "error_rates": {"503": 1.0}, "count": 1}])
    with pytest.raises(TransientUpstreamError):
        await setup.validator.validate(token)
    assert (await setup.validator.validate(token)).worker_sid == WK


async def test_the_cache_stays_bounded(
    http: BridgeHttpClient, emulator: RunningEmulator, admin: Admin
) -> None:
    """A flood of distinct bad tokens must not grow the cache past ``max_entries``."""
    clock = FakeClock()
    validator = validator_for(http, emulator, clock, max_entries=3)
    for n in range(10):
        with pytest.raises(AuthenticationError):
            await validator.validate(f"flex-emulator.bad-{n}")
        assert len(validator._cache) <= 3
    calls = sum(1 for e in await admin.log("rest") if e.get("product") == "iam")
    with pytest.raises(AuthenticationError):
        await validator.validate("flex-emulator.bad-9")  # the newest is still cached
    assert sum(1 for e in await admin.log("rest") if e.get("product") == "iam") == calls


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:34:56Z", 1_714_566_896.0),
        ("2024-05-01T12:34:56+00:00", 1_714_566_896.0),
        ("2024-05-01T14:34:56+02:00", 1_714_566_896.0),
        ("tomorrow", None),
        (1_714_566_896, None),
        (None, None),
    ],
)
def test_expiration_parsing(value: object, expected: float | None) -> None:
    assert _expiry(value) == expected
