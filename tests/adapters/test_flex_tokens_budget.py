"""What a stranger's Flex token costs (issue 13): the negative cache, its bound, the single
flight, and the validation's own small budget of IAM calls.

IAM is a stub here (``StubIam``, in place of ``BridgeHttpClient.post_json``), so that calls
can be held in flight and counted exactly; the emulator-backed behaviour is in
``test_flex_tokens.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from flex_bridge.adapters.flex_tokens import (
    BUSY_WAIT,
    IAM_TIMEOUT,
    MAX_IN_FLIGHT,
    NEGATIVE_TTL,
    TokenValidationBusy,
    TwilioTokenValidator,
)
from flex_bridge.adapters.http import BridgeHttpClient
from flex_bridge.adapters.pacing import Pacing
from flex_bridge.errors import AuthenticationError, TransientUpstreamError, UpstreamError

AC = "AC" + "0" * 32
WK = "WK" + "1" * 32
VALID = {"valid": True, "identity": WK, "worker_sid": WK, "roles": ["agent"]}
INVALID = {"valid": False, "code": 20101, "message": "Invalid Access Token"}


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class StubIam:
    """``post_json`` of IAM: answers ``answer(token)``; while ``gate`` is clear, every call
    waits in flight. ``calls`` lists the tokens asked about, ``timeouts`` the timeouts given."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.timeouts: list[float | None] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.arrived = asyncio.Event()
        self.failure: Exception | None = None
        self.status = 200
        self.hang = False

    def answer(self, token: str) -> dict[str, Any]:
        return VALID if token.startswith("good") else INVALID

    async def post_json(
        self, url: str, body: dict[str, Any], auth: tuple[str, str], timeout: float | None = None
    ) -> tuple[int, Any]:
        self.calls.append(body["token"])
        self.timeouts.append(timeout)
        self.arrived.set()
        await self.gate.wait()
        if self.hang:
            await asyncio.Event().wait()  # never answers: the validator's timeout must end it
        if self.failure is not None:
            raise self.failure
        return self.status, self.answer(body["token"])


@pytest.fixture
def iam() -> StubIam:
    return StubIam()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def validator_for(iam: StubIam, clock: FakeClock, **options: Any) -> TwilioTokenValidator:
    return TwilioTokenValidator(
        cast(BridgeHttpClient, iam), AC, (AC, "secret"), clock=clock, **options
    )


async def refused(validator: TwilioTokenValidator, token: str) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await validator.validate(token)
    return str(caught.value)


async def until_called(iam: StubIam, count: int) -> None:
    """Wait until IAM holds ``count`` calls in flight (it counts them as they arrive)."""

    async def wait() -> None:
        while len(iam.calls) < count:
            iam.arrived.clear()
            await iam.arrived.wait()

    await asyncio.wait_for(wait(), 5.0)


# ------------------------------------------------------------------------- negative cache
async def test_a_forged_token_costs_one_iam_call_per_negative_ttl(
    iam: StubIam, clock: FakeClock
) -> None:
    validator = validator_for(iam, clock)
    assert NEGATIVE_TTL == 30.0
    for _ in range(20):
        assert await refused(validator, "forged") == "Invalid Access Token"
    assert iam.calls == ["forged"]
    clock.now += NEGATIVE_TTL - 0.5
    await refused(validator, "forged")
    assert len(iam.calls) == 1
    clock.now += 1.0
    await refused(validator, "forged")
    assert len(iam.calls) == 2


async def test_answers_are_kept_under_the_tokens_sha256_only(
    iam: StubIam, clock: FakeClock
) -> None:
    validator = validator_for(iam, clock)
    await refused(validator, "forged-secret")
    await validator.validate("good-secret")
    keys = set(validator._cache)
    assert keys == {
        hashlib.sha256(t.encode()).hexdigest() for t in ("forged-secret", "good-secret")
    }
    assert not any("secret" in repr(entry) for entry in validator._cache.values())


async def test_the_cache_is_bounded_least_recently_used_first_out(
    iam: StubIam, clock: FakeClock
) -> None:
    validator = validator_for(iam, clock, max_entries=2)
    await refused(validator, "a")
    await refused(validator, "b")
    await refused(validator, "a")  # a used again: b is now the least recently used
    await refused(validator, "c")
    assert len(validator._cache) == 2
    assert iam.calls == ["a", "b", "c"]
    await refused(validator, "a")  # still cached
    assert iam.calls == ["a", "b", "c"]
    await refused(validator, "b")  # was evicted
    assert iam.calls == ["a", "b", "c", "b"]


@pytest.mark.parametrize(
    "failure",
    [
        TransientUpstreamError("POST /v1/Accounts/AC…/Tokens/validate: HTTP 503", status=503),
        TransientUpstreamError("POST /v1/Accounts/AC…/Tokens/validate: no answer in time"),
    ],
)
async def test_a_5xx_or_a_timeout_is_not_cached(
    iam: StubIam, clock: FakeClock, failure: Exception
) -> None:
    validator = validator_for(iam, clock)
    iam.failure = failure
    with pytest.raises(TransientUpstreamError):
        await validator.validate("forged")
    iam.failure = None
    await refused(validator, "forged")  # asked again: a definite answer now
    assert iam.calls == ["forged", "forged"]
    assert len(validator._cache) == 1


async def test_a_hung_iam_call_ends_at_the_validation_timeout_and_is_not_cached(
    iam: StubIam, clock: FakeClock
) -> None:
    validator = validator_for(iam, clock, timeout=0.05)
    iam.hang = True
    with pytest.raises(TransientUpstreamError, match="no answer in time"):
        await validator.validate("forged")
    assert validator.in_flight == 0 and not validator._cache
    iam.hang = False
    await refused(validator, "forged")
    assert len(iam.calls) == 2


