"""The one retry policy: data plus a predicate, bounded by attempts and by a deadline.

Only transient failures are retried (``TransientUpstreamError``: 429, 5xx on reads, refused or
reset connections); an ambiguous write is never retried here, it is resolved by a fetch first.
A wait honours the server's ``Retry-After`` and is otherwise exponential with full jitter.

An operation with a deadline (a change to a reservation, which stops taking changes at its
deadline) is retried until the deadline, however many attempts that takes: a retry is not
started unless its wait plus ``attempt_margin`` ends before the deadline. The attempt cap
bounds only operations without a deadline. While ``retrying`` runs, its deadline is the
context's (``current_deadline``), so the HTTP adapter's pacing never holds a request past it.

Tests call ``set_testing(True)`` to remove the waits; the attempt cap then bounds every
operation, deadline or not, so that no test spins until a deadline with no wait between
attempts. Nothing patches ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
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


_deadline: ContextVar[float | None] = ContextVar("flex_bridge_deadline", default=None)


def current_deadline() -> float | None:
    """The deadline (wall-clock seconds) of the operation being retried here, if any."""
    return _deadline.get()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """For operations without a deadline: ``max_attempts`` bounds tries that failed for any
    reason but a 429; 429s ("not processed") have their own, larger bound,
    ``max_rate_limited``. An operation with a deadline is bounded by it alone (but in testing
    mode, see the module docstring)."""

    max_attempts: int = 5
    base: float = 0.2
    cap: float = 5.0
    max_rate_limited: int = 50
    attempt_margin: float = 1.0  # seconds an attempt needs before the deadline to be started
    # True: an operation with a deadline is retried until it, the attempt caps aside (changes
    # to reservations). False: the deadline is only an overall bound beside the caps.
    until_deadline: bool = True

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
        if self.deadline is not None:
            if self.clock() + wait + self.policy.attempt_margin >= self.deadline:
                return True  # the next attempt would not finish before the deadline
            if self.policy.until_deadline and not _testing:
                return False  # until the deadline, however many attempts it takes
        if state.attempt_number - self.rate_limited >= self.policy.max_attempts:
            return True
        return self.rate_limited >= self.policy.max_rate_limited

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
    outer = _deadline.get()
    if deadline is not None and (outer is None or deadline < outer):
        token = _deadline.set(deadline)
        try:
            return await _retrying(attempt, policy, deadline, clock, on_retry, sleep)
        finally:
            _deadline.reset(token)
    return await _retrying(attempt, policy, deadline, clock, on_retry, sleep)


async def _retrying(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    deadline: float | None,
    clock: Callable[[], float],
    on_retry: Callable[[BaseException, float], None] | None,
    sleep: Callable[[float], Awaitable[None]],
) -> T:
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
