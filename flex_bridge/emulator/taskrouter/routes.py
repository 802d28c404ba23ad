"""TaskRouter v1 over REST: the routes of each resource the emulator serves.

Each ``*_routes`` function returns one resource's routes; most are the same five operations
(list, create, fetch, update, delete) over a :class:`Kind`, which says how to find, render and
version that resource. The engine does the work; list filters live in ``queries``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from flex_bridge.emulator.api import JSON, Call, Handler, Reply, Route, Router, crud
from flex_bridge.emulator.spec import Spec
from flex_bridge.emulator.taskrouter import queries
from flex_bridge.emulator.taskrouter.engine import TaskRouter
from flex_bridge.emulator.taskrouter.models import Reservation, Task, Worker, Workspace
from flex_bridge.emulator.taskrouter.rendering import Renderer
from flex_bridge.emulator.taskrouter.resources import events_filter

T = TypeVar("T")
# What the engine does for a route: list the rows, create one from the form, change or delete one.
Rows = Callable[[Workspace, Call], Iterable[T]]
Create = Callable[[Workspace, Mapping[str, Any]], T]
Change = Callable[[Workspace, T, Call], None]
WS = "/v1/Workspaces/{WorkspaceSid}"
RESERVATION_PARENTS = ("Tasks/{TaskSid}", "Workers/{WorkerSid}")


@dataclass(frozen=True, slots=True)
class Kind(Generic[T]):
    """How the routes of one kind of workspace resource find, render and version it."""

    find: Callable[[Workspace, str], T]
    render: Callable[[Workspace, T], JSON]
    etag: Callable[[T], str] | None = None
    # How a list shows it, when not as a fetch does (tasks and workers: without attributes).
    listed: Callable[[Workspace, T], JSON] | None = None


class Api:
    """What every handler needs: the engine, the renderer, and the shapes of an answer."""

    def __init__(self, spec: Spec, engine: TaskRouter) -> None:
        self.spec = spec
        self.engine = engine
        self.render = Renderer(engine.runtime)

    def ws(self, call: Call) -> Workspace:
        return self.engine.workspace(call.path["WorkspaceSid"])

    def one(self, call: Call, values: JSON, etag: str | None = None) -> Reply:
        headers = {} if etag is None else {"ETag": etag}
        return Reply(call.op.response_status, self.spec.render(call.op, values), headers)

    def rows(self, call: Call, rows: Iterable[JSON]) -> Reply:
        return queries.paged(self.spec, call, list(rows))

    def reply(self, call: Call, kind: Kind[T], ws: Workspace, item: T) -> Reply:
        return self.one(call, kind.render(ws, item), kind.etag(item) if kind.etag else None)

    def resource(
        self,
        segment: str,
        kind: Kind[T],
        rows: Rows[T],
        *,
        create: Create[T] | None = None,
        update: Callable[[Workspace, T, Mapping[str, Any]], None] | None = None,
        delete: Callable[[Workspace, T], None] | None = None,
    ) -> list[Route]:
        """The routes of a workspace resource: ``update`` and ``delete`` get the form only."""
        return self._routes(
            segment,
            kind,
            rows,
            create,
            None if update is None else lambda ws, item, call: update(ws, item, call.form),
            None if delete is None else lambda ws, item, call: delete(ws, item),
        )

    def versioned(
        self,
        segment: str,
        kind: Kind[T],
        rows: Rows[T],
        create: Create[T],
        update: Callable[[Workspace, T, Mapping[str, Any], str | None], None],
        delete: Callable[[Workspace, T, str | None], None],
    ) -> list[Route]:
        """The routes of a resource with an ETag: ``update`` and ``delete`` get ``If-Match``."""
        return self._routes(
            segment,
            kind,
            rows,
            create,
            lambda ws, item, call: update(ws, item, call.form, call.if_match()),
            lambda ws, item, call: delete(ws, item, call.if_match()),
        )

    def _routes(
        self,
        segment: str,
        kind: Kind[T],
        rows: Rows[T],
        create: Create[T] | None,
        change: Change[T] | None,
        remove: Change[T] | None,
    ) -> list[Route]:
        return crud(
            f"{WS}/{segment}",
            self._listing(kind, rows),
            None if create is None else self._create(kind, create),
            self._fetch(kind),
            None if change is None else self._update(kind, change),
            None if remove is None else self._delete(kind, remove),
        )

    def _listing(self, kind: Kind[T], rows: Rows[T]) -> Handler:
        def handler(call: Call) -> Reply:
            ws = self.ws(call)
            render = kind.listed or kind.render
            return self.rows(call, (render(ws, item) for item in rows(ws, call)))

        return handler

    def _create(self, kind: Kind[T], create: Create[T]) -> Handler:
        def handler(call: Call) -> Reply:
            ws = self.ws(call)
            return self.reply(call, kind, ws, create(ws, call.form))

        return handler

    def _fetch(self, kind: Kind[T]) -> Handler:
        def handler(call: Call) -> Reply:
            ws = self.ws(call)
            return self.reply(call, kind, ws, kind.find(ws, call.path["Sid"]))

        return handler

    def _update(self, kind: Kind[T], change: Change[T]) -> Handler:
        def handler(call: Call) -> Reply:
            ws = self.ws(call)
            item = kind.find(ws, call.path["Sid"])
            change(ws, item, call)
            return self.reply(call, kind, ws, item)

        return handler

    def _delete(self, kind: Kind[T], remove: Change[T]) -> Handler:
        def handler(call: Call) -> Reply:
            ws = self.ws(call)
            remove(ws, kind.find(ws, call.path["Sid"]), call)
            return Reply(204, None)

        return handler


def workspace_routes(api: Api) -> list[Route]:
    engine, render = api.engine, api.render

    def listing(call: Call) -> Reply:
        rows = queries.named(engine.workspaces.values(), call, lambda ws: ws.friendly_name)
        return api.rows(call, map(render.workspace, rows))

    def create(call: Call) -> Reply:
        f = call.form
        ws = engine.create_workspace(
            f["FriendlyName"],
            event_callback_url=f.get("EventCallbackUrl"),
            events_filter=events_filter(f.get("EventsFilter")),
            multi_task_enabled=f.get("MultiTaskEnabled", True),
            prioritize_queue_order=f.get("PrioritizeQueueOrder", "FIFO"),
        )
        return api.one(call, render.workspace(ws))

    def fetch(call: Call) -> Reply:
        return api.one(call, render.workspace(engine.workspace(call.path["Sid"])))

    def update(call: Call) -> Reply:
        ws = engine.workspace(call.path["Sid"])
        engine.update_workspace(ws, call.form)
        return api.one(call, render.workspace(ws))

    def delete(call: Call) -> Reply:
        engine.delete_workspace(engine.workspace(call.path["Sid"]))
        return Reply(204, None)

    return crud("/v1/Workspaces", listing, create, fetch, update, delete)


def activity_routes(api: Api) -> list[Route]:
    engine = api.engine
    kind = Kind(Workspace.activity, api.render.activity)
    return api.resource(
        "Activities",
        kind,
        queries.activity_rows,
        create=engine.create_activity,
        update=engine.update_activity,
        delete=engine.delete_activity,
    )


def task_channel_routes(api: Api) -> list[Route]:
    kind = Kind(Workspace.task_channel, api.render.task_channel)
    rows = queries.task_channel_rows
    return api.resource("TaskChannels", kind, rows, create=api.engine.create_task_channel)


def task_queue_routes(api: Api) -> list[Route]:
    engine = api.engine
    kind = Kind(Workspace.task_queue, api.render.task_queue)
    return api.resource(
        "TaskQueues",
        kind,
        queries.task_queue_rows,
        create=engine.create_task_queue,
        update=engine.update_task_queue,
        delete=engine.delete_task_queue,
    )


def workflow_routes(api: Api) -> list[Route]:
    engine = api.engine
    kind = Kind(Workspace.workflow, api.render.workflow)
    return api.resource(
        "Workflows",
        kind,
        queries.workflow_rows,
        create=engine.create_workflow,
        update=engine.update_workflow,
        delete=engine.delete_workflow,
    )


def worker_routes(api: Api) -> list[Route]:
    engine = api.engine
    kind = Kind(Workspace.worker, api.render.worker, _worker_etag, api.render.worker_listed)
    changes = (engine.create_worker, engine.update_worker, engine.delete_worker)
    return api.versioned("Workers", kind, queries.worker_rows, *changes)


def task_routes(api: Api) -> list[Route]:
    engine = api.engine
    kind = Kind(Workspace.task, api.render.task, _task_etag, api.render.task_listed)
    changes = (engine.create_task, engine.update_task, engine.delete_task)
    return api.versioned("Tasks", kind, queries.task_rows, *changes)


def reservation_routes(api: Api) -> list[Route]:
    """Reservations under their task and under their worker; a URL names one or the other."""
    engine, render = api.engine, api.render

    def listing(call: Call, rows: Iterable[Reservation], under_worker: bool) -> Reply:
        ws = api.ws(call)
        kept = queries.reservation_rows(rows, call)
        return api.rows(call, (render.reservation(ws, r, under_worker=under_worker) for r in kept))

    def of_task(call: Call) -> Reply:
        ws = api.ws(call)
        task = ws.task(call.path["TaskSid"])
        return listing(call, [ws.reservations[s] for s in task.reservation_sids], False)

    def of_worker(call: Call) -> Reply:
        ws = api.ws(call)
        worker = ws.worker(call.path["WorkerSid"])
        rows = [res for res in ws.reservations.values() if res.worker_sid == worker.sid]
        return listing(call, rows, True)

    def find(call: Call) -> tuple[Workspace, Reservation, bool]:
        ws = api.ws(call)
        if "TaskSid" in call.path:
            ws.task(call.path["TaskSid"])
            res = ws.reservation(call.path["Sid"], task_sid=call.path["TaskSid"])
            return ws, res, False
        ws.worker(call.path["WorkerSid"])
        res = ws.reservation(call.path["Sid"], worker_sid=call.path["WorkerSid"])
        return ws, res, True

    def fetch(call: Call) -> Reply:
        ws, res, under_worker = find(call)
        return api.one(call, render.reservation(ws, res, under_worker=under_worker))

    def update(call: Call) -> Reply:
        ws, res, under_worker = find(call)
        engine.update_reservation(ws, res, call.form)
        return api.one(call, render.reservation(ws, res, under_worker=under_worker))

    routes = [
        *crud(f"{WS}/Tasks/{{TaskSid}}/Reservations", listing=of_task),
        *crud(f"{WS}/Workers/{{WorkerSid}}/Reservations", listing=of_worker),
    ]
    for parent in RESERVATION_PARENTS:
        routes += crud(f"{WS}/{parent}/Reservations", fetch=fetch, update=update)
    return routes


def event_routes(api: Api) -> list[Route]:
    return api.resource("Events", Kind(Workspace.event, api.render.event), queries.event_rows)


def _worker_etag(worker: Worker) -> str:
    return str(worker.version)


def _task_etag(task: Task) -> str:
    return task.etag


RESOURCES = (
    workspace_routes,
    activity_routes,
    task_channel_routes,
    task_queue_routes,
    workflow_routes,
    worker_routes,
    task_routes,
    reservation_routes,
    event_routes,
)


def register_taskrouter_routes(router: Router, engine: TaskRouter) -> None:
    """Register a handler for every emulated TaskRouter v1 operation on ``router``."""
    api = Api(router.spec, engine)
    for routes in RESOURCES:
        router.add_all(routes(api))