async def test_a_4xx_refusal_is_not_cached(iam: StubIam, clock: FakeClock) -> None:
    """A 401/403 from IAM most likely refuses our own credentials: nothing sure about the
    token, so nothing is cached (the caller still gets 401)."""
    validator = validator_for(iam, clock)
    iam.status = 401
    assert await refused(validator, "good-token") == "the Flex token was refused"
    iam.status = 200
    assert (await validator.validate("good-token")).worker_sid == WK
    assert len(iam.calls) == 2


async def test_a_non_json_200_is_an_upstream_error_not_cached(clock: FakeClock) -> None:
    class Garbled(StubIam):
        def answer(self, token: str) -> Any:
            return None

    iam = Garbled()
    validator = validator_for(iam, clock)
    with pytest.raises(UpstreamError):
        await validator.validate("forged")
    assert not validator._cache


# --------------------------------------------------------------------------- the budget
async def test_at_most_max_in_flight_iam_calls_then_busy(
    iam: StubIam, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    assert (MAX_IN_FLIGHT, BUSY_WAIT) == (4, 0.5)
    validator = validator_for(iam, clock, busy_wait=0.01)
    iam.gate.clear()
    held = [asyncio.ensure_future(refused(validator, f"forged-{n}")) for n in range(4)]
    await until_called(iam, 4)
    assert validator.in_flight == 4
    with caplog.at_level(logging.WARNING, "flex_bridge.tokens"):
        with pytest.raises(TokenValidationBusy, match="token validation busy") as caught:
            await validator.validate("forged-secret-5")
        with pytest.raises(TokenValidationBusy):
            await validator.validate("forged-secret-6")
    assert caught.value.status == 503
    assert isinstance(caught.value, TransientUpstreamError)  # 503 to the caller, not 401
    assert len(iam.calls) == 4  # the fifth and sixth never reached IAM
    assert validator.busy_refusals == 2
    busy = [r for r in caplog.records if "busy" in r.getMessage()]
    assert len(busy) == 1  # one WARNING per BUSY_LOG_EVERY, not one per refusal
    assert "forged-secret" not in caplog.text
    iam.gate.set()
    await asyncio.gather(*held)
    assert validator.in_flight == 0
    await refused(validator, "forged-secret-5")  # a slot is free again: asked, not refused
    assert len(iam.calls) == 5


async def test_a_waiting_validation_takes_a_slot_that_frees_in_time(
    iam: StubIam, clock: FakeClock
) -> None:
    validator = validator_for(iam, clock, max_in_flight=1, busy_wait=30.0)
    iam.gate.clear()
    first = asyncio.ensure_future(refused(validator, "one"))
    await until_called(iam, 1)
    second = asyncio.ensure_future(refused(validator, "two"))
    await asyncio.sleep(0)
    assert iam.calls == ["one"]
    iam.gate.set()
    await asyncio.gather(first, second)
    assert iam.calls == ["one", "two"]
    assert validator.busy_refusals == 0


async def test_concurrent_validations_of_one_token_share_one_call(
    iam: StubIam, clock: FakeClock
) -> None:
    validator = validator_for(iam, clock, max_in_flight=1, busy_wait=0.01)
    iam.gate.clear()
    waiting = [asyncio.ensure_future(validator.validate("good-shared")) for _ in range(10)]
    await until_called(iam, 1)
    iam.gate.set()
    identities = await asyncio.gather(*waiting)
    assert {i.worker_sid for i in identities} == {WK}
    assert iam.calls == ["good-shared"]  # one call, and no caller was refused as busy
    assert validator.busy_refusals == 0


async def test_a_caller_going_away_does_not_cancel_the_others_answer(
    iam: StubIam, clock: FakeClock
) -> None:
    validator = validator_for(iam, clock)
    iam.gate.clear()
    leaving = asyncio.ensure_future(validator.validate("good-token"))
    staying = asyncio.ensure_future(validator.validate("good-token"))
    await until_called(iam, 1)
    leaving.cancel()
    iam.gate.set()
    assert (await staying).worker_sid == WK
    assert leaving.cancelled()
    await validator.validate("good-token")  # cached by the flight that went on
    assert iam.calls == ["good-token"]


async def test_each_iam_call_is_bounded_by_the_validation_timeout(
    iam: StubIam, clock: FakeClock
) -> None:
    validator = validator_for(iam, clock)
    await validator.validate("good-token")
    assert iam.timeouts == [IAM_TIMEOUT]


# ----------------------------------------------------------------------- pacing, shared
@pytest.fixture
async def http() -> AsyncIterator[BridgeHttpClient]:
    client = BridgeHttpClient("http://127.0.0.1:9")
    yield client
    await client.close()


async def test_iam_has_its_own_pace_not_taskrouters(http: BridgeHttpClient) -> None:
    """The IAM call goes through the bridge's client, but never waits behind (nor slows)
    TaskRouter's or Sync's pace."""
    validator = TwilioTokenValidator(http, AC, (AC, "secret"))
    assert Pacing.key(validator.url) == "iam"
    assert http.pacing is not None
    iam_pace = http.pacing.pace(validator.url)
    taskrouter = http.pacing.pace("https://taskrouter.twilio.com/v1/Workspaces/WS1/Tasks/WT1")
    sync = http.pacing.pace("https://sync.twilio.com/v1/Services/IS1/Maps/MP1/Items")
    assert iam_pace is not taskrouter and iam_pace is not sync
    taskrouter.throttled(retry_after=1.0)
    assert iam_pace.throttles == 0 and iam_pace.rate > taskrouter.rate


def test_bad_budgets_are_refused(iam: StubIam, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        validator_for(iam, clock, max_in_flight=0)
