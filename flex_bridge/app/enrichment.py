"""CRM enrichment: pluggable enrichers run concurrently, each bounded, merged, written once.

An **enricher** is an async callable ``enricher(context) -> merge patch`` (``{}`` when it has
nothing to add), built once by a factory named in the policy file::

    [enrichment]
    on_task_created = true
    budget = 2.0                                    # seconds an accept waits, at most

    [[enrichment.enrichers]]
    name = "crm"
    factory = "flex_bridge.adapters.crm:http_crm"   # factory(options) -> enricher
    timeout = 1.5
    options = { url = "https://crm.example.com/customers", keys = ["customer_id", "from"] }

An enricher object may also have ``async def aclose()``; ``Enrichment.close`` awaits it.

``Enrichment.enrich`` fetches the task's attributes, runs every enricher at once, each bounded
by ``min(its timeout, the budget left)``, merges their patches in the policy's order and writes
the result once, through ``flex_bridge.attributes.patch_attributes`` (ETag + ``If-Match``, the
one code path for attribute writes). A slow, hung or raising enricher is recorded as
``timeout`` or ``error`` and costs the others nothing; a hung one is abandoned (cancelled, not
waited for) when its bound passes. Attributes that are not a JSON object are never built upon:
the outcome is ``failed`` and the task is left untouched. ``enrich`` never raises for an
enricher's or an upstream's trouble; the outcome says what happened, and ``to_json()`` is small
enough to travel in the worker's Sync item (so the plugin can say "customer data unavailable").

An enricher that blocks the event loop (``time.sleep``, blocking I/O) cannot be bounded by
anything here: enrichers must be truly async.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import logging
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flex_bridge.adapters.retry import retrying
from flex_bridge.adapters.taskrouter import TasksPort
from flex_bridge.app.attributes import TRANSIENT, patch_attributes
from flex_bridge.app.metrics import Metrics
from flex_bridge.app.plugins import load_callable
from flex_bridge.domain.attributes import (
    MalformedExisting,
    check_not_owned,
    parse_existing,
    parse_patch,
)
from flex_bridge.domain.enrichment import (
    Enricher,
    EnricherFactory,
    EnricherResult,
    EnricherStatus,
    EnrichmentOutcome,
    OutcomeStatus,
    TaskContext,
)
from flex_bridge.domain.intents import Intent
from flex_bridge.domain.policy import EnricherSpec, EnrichmentPolicy
from flex_bridge.domain.types import JSON
from flex_bridge.errors import ConfigError, FlexBridgeError

logger = logging.getLogger("flex_bridge.enrichment")


@dataclass(slots=True)
class _Loaded:
    spec: EnricherSpec
    enricher: Enricher


@dataclass(slots=True)
class _Run:
    loaded: _Loaded
    task: asyncio.Task[JSON]
    deadline: float
    by_budget: bool
    result: EnricherResult | None = None
    patch: JSON = field(default_factory=dict)


ENTRY_POINT_GROUP = "flex_bridge.enrichers"
OVERRUN = 0.5  # seconds past its budget an enrichment run is given before it is abandoned


def load_factory(name: str, path: str) -> EnricherFactory:
    """The factory named by ``package.module:factory`` (or ``package.module.factory``), or by
    a bare name: an entry point of group ``flex_bridge.enrichers`` that a package declares."""
    return load_callable(path, f"enricher {name!r}", ENTRY_POINT_GROUP)


def build_enricher(spec: EnricherSpec) -> Enricher:
    """Load the spec's factory and call it with the spec's options."""
    factory = load_factory(spec.name, spec.factory)
    try:
        enricher = factory(copy.deepcopy(spec.options))
    except ConfigError as exc:
        raise ConfigError(f"enricher {spec.name!r}: {exc}") from exc
    except Exception as exc:
        raise ConfigError(
            f"enricher {spec.name!r}: {spec.factory} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if inspect.isawaitable(enricher):
        if inspect.iscoroutine(enricher):
            enricher.close()  # never awaited on purpose: no "was never awaited" warning
        raise ConfigError(
            f"enricher {spec.name!r}: {spec.factory} must return an enricher, not an awaitable "
            "(the factory is called once, synchronously)"
        )
    if not callable(enricher):
        raise ConfigError(
            f"enricher {spec.name!r}: {spec.factory} returned {type(enricher).__name__}, "
            "not an async callable"
        )
    return enricher


def compose(first: Mapping[str, Any], second: Mapping[str, Any]) -> JSON:
    """One merge patch with the effect of applying ``first`` then ``second``.

    Unlike ``merge_patch(first, second)``, it keeps ``null`` (so a deletion asked for by an
    enricher is not lost). Objects compose key by key; anything else in ``second`` wins. One
    case has no exact single-patch form: when ``first`` sets a key to a non-object (or deletes
    it) and ``second`` sets it to an object, the composed patch merges that object into what
    the task holds instead of replacing it.
    """
    out: JSON = dict(first)
    for key, value in second.items():
        before = out.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            out[key] = compose(before, value)
        else:
            out[key] = value
    return out


def _describe(exc: BaseException) -> str:
    """A short reason for an enricher's failure.

    flex-bridge's own errors carry messages written not to hold customer data; anything else
    is named by its type only, since a third-party message may quote a phone number.
    """
    if isinstance(exc, FlexBridgeError):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__


def _checked_patch(value: Any) -> JSON:
    """The enricher's answer as a valid merge patch (a JSON object); ``ValueError`` if not."""
    if not isinstance(value, Mapping):
        raise ValueError(f"returned {type(value).__name__}, not a JSON object")
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"returned something that is not JSON ({type(exc).__name__})") from None
    try:
        patch = parse_patch(text)
        check_not_owned(patch)  # the bridge's own keys are not an enricher's to write
    except FlexBridgeError as exc:
        raise ValueError(str(exc)) from None
    return patch


