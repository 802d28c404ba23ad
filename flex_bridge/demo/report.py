"""The demo's closing summary, computed from TaskRouter's and Sync's own answers."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from twilio.rest import Client

from flex_bridge.adapters.sync_channel import map_name
from flex_bridge.adapters.twilio_errors import call
from flex_bridge.demo.agents import Agent
from flex_bridge.emulator.core import Emulator
from flex_bridge.emulator.seed import SeedState
from flex_bridge.errors import NotFoundError

CONVERGENCE_WAIT = 10.0


@dataclass
class Report:
    tasks: int = 0
    completed: int = 0
    enriched: int = 0
    policy_accepts: int = 0
    plugin_accepts: int = 0
    timeouts: int = 0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    mismatches: list[str] = field(default_factory=list)
    double_accepts: list[str] = field(default_factory=list)
    agent_errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.double_accepts

    def render(self) -> str:
        def ms(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.0f} ms"

        rows = [
            ("tasks", str(self.tasks)),
            ("completed", str(self.completed)),
            ("tasks enriched", str(self.enriched)),
            ("accepts by policy (REST, Sync-first)", str(self.policy_accepts)),
            ("accepts by plugin (/flex API)", str(self.plugin_accepts)),
            ("reservation timeouts", str(self.timeouts)),
            ("accept latency p50", ms(self.latency_p50_ms)),
            ("accept latency p99", ms(self.latency_p99_ms)),
            ("Sync vs TaskRouter mismatches", str(len(self.mismatches))),
            ("double accepts", str(len(self.double_accepts))),
            ("run time", f"{self.elapsed:.1f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = ["", "summary", "-" * (width + 12)]
        lines += [f"{name:<{width}}  {value:>8}" for name, value in rows]
        lines.append("-" * (width + 12))
        for problem in (self.mismatches + self.double_accepts)[:10]:
            lines.append(f"  ! {problem}")
        if self.agent_errors:
            lines.append(
                f"  ({len(self.agent_errors)} agent action(s) refused; first: "
                f"{self.agent_errors[0][:160]})"
            )
        lines.append("result: " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _enriched(attributes: str | None) -> bool:
    """The task's final attributes carry the CRM's answer."""
    try:
        parsed = json.loads(attributes or "{}")
    except ValueError:
        return False
    return isinstance(parsed, dict) and "crm" in parsed


async def _mismatches(client: Client, state: SeedState, reservations: list[Any]) -> list[str]:
    service = client.sync.v1.services(state.sync_service_sid)
    items: dict[str, dict[str, Any]] = {}
    for worker in state.workers:
        items_of = service.sync_maps(map_name(worker["sid"])).sync_map_items
        try:
            listed = await call(items_of.list_async)
        except NotFoundError:  # the map was never created: no item for this worker
            continue
        for item in listed:
            items[item.key] = dict(item.data or {})
    problems = []
    for res in reservations:
        item = items.get(res.sid)
        if item is None:
            if res.reservation_status != "pending":
                problems.append(f"{res.sid}: TaskRouter says {res.reservation_status}, no item")
            continue
        if item.get("phase") == "pending":
            problems.append(f"{res.sid}: item still pending ({item.get('op')})")
        elif item.get("reservation_status") != res.reservation_status:
            problems.append(
                f"{res.sid}: item says {item.get('reservation_status')}, "
                f"TaskRouter says {res.reservation_status}"
            )
    return problems


async def build_report(
    *,
    emu: Emulator,
    state: SeedState,
    client: Client,
    bridge_apps: list[Any],
    task_sids: list[str],
    agents: list[Agent],
    elapsed: float,
) -> Report:
    report = Report(tasks=len(task_sids))
    ws = client.taskrouter.v1.workspaces(state.workspace_sid)
    every = [app.config["services"] for app in bridge_apps]
    services = every[0]  # they share one journal
    # Let the last settles and events land, then compare.
    deadline = time.monotonic() + CONVERGENCE_WAIT
    reservations: list[Any] = []
    while True:
        for one in every:
            await one.coordinator.idle()
        reservations = []
        for sid in task_sids:
            reservations.extend(await ws.tasks(sid).reservations.list_async())
        report.mismatches = await _mismatches(client, state, reservations)
        if not report.mismatches or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)

    for sid in task_sids:
        task = await ws.tasks(sid).fetch_async()
        report.completed += task.assignment_status == "completed"
        report.enriched += _enriched(task.attributes)
    intents = await services.journal.recent(100_000)
    for intent in intents:
        if intent.op == "accept" and intent.outcome == "applied":
            if intent.source == "policy":
                report.policy_accepts += 1
            elif intent.source == "plugin":
                report.plugin_accepts += 1

    accepts: Counter[str] = Counter()
    for entry in emu.log.entries(kind="rest"):
        form = entry.get("form") or {}
        path = str(entry.get("path", ""))
        if (
            entry.get("applied")
            and entry.get("method") == "POST"
            and "/Reservations/" in path
            and (form.get("ReservationStatus") == "accepted" or "Instruction" in form)
        ):
            accepts[path.rsplit("/", 1)[-1]] += 1
    report.double_accepts = [f"{sid}: accepted {n} times" for sid, n in accepts.items() if n > 1]

    created: dict[str, float] = {}
    latencies = []
    for workspace in emu.taskrouter.workspaces.values():
        for event in workspace.events:
            sid = event.data.get("ReservationSid", "")
            if event.event_type == "reservation.created":
                created[sid] = event.date
            elif event.event_type == "reservation.accepted" and sid in created:
                latencies.append((event.date - created[sid]) * 1000)
            elif event.event_type == "reservation.timeout":
                report.timeouts += 1
    report.latency_p50_ms = _percentile(latencies, 50)
    report.latency_p99_ms = _percentile(latencies, 99)
    report.agent_errors = [e for agent in agents for e in agent.stats.errors]
    report.elapsed = elapsed
    return report
