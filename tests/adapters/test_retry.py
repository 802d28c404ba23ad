"""The one retry policy: what is retried, how long it waits, and when it stops.

No test sleeps: waits are observed through the ``sleep`` seam (a recorder) and the
``on_retry`` callback, and time is a fake clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest

from flex_bridge.adapters.retry import (
    RetryPolicy,
    current_deadline,
    is_testing,
    retrying,
    set_testing,
)
from flex_bridge.errors import (
    AmbiguousOutcomeError,
    ConflictError,
    FlexBridgeError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    TransientUpstreamError,
    UpstreamError,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Script:
    """An attempt that fails with the given errors in turn, then returns ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Sleeps:
    """The ``sleep`` seam: records each wait and moves the fake clock instead of sleeping."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.clock is not None:
            self.clock.now += seconds


@pytest.fixture
def real_waits() -> Iterator[None]:
    """Waits as in production (the autouse fixture turns them off); sleeping stays faked."""
    set_testing(False)
    yield
    set_testing(True)


def transient() -> TransientUpstreamError:
    return TransientUpstreamError("HTTP 503", status=503, code=20503)


def limited(after: float | None) -> RateLimitedError:
    return RateLimitedError("rate limited", code=20429, retry_after=after)


async def run(
    attempt: Callable[[], Awaitable[str]],
    policy: RetryPolicy,
    *,
    deadline: float | None = None,
    clock: FakeClock | None = None,
    sleeps: Sleeps | None = None,
    calls: list[tuple[BaseException, float]] | None = None,
) -> str:
    clock = clock or FakeClock()
    sleeps = sleeps or Sleeps(clock)
    recorded = calls if calls is not None else []
    return await retrying(
        attempt,
        policy,
        deadline=deadline,
        clock=clock,
        on_retry=lambda exc, wait: recorded.append((exc, wait)),
        sleep=sleeps,
    )


# ------------------------------------------------------------------------------ what is retried
async def test_success_needs_no_retry() -> None:
    attempt = Script()
    assert await run(attempt, RetryPolicy()) == "ok"
    assert attempt.calls == 1


@pytest.mark.parametrize("error", [transient(), limited(None), limited(2.0)])
async def test_transient_errors_are_retried(error: TransientUpstreamError) -> None:
    attempt = Script(error, error)
    calls: list[tuple[BaseException, float]] = []
    assert await run(attempt, RetryPolicy(max_attempts=5), calls=calls) == "ok"
    assert attempt.calls == 3
    assert [exc for exc, _ in calls] == [error, error]


@pytest.mark.parametrize(
    "error",
    [
        AmbiguousOutcomeError("sent, answer lost"),
        RejectedError("bad request", status=400, code=20001),
        ConflictError("not pending", status=400, code=20001),
        NotFoundError("gone", status=404, code=20404),
        UpstreamError("odd answer", status=302),
        FlexBridgeError("ours"),
        ValueError("a bug"),
    ],
)
async def test_everything_else_is_raised_at_once(error: Exception) -> None:
    attempt = Script(error)
    calls: list[tuple[BaseException, float]] = []
    with pytest.raises(type(error)) as caught:
        await run(attempt, RetryPolicy(max_attempts=5), calls=calls)
    assert caught.value is error
    assert attempt.calls == 1
    assert calls == []


async def test_stops_at_max_attempts_and_reraises_the_last_error() -> None:
    errors = [transient() for _ in range(10)]
    attempt = Script(*errors)
    calls: list[tuple[BaseException, float]] = []
    with pytest.raises(TransientUpstreamError) as caught:
        await run(attempt, RetryPolicy(max_attempts=4), calls=calls)
    assert attempt.calls == 4
    assert caught.value is errors[3]
    assert len(calls) == 3


async def test_one_attempt_means_no_retry() -> None:
    attempt = Script(transient())
    with pytest.raises(TransientUpstreamError):
        await run(attempt, RetryPolicy(max_attempts=1))
    assert attempt.calls == 1


async def test_a_non_transient_error_after_retries_ends_it() -> None:
    attempt = Script(transient(), ConflictError("no", status=400, code=20001), transient())
    with pytest.raises(ConflictError):
        await run(attempt, RetryPolicy(max_attempts=5))
    assert attempt.calls == 2


# ------------------------------------------------------------------------------ waits
async def test_testing_mode_makes_every_wait_zero() -> None:
    assert is_testing()
    sleeps = Sleeps()
    calls: list[tuple[BaseException, float]] = []
    attempt = Script(limited(30.0), transient(), transient())
    policy = RetryPolicy(max_attempts=5, base=10, cap=60)
    assert await run(attempt, policy, sleeps=sleeps, calls=calls) == "ok"
    assert [wait for _, wait in calls] == [0.0, 0.0, 0.0]
    assert sleeps.waits == [0.0, 0.0, 0.0]


async def test_testing_mode_keeps_the_attempt_cap() -> None:
    attempt = Script(*(transient() for _ in range(5)))
    with pytest.raises(TransientUpstreamError):
        await run(attempt, RetryPolicy(max_attempts=3))
    assert attempt.calls == 3


def test_set_testing_switches() -> None:
    set_testing(False)
    assert not is_testing()
    set_testing()
    assert is_testing()


@pytest.mark.usefixtures("real_waits")
async def test_retry_after_is_the_wait_of_that_very_retry() -> None:
    """The wait after a 429 is its Retry-After: the one slept, and the one reported."""
    sleeps = Sleeps(FakeClock())
    calls: list[tuple[BaseException, float]] = []
    attempt = Script(limited(3.0), limited(7.0), limited(0.0))
    policy = RetryPolicy(max_attempts=5, base=0.01, cap=0.01)
    assert await run(attempt, policy, sleeps=sleeps, calls=calls) == "ok"
    assert [wait for _, wait in calls] == [3.0, 7.0, 0.0]
    assert sleeps.waits == [3.0, 7.0, 0.0]


@pytest.mark.usefixtures("real_waits")
async def test_retry_after_may_exceed_the_backoff_cap() -> None:
    sleeps = Sleeps(FakeClock())
    attempt = Script(limited(12.0))
    assert await run(attempt, RetryPolicy(base=0.1, cap=1.0), sleeps=sleeps) == "ok"
    assert sleeps.waits == [12.0]


@pytest.mark.usefixtures("real_waits")
async def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(max_attempts=8, base=0.5, cap=3.0)
    sleeps = Sleeps(FakeClock())
    calls: list[tuple[BaseException, float]] = []
    attempt = Script(*(transient() for _ in range(8)))
    with pytest.raises(TransientUpstreamError):
        await run(attempt, policy, sleeps=sleeps, calls=calls)
    bounds = [min(3.0, 0.5 * 2**n) for n in range(7)]  # 0.5, 1, 2, 3, 3, 3, 3
    assert len(sleeps.waits) == 7
    for wait, bound in zip(sleeps.waits, bounds, strict=True):
        assert 0.0 <= wait <= bound
    assert [wait for _, wait in calls] == sleeps.waits


@pytest.mark.usefixtures("real_waits")
async def test_429s_do_not_use_up_the_attempt_cap_but_have_their_own_bound() -> None:
    policy = RetryPolicy(max_attempts=2, base=0.01, cap=0.01, max_rate_limited=6)
    # Five 429s and one 503 fit: the 503 is the first counted failure of two allowed.
    attempt = Script(limited(0.0), limited(0.0), transient(), *(limited(0.0) for _ in range(3)))
    assert await run(attempt, policy, sleeps=Sleeps(FakeClock())) == "ok"
    # Six 429s in a row reach their bound.
    attempt = Script(*(limited(0.0) for _ in range(7)))
    with pytest.raises(RateLimitedError):
        await run(attempt, policy, sleeps=Sleeps(FakeClock()))


def test_backoff_bounds() -> None:
    policy = RetryPolicy(base=0.2, cap=1.0)
    for attempt, bound in [(1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (10, 1.0)]:
        waits = [policy.backoff(attempt) for _ in range(200)]
        assert all(0.0 <= w <= bound for w in waits)
        assert max(waits) > bound / 2  # jittered over the range, not stuck at 0


# ------------------------------------------------------------------------------ deadline
@pytest.mark.usefixtures("real_waits")
async def test_a_retry_whose_wait_would_cross_the_deadline_is_not_started() -> None:
    clock = FakeClock(1000.0)
    sleeps = Sleeps(clock)
    error = limited(5.0)
    attempt = Script(error, transient())
    with pytest.raises(RateLimitedError) as caught:
        await run(attempt, RetryPolicy(max_attempts=5), deadline=1004.0, clock=clock, sleeps=sleeps)
    assert caught.value is error
    assert attempt.calls == 1
    assert sleeps.waits == []


@pytest.mark.usefixtures("real_waits")
async def test_a_wait_ending_exactly_at_the_deadline_is_not_started() -> None:
    clock = FakeClock(1000.0)
    attempt = Script(limited(4.0))
    with pytest.raises(RateLimitedError):
        await run(attempt, RetryPolicy(), deadline=1004.0, clock=clock)
    assert attempt.calls == 1


@pytest.mark.usefixtures("real_waits")
async def test_retries_go_on_while_they_fit_before_the_deadline() -> None:
    clock = FakeClock(1000.0)
    sleeps = Sleeps(clock)
    attempt = Script(limited(2.0), limited(2.0), limited(2.0), limited(2.0))
    with pytest.raises(RateLimitedError):
        await run(
            attempt,
            RetryPolicy(max_attempts=10, attempt_margin=0.0),
            deadline=1005.0,
            clock=clock,
            sleeps=sleeps,
        )
    # 1000 -> wait 2 -> 1002 -> wait 2 -> 1004 -> a wait of 2 would end at 1006: stop.
    assert sleeps.waits == [2.0, 2.0]
    assert attempt.calls == 3


@pytest.mark.usefixtures("real_waits")
async def test_an_op_with_a_deadline_is_retried_until_it_not_until_the_attempt_cap() -> None:
    """A 40 s outage must not make the bridge give up a change whose reservation still has
    time: the attempt cap bounds only operations without a deadline."""
    clock = FakeClock(1000.0)
    sleeps = Sleeps(clock)
    attempt = Script(*(transient() for _ in range(12)))
    policy = RetryPolicy(max_attempts=2, base=1.0, cap=4.0)
    assert await run(attempt, policy, deadline=1120.0, clock=clock, sleeps=sleeps) == "ok"
    assert attempt.calls == 13
    assert clock.now < 1120.0 - policy.attempt_margin


@pytest.mark.usefixtures("real_waits")
async def test_no_attempt_starts_without_its_margin_before_the_deadline() -> None:
    clock = FakeClock(1000.0)
    sleeps = Sleeps(clock)
    attempt = Script(limited(2.0), limited(2.0))
    with pytest.raises(RateLimitedError):
        await run(
            attempt, RetryPolicy(attempt_margin=1.5), deadline=1003.0, clock=clock, sleeps=sleeps
        )
    # 1000 + a wait of 2 + a margin of 1.5 ends past 1003: the retry is not started.
    assert sleeps.waits == []
    assert attempt.calls == 1


async def test_testing_mode_caps_attempts_even_with_a_deadline() -> None:
    attempt = Script(*(transient() for _ in range(5)))
    with pytest.raises(TransientUpstreamError):
        await run(attempt, RetryPolicy(max_attempts=3), deadline=1e12)
    assert attempt.calls == 3


async def test_the_deadline_is_the_contexts_while_retrying() -> None:
    seen: list[float | None] = []

    async def attempt() -> str:
        seen.append(current_deadline())
        if len(seen) == 1:
            raise transient()
        return "ok"

    assert current_deadline() is None
    assert await run(attempt, RetryPolicy(), deadline=5000.0) == "ok"
    assert seen == [5000.0, 5000.0]
    assert current_deadline() is None


async def test_a_passed_deadline_stops_retries_even_in_testing_mode() -> None:
    clock = FakeClock(2000.0)
    attempt = Script(transient(), transient())
    with pytest.raises(TransientUpstreamError):
        await run(attempt, RetryPolicy(max_attempts=5), deadline=1999.0, clock=clock)
    assert attempt.calls == 1


async def test_no_deadline_means_only_the_attempt_cap() -> None:
    clock = FakeClock(1e12)
    attempt = Script(transient(), transient())
    assert await run(attempt, RetryPolicy(max_attempts=3), deadline=None, clock=clock) == "ok"


async def test_retrying_uses_real_sleep_by_default() -> None:
    """Without the seam, the wait goes to asyncio.sleep (zero in testing mode)."""
    attempt = Script(transient())
    assert await retrying(attempt, RetryPolicy(max_attempts=2)) == "ok"
    assert attempt.calls == 2
