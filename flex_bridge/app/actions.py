"""The ``/flex`` use cases: what an agent (or a supervisor) may ask of the bridge.

Each takes a caller already authenticated (a ``FlexIdentity``) and plain values already
parsed, and raises the exception tree of ``flex_bridge.errors`` on refusal; the web layer maps
those to HTTP answers in one place. Agents act on their own worker's reservations, and patch
only tasks reserved to them; supervisors and admins on any. Agents never write the keys the
bridge owns (``domain.attributes.BRIDGE_OWNED``, and the escalation's routing keys), and ask
only what the policy's ``[agents]`` allows (call targets, callback URLs, caller IDs).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from flex_bridge.adapters.flex_tokens import FlexIdentity
from flex_bridge.app.attributes import PatchResult, patch_attributes
from flex_bridge.domain.attributes import check_not_owned
from flex_bridge.domain.escalation import owned_keys
from flex_bridge.domain.intents import Intent
from flex_bridge.domain.policy import check_agent_params
from flex_bridge.domain.protocol import reservation_deadline
from flex_bridge.domain.types import JSON, Op
from flex_bridge.errors import (
    BusyError,
    ForbiddenError,
    NotFoundError,
    RejectedError,
    UnknownIntentError,
    UpstreamError,
)

if TYPE_CHECKING:
    from flex_bridge.app.services import Services

ACTIVE = frozenset({"pending", "accepted", "wrapping"})


def allowed(identity: FlexIdentity, worker_sid: str | None) -> bool:
    """Agents act on their own worker's reservations; supervisors and admins on any."""
    return identity.is_supervisor or identity.worker_sid == worker_sid


def _unavailable(exc: UpstreamError) -> UpstreamError:
    return UpstreamError(
        f"TaskRouter is unavailable: {exc.message}", status=exc.status, code=exc.code
    )


async def reservation_facts(
    svc: Services, task_sid: str, reservation_sid: str
) -> tuple[str, float | None]:
    """The reservation's worker and deadline, from the journal or from TaskRouter."""
    known = await svc.journal.latest_for_reservation(reservation_sid)
    if known is not None and known.task_sid == task_sid:
        return known.worker_sid, known.deadline
    try:
        reservation, task = await asyncio.gather(
            svc.taskrouter.fetch_reservation(task_sid, reservation_sid),
            svc.taskrouter.fetch_task(task_sid),
        )
    except NotFoundError:
        raise NotFoundError(
            f"reservation {reservation_sid} of task {task_sid} was not found", code=20404
        ) from None
    except RejectedError as exc:
        raise NotFoundError(
            f"reservation {reservation_sid}: {exc.message}", code=exc.code
        ) from None
    except UpstreamError as exc:
        raise _unavailable(exc) from None
    if reservation.date_created is None:
        return reservation.worker_sid, None
    timeout = None
    if task.workflow_sid:
        with contextlib.suppress(UpstreamError):
            timeout = await svc.taskrouter.reservation_timeout(task.workflow_sid)
    return reservation.worker_sid, reservation_deadline(
        reservation.date_created, timeout, time.time()
    )


async def request_change(
    svc: Services,
    identity: FlexIdentity,
    reservation_sid: str,
    op: Op,
    params: JSON,
    wait: float,
) -> Intent:
    """Submit the agent's ``op`` (or join the same op in flight) and wait up to ``wait``
    seconds for it to settle; the intent as it then is."""
    check_agent_params(svc.settings.policy.agents, op, params)  # before anything is asked
    task_sid = params.pop("task_sid")
    worker_sid, deadline = await reservation_facts(svc, task_sid, reservation_sid)
    if not allowed(identity, worker_sid):
        raise ForbiddenError("this reservation belongs to another worker")
    intent, created = await svc.coordinator.submit(
        op=op,
        reservation_sid=reservation_sid,
        task_sid=task_sid,
        worker_sid=worker_sid,
        source="plugin",
        params=params,
        deadline=deadline,
    )
    if not created and intent.op != op and not intent.settled:
        raise BusyError(
            f"a {intent.op} intent ({intent.intent_id}) is in flight for this reservation"
        )
    return await svc.coordinator.wait(intent.intent_id, wait) or intent


async def read_intent(svc: Services, identity: FlexIdentity, intent_id: str) -> Intent:
    intent = await svc.journal.get(intent_id)
    if intent is None:
        raise UnknownIntentError(f"intent {intent_id} was not found")
    if not allowed(identity, intent.worker_sid):
        raise ForbiddenError("this intent belongs to another worker")
    return intent


async def _may_patch(svc: Services, identity: FlexIdentity, task_sid: str) -> None:
    """An agent may patch a task only while one of its reservations on it is active."""
    if identity.is_supervisor:
        return
    try:
        # The task first: its 404 is a clean NotFoundError, whereas the official client's
        # list call raises an untranslated TwilioException for an unknown task.
        await svc.taskrouter.fetch_task(task_sid)
        reservations = await svc.taskrouter.list_reservations(task_sid)
    except NotFoundError:
        raise NotFoundError(f"task {task_sid} was not found", code=20404) from None
    except UpstreamError as exc:
        raise _unavailable(exc) from None
    if not any(r.worker_sid == identity.worker_sid and r.status in ACTIVE for r in reservations):
        raise ForbiddenError("agents may patch only tasks reserved to them")


async def patch_task_attributes(
    svc: Services, identity: FlexIdentity, task_sid: str, patch: JSON, *, replace_malformed: bool
) -> PatchResult:
    """Apply a JSON Merge Patch to the task's attributes, if ``identity`` may. An agent's
    patch that sets or deletes a key the bridge owns is refused before anything is read."""
    if not identity.is_supervisor:
        check_not_owned(patch, owned_keys(svc.settings.policy.timeout))
    await _may_patch(svc, identity, task_sid)
    try:
        return await patch_attributes(
            svc.taskrouter, task_sid, patch, replace_malformed=replace_malformed
        )
    except NotFoundError:
        raise NotFoundError(f"task {task_sid} was not found", code=20404) from None
    except RejectedError:
        raise
    except UpstreamError as exc:
        raise _unavailable(exc) from None
