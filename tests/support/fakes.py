"""In-memory fakes of flex-bridge's ports, one complete fake per port.

- ``FakeReservations`` (``ReservationsPort``): reservations whose status moves as
  ``domain.ops.RULES`` says, every update recorded, trouble staged per call.
- ``FakeTasks`` (``TasksPort``): tasks with an ETag that changes on every write and
  ``If-Match`` enforced as TaskRouter does (a stale one is a 412), trouble staged per write.
- ``FakeOffers`` (``OffersPort``): pending offers and each workflow's reservation timeout.
- ``FakeTaskRouter`` (``TaskRouterPort``): the three above over one set of reservations,
  plus ``ping``.
- ``FakeChannel`` (``SyncChannelPort``): Sync items that never move backwards
  (``domain.intents.may_overwrite``), every publish recorded.
- ``FakeTokens`` (``TokenValidatorPort``): known tokens and their identities.

The journal needs no fake: ``SqliteJournal(":memory:")`` is fast and real.

Each fake is checked against its Protocol by mypy (the ``TYPE_CHECKING`` block at the end), so
a port that changes breaks the fakes at type-check time rather than drifting from them.

Staged trouble (``Trouble``, or an exception), consumed one per call; a fetch knows only
``"5xx"`` and exceptions, and only a task write knows ``"raced"`` (elsewhere both mean "ok"):
  ``"ok"``          applied as asked (if the state allows it);
  ``"raced"``       another writer got in first: the task changes
                    (``FakeTasks.other_writer``), so a write naming the old ETag is a 412;
  ``"lost_after"``  applied, then the answer is lost: ``AmbiguousOutcomeError``;
  ``"lost_before"`` never reached TaskRouter, and the caller cannot tell:
                    ``AmbiguousOutcomeError``;
  ``"5xx"``         answered 503 without applying anything: ``TransientUpstreamError``;
  an exception      raised as it is, nothing applied.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from flex_bridge.adapters.flex_tokens import FlexIdentity
from flex_bridge.adapters.taskrouter import Offer, ReservationView, TaskView
from flex_bridge.domain.intents import may_overwrite
from flex_bridge.domain.ops import RULES, VOICE
from flex_bridge.domain.types import JSON
from flex_bridge.errors import (
    AmbiguousOutcomeError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PreconditionFailed,
    RejectedError,
    TransientUpstreamError,
)

WT = "WT" + "a" * 32
WR = "WR" + "a" * 32
WK = "WK" + "a" * 32
UNKNOWN_WORKER = "WK" + "0" * 32  # the worker of a reservation made up for an unknown SID

Trouble: TypeAlias = Literal["ok", "raced", "lost_after", "lost_before", "5xx"]
TROUBLE: tuple[Trouble, ...] = ("ok", "raced", "lost_after", "lost_before", "5xx")
Staged: TypeAlias = Trouble | Exception
# What became of a change: "refused" is a reservation update its status does not allow.
Outcome: TypeAlias = Literal[
    "", "ok", "412", "refused", "lost_after", "lost_before", "5xx", "error"
]

# ReservationStatus form values -> the op that sends them (the others send ``Instruction``).
_STATUS_OPS = {
    "accepted": "accept",
    "rejected": "reject",
    "wrapping": "wrapup",
    "completed": "complete",
}
# The form field that says whether a call or redirect instruction accepts the reservation.
_ACCEPT_FIELDS = {"call": "CallAccept", "redirect": "RedirectAccept"}


def _unavailable() -> TransientUpstreamError:
    return TransientUpstreamError("503", status=503, code=20503)


def _next(staged: list[Staged]) -> Staged:
    return staged.pop(0) if staged else "ok"


# ----------------------------------------------------------------------------- reservations
@dataclass
class StoredReservation:
    sid: str
    task_sid: str
    worker_sid: str
    status: str = "pending"
    date_created: float | None = None

    def view(self) -> ReservationView:
        return ReservationView(
            self.sid, self.task_sid, self.worker_sid, self.status, self.date_created
        )


@dataclass
class ReservationUpdate:
    """One ``update_reservation`` call, and what became of it."""

    task_sid: str
    reservation_sid: str
    form: JSON
    op: str
    outcome: Outcome = ""


def op_of(form: Mapping[str, Any]) -> str:
    """The op a reservation-update form sends (``domain.ops.rest_params`` in reverse); ""
    when it sends none."""
    instruction = form.get("Instruction")
    if instruction is not None:
        op = str(instruction)
    else:
        op = _STATUS_OPS.get(str(form.get("ReservationStatus")), "")
    return op if op in RULES else ""


class FakeReservations:
    """Reservations in memory; an update moves the status as ``domain.ops.RULES`` says.

    An update the status does not allow is a ``ConflictError`` (40136) and changes nothing. A
    ``call`` or ``redirect`` instruction that does not accept leaves the reservation pending,
    as TaskRouter does (``OpRule.leads_to_for``). With ``create_unknown`` a SID never added
    is a pending reservation on first sight (for harnesses fed made-up SIDs); otherwise it is
    a 404.
    """

    def __init__(self, *, create_unknown: bool = False) -> None:
        self.reservations: dict[str, StoredReservation] = {}
        self.create_unknown = create_unknown
        # True: a voice instruction (conference, dequeue, call) leaves the reservation pending
        # while the agent's leg rings, as TaskRouter does; set_status then plays the answer.
        self.voice_rings = False
        self.updates: list[ReservationUpdate] = []
        self.fetches = 0
        self.trouble: list[Staged] = []  # consumed one per update
        self.fetch_trouble: list[Staged] = []  # consumed one per fetch ("5xx" or an exception)

    @classmethod
    def holding(
        cls, status: str = "pending", *, sid: str = WR, task_sid: str = WT, worker_sid: str = WK
    ) -> FakeReservations:
        """One reservation (``WR`` on ``WT`` for ``WK`` unless told otherwise)."""
        fake = cls()
        fake.add(status, sid=sid, task_sid=task_sid, worker_sid=worker_sid)
        return fake

    def add(
        self,
        status: str = "pending",
        *,
        sid: str = WR,
        task_sid: str = WT,
        worker_sid: str = WK,
        date_created: float | None = None,
    ) -> StoredReservation:
        stored = StoredReservation(sid, task_sid, worker_sid, status, date_created)
        self.reservations[sid] = stored
        return stored

    def status(self, sid: str = WR) -> str:
        return self.reservations[sid].status

    def set_status(self, status: str, sid: str = WR) -> None:
        """What TaskRouter did on its own: a timeout, a cancel, the agent in Flex."""
        self.reservations[sid].status = status

    @property
    def forms(self) -> list[JSON]:
        """The form of every update sent, in order (whatever became of it)."""
        return [u.form for u in self.updates]

    @property
    def applied(self) -> list[ReservationUpdate]:
        return [u for u in self.updates if u.outcome in ("ok", "lost_after")]

    def _find(self, task_sid: str, reservation_sid: str) -> StoredReservation:
        stored = self.reservations.get(reservation_sid)
        if stored is None and self.create_unknown:
            stored = self.add(sid=reservation_sid, task_sid=task_sid, worker_sid=UNKNOWN_WORKER)
        if stored is None or stored.task_sid != task_sid:
            raise NotFoundError(
                f"reservation {reservation_sid} not found on task {task_sid}",
                status=404,
                code=20404,
            )
        return stored

    def for_task(self, task_sid: str) -> list[ReservationView]:
        return [r.view() for r in self.reservations.values() if r.task_sid == task_sid]

    async def fetch_reservation(self, task_sid: str, reservation_sid: str) -> ReservationView:
        self.fetches += 1
        trouble = _next(self.fetch_trouble)
        if isinstance(trouble, Exception):
            raise trouble
        if trouble == "5xx":
            raise _unavailable()
        return self._find(task_sid, reservation_sid).view()

    async def update_reservation(
        self, task_sid: str, reservation_sid: str, form: Mapping[str, Any]
    ) -> ReservationView:
        update = ReservationUpdate(task_sid, reservation_sid, dict(form), op_of(form))
        self.updates.append(update)
        if not update.op:
            update.outcome = "error"
            raise RejectedError(f"unsupported reservation update {form}", status=400, code=20001)
        trouble = _next(self.trouble)
        if isinstance(trouble, Exception):
            update.outcome = "error"
            raise trouble
        if trouble == "5xx":
            update.outcome = "5xx"
            raise _unavailable()
        if trouble == "lost_before":
            update.outcome = "lost_before"
            raise AmbiguousOutcomeError("connection reset; the change may have been applied")
        stored = self._find(task_sid, reservation_sid)
        rule = RULES[update.op]
        if stored.status not in rule.requires:
            update.outcome = "refused"
            raise ConflictError(f"reservation is {stored.status}", status=400, code=40136)
        accepts = str(form.get(_ACCEPT_FIELDS.get(update.op, ""), "false")).lower() == "true"
        if not (self.voice_rings and update.op in VOICE):
            stored.status = rule.leads_to_for({"accept": accepts})
        if trouble == "lost_after":
            update.outcome = "lost_after"
            raise AmbiguousOutcomeError("response lost; the change may have been applied")
        update.outcome = "ok"
        return stored.view()


# ------------------------------------------------------------------------------------ tasks
@dataclass
class StoredTask:
    attributes: str
    priority: int = 0
    version: int = 1
    etag_missing: bool = False
    assignment_status: str = "pending"
    workflow_sid: str | None = None
    task_queue_sid: str | None = None

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


@dataclass
class Write:
    """One ``update_task`` call, and what became of it."""

    task_sid: str
    if_match: str | None
    attributes: str | None
    priority: int | None
    outcome: Outcome = ""


class FakeTasks:
    """TaskRouter's tasks, ETags and If-Match in memory, with staged trouble on writes.

    Every write bumps the task's version (its ETag is ``"<version>"``); a write whose
    ``If-Match`` names another version is a 412, one without ``If-Match`` is unconditional.
    """

    def __init__(
        self, *, reservations: FakeReservations | None = None, create_unknown: bool = False
    ) -> None:
        self.tasks: dict[str, StoredTask] = {}
        self.reservations = reservations  # what list_reservations answers from
        self.create_unknown = create_unknown
        self.trouble: list[Staged] = []  # consumed one per write
        self.fetch_trouble: list[Staged] = []  # "5xx" or an exception, consumed one per fetch
        self.fetch_error: Exception | None = None  # raised by every fetch while set
        self.hold_writes: asyncio.Event | None = None  # writes wait for it while set
        # What "another writer" does to the task on a "raced" write (default: adds a key).
        self.other_writer: Callable[[StoredTask], None] | None = None
        self.others = 0
        self.writes: list[Write] = []
        self.fetches = 0
        self.fetched_etags: list[str | None] = []
        self.listings = 0

    @classmethod
    def holding(
        cls, attributes: str | JSON = "{}", *, priority: int = 0, sid: str = WT
    ) -> FakeTasks:
        """One task (``WT`` unless told otherwise)."""
        fake = cls()
        fake.add(attributes, priority, sid)
        return fake

    def add(
        self,
        attributes: str | JSON = "{}",
        priority: int = 0,
        sid: str = WT,
        *,
        assignment_status: str = "pending",
        workflow_sid: str | None = None,
        task_queue_sid: str | None = None,
    ) -> str:
        text = attributes if isinstance(attributes, str) else json.dumps(attributes)
        self.tasks[sid] = StoredTask(
            text,
            priority,
            assignment_status=assignment_status,
            workflow_sid=workflow_sid,
            task_queue_sid=task_queue_sid,
        )
        return sid

    def view(self, sid: str = WT) -> TaskView:
        task = self.tasks[sid]
        etag = None if task.etag_missing else task.etag
        return TaskView(
            sid,
            task.attributes,
            task.assignment_status,
            etag,
            task.priority,
            task.workflow_sid,
            task.task_queue_sid,
        )

    def stored(self, sid: str = WT) -> Any:
        """The task's attributes, parsed."""
        return json.loads(self.tasks[sid].attributes)

    @property
    def applied(self) -> list[Write]:
        return [w for w in self.writes if w.outcome in ("ok", "lost_after")]

    def _add_other_key(self, task: StoredTask) -> None:
        current = json.loads(task.attributes) if task.attributes else {}
        self.others += 1
        current[f"other_{self.others}"] = self.others
        task.attributes = json.dumps(current)

    def _find(self, task_sid: str) -> StoredTask:
        if task_sid not in self.tasks and self.create_unknown:
            self.add("{}", sid=task_sid, assignment_status="reserved")
        if task_sid not in self.tasks:
            raise NotFoundError(f"task {task_sid} not found", status=404, code=20404)
        return self.tasks[task_sid]

    async def fetch_task(self, task_sid: str) -> TaskView:
        self.fetches += 1
        await asyncio.sleep(0)
        if self.fetch_error is not None:
            raise self.fetch_error
        self._find(task_sid)
        trouble = _next(self.fetch_trouble)
        if isinstance(trouble, Exception):
            raise trouble
        if trouble == "5xx":
            raise _unavailable()
        view = self.view(task_sid)
        self.fetched_etags.append(view.etag)
        return view

    async def list_reservations(self, task_sid: str) -> list[ReservationView]:
        self.listings += 1
        await asyncio.sleep(0)
        self._find(task_sid)
        return [] if self.reservations is None else self.reservations.for_task(task_sid)

    async def update_task(
        self,
        task_sid: str,
        *,
        if_match: str | None,
        attributes: str | None = None,
        priority: int | None = None,
    ) -> TaskView:
        await asyncio.sleep(0)
        if self.hold_writes is not None:
            await self.hold_writes.wait()
        write = Write(task_sid, if_match, attributes, priority)
        self.writes.append(write)
        task = self._find(task_sid)
        trouble = _next(self.trouble)
        if isinstance(trouble, Exception):
            write.outcome = "error"
            raise trouble
        if trouble == "raced":
            (self.other_writer or self._add_other_key)(task)
            task.version += 1
        if trouble == "5xx":
            write.outcome = "5xx"
            raise _unavailable()
        if trouble == "lost_before":
            write.outcome = "lost_before"
            raise AmbiguousOutcomeError("connection reset; the change may have been applied")
        if if_match is not None and if_match != task.etag:
            write.outcome = "412"
            raise PreconditionFailed("ETag mismatch", status=412, code=20412)
        if attributes is not None:
            task.attributes = attributes
        if priority is not None:
            task.priority = priority
        task.version += 1
        if trouble == "lost_after":
            write.outcome = "lost_after"
            raise AmbiguousOutcomeError("response lost; the change may have been applied")
        write.outcome = "ok"
        return self.view(task_sid)


