"""The coordinator: the driver that carries every intent through the protocol, and recovers.

::

    submit   -> journal: recorded           (durable before anything is acknowledged)
    announce -> Sync item phase = pending    journal: announced
    REST     -> TaskRouter                   journal: applied | refused   (Twilio's answer kept)
    settle   -> Sync item phase = applied | failed            journal: settled

It only carries out: the journal, Sync, TaskRouter and timers. What an answer means and what
to do next are decided by the pure functions of ``flex_bridge.domain.protocol``. The rules of
``docs/architecture.md``, and where they are carried out:

1. Nothing touches TaskRouter before the intent is journaled and announced: ``_drive`` runs
   the steps in order, each from the journal state the previous one wrote.
2. One intent in flight per reservation: ``Journal.submit`` joins a duplicate to the intent
   that holds the reservation.
3. An ambiguous outcome is resolved by fetching the reservation (``_apply``): the attempt
   counter is journaled *before* each send, so after an ambiguous answer or a crash the next
   step fetches first and never resends blind.
4. Only transient errors are retried, bounded by attempts and the reservation's deadline
   (``adapters.retry``).
5. Every intent reaches ``settled``: ``app.recovery.Recovery`` resumes unsettled intents at
   start-up and periodically, through this driver.
6. TaskRouter's events settle the matching item whoever caused the change (``follow``).
7. If Sync is down, ``strict`` refuses the change and ``degrade`` goes ahead after a bounded
   wait, then settles late (``_announce``).

``observers`` are called with each intent after every journal step it takes: metrics use
them, and the crash tests install one that kills the process at a chosen step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from logging import WARNING
from typing import Any

from flex_bridge.adapters.journal import Journal
from flex_bridge.adapters.retry import RetryPolicy, retrying
from flex_bridge.adapters.sync_channel import SyncChannelPort
from flex_bridge.adapters.taskrouter import ReservationsPort
from flex_bridge.app.drivers import Drivers, Handoff
from flex_bridge.app.metrics import Metrics
from flex_bridge.app.ownership import LeaseLost, Ownership
from flex_bridge.app.waiters import Waiters
from flex_bridge.domain import protocol
from flex_bridge.domain.intents import ErrorInfo, Intent, channel_item, new_intent_id
from flex_bridge.domain.ops import rest_params
from flex_bridge.domain.policy import Policy
from flex_bridge.domain.protocol import Verdict
from flex_bridge.domain.types import JSON, Op, Source, Via
from flex_bridge.errors import (
    AmbiguousOutcomeError,
    FlexBridgeError,
    NotFoundError,
    RejectedError,
    TransientUpstreamError,
    UpstreamError,
)

logger = logging.getLogger("flex_bridge.coordinator")

Observer = Callable[[Intent], None]
Enrich = Callable[[Intent, float], Awaitable[JSON]]  # (intent, budget) -> outcome; never raises


def log_intent(intent: Intent, message: str, *args: Any, level: int = logging.INFO) -> None:
    """Log about one intent, with its id and reservation bound as context."""
    logger.log(
        level,
        "intent %s %s %s: " + message,
        intent.intent_id,
        intent.op,
        intent.reservation_sid,
        *args,
        extra={"intent_id": intent.intent_id, "reservation_sid": intent.reservation_sid},
    )


class LastEvents:
    """The status TaskRouter's latest event gave each reservation, and when it came (bounded:
    the oldest are forgotten first)."""

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def record(self, reservation_sid: str, status: str, at: float) -> None:
        self._seen[reservation_sid] = (status, at)
        self._seen.move_to_end(reservation_sid)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)

    def get(self, reservation_sid: str) -> tuple[str, float] | None:
        return self._seen.get(reservation_sid)

    def status(self, reservation_sid: str) -> str | None:
        seen = self._seen.get(reservation_sid)
        return seen[0] if seen else None


@dataclass(slots=True)
class _Sending:
    """What one ``_apply`` carries from attempt to attempt."""

    intent: Intent
    fetch_first: bool
    counted: bool = False  # the next send's attempt is journaled already (with ``announced``)


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
        enrich: Enrich | None = None,
        owner: str | None = None,
    ) -> None:
        self.journal = journal
        self.channel = channel
        self.taskrouter = taskrouter
        self.policy = policy
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.enrich = enrich
        self.retry_policy = RetryPolicy(
            policy.retry.max_attempts, policy.retry.base, policy.retry.cap
        )
        self.observers: list[Observer] = [self.metrics.count_step]
        self.drivers = Drivers(
            self._drive, on_count=self.metrics.in_flight.set, on_done=self._ended
        )
        self.waiters = Waiters()
        self.ownership = Ownership(journal, owner)
        self.last_events = LastEvents()

    # ------------------------------------------------------------------------- submitting
    async def submit(
        self,
        *,
        op: Op,
        reservation_sid: str,
        task_sid: str,
        worker_sid: str,
        source: Source,
        params: JSON,
        deadline: float | None,
        via: Via = "rest",
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
            via=via,
            extra={"before_accept": True} if before_accept and self.enrich else {},
        )
        # A REST intent for which a driver's place is free takes its lease in the submit's
        # transaction, and its driver is handed the intent: it neither reads it back nor takes
        # the lease again. Others start when a driver is free; instructions are not driven.
        rest = intent.via == "rest"
        reserved = rest and self.drivers.reserve()
        token: int | None = None
        try:
            if reserved:
                intent, created, token = await self.journal.submit_leased(
                    intent, self.ownership.owner, self.ownership.ttl
                )
            else:
                intent, created = await self.journal.submit(intent)
        except BaseException:
            if reserved:
                self.drivers.unreserve()
            raise
        if reserved and (not created or token is None):
            self.drivers.unreserve()
        if created:
            self._stepped(intent)
            if rest:
                self.drivers.start(intent.intent_id, None if token is None else (intent, token))
        return intent, created

    def start(self, intent_id: str) -> None:
        """Drive ``intent_id`` here (when a driver is free; see ``app.drivers``)."""
        self.drivers.start(intent_id)

    def _ended(self, intent_id: str, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "intent %s: driver failed: %r",
                intent_id,
                task.exception(),
                extra={"intent_id": intent_id},
            )
        self.waiters.notify(intent_id)

    async def wait(self, intent_id: str, timeout: float) -> Intent | None:
        """The intent once decided, or as it is at ``timeout`` (driven here or elsewhere)."""
        intent = await self.journal.get(intent_id)
        if intent is None or intent.settled or timeout <= 0:
            return intent
        if intent.intent_id not in self.drivers and intent.via == "rest":
            self.start(intent_id)
        read, here = (lambda: self.journal.get(intent_id)), (lambda: self.running(intent_id))
        return await self.waiters.wait(intent_id, timeout, read, here)

    # ---------------------------------------------------------------------------- driving
    async def _drive(self, intent_id: str, handoff: Handoff | None) -> None:
        submitted, token = handoff if handoff is not None else (None, None)
        async with self.ownership.holding(intent_id, token) as lease:
            if lease is None:
                return  # another instance drives it (rule 9)
            try:
                await self._steps(submitted or await self.journal.get(intent_id))
            except LeaseLost:
                logger.warning("intent %s: lease lost; left to its new owner", intent_id)

    async def _steps(self, intent: Intent | None) -> None:
        counted = False  # the first send's attempt went into the journal with ``announced``
        while intent is not None and not self.drivers.closing:
            if intent.state == "recorded":
                enriching = bool(intent.extra.get("before_accept"))
                intent = await self._announce(intent, count_attempt=not enriching)
                counted = not enriching and intent.state == "announced" and intent.attempts == 1
            elif intent.state == "announced":
                if intent.extra.get("before_accept") and "enrichment" not in intent.extra:
                    intent = await self._enrich(intent)
                intent = await self._apply(intent, counted)
                counted = False
            elif intent.state in ("applied", "refused"):
                settled = await self._settle(intent)
                if settled is None:
                    return  # Sync still failing: recovery settles it later
                intent = settled
            else:  # settled, or instructed (settled by TaskRouter's event)
                return

    def _stepped(self, intent: Intent) -> None:
        for observer in self.observers:
            observer(intent)

    async def _move(
        self, intent: Intent, expected: tuple[str, ...], *, release: bool = False, **changes: Any
    ) -> Intent:
        lease = self.ownership.lease(intent.intent_id)  # driven here: its transitions fenced
        fence = lease.token if lease is not None else None
        owner = self.ownership.owner if release and lease is not None else None
        moved = await self.journal.transition(
            intent.intent_id, expected, fence=fence, release=owner, **changes
        )
        if moved is not None and owner is not None and lease is not None:
            lease.released = True
        if moved is None:
            # Someone else moved it (an event, another driver): carry on from the truth.
            current = await self.journal.get(intent.intent_id)
            assert current is not None
            if fence is not None and current.state in expected:
                raise LeaseLost(intent.intent_id)  # refused for the fence: a stale driver
            return current
        if "state" in changes:
            self._stepped(moved)
        return moved

    async def _write(self, intent: Intent, deadline: float | None) -> None:
        data = channel_item(intent, self.clock())
        await retrying(
            lambda: self.channel.publish(intent.worker_sid, intent.reservation_sid, data),
            self.retry_policy,
            deadline=deadline,
            clock=self.clock,
            on_retry=self.metrics.on_retry("sync"),
        )

    async def _announce(
        self, intent: Intent, *, count_attempt: bool = False, cap: float | None = None
    ) -> Intent:
        """Announce; ``count_attempt``: journal the first send's attempt with ``announced``
        (one transaction fewer; the send follows at once). ``cap``: the announce fails after
        at most this many seconds, whatever the mode."""
        mode = self.policy.sync.mode
        window = protocol.announce_window(
            mode, self.clock(), self.policy.sync.announce_timeout, intent.deadline
        )
        wait = window.wait
        if cap is not None:
            wait = cap if wait is None else min(wait, cap)
        try:
            async with asyncio.timeout(wait):
                await self._write(intent, window.retry_until)
        except (FlexBridgeError, TimeoutError) as exc:
            late = isinstance(exc, TimeoutError) and wait is not None
            why = f"announce not done in {wait:.1f} s" if late else str(exc) or type(exc).__name__
            return await self._unannounced(intent, why)
        self.metrics.sync_writes.labels("announced").inc()
        if count_attempt:  # a recorded intent has made no attempt yet
            return await self._move(intent, ("recorded",), state="announced", attempts=1)
        return await self._move(intent, ("recorded",), state="announced")

    async def _unannounced(self, intent: Intent, why: str) -> Intent:
        """Rule 7, on every path where the announce failed: counted, logged (WARNING), and
        then no change (strict) or going ahead without the announcement (degrade)."""
        mode = self.policy.sync.mode
        move = protocol.after_failed_announce(mode)
        self.metrics.sync_writes.labels("announce_failed").inc()
        if move.state != "refused":
            self.metrics.sync_writes.labels("went_ahead_unannounced").inc()
        what = "no change" if move.state == "refused" else "going ahead"
        log_intent(intent, "Sync unavailable (%s: %s): %s", mode, what, why, level=WARNING)
        return await self._move(intent, ("recorded",), **move.changes())

    async def _enrich(self, intent: Intent) -> Intent:
        """Enrich the task within the budget, before the reservation's deadline (``Enrich``
        never raises: a failure is an outcome); kept on the intent, shown on its item."""
        assert self.enrich is not None
        now = self.clock()
        outcome = await self.enrich(
            intent, protocol.enrichment_budget(self.policy.enrichment.budget, intent.deadline, now)
        )
        log_intent(intent, "enrichment before the %s: %s", intent.op, outcome.get("status"))
        return await self._move(
            intent, ("announced",), extra={**intent.extra, "enrichment": outcome}
        )

    async def fetch_status(self, intent: Intent) -> str:
        view = await self.taskrouter.fetch_reservation(intent.task_sid, intent.reservation_sid)
        self.metrics.upstream.labels("taskrouter", "fetch_reservation", "ok").inc()
        return view.status

    async def _fetch_verdict(self, intent: Intent) -> Verdict | None:
        try:
            status = await self.fetch_status(intent)
        except NotFoundError:
            return protocol.verdict_when_gone(
                intent.op, self.last_events.status(intent.reservation_sid)
            )
        return protocol.verdict(intent.op, intent.params, status, attempted=intent.attempts > 0)

    async def _attempt(self, sending: _Sending, form: JSON) -> Verdict:
        """One attempt: fetch first when the protocol says so, journal the attempt, send."""
        current = sending.intent
        if protocol.fetch_first(0, self.last_events.status(current.reservation_sid)):
            sending.fetch_first = True  # confirm with TaskRouter before giving up
        if sending.fetch_first:
            found = await self._fetch_verdict(current)
            if found is not None:
                return found
        if sending.counted:
            sending.counted = False
        else:
            current = await self._move(current, ("announced",), attempts=current.attempts + 1)
        sending.intent = current
        if current.state != "announced":
            return Verdict("refused", current.reservation_status, current.error)
        count = self.metrics.upstream.labels
        try:
            view = await self.taskrouter.update_reservation(
                current.task_sid, current.reservation_sid, form
            )
        except AmbiguousOutcomeError as exc:
            count("taskrouter", current.op, "ambiguous").inc()
            sending.fetch_first = True
            raise TransientUpstreamError(str(exc), status=exc.status, code=exc.code) from exc
        except NotFoundError:
            count("taskrouter", current.op, "not_found").inc()
            return protocol.verdict_when_gone(
                current.op, self.last_events.status(current.reservation_sid)
            )
        except RejectedError as exc:
            count("taskrouter", current.op, "refused").inc()
            try:
                fetched = await self._fetch_verdict(current)
            except UpstreamError:
                fetched = None
            return protocol.verdict_on_refusal(current.op, fetched, exc.code, exc.message)
        except TransientUpstreamError:
            count("taskrouter", current.op, "transient").inc()
            raise
        count("taskrouter", current.op, "ok").inc()
        return protocol.after_sending(current.op, view.status)

    async def _apply(self, intent: Intent, counted: bool) -> Intent:
        """``counted``: the first send's attempt is journaled already (``_announce``)."""
        form = rest_params(intent.op, intent.params)
        sent_before = intent.attempts - (1 if counted else 0)
        sending = _Sending(intent, protocol.fetch_first(sent_before, None), counted)
        try:
            found = await retrying(
                lambda: self._attempt(sending, form),
                self.retry_policy,
                deadline=intent.deadline,
                clock=self.clock,
                on_retry=self.metrics.on_retry("taskrouter"),
            )
        except UpstreamError as exc:
            seen: str | None = None
            last_look: Verdict | None = None
            with contextlib.suppress(UpstreamError):
                seen = await self.fetch_status(sending.intent)
                attempted = sending.intent.attempts > 0
                last_look = protocol.verdict(intent.op, intent.params, seen, attempted=attempted)
            log_intent(intent, "TaskRouter unavailable: %s", exc, level=logging.WARNING)
            found = protocol.verdict_when_exhausted(last_look, seen, exc.code, exc.status)
        current = sending.intent
        if found.outcome == "taken":
            return await self._ringing(current, found.status)
        error = None
        if found.outcome == "refused":
            error = found.error or ErrorInfo(None, "the change was refused")
        why = error.message if error else f"reservation {found.status}"
        log_intent(current, "%s: %s", found.outcome, why)
        return await self._move(
            current,
            ("announced",),
            state=found.outcome,
            reservation_status=found.status,
            error=error,
        )

    async def _ringing(self, intent: Intent, status: str | None) -> Intent:
        """TaskRouter took a voice instruction: the item stays pending while the agent's leg
        rings, and TaskRouter's word settles it (an event, or recovery's fetch). One that came
        before this step is followed at once."""
        log_intent(intent, "taken by TaskRouter; ringing the agent")
        moved = await self._move(
            intent, ("announced",), state="instructed", reservation_status=status
        )
        seen = self.last_events.get(intent.reservation_sid)
        if moved.state == "instructed" and (
            later := protocol.catch_up(moved, intent.created_at, seen)
        ):
            await self.resolve_instructed(moved, later)
        return moved

    async def _settle(self, intent: Intent) -> Intent | None:
        try:
            await self._write(intent, self.clock() + protocol.SETTLE_WINDOW)
        except FlexBridgeError as exc:
            self.metrics.sync_writes.labels("settle_failed").inc()
            log_intent(intent, "settle failed, recovery will retry: %s", exc, level=logging.WARNING)
            self.waiters.notify(intent.intent_id)
            return None
        self.metrics.sync_writes.labels("settled").inc()
        settled = await self._move(intent, ("applied", "refused"), state="settled", release=True)
        if settled.settled:
            outcome = protocol.metric_outcome(settled.outcome, settled.reservation_status)
            self.metrics.intents.labels(settled.op, settled.source, outcome).inc()
        self.waiters.notify(intent.intent_id)
        status = None
        if settled.settled:
            status = protocol.catch_up(
                settled, intent.created_at, self.last_events.get(settled.reservation_sid)
            )
        if status is not None:
            log_intent(settled, "TaskRouter reported %s meanwhile; following it", status)
            await self._record_observation(
                settled.reservation_sid, settled.task_sid, settled.worker_sid, status
            )
        return settled

    # ----------------------------------------------------------------------------- events
    async def follow(
        self, status: str, *, reservation_sid: str, task_sid: str, worker_sid: str
    ) -> None:
        """Rule 6: TaskRouter's word (an event, or the reconciliation sweep's fetch) settles
        the matching item, whoever caused the change."""
        self.last_events.record(reservation_sid, status, self.clock())
        latest = await self.journal.latest_for_reservation(reservation_sid)
        action = protocol.on_event(status, latest)
        if action == "resolve_instructed" and latest is not None:
            await self.resolve_instructed(latest, status)
        elif action == "observe":
            await self._record_observation(reservation_sid, task_sid, worker_sid, status)

    async def _record_observation(
        self, reservation_sid: str, task_sid: str, worker_sid: str, status: str
    ) -> None:
        now = self.clock()
        intent = protocol.observed_intent(
            new_intent_id(now), now, reservation_sid, task_sid, worker_sid, status
        )
        intent, created = await self.journal.submit(intent)
        if created:
            self.start(intent.intent_id)

    async def resolve_instructed(self, intent: Intent, status: str) -> None:
        """Settle an instruction TaskRouter has, from the reservation's status."""
        action = protocol.instructed_outcome(intent.op, intent.params, status)
        if action == "wait":
            return
        error = None if action == "applied" else ErrorInfo(None, f"reservation {status}")
        moved = await self._move(
            intent, ("instructed",), state=action, reservation_status=status, error=error
        )
        if moved.state in ("applied", "refused"):
            self.start(moved.intent_id)

    async def mark_instructed(self, intent: Intent) -> Intent:
        """The instruction went out in the callback reply; TaskRouter's event settles it."""
        return await self._move(intent, ("announced", "recorded"), state="instructed")

    async def announce_only(self, intent: Intent, timeout: float) -> Intent:
        """Announce within ``timeout`` (for instructions sent in the callback reply). An
        announce that did not finish in time failed, and rule 7 decides: in strict mode no
        announce means no change (the intent is refused, and settled as such); in degrade
        mode the instruction goes out and the announce comes late. One timer (the announce
        window's, or ``timeout`` if sooner), so a failure is counted and recorded once."""
        announced = await self._announce(intent, cap=timeout)
        if announced.state == "refused":
            self.start(announced.intent_id)  # settle the refusal on the channel
        return announced

    async def idle(self) -> None:
        """Wait until no intent is being driven (for tests and orderly shutdown)."""
        await self.drivers.idle()

    def running(self, intent_id: str) -> bool:
        """Driven here, or waiting for a driver here."""
        return intent_id in self.drivers

    async def close(self, grace: float = 5.0) -> None:
        if len(self.drivers):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle(), grace)
        await self.drivers.cancel()
        await self.ownership.close()