class Enrichment:
    """The configured enrichers, and the one way they are run against a task."""

    def __init__(
        self,
        policy: EnrichmentPolicy,
        taskrouter: TasksPort,
        metrics: Metrics | None = None,
    ) -> None:
        self.policy = policy
        self.taskrouter = taskrouter
        self.metrics = metrics
        self._enrichers = [_Loaded(spec, build_enricher(spec)) for spec in policy.enrichers]
        self._abandoned: set[asyncio.Task[JSON]] = set()

    @property
    def enabled(self) -> bool:
        return bool(self._enrichers)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(loaded.spec.name for loaded in self._enrichers)

    async def for_intent(self, intent: Intent, budget: float) -> JSON:
        """The enrichment step of an intent (``before_accept``): the outcome its item shows.
        Never raises, and never takes much longer than ``budget``."""
        try:
            outcome = await asyncio.wait_for(
                self.enrich(
                    intent.task_sid,
                    budget=budget,
                    reservation_sid=intent.reservation_sid,
                    worker_sid=intent.worker_sid,
                ),
                budget + OVERRUN,
            )
        except (TimeoutError, FlexBridgeError) as exc:
            return {"status": "failed", "enrichers": {}, "message": str(exc) or "timeout"}
        return outcome.to_json()

    async def enrich(
        self,
        task_sid: str,
        *,
        budget: float,
        reservation_sid: str | None = None,
        worker_sid: str | None = None,
    ) -> EnrichmentOutcome:
        """Run every enricher for the task within ``budget`` seconds and write the result."""
        if not self._enrichers:
            return self._count(EnrichmentOutcome("skipped"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, budget)

        def left() -> float:
            return deadline - loop.time()

        try:
            attributes = await self._read(task_sid, left())
        except MalformedExisting:
            return self._failed(
                task_sid, "the task's attributes are not a JSON object; left untouched", ()
            )
        except (FlexBridgeError, TimeoutError) as exc:
            message = (
                "the task could not be read within the budget"
                if isinstance(exc, TimeoutError)
                else f"the task could not be read: {_describe(exc)}"
            )
            return self._failed(task_sid, message, ())

        runs = self._start(task_sid, attributes, reservation_sid, worker_sid, deadline)
        await self._wait(runs, loop)
        results = tuple(run.result for run in runs if run.result is not None)
        answered = [run for run in runs if run.result and run.result.status in ("ok", "empty")]
        patch: JSON = {}
        for run in runs:  # the policy's order: a later enricher wins on the same key
            patch = compose(patch, run.patch)
        if not answered:
            return self._failed(task_sid, "no enricher answered", results)
        status: OutcomeStatus = "ok" if len(answered) == len(runs) else "partial"
        if not patch:
            return self._count(EnrichmentOutcome(status, results, patched=False))
        remaining = left()
        if remaining <= 0:
            return self._failed(task_sid, "the budget ran out before the write", results)
        try:
            written = await asyncio.wait_for(
                patch_attributes(self.taskrouter, task_sid, patch), remaining
            )
        except TimeoutError:
            # The write may or may not have landed (If-Match keeps it whole either way).
            return self._failed(task_sid, "the write did not finish within the budget", results)
        except FlexBridgeError as exc:
            return self._failed(task_sid, f"the write failed: {_describe(exc)}", results)
        return self._count(EnrichmentOutcome(status, results, patched=written.changed))

    async def close(self) -> None:
        """Abandon enricher calls still running, then ``aclose`` every enricher that has one."""
        for task in list(self._abandoned):
            task.cancel()
        if self._abandoned:
            await asyncio.wait(list(self._abandoned), timeout=1.0)
        for loaded in self._enrichers:
            aclose = getattr(loaded.enricher, "aclose", None)
            if aclose is None:
                continue
            try:
                result = aclose()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                logger.warning("enricher %s failed to close: %s", loaded.spec.name, _describe(exc))

    # ------------------------------------------------------------------------ internals
    async def _read(self, task_sid: str, budget: float) -> JSON:
        if budget <= 0:
            raise TimeoutError
        task = await asyncio.wait_for(
            retrying(lambda: self.taskrouter.fetch_task(task_sid), TRANSIENT), budget
        )
        return parse_existing(task.attributes)  # MalformedExisting: never built upon

    def _start(
        self,
        task_sid: str,
        attributes: JSON,
        reservation_sid: str | None,
        worker_sid: str | None,
        deadline: float,
    ) -> list[_Run]:
        runs = []
        for loaded in self._enrichers:
            context = TaskContext(  # each its own copy: one enricher cannot change another's view
                task_sid, copy.deepcopy(attributes), reservation_sid, worker_sid
            )
            task = asyncio.create_task(
                self._call(loaded.enricher, context), name=f"enricher {loaded.spec.name}"
            )
            own = asyncio.get_running_loop().time() + loaded.spec.timeout
            runs.append(_Run(loaded, task, min(own, deadline), by_budget=deadline < own))
        return runs

    @staticmethod
    async def _call(enricher: Enricher, context: TaskContext) -> JSON:
        return await enricher(context)

    async def _wait(self, runs: list[_Run], loop: asyncio.AbstractEventLoop) -> None:
        """Collect each run by its own deadline; abandon (cancel) the ones that pass it.

        ``asyncio.wait`` does not wait for a cancelled task to finish, so an enricher that
        swallows its cancellation still cannot hold the others up.
        """
        pending = {run.task: run for run in runs}
        try:
            await self._collect_all(pending, loop)
        finally:  # also when enrich() itself is cancelled: leave nothing running unowned
            for task in pending:
                self._abandon(task)

    async def _collect_all(
        self, pending: dict[asyncio.Task[JSON], _Run], loop: asyncio.AbstractEventLoop
    ) -> None:
        while pending:
            now = loop.time()
            for task, run in list(pending.items()):
                if not task.done() and run.deadline <= now:
                    self._abandon(task)
                    bound = (
                        "the budget left"
                        if run.by_budget
                        else f"its timeout ({run.loaded.spec.timeout:g} s)"
                    )
                    run.result = EnricherResult(
                        run.loaded.spec.name, "timeout", f"no answer within {bound}"
                    )
                    logger.warning("enricher %s: timeout", run.loaded.spec.name)
                    del pending[task]
            for task in [t for t in pending if t.done()]:
                self._collect(pending.pop(task))
            if not pending:
                break
            until = min(run.deadline for run in pending.values()) - loop.time()
            await asyncio.wait(
                list(pending), timeout=max(0.0, until), return_when=asyncio.FIRST_COMPLETED
            )

    def _collect(self, run: _Run) -> None:
        name = run.loaded.spec.name
        task = run.task
        if task.cancelled():
            run.result = EnricherResult(name, "error", "cancelled")
            return
        exc = task.exception()
        if exc is not None:
            status: EnricherStatus = "timeout" if isinstance(exc, TimeoutError) else "error"
            run.result = EnricherResult(name, status, _describe(exc))
            logger.warning("enricher %s: %s (%s)", name, status, _describe(exc))
            # Where it was raised, without the message (a third party's may quote a number).
            where = "".join(traceback.format_tb(exc.__traceback__))
            logger.debug("enricher %s raised %s at\n%s", name, type(exc).__name__, where)
            return
        try:
            run.patch = _checked_patch(task.result())
        except ValueError as err:
            run.result = EnricherResult(name, "error", str(err))
            logger.warning("enricher %s: error (%s)", name, err)
            return
        run.result = EnricherResult(name, "ok" if run.patch else "empty")

    def _abandon(self, task: asyncio.Task[JSON]) -> None:
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[JSON]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at shutdown

    def _failed(
        self, task_sid: str, message: str, results: tuple[EnricherResult, ...]
    ) -> EnrichmentOutcome:
        logger.warning("enrichment of %s failed: %s", task_sid, message)
        return self._count(EnrichmentOutcome("failed", results, patched=False, message=message))

    def _count(self, outcome: EnrichmentOutcome) -> EnrichmentOutcome:
        if self.metrics is not None:
            self.metrics.enrichments.labels(outcome.status).inc()
            for result in outcome.results:
                self.metrics.enricher_results.labels(result.name, result.status).inc()
        return outcome