# ----------------------------------------------------------------------------------- offers
class FakeOffers:
    """Pending offers and each workflow's reservation timeout.

    Linked to a ``FakeReservations``, an offer is listed only while its reservation is still
    pending there, and shows that reservation as it is now.
    """

    def __init__(
        self, *, reservations: FakeReservations | None = None, default_timeout: int = 120
    ) -> None:
        self.reservations = reservations
        self.default_timeout = default_timeout
        self.timeouts: dict[str, int] = {}
        self.offers: list[Offer] = []
        self.timeout_lookups: list[str] = []
        self.listings: list[int] = []  # the limit of each pending_offers call
        self.error: Exception | None = None  # raised by every call while set

    def offer(
        self,
        reservation: ReservationView | StoredReservation,
        *,
        task_queue_sid: str | None = None,
        workflow_sid: str | None = None,
        task_attributes: str = "{}",
        worker_attributes: str = "{}",
    ) -> Offer:
        view = reservation.view() if isinstance(reservation, StoredReservation) else reservation
        made = Offer(view, task_queue_sid, workflow_sid, task_attributes, worker_attributes)
        self.offers.append(made)
        return made

    async def reservation_timeout(self, workflow_sid: str) -> int:
        self.timeout_lookups.append(workflow_sid)
        if self.error is not None:
            raise self.error
        return self.timeouts.get(workflow_sid, self.default_timeout)

    async def pending_offers(self, limit: int = 1000) -> list[Offer]:
        self.listings.append(limit)
        if self.error is not None:
            raise self.error
        found: list[Offer] = []
        tasks: list[str] = []
        for offer in self.offers:
            view = offer.reservation
            if self.reservations is not None:
                stored = self.reservations.reservations.get(view.sid)
                if stored is None or stored.status != "pending":
                    continue
                view = stored.view()
            if view.task_sid not in tasks:
                if len(tasks) >= limit:
                    continue
                tasks.append(view.task_sid)
            found.append(
                Offer(
                    view,
                    offer.task_queue_sid,
                    offer.workflow_sid,
                    offer.task_attributes,
                    offer.worker_attributes,
                )
            )
        return found


