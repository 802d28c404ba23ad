"""The one retry policy: data plus a predicate, bounded by attempts and by a deadline.

Only transient failures are retried (``TransientUpstreamError``: 429, 5xx on reads, refused or
reset connections); an ambiguous write is never retried here, it is resolved by a fetch first.
A wait honours the server's ``Retry-After`` and is otherwise exponential with full jitter.
A retry whose wait would end past the deadline is not started.

Tests call ``set_testing(True)`` to remove the waits (the attempt cap and deadline still
apply); nothing patches ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from flex_bridge.errors import RateLimitedError, TransientUpstreamError

T = TypeVar("T")

_testing = False


def set_testing(on: bool = True) -> None:
    """Remove every retry wait (for tests)."""
    global _testing
    _testing = on


def is_testing() -> bool:
    return _testing


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_attempts`` bounds tries that failed for any reason but a 429; 429s ("not
    processed") have their own, larger bound, ``max_rate_limited``: under a rate limit the
    deadline, not a small count, is what should stop a change that is safe to retry."""

    max_attempts: int = 5
    base: float = 0.2
    cap: float = 5.0
    max_rate_limited: int = 50

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
        return random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TransientUpstreamError)


class _Schedule:
    """Decides, once per failed attempt, whether to retry and how long to wait first.

    tenacity asks for the wait *before* it asks whether to stop, so both questions read one
    decision, made once per attempt number (the order of the calls does not matter).
    """

    def __init__(
        self, policy: RetryPolicy, deadline: float | None, clock: Callable[[], float]
    ) -> None:
        self.policy = policy
        self.deadline = deadline
        self.clock = clock
        self.next_wait = 0.0
        self.rate_limited = 0
        self._decided_for = 0

    def _decide(self, state: RetryCallState) -> float:
        if self._decided_for != state.attempt_number:
            exc = state.outcome.exception() if state.outcome else None
            wait = self.policy.backoff(state.attempt_number - self.rate_limited)
            if isinstance(exc, RateLimitedError):
                self.rate_limited += 1
                if exc.retry_after is not None:
                    wait = exc.retry_after
            self.next_wait = 0.0 if _testing else wait
            self._decided_for = state.attempt_number
        return self.next_wait

    def stop(self, state: RetryCallState) -> bool:
        wait = self._decide(state)
        if state.attempt_number - self.rate_limited >= self.policy.max_attempts:
            return True
        if self.rate_limited >= self.policy.max_rate_limited:
            return True
        return self.deadline is not None and self.clock() + wait >= self.deadline

    def wait(self, state: RetryCallState) -> float:
        return self._decide(state)


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    deadline: float | None = None,
    clock: Callable[[], float] = time.time,
    on_retry: Callable[[BaseException, float], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run ``attempt`` until it succeeds, fails for good, or the policy says stop.

    The last error is re-raised as it is when the policy stops. ``on_retry(error, wait)`` is
    called before each wait; ``sleep`` is the seam that waits (``asyncio.sleep``).
    """
    # The first attempt runs bare: nearly every call succeeds first time, and building the
    # retry machinery for it costs CPU and leaves reference cycles for the garbage collector
    # (its pauses showed up in the bench's latency tail). Only a transient failure goes on to
    # tenacity, which sees it as attempt 1 and decides from there, exactly as if it had run it.
    try:
        return await attempt()
    except BaseException as exc:
        if not is_transient(exc):
            raise
        first: BaseException | None = exc

    schedule = _Schedule(policy, deadline, clock)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if exc is not None:
                on_retry(exc, schedule.next_wait)

    retrier = AsyncRetrying(
        stop=schedule.stop,
        wait=schedule.wait,
        retry=retry_if_exception(is_transient),
        reraise=True,
        before_sleep=before_sleep,
        sleep=sleep,
    )

    async def call() -> T:  # tenacity needs a coroutine function, not any awaitable factory
        nonlocal first
        if first is not None:
            failed, first = first, None
            raise failed
        return await attempt()

    return await retrier(call)
