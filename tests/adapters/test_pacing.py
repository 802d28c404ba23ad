"""Adaptive pacing on a fake clock: spacing, the cut on 429, the hold, the climb back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flex_bridge.adapters.pacing import MAX_HOLD, SYNC_RATE, AdaptiveRate, Pacing
from flex_bridge.adapters.retry import set_testing
from flex_bridge.errors import NotSentError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def real_waits() -> Iterator[None]:
    set_testing(False)
    yield
    set_testing(True)


def pace(clock: Clock, **kw: float) -> AdaptiveRate:
    return AdaptiveRate(clock=clock, sleep=clock.sleep, **kw)


@pytest.mark.usefixtures("real_waits")
async def test_requests_leave_evenly_spaced_at_the_rate() -> None:
    clock = Clock()
    p = pace(clock, rate=10.0)
    for _ in range(5):
        await p.acquire()
    assert clock.sleeps == pytest.approx([0.1, 0.1, 0.1, 0.1])
    assert clock.now == pytest.approx(100.4)


@pytest.mark.usefixtures("real_waits")
async def test_a_429_cuts_the_rate_once_per_burst_and_holds_everyone() -> None:
    clock = Clock()
    p = pace(clock, rate=10.0, decrease=0.5)
    p.throttled(0.5)
    p.throttled(0.5)  # the same burst: no second cut
    assert p.rate == 5.0
    assert p.throttles == 2
    await p.acquire()
    assert clock.now == pytest.approx(100.5)  # held for Retry-After


@pytest.mark.usefixtures("real_waits")
async def test_a_long_retry_after_holds_the_others_only_briefly() -> None:
    """One 429 with Retry-After: 60 must not stall every other change for a minute: the
    request that met it waits the minute in its own retry; the others go on at the cut pace
    after at most MAX_HOLD."""
    clock = Clock()
    p = pace(clock, rate=10.0, decrease=0.5)
    p.throttled(60.0)
    await p.acquire()
    assert clock.now == pytest.approx(100.0 + MAX_HOLD)


@pytest.mark.usefixtures("real_waits")
async def test_a_request_whose_turn_would_come_after_its_deadline_is_not_sent() -> None:
    clock = Clock()
    p = pace(clock, rate=10.0)
    p.throttled(1.0)  # everyone held until 101.0
    with pytest.raises(NotSentError):
        await p.acquire(within=0.5)
    assert clock.sleeps == []  # it did not wait for a turn it could not use
    assert await p.acquire(within=2.0) == pytest.approx(101.0)


def test_the_rate_climbs_back_slowly_after_a_429_then_fast_when_calm() -> None:
    clock = Clock()
    p = pace(clock, rate=10.0, decrease=0.5, grow=1.1, calm=5.0, ceiling=100.0)
    p.throttled(None)
    p.succeeded()
    assert p.rate == pytest.approx(5.0 + 1 / 5.0)  # additive just after a 429
    clock.now += 10
    before = p.rate
    p.succeeded()
    assert p.rate == pytest.approx(before * 1.1)  # multiplicative when calm
    for _ in range(1000):
        p.succeeded()
    assert p.rate == 100.0  # never above the ceiling


def test_the_rate_never_falls_below_the_floor() -> None:
    clock = Clock()
    p = pace(clock, rate=2.0, floor=1.0, decrease=0.1)
    for _ in range(10):
        clock.now += 10
        p.throttled(None)
    assert p.rate == 1.0


async def test_no_waits_under_set_testing() -> None:
    clock = Clock()
    p = pace(clock, rate=1.0)
    for _ in range(3):
        await p.acquire()
    assert clock.sleeps == []


def test_pacing_keys_per_product_and_per_sync_object() -> None:
    pacing = Pacing(max_keys=3)
    assert Pacing.key("https://taskrouter.twilio.com/v1/Workspaces/WS1/Tasks") == "taskrouter"
    assert (
        Pacing.key("https://sync.twilio.com/v1/Services/IS1/Maps/flex-bridge.worker.WK1/Items/WR1")
        == "sync:Maps:flex-bridge.worker.WK1"
    )
    assert Pacing.key("https://sync.twilio.com/v1/Services/IS1") == "sync"
    one = pacing.pace("https://sync.twilio.com/v1/Services/IS1/Maps/a/Items")
    assert one is pacing.pace("https://sync.twilio.com/v1/Services/IS1/Maps/a/Items/k")
    assert one.rate == SYNC_RATE
    for name in ("b", "c", "d"):
        pacing.pace(f"https://sync.twilio.com/v1/Services/IS1/Maps/{name}")
    assert pacing.pace("https://sync.twilio.com/v1/Services/IS1/Maps/a") is not one  # evicted


def test_a_cut_lands_near_what_got_through_not_a_fraction_of_the_pace() -> None:
    """A burst sent far above the limit: the pace drops to just under the successes of the
    last second in one cut, instead of halving its way down over many 429s."""
    clock = Clock()
    p = pace(clock, rate=2000.0, decrease=0.9, ceiling=2000.0)
    for _ in range(50):  # the server's burst allowance, spent in 50 ms
        clock.now += 0.001
        p.succeeded()
    p.throttled(1.0, sent_at=clock.now)
    assert p.rate == pytest.approx(0.9 * 50, rel=0.1)


def test_a_429_for_a_request_sent_before_the_last_cut_does_not_cut_again() -> None:
    clock = Clock()
    p = pace(clock, rate=10.0, decrease=0.5)
    p.throttled(None, sent_at=clock.now - 0.5)
    assert p.rate == 5.0
    clock.now += 0.5
    p.throttled(None, sent_at=clock.now - 0.6)  # left at the old pace, before the cut
    assert p.rate == 5.0
    p.throttled(None, sent_at=clock.now)  # left after the cut: the new pace is too fast too
    assert p.rate == 2.5
    assert p.throttles == 3


@pytest.mark.usefixtures("real_waits")
async def test_a_sender_waiting_for_its_slot_follows_a_hold_that_comes_meanwhile() -> None:
    clock = Clock()
    p = pace(clock, rate=10.0)
    assert await p.acquire() == 100.0

    async def sleep_then_429(seconds: float) -> None:
        await clock.sleep(seconds)
        if len(clock.sleeps) == 1:
            p.throttled(0.5)  # another request's 429 arrives while this one waits

    p.sleep = sleep_then_429
    left = await p.acquire()
    assert left == pytest.approx(100.1 + 0.5)  # after the hold, not at its old slot