class FakeTaskRouter:
    """All of ``TaskRouterPort``: the three fakes above over one set of reservations."""

    def __init__(self, *, create_unknown: bool = False) -> None:
        self.reservations = FakeReservations(create_unknown=create_unknown)
        self.tasks = FakeTasks(reservations=self.reservations, create_unknown=create_unknown)
        self.offers = FakeOffers(reservations=self.reservations)
        self.pings = 0
        self.ping_error: Exception | None = None

    @property
    def reads(self) -> int:
        """Every read of TaskRouter so far (reservations, tasks, reservation lists)."""
        return self.reservations.fetches + self.tasks.fetches + self.tasks.listings

    @property
    def changes(self) -> int:
        """Every change sent to TaskRouter so far (reservation updates, task writes)."""
        return len(self.reservations.updates) + len(self.tasks.writes)

    async def fetch_reservation(self, task_sid: str, reservation_sid: str) -> ReservationView:
        return await self.reservations.fetch_reservation(task_sid, reservation_sid)

    async def update_reservation(
        self, task_sid: str, reservation_sid: str, form: Mapping[str, Any]
    ) -> ReservationView:
        return await self.reservations.update_reservation(task_sid, reservation_sid, form)

    async def fetch_task(self, task_sid: str) -> TaskView:
        return await self.tasks.fetch_task(task_sid)

    async def list_reservations(self, task_sid: str) -> list[ReservationView]:
        return await self.tasks.list_reservations(task_sid)

    async def update_task(
        self,
        task_sid: str,
        *,
        if_match: str | None,
        attributes: str | None = None,
        priority: int | None = None,
    ) -> TaskView:
        return await self.tasks.update_task(
            task_sid, if_match=if_match, attributes=attributes, priority=priority
        )

    async def reservation_timeout(self, workflow_sid: str) -> int:
        return await self.offers.reservation_timeout(workflow_sid)

    async def pending_offers(self, limit: int = 1000) -> list[Offer]:
        return await self.offers.pending_offers(limit)

    async def ping(self) -> None:
        self.pings += 1
        if self.ping_error is not None:
            raise self.ping_error


