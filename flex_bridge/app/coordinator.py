"""The coordinator: drives every intent through the protocol of DESIGN.md, and recovers.

::

    submit   -> journal: recorded           (durable before anything is acknowledged)
    announce -> Sync item phase = pending    journal: announced
    REST     -> TaskRouter                   journal: applied | refused   (Twilio's answer kept)
    settle   -> Sync item phase = applied | failed            journal: settled

The seven rules, and where they live:

1. Nothing touches TaskRouter before the intent is journaled and announced: ``_drive`` runs
   the steps in order, each from the journal state the previous one wrote.
2. One intent in flight per reservation: ``Journal.submit`` joins a duplicate to the intent
   that holds the reservation.
3. An ambiguous outcome is resolved by fetching the reservation (``_apply``): the attempt
   counter is journaled *before* each send, so after an ambiguous answer or a crash the next
   step fetches first and never resends blind.
4. Only transient errors are retried, with backoff and jitter, honouring ``Retry-After``,
   bounded by attempts and by the reservation's deadline (``adapters.retry``).
5. Every intent reaches ``settled``: ``recover`` resumes unsettled intents at start-up and
   periodically.
6. TaskRouter's events settle the matching item whoever caused the change
   (``on_reservation_event``).
7. If Sync is down, ``strict`` refuses the change and ``degrade`` goes ahead after a bounded
   wait, then settles late so the channel still converges (``_announce``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import signal
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from flex_bridge.adapters.journal import Journal
from flex_bridge.adapters.retry import RetryPolicy, retrying
from flex_bridge.adapters.sync_channel import SyncChannelPort
from flex_bridge.adapters.taskrouter import ReservationsPort
from flex_bridge.app.metrics import Metrics
from flex_bridge.domain.intents import (
    ErrorInfo,
    Intent,
    channel_item,
    new_intent_id,
)
from flex_bridge.domain.ops import INSTRUCTIONS, outcome_of, rest_params
from flex_bridge.domain.policy import Policy
from flex_bridge.errors import (
    AmbiguousOutcomeError,
    FlexBridgeError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    TransientUpstreamError,
    UpstreamError,
)

logger = logging.getLogger("flex_bridge.coordinator")

FAILED_STATUSES = frozenset({"timeout", "canceled", "rescinded", "rejected", "completed"})
EVENT_STATUS = {
    "reservation.accepted": "accepted",
    "reservation.rejected": "rejected",
    "reservation.timeout": "timeout",
    "reservation.canceled": "canceled",
    "reservation.rescinded": "rescinded",
    "reservation.wrapup": "wrapping",
    "reservation.completed": "completed",
}
# The op an item shows when TaskRouter changed a reservation with no intent of ours.
OBSERVED_OP = {
    "accepted": "accept",
    "rejected": "reject",
    "wrapping": "wrapup",
    "completed": "complete",
    "timeout": "accept",
    "canceled": "accept",
    "rescinded": "accept",
}
# How far along its lifecycle a reservation status is: an event whose status is behind what
# the channel already shows is a late delivery, and must not move the channel back.
STATUS_RANK = {
    "pending": 0,
    "accepted": 1,
    "wrapping": 2,
    "completed": 3,
    "rejected": 3,
    "timeout": 3,
    "canceled": 3,
    "rescinded": 3,
}
SETTLE_WINDOW = 30.0
ENRICH_MARGIN = 1.0  # seconds kept for the REST call after enrichment, before the deadline
INSTRUCTION_GRACE = 10.0


def _behind(status: str | None, other: str | None) -> bool:
    """True when ``status`` is earlier in the reservation lifecycle than ``other``."""
    return STATUS_RANK.get(status or "", -1) < STATUS_RANK.get(other or "", -1)


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: str  # applied | refused | unknown
    status: str | None
    error: ErrorInfo | None = None


@dataclass(slots=True)
class _Sending:
    """What one ``_apply`` carries from attempt to attempt."""

    intent: Intent
    fetch_first: bool


class CrashHook:
    """``FLEX_BRIDGE_CRASH_AT=step[:n]``: SIGKILL this process the n-th time (default 1st) an
    intent reaches journal state ``step`` (recorded, announced or applied). A fault-injection
    aid for the crash tests; unset in production."""

    def __init__(self, spec: str | None) -> None:
        self.step: str | None = None
        self.remaining = 0
        if spec:
            step, _, n = spec.partition(":")
            self.step = step
            self.remaining = int(n or "1")

    def reached(self, state: str) -> None:
        if self.step != state:
            return
        self.remaining -= 1
        if self.remaining == 0:
            logger.warning("crash hook: killing the process at %s", state)
            os.kill(os.getpid(), signal.SIGKILL)


class Coordinator:
    def __init__(
        self,
        journal: Journal,
        channel: SyncChannelPort,
        taskrouter: ReservationsPort,
        policy: Policy,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        crash_at: str | None = None,
        enrich: Callable[[Intent, float], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self.journal = journal
        self.channel = channel
        self.taskrouter = taskrouter
        self.policy = policy
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.crash = CrashHook(crash_at)
        self.enrich = enrich
        self.retry_policy = RetryPolicy(
            policy.retry.max_attempts, policy.retry.base, policy.retry.cap
        )
        self._running: dict[str, asyncio.Task[None]] = {}
        # One event per waiting caller: several callers (a double click) may wait on one intent.
        self._waiters: dict[str, set[asyncio.Event]] = {}
        # ReservationSid -> (the status TaskRouter's last event gave, when it came).
        self._observed: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._recovery: asyncio.Task[None] | None = None
        self._closing = False

    # ------------------------------------------------------------------------- submitting
    async def submit(
        self,
        *,
        op: str,
        reservation_sid: str,
        task_sid: str,
        worker_sid: str,
        source: str,
        params: dict[str, Any],
        deadline: float | None,
        via: str = "rest",
        before_accept: bool = False,
    ) -> tuple[Intent, bool]:
        """Journal an intent (or join the one in flight) and start driving it.

        ``before_accept``: run the enrichers (within the enrichment budget) after the
        announce and before the REST call, so the agent sees an enriched task."""
        now = self.clock()
        intent = Intent(
            intent_id=new_intent_id(now),
            op=op,
            reservation_sid=reservation_sid,
            task_sid=task_sid,
            worker_sid=worker_sid,
            source=source,
            params=dict(params),
            state="recorded",
            deadline=deadline,
            created_at=now,
            updated_at=now,
            via="instruction" if via == "instruction" else "rest",
            extra={"before_accept": True} if before_accept and self.enrich else {},
        )
        intent, created = await self.journal.submit(intent)
        if created:
            self.metrics.phases.labels(op, "recorded").inc()
            self.crash.reached("recorded")
            if intent.via == "rest":
                self.start(intent.intent_id)
        return intent, created

    def start(self, intent_id: str) -> None:
        if intent_id in self._running or self._closing:
            return
        # A fresh context for the task and its callback: both would otherwise copy the
        # caller's, and from a request handler that keeps the request, its form and its
        # connection alive as long as the intent is in flight (tens of KB each, for nothing).
        context = contextvars.Context()
        task = asyncio.get_running_loop().create_task(self._drive(intent_id), context=context)
        self._running[intent_id] = task
        self.metrics.in_flight.set(len(self._running))

        def done(t: asyncio.Task[None]) -> None:
            self._running.pop(intent_id, None)
            self.metrics.in_flight.set(len(self._running))
            if not t.cancelled() and t.exception() is not None:
                logger.error(
                    "intent %s: driver failed: %r",
                    intent_id,
                    t.exception(),
                    extra={"intent_id": intent_id},
                )
            self._notify(intent_id)

        task.add_done_callback(done, context=context)

    async def wait(self, intent_id: str, timeout: float) -> Intent | None:
        """The intent once settled (or its settle failed for now), or as it is at ``timeout``."""
        event = asyncio.Event()
        waiters = self._waiters.setdefault(intent_id, set())
        waiters.add(event)
        try:
            intent = await self.journal.get(intent_id)
            if intent is None or intent.settled or timeout <= 0:
                return intent
            if intent.intent_id not in self._running and intent.via == "rest":
                self.start(intent_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
            return await self.journal.get(intent_id)
        finally:
            waiters.discard(event)
            if not waiters and self._waiters.get(intent_id) is waiters:
                del self._waiters[intent_id]

    def _notify(self, intent_id: str) -> None:
        for event in self._waiters.get(intent_id, ()):
            event.set()

    # ---------------------------------------------------------------------------- driving
    async def _drive(self, intent_id: str) -> None:
        intent = await self.journal.get(intent_id)
        while intent is not None and not self._closing:
            if intent.state == "recorded":
                intent = await self._announce(intent)
            elif intent.state == "announced":
                if intent.extra.get("before_accept") and "enrichment" not in intent.extra:
                    intent = await self._enrich(intent)
                intent = await self._apply(intent)
            elif intent.state in ("applied", "refused"):
                settled = await self._settle(intent)
                if settled is None:
                    return  # Sync still failing: recovery settles it later
                intent = settled
            else:  # settled, or instructed (settled by TaskRouter's event)
                return

    def _log(self, intent: Intent, message: str, *args: Any, level: int = logging.INFO) -> None:
        logger.log(
            level,
            "intent %s %s %s: " + message,
            intent.intent_id,
            intent.op,
            intent.reservation_sid,
            *args,
            extra={"intent_id": intent.intent_id, "reservation_sid": intent.reservation_sid},
        )

    async def _move(self, intent: Intent, expected: tuple[str, ...], **changes: Any) -> Intent:
        moved = await self.journal.transition(intent.intent_id, expected, **changes)
        if moved is None:
            # Someone else moved it (an event, another driver): carry on from the truth.
            current = await self.journal.get(intent.intent_id)
            assert current is not None
            return current
        if "state" in changes:
            self.metrics.phases.labels(intent.op, changes["state"]).inc()
            self.crash.reached(changes["state"])
        return moved

    def _on_retry(self, system: str) -> Callable[[BaseException, float], None]:
        def record(exc: BaseException, wait: float) -> None:
            reason = "429" if isinstance(exc, RateLimitedError) else type(exc).__name__
            self.metrics.retries.labels(system, reason).inc()
            if isinstance(exc, RateLimitedError):
                self.metrics.rate_limited.labels(system).inc()

        return record

    async def _write(self, intent: Intent, deadline: float | None) -> None:
        data = channel_item(intent, self.clock())
        await retrying(
            lambda: self.channel.publish(intent.worker_sid, intent.reservation_sid, data),
            self.retry_policy,
            deadline=deadline,
            clock=self.clock,
            on_retry=self._on_retry("sync"),
        )

    async def _announce(self, intent: Intent) -> Intent:
        mode = self.policy.sync.mode
        now = self.clock()
        bound = now + self.policy.sync.announce_timeout
        deadline = intent.deadline if mode == "strict" else bound
        if deadline is not None and intent.deadline is not None:
            deadline = min(deadline, intent.deadline)
        try:
            if mode == "degrade":
                await asyncio.wait_for(self._write(intent, deadline), max(0.0, bound - now))
            else:
                await self._write(intent, deadline)
        except (FlexBridgeError, TimeoutError) as exc:
            self.metrics.sync_writes.labels("announce_failed").inc()
            if mode == "strict":
                self._log(
                    intent, "Sync unavailable, refusing (strict): %s", exc, level=logging.WARNING
                )
                return await self._move(
                    intent,
                    ("recorded",),
                    state="refused",
                    error=ErrorInfo(
                        503, f"not changed: Sync is unavailable and sync.mode is strict ({exc})"
                    ),
                )
            self._log(
                intent, "Sync unavailable, going ahead (degrade): %s", exc, level=logging.WARNING
            )
            return await self._move(intent, ("recorded",), state="announced", late_announce=True)
        self.metrics.sync_writes.labels("announced").inc()
        return await self._move(intent, ("recorded",), state="announced")

    async def _enrich(self, intent: Intent) -> Intent:
        """Enrich the task within the budget, leaving time for the REST call before the
        reservation's deadline; the outcome is kept on the intent and shown on its item."""
        assert self.enrich is not None
        budget = self.policy.enrichment.budget
        if intent.deadline is not None:
            budget = max(0.0, min(budget, intent.deadline - self.clock() - ENRICH_MARGIN))
        try:
            outcome = await asyncio.wait_for(self.enrich(intent, budget), budget + 0.5)
        except (TimeoutError, FlexBridgeError) as exc:
            outcome = {"status": "failed", "enrichers": {}, "message": str(exc) or "timeout"}
        self._log(intent, "enrichment before the %s: %s", intent.op, outcome.get("status"))
        return await self._move(
            intent, ("announced",), extra={**intent.extra, "enrichment": outcome}
        )

    def observed(self, reservation_sid: str) -> str | None:
        seen = self._observed.get(reservation_sid)
        return seen[0] if seen else None

    def _observe(self, reservation_sid: str, status: str) -> None:
        self._observed[reservation_sid] = (status, self.clock())
        self._observed.move_to_end(reservation_sid)
        while len(self._observed) > 50_000:
            self._observed.popitem(last=False)

    async def _fetch_verdict(self, intent: Intent) -> Verdict | None:
        """What a fetch says about the intent; None when the op may (still) be sent."""
        return self._verdict(intent, await self._fetch_status(intent))

    async def _fetch_status(self, intent: Intent) -> str:
        view = await self.taskrouter.fetch_reservation(intent.task_sid, intent.reservation_sid)
        self.metrics.upstream.labels("taskrouter", "fetch_reservation", "ok").inc()
        return view.status

    def _verdict(self, intent: Intent, status: str) -> Verdict | None:
        """What TaskRouter's ``status`` says about the intent; None when it may (still) be sent."""
        verdict = outcome_of(intent.op, intent.params, status)
        if verdict == "retry":
            return None
        if verdict == "applied":
            return Verdict("applied", status)
        if verdict == "unknown":
            return Verdict(
                "refused",
                status,
                ErrorInfo(None, "the outcome of the instruction cannot be known; not resent"),
            )
        return Verdict(
            "refused",
            status,
            ErrorInfo(20001, f"reservation is {status}; {intent.op} can no longer happen"),
        )

    async def _apply(self, intent: Intent) -> Intent:
        form = rest_params(intent.op, intent.params)
        sending = _Sending(intent, fetch_first=intent.attempts > 0)

        async def attempt() -> Verdict:
            current = sending.intent
            observed = self.observed(current.reservation_sid)
            if observed in ("timeout", "canceled", "rescinded"):
                sending.fetch_first = True  # confirm with TaskRouter before giving up
            if sending.fetch_first:
                verdict = await self._fetch_verdict(current)
                if verdict is not None:
                    return verdict
            current = await self._move(current, ("announced",), attempts=current.attempts + 1)
            sending.intent = current
            if current.state != "announced":
                return Verdict("refused", current.reservation_status, current.error)
            try:
                view = await self.taskrouter.update_reservation(
                    current.task_sid, current.reservation_sid, form
                )
            except AmbiguousOutcomeError as exc:
                self.metrics.upstream.labels("taskrouter", intent.op, "ambiguous").inc()
                sending.fetch_first = True
                raise TransientUpstreamError(str(exc), status=exc.status, code=exc.code) from exc
            except NotFoundError as exc:
                self.metrics.upstream.labels("taskrouter", intent.op, "not_found").inc()
                return Verdict("refused", None, ErrorInfo(exc.code or 20404, exc.message))
            except RejectedError as exc:
                self.metrics.upstream.labels("taskrouter", intent.op, "refused").inc()
                try:
                    verdict = await self._fetch_verdict(current)
                except UpstreamError:
                    verdict = None
                if (
                    verdict is not None
                    and verdict.outcome == "applied"
                    and current.op not in INSTRUCTIONS
                ):
                    # Done already (by an earlier attempt of ours, or by Flex). Not for an
                    # instruction: a refused conference/dequeue/call/redirect did not happen,
                    # even when someone else has since accepted the reservation.
                    return verdict
                status = verdict.status if verdict else None
                return Verdict("refused", status, ErrorInfo(exc.code, exc.message))
            except TransientUpstreamError:
                self.metrics.upstream.labels("taskrouter", intent.op, "transient").inc()
                raise
            self.metrics.upstream.labels("taskrouter", intent.op, "ok").inc()
            return Verdict("applied", view.status)

        try:
            verdict = await retrying(
                attempt,
                self.retry_policy,
                deadline=intent.deadline,
                clock=self.clock,
                on_retry=self._on_retry("taskrouter"),
            )
        except UpstreamError as exc:
            # Out of attempts or time: one last look decides, without sending again.
            seen: str | None = None
            try:
                seen = await self._fetch_status(sending.intent)
                last = self._verdict(sending.intent, seen)
            except UpstreamError:
                last = None
            if last is not None:
                verdict = last
            else:
                # Not applied. When the last look saw the reservation (still pending, say),
                # the item says so: the plugin may act on it again (sync/README.md).
                code = exc.code or (503 if exc.status is None else exc.status)
                verdict = Verdict(
                    "refused", seen, ErrorInfo(code, f"TaskRouter unavailable: {exc.message}")
                )
        current = sending.intent
        if verdict.outcome == "applied":
            self._log(current, "applied (reservation %s)", verdict.status)
            return await self._move(
                current,
                ("announced",),
                state="applied",
                reservation_status=verdict.status,
                error=None,
            )
        self._log(current, "refused: %s", verdict.error.message if verdict.error else "")
        return await self._move(
            current,
            ("announced",),
            state="refused",
            reservation_status=verdict.status,
            error=verdict.error or ErrorInfo(None, "the change was refused"),
        )

    async def _settle(self, intent: Intent) -> Intent | None:
        try:
            await self._write(intent, self.clock() + SETTLE_WINDOW)
        except FlexBridgeError as exc:
            self.metrics.sync_writes.labels("settle_failed").inc()
            self._log(intent, "settle failed, recovery will retry: %s", exc, level=logging.WARNING)
            self._notify(intent.intent_id)
            return None
        self.metrics.sync_writes.labels("settled").inc()
        settled = await self._move(intent, ("applied", "refused"), state="settled")
        if settled.settled:
            self.metrics.intents.labels(
                settled.op, settled.source, settled.outcome or "unknown"
            ).inc()
        self._notify(intent.intent_id)
        if settled.settled:
            await self._catch_up(intent, settled)
        return settled

    async def _catch_up(self, before: Intent, settled: Intent) -> None:
        """Rule 6 for an event that came while this intent was applied or refused but not yet
        settled (``on_reservation_event`` leaves such an intent to its driver): when TaskRouter
        reported another status after the intent's outcome was known, the channel follows it.
        For example, Sync was down, the bridge's accept was refused (strict), and the agent
        accepted in Flex meanwhile."""
        seen = self._observed.get(settled.reservation_sid)
        if seen is None:
            return
        status, at = seen
        if at < before.updated_at or not _behind(settled.reservation_status, status):
            return
        self._log(settled, "TaskRouter reported %s meanwhile; following it", status)
        await self._record_observation(
            settled.reservation_sid, settled.task_sid, settled.worker_sid, status
        )

    # ----------------------------------------------------------------------------- events
    async def on_reservation_event(
        self,
        event_type: str,
        *,
        reservation_sid: str,
        task_sid: str,
        worker_sid: str,
    ) -> None:
        """Rule 6: TaskRouter's word settles the matching item, whoever caused the change."""
        status = EVENT_STATUS.get(event_type)
        if status is None:
            return
        self._observe(reservation_sid, status)
        latest = await self.journal.latest_for_reservation(reservation_sid)
        if latest is not None and not latest.settled:
            if latest.state == "instructed":
                await self._resolve_instructed(latest, status)
            return  # the driver of that intent settles it, and will see this status
        if latest is not None and latest.reservation_status == status:
            return  # the channel already shows this
        if latest is not None and _behind(status, latest.reservation_status):
            return  # a late event: the channel already shows a later status
        if (
            latest is not None
            and status == "accepted"
            and latest.op == "accept"
            and latest.outcome == "applied"
        ):
            return  # the channel already shows this accept as applied
        # Otherwise (nothing known, another status, or an intent that settled *failed* while
        # TaskRouter says the change happened after all) the channel follows TaskRouter.
        await self._record_observation(reservation_sid, task_sid, worker_sid, status)

    async def _record_observation(
        self, reservation_sid: str, task_sid: str, worker_sid: str, status: str
    ) -> None:
        now = self.clock()
        failed = status in ("timeout", "canceled", "rescinded")
        intent = Intent(
            intent_id=new_intent_id(now),
            op=OBSERVED_OP[status],
            reservation_sid=reservation_sid,
            task_sid=task_sid,
            worker_sid=worker_sid,
            source="timeout" if status == "timeout" else "recovery",
            params={},
            state="refused" if failed else "applied",
            deadline=None,
            created_at=now,
            updated_at=now,
            reservation_status=status,
            error=ErrorInfo(None, f"reservation {status}") if failed else None,
        )
        intent, created = await self.journal.submit(intent)
        if created:
            self.start(intent.intent_id)

    async def _resolve_instructed(
        self, intent: Intent, status: str, *, reply_lost: bool = False
    ) -> None:
        """Settle an instruction handed to TaskRouter in a callback reply, from its status.

        ``reply_lost``: recovery found the reservation still where the op starts long after
        the reply went out, so TaskRouter never acted on it; the op then goes over REST
        (announced again, fetch-before-send as always).
        """
        verdict = outcome_of(intent.op, intent.params, status)
        if verdict == "retry":
            if reply_lost:
                moved = await self._move(intent, ("instructed",), state="announced")
                if moved.state == "announced":
                    self._log(intent, "instruction reply had no effect; sending over REST")
                    self.start(moved.intent_id)
            return
        if verdict in ("applied", "unknown"):
            # "unknown": the instruction leaves no trace in the status (a call that does not
            # accept); TaskRouter took the reply, so it is taken as given.
            moved = await self._move(
                intent, ("instructed",), state="applied", reservation_status=status
            )
        else:
            moved = await self._move(
                intent,
                ("instructed",),
                state="refused",
                reservation_status=status,
                error=ErrorInfo(None, f"reservation {status}"),
            )
        if moved.state in ("applied", "refused"):
            self.start(moved.intent_id)

    async def mark_instructed(self, intent: Intent) -> Intent:
        """The instruction went out in the callback reply; TaskRouter's event settles it."""
        return await self._move(intent, ("announced", "recorded"), state="instructed")

    async def announce_only(self, intent: Intent, timeout: float) -> Intent:
        """Announce within ``timeout`` (for instructions sent in the callback reply)."""
        try:
            return await asyncio.wait_for(self._announce(intent), timeout)
        except TimeoutError:
            return await self._move(intent, ("recorded",), state="announced", late_announce=True)

    # --------------------------------------------------------------------------- recovery
    async def recover(self) -> int:
        """Resume every unsettled intent from its journal state; returns how many.

        An instruction intent (``via = "instruction"``) still ``recorded`` or ``announced``
        belongs to the assignment callback answering with it, here or in another instance,
        until ``INSTRUCTION_GRACE`` has passed since its last step: driving it sooner would
        send the op over REST as well as in the reply, a double accept. After the grace that
        reply has long gone out without the instruction (the callback's budget is far
        shorter), or never went out (the process died), so the op goes over REST.
        """
        resumed = 0
        for intent in await self.journal.unsettled(limit=100_000):
            if intent.intent_id in self._running:
                continue
            recent = self.clock() - intent.updated_at < INSTRUCTION_GRACE
            if intent.via == "instruction" and intent.state in ("recorded", "announced") and recent:
                continue
            if intent.state == "instructed":
                if self.clock() - intent.updated_at < INSTRUCTION_GRACE:
                    continue
                try:
                    view = await self.taskrouter.fetch_reservation(
                        intent.task_sid, intent.reservation_sid
                    )
                except UpstreamError as exc:
                    self._log(intent, "recovery fetch failed: %s", exc, level=logging.WARNING)
                    continue
                await self._resolve_instructed(intent, view.status, reply_lost=True)
                resumed += 1
                continue
            self.start(intent.intent_id)
            resumed += 1
        return resumed

    async def run_recovery(self, interval: float) -> None:
        while not self._closing:
            try:
                resumed = await self.recover()
                if resumed:
                    logger.info("recovery resumed %d intent(s)", resumed)
            except FlexBridgeError as exc:
                logger.warning("recovery sweep failed: %s", exc)
            except Exception:
                # Whatever broke this sweep (a raw sqlite error, say) must not end the
                # periodic sweeps: rule 5 depends on them for the life of the process.
                logger.exception("recovery sweep failed unexpectedly")
            await asyncio.sleep(interval)

    def start_recovery(self, interval: float) -> None:
        self._recovery = asyncio.get_running_loop().create_task(self.run_recovery(interval))

    async def idle(self) -> None:
        """Wait until no intent is being driven (for tests and orderly shutdown)."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    async def close(self, grace: float = 5.0) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        if self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle(), grace)
        self._closing = True
        for task in list(self._running.values()):
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
