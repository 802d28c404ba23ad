"""The one way flex-bridge writes task attributes: fetch with ETag, merge, write with If-Match.

The ``/flex`` PATCH endpoint, the enrichers and the escalation policy all come through
``update_attributes``. It never writes without ``If-Match``; on 412 it fetches again and
re-applies the change to what is there now, a bounded number of times with jittered backoff.
A write whose answer was lost is treated the same way: the next fetch shows whether it took,
and re-applying a merge patch to its own result changes nothing. Lost answers have their own,
smaller bound: TaskRouter failing again and again is an outage (its error is raised, a 503 at
the API), not a conflict.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from flex_bridge.adapters.retry import RetryPolicy, is_testing, retrying
from flex_bridge.adapters.taskrouter import TasksPort, TaskView
from flex_bridge.domain.attributes import merge_patch, parse_existing, serialise
from flex_bridge.domain.types import JSON
from flex_bridge.errors import (
    AmbiguousOutcomeError,
    ConflictError,
    PreconditionFailed,
    UpstreamError,
)

# Decides the change from what the task holds now: (merge patch, new priority or None),
# or None for "nothing to do". Deciding from the current state is what makes a change
# idempotent under retries (escalation raises the priority only once per level).
Builder = Callable[[JSON, TaskView], "tuple[JSON, int | None] | None"]

# Each 412 a writer meets is another writer's write landing in between, so with no waits at
# all N writers racing on one task each land within N attempts: this bound covers 64. The
# jittered backoff between attempts (off in tests) makes most of them need far fewer.
MAX_ATTEMPTS = 64
TRANSIENT = RetryPolicy(max_attempts=4, base=0.1, cap=1.0)


@dataclass(frozen=True, slots=True)
class PatchResult:
    attributes: JSON
    etag: str | None
    priority: int
    changed: bool
    attempts: int
    conflicts: int


@dataclass(frozen=True, slots=True)
class _Write:
    """What one attempt has to send: the ETag it read, and the changed fields only."""

    etag: str | None
    attributes: str | None
    priority: int | None


def _decide(task: TaskView, build: Builder, replace_malformed: bool) -> tuple[JSON, _Write | None]:
    """The task's attributes now, and the write the change still needs (None: none)."""
    current = parse_existing(task.attributes, replace_malformed=replace_malformed)
    decided = build(current, task)
    if decided is None:
        return current, None
    patch, priority = decided
    merged = merge_patch(current, patch)
    text = serialise(merged)
    attributes_changed = text != task.attributes and merged != current
    if replace_malformed and text != task.attributes:
        attributes_changed = True
    priority_changed = priority is not None and priority != task.priority
    if not attributes_changed and not priority_changed:
        return current, None
    return current, _Write(
        task.etag,
        text if attributes_changed else None,
        priority if priority_changed else None,
    )


async def update_attributes(
    taskrouter: TasksPort,
    task_sid: str,
    build: Builder,
    *,
    replace_malformed: bool = False,
    max_attempts: int = MAX_ATTEMPTS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> PatchResult:
    conflicts = 0
    # A write whose answer was lost most likely took: when the next fetch leaves nothing to
    # do, the change is reported as made (it is there, and most likely by this call).
    maybe_applied = False
    lost = 0  # writes whose outcome was not known
    failure: UpstreamError | None = None
    for attempt in range(1, max_attempts + 2):
        task = await retrying(lambda: taskrouter.fetch_task(task_sid), TRANSIENT)
        current, write = _decide(task, build, replace_malformed)
        if write is None:
            return PatchResult(current, task.etag, task.priority, maybe_applied, attempt, conflicts)
        if failure is not None:
            # The last look, after the attempts or TaskRouter's answers ran out: the change
            # is still to be made, and is not sent again.
            raise failure
        if write.etag is None:
            raise ConflictError(f"task {task_sid} came without an ETag: no unconditional write")
        send = functools.partial(
            taskrouter.update_task,
            task_sid,
            if_match=write.etag,
            attributes=write.attributes,
            priority=write.priority,
        )
        try:
            updated = await retrying(send, TRANSIENT)
        except (PreconditionFailed, AmbiguousOutcomeError) as exc:
            conflicts += 1
            if isinstance(exc, AmbiguousOutcomeError):
                # TaskRouter failing is not a conflict: lost answers have their own, smaller
                # bound, and then TaskRouter's error is what is raised.
                maybe_applied = True
                lost += 1
                if lost >= TRANSIENT.max_attempts:
                    failure = exc
            if attempt >= max_attempts and failure is None:
                failure = (
                    exc
                    if isinstance(exc, AmbiguousOutcomeError)
                    else ConflictError(
                        f"task {task_sid} kept changing: {max_attempts} conditional writes "
                        "met a newer version",
                        status=412,
                        code=20412,
                    )
                )
            if failure is None and not is_testing():
                await sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))
            if failure is not None and not maybe_applied:
                raise failure from None  # nothing can have landed: no last look needed
            continue
        return PatchResult(
            parse_existing(updated.attributes, replace_malformed=True),
            updated.etag,
            updated.priority,
            True,
            attempt,
            conflicts,
        )
    raise AssertionError("unreachable: the last look returns or raises")  # pragma: no cover


async def patch_attributes(
    taskrouter: TasksPort, task_sid: str, patch: JSON, **options: Any
) -> PatchResult:
    """Apply one merge patch (the ``/flex`` PATCH endpoint and the enrichers)."""
    return await update_attributes(taskrouter, task_sid, lambda _c, _t: (patch, None), **options)
