"""A ready-made workspace, so the emulator is useful the moment it starts.

Seeding goes through the same engine calls as the REST API, so a seeded workspace is the
same as one built with the official client.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from flex_bridge.emulator.core import Emulator

DEFAULT_WORKERS = ("Alice", "Bob", "Carol")


@dataclass(frozen=True, slots=True)
class SeedOptions:
    workers: tuple[str, ...] = DEFAULT_WORKERS
    assignment_url: str | None = None
    fallback_assignment_url: str | None = None
    event_url: str | None = None
    reservation_timeout: int = 120
    workspace_name: str = "flex-bridge"


@dataclass(frozen=True, slots=True)
class SeedState:
    account_sid: str
    auth_token: str
    workspace_sid: str
    workflow_sid: str
    task_queue_sid: str
    sync_service_sid: str
    activities: dict[str, str]
    workers: list[dict[str, str]] = field(default_factory=list)
    base_url: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> SeedState:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)


def seed(emu: Emulator, options: SeedOptions | None = None) -> SeedState:
    options = options or SeedOptions()
    tr = emu.taskrouter
    ws = tr.create_workspace(options.workspace_name, event_callback_url=options.event_url)
    activities = {a.friendly_name: a.sid for a in ws.activities.values()}
    queue = tr.create_task_queue(
        ws,
        {
            "FriendlyName": "Support",
            "TargetWorkers": "skills HAS 'support'",
        },
    )
    configuration = {"task_routing": {"filters": [], "default_filter": {"queue": queue.sid}}}
    form: dict[str, Any] = {
        "FriendlyName": "Default",
        "Configuration": json.dumps(configuration),
        "TaskReservationTimeout": options.reservation_timeout,
    }
    if options.assignment_url:
        form["AssignmentCallbackUrl"] = options.assignment_url
    if options.fallback_assignment_url:
        form["FallbackAssignmentCallbackUrl"] = options.fallback_assignment_url
    workflow = tr.create_workflow(ws, form)
    workers = []
    for name in options.workers:
        attributes = {
            "skills": ["support"],
            "languages": ["en"],
            "contact_uri": f"client:{name.lower()}",
        }
        worker = tr.create_worker(
            ws,
            {
                "FriendlyName": name,
                "ActivitySid": activities["Available"],
                "Attributes": json.dumps(attributes),
            },
        )
        workers.append({"sid": worker.sid, "friendly_name": worker.friendly_name})
    service = emu.sync.create_service("flex-bridge", emu.clock.now())
    return SeedState(
        account_sid=emu.config.account_sid,
        auth_token=emu.config.auth_token,
        workspace_sid=ws.sid,
        workflow_sid=workflow.sid,
        task_queue_sid=queue.sid,
        sync_service_sid=service.sid,
        activities=activities,
        workers=workers,
    )