# ---------------------------------------------------------------------------------- channel
PublishOutcome: TypeAlias = Literal["written", "unchanged", "skipped_behind", "error"]


@dataclass
class Publish:
    """One ``publish`` call, and what became of it."""

    worker_sid: str
    key: str
    data: JSON
    outcome: PublishOutcome


class FakeChannel:
    """Sync items in memory, one per (worker, key); a publish never moves one backwards.

    As ``TwilioSyncChannel`` does: a publish that ``may_overwrite`` refuses is skipped and
    answers False, one equal to the item answers True without writing.
    """

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], JSON] = {}
        self.publishes: list[Publish] = []
        self.reads = 0
        self.pings = 0
        self.errors: list[Exception] = []  # the next publishes raise these, writing nothing
        self.outage: Exception | None = None  # raised by every call while set

    def item(self, worker_sid: str, key: str) -> JSON | None:
        return self.items.get((worker_sid, key))

    @property
    def written(self) -> list[JSON]:
        """The data of every publish that changed an item, in order."""
        return [p.data for p in self.publishes if p.outcome == "written"]

    async def publish(self, worker_sid: str, key: str, data: JSON) -> bool:
        sent = Publish(worker_sid, key, dict(data), "error")
        self.publishes.append(sent)
        if self.outage is not None:
            raise self.outage
        if self.errors:
            raise self.errors.pop(0)
        current = self.items.get((worker_sid, key))
        if not may_overwrite(current, data):
            sent.outcome = "skipped_behind"
            return False
        if current == data:
            sent.outcome = "unchanged"
            return True
        self.items[(worker_sid, key)] = dict(data)
        sent.outcome = "written"
        return True

    async def read(self, worker_sid: str, key: str) -> JSON | None:
        self.reads += 1
        if self.outage is not None:
            raise self.outage
        found = self.items.get((worker_sid, key))
        return None if found is None else dict(found)

    async def ping(self) -> None:
        self.pings += 1
        if self.outage is not None:
            raise self.outage


# ----------------------------------------------------------------------------------- tokens
class FakeTokens:
    """Flex tokens the test made up, and whose they are; any other token is not valid."""

    def __init__(self) -> None:
        self.identities: dict[str, FlexIdentity] = {}
        self.seen: list[str] = []
        self.error: Exception | None = None  # raised by every validate while set (IAM down)

    def add(
        self,
        token: str,
        identity: str = "agent@example.com",
        *,
        worker_sid: str | None = WK,
        roles: tuple[str, ...] = ("agent",),
        expires: float | None = None,
    ) -> FlexIdentity:
        flex = FlexIdentity(identity, worker_sid, frozenset(roles), expires)
        self.identities[token] = flex
        return flex

    async def validate(self, token: str) -> FlexIdentity:
        self.seen.append(token)
        if self.error is not None:
            raise self.error
        if not token:
            raise AuthenticationError("no Flex token")
        identity = self.identities.get(token)
        if identity is None:
            raise AuthenticationError("the Flex token is not valid")
        return identity


# Each fake against its port: mypy fails here the moment one drifts from its Protocol.
if TYPE_CHECKING:
    from flex_bridge.adapters.flex_tokens import TokenValidatorPort
    from flex_bridge.adapters.sync_channel import SyncChannelPort
    from flex_bridge.adapters.taskrouter import (
        OffersPort,
        ReservationsPort,
        TaskRouterPort,
        TasksPort,
    )

    _reservations: ReservationsPort = FakeReservations()
    _tasks: TasksPort = FakeTasks()
    _offers: OffersPort = FakeOffers()
    _taskrouter: TaskRouterPort = FakeTaskRouter()
    _channel: SyncChannelPort = FakeChannel()
    _tokens: TokenValidatorPort = FakeTokens()
