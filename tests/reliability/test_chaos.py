"""The chaos run: about 500 reservations through the emulator while it misbehaves.

The bridge accepts every reservation over REST (announce on Sync, accept, settle). Sixty
seeded workers take the tasks; a task is created whenever a worker is free (at most sixty in
flight), and once its reservation is accepted the "agent" completes it: four times in five
through the bridge's ``/flex`` API (a ``complete`` intent), once in five directly over REST
(so only TaskRouter's ``reservation.completed`` event tells the bridge). Meanwhile the
emulator injects, from a fixed fault seed:

- on TaskRouter reservation requests: 429s (with ``Retry-After``), 500s and 503s, responses
  lost after the change was applied (the connection dropped, or a 504), and a few latency
  spikes longer than the bridge's HTTP timeout (the change lands after the bridge gave up);
- on every TaskRouter request: latency jitter;
- on Sync: 429s, 500s, 503s, lost responses, jitter and a few latency spikes;
- in the middle of the run, a Sync outage (every Sync request 503) that lasts until forty
  reservations have been accepted without Sync, then ends.

At the end, once the bridge is quiet:

- zero lost intents: every reservation the bridge heard of was accepted exactly once, or its
  intent settled failed for a reason TaskRouter confirms; every ``complete`` applied;
- zero double accepts: at most one applied accept per reservation in the emulator's log;
- every channel item shows TaskRouter's final status for its reservation, settled;
- every intent settled (nothing unsettled in the journal);
- every Sync item write the bridge sent validates against ``sync/schema/item.v1.json``.

Retry waits are off in tests (``retry.set_testing``): each ``Retry-After`` is parsed but not
slept, so the run is quick; the waits themselves are tested in ``tests/adapters``. Nothing
here asserts a duration: every wait is a bounded poll, and the fault seed makes the injected
faults the same for the same order of requests.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from flex_bridge.adapters.sync_channel import map_name
from flex_bridge.domain.intents import Intent
from flex_bridge.emulator.core import Emulator
from tests.e2e.env import Env
from tests.support.bridge import ITEM_SCHEMA, RunningBridge
from tests.support.emulator import RunningEmulator

TASKS = 500
WORKERS = 60
FAULT_SEED = 20_261_129
OUTAGE_AFTER = 170  # tasks created before Sync goes down
OUTAGE_ACCEPTS = 40  # reservations accepted while Sync is down before it comes back
CLIENT_COMPLETES_EVERY = 5  # every 5th task is completed over REST, not through the bridge
BOUND = 150.0  # generous bound of every wait; nothing asserts a duration
POLICY = {
    "assignment": {"rules": [{"name": "all", "op": "accept"}]},
    "retry": {"max_attempts": 10},
    "recovery": {"interval": 1.0},
    "sync": {"mode": "degrade", "announce_timeout": 1.0},
}
HTTP_TIMEOUT = 2.0  # the bridge's; the TaskRouter latency spikes are longer
RESERVATION_PATH = re.compile(r"/Reservations/(WR[0-9a-f]{32})$")
ITEM_PATH = re.compile(r"/Maps/flex-bridge\.worker\.(WK[0-9a-f]{32})/Items(?:/(WR[0-9a-f]{32}))?$")


def base_rules(spikes: bool) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {
            "product": "taskrouter",
            "path": "/Reservations/",
            "error_rates": {"429": 0.04, "500": 0.03, "503": 0.03},
            "retry_after": 1,
            "lose_after_commit": 0.04,
            "lose_mode": "drop",
        },
        {
            "product": "taskrouter",
            "method": "POST",
            "path": "/Reservations/",
            "lose_after_commit": 0.04,
            "lose_mode": "504",
        },
        {"product": "taskrouter", "jitter_ms": 25},
        {
            "product": "sync",
            "error_rates": {"429": 0.03, "500": 0.02, "503": 0.02},
            "retry_after": 1,
            "lose_after_commit": 0.02,
            "jitter_ms": 25,
        },
    ]
    if spikes:
        rules += [
            # Longer than the bridge's HTTP timeout: it gives up, the change lands later.
            {
                "product": "taskrouter",
                "method": "POST",
                "path": "/Reservations/",
                "latency_ms": 2500,
                "count": 4,
            },
            # Longer than the degrade announce budget: the accept goes ahead meanwhile.
            {"product": "sync", "method": "POST", "path": "/Items", "latency_ms": 1500, "count": 4},
        ]
    return rules


SYNC_OUTAGE = {"product": "sync", "error_rates": {"503": 1.0}}


@dataclass
class Phase:
    name: str
    first_seq: int
    faults: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    env: Env
    phases: list[Phase] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # task SIDs
    done: set[str] = field(default_factory=set)
    fallback_accepts: list[str] = field(default_factory=list)
    completes_retried: Counter[str] = field(default_factory=Counter)  # answer -> times
    statuses: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    agents: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def emulator(self) -> RunningEmulator:
        return self.env.emulator

    @property
    def bridge(self) -> RunningBridge:
        return self.env.bridge

    def emu(self, fn: Callable[[Emulator], Any]) -> Any:
        return self.emulator.call(fn)

    def journal(self, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        return self.bridge.call(lambda svc: fn(svc.journal), timeout=30)

    def latest_intent(self, reservation_sid: str) -> Intent | None:
        latest: Intent | None = self.journal(lambda j: j.latest_for_reservation(reservation_sid))
        return latest

    async def set_faults(self, name: str, rules: list[dict[str, Any]], seed: int) -> None:
        self._close_phase()
        seq = self.emu(lambda e: len(e.log.entries()) and e.log.entries()[-1]["seq"])
        self.phases.append(Phase(name, int(seq)))
        await self.env.admin.faults(rules, seed=seed)

    def _close_phase(self) -> None:
        if self.phases:
            self.phases[-1].faults = self.emu(lambda e: e.faults.describe())


def reservation_statuses(emu: Emulator, workspace_sid: str) -> dict[str, tuple[str, str, str]]:
    """ReservationSid -> (TaskSid, WorkerSid, status), read in the emulator's own thread."""
    ws = emu.taskrouter.workspaces[workspace_sid]
    return {r.sid: (r.task_sid, r.worker_sid, r.status) for r in ws.reservations.values()}


async def watch(run: Run, stop: asyncio.Event) -> None:
    """Keep ``run.statuses`` fresh (one in-process read every 50 ms for every waiter)."""
    workspace = run.env.state.workspace_sid
    while not stop.is_set():
        run.statuses = run.emu(lambda e: reservation_statuses(e, workspace))
        run.changed.set()
        run.changed = asyncio.Event()
        await asyncio.sleep(0.05)


async def until(run: Run, predicate: Callable[[], Any], what: str) -> Any:
    async def loop() -> Any:
        while True:
            value = predicate()
            if value:
                return value
            await run.changed.wait()

    try:
        return await asyncio.wait_for(loop(), BOUND)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


# ------------------------------------------------------------------------------- agents
async def work_one(run: Run, slots: asyncio.Semaphore, index: int, token: str) -> None:
    """Create a task when a worker is free; once it is accepted, complete it."""
    env = run.env
    async with slots:
        task = await env.ws.tasks.create_async(
            attributes=json.dumps({"type": "support", "n": index})
        )
        run.created.append(task.sid)
        reservation = await accepted(run, task.sid, token)
        if index % CLIENT_COMPLETES_EVERY == 0:
            await env.ws.tasks(task.sid).update_async(assignment_status="completed", reason="done")
        else:
            await complete_through_bridge(run, task.sid, reservation, token)
        await until(run, lambda: status_of(run, reservation) == "completed", f"{task.sid} done")
        run.done.add(task.sid)


def status_of(run: Run, reservation_sid: str) -> str | None:
    found = run.statuses.get(reservation_sid)
    return found[2] if found else None


def reservations_of(run: Run, task_sid: str) -> list[tuple[str, str]]:
    return [(sid, s[2]) for sid, s in run.statuses.items() if s[0] == task_sid]


async def accepted(run: Run, task_sid: str, token: str) -> str:
    """The task's accepted reservation. Should the bridge give up on one (or never hear of
    it), the agent accepts it in the plugin, as sync/README.md allows; the checks at the end
    then show whose intent that was."""
    waited = 0
    while True:
        found = [sid for sid, status in reservations_of(run, task_sid) if status == "accepted"]
        if found:
            return found[0]
        pending = [sid for sid, status in reservations_of(run, task_sid) if status == "pending"]
        if pending and waited > 100:  # about 5 s of statuses without progress
            sid = pending[0]
            latest = run.latest_intent(sid)
            if latest is None or (latest.settled and latest.reservation_status == "pending"):
                run.fallback_accepts.append(sid)
                await run.env.plugin(sid, "accept", {"task_sid": task_sid}, token=token)
                waited = 0
        await asyncio.wait_for(run.changed.wait(), BOUND)
        waited += 1


async def complete_through_bridge(run: Run, task_sid: str, reservation: str, token: str) -> None:
    """``POST /flex/reservations/<sid>/complete`` until TaskRouter has it completed. The
    bridge answers 409 ``intent_in_flight`` while the accept is still settling (Sync down),
    503 when TaskRouter stayed unavailable past the retries: the agent tries again."""
    for _ in range(400):
        status, body = await run.env.plugin(
            reservation, "complete", {"task_sid": task_sid}, token=token, wait=10
        )
        if status == 200 or status_of(run, reservation) == "completed":
            return
        assert status in (202, 409, 503), (status, body)
        if status == 409:
            code = body["error"]["code"]
            assert code == "intent_in_flight", body
        answer = f"{status} {body['error']['code']}" if status != 202 else "202"
        run.completes_retried[f"{answer} ({run.phases[-1].name})"] += 1
        await asyncio.sleep(0.1)
    raise AssertionError(f"{reservation} was never completed")


# ------------------------------------------------------------------------------- the test
async def test_chaos_run_loses_nothing_and_accepts_nothing_twice(
    start_bridge: Callable[..., tuple[RunningBridge, RunningEmulator]],
) -> None:
    bridge, emulator = start_bridge(
        policy=POLICY,
        seed={"workers": tuple(f"Agent {i}" for i in range(WORKERS))},
        emulator_config={"fault_seed": FAULT_SEED},
        http_timeout=HTTP_TIMEOUT,
    )
    env = Env(bridge, emulator)
    run = Run(env)
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(run, stop))
    try:
        status, _, _ = await env.request("GET", "/healthz")
        assert status == 200
        token = await env.admin.token(None, ["supervisor"])
        await drive(run, token)
        await quiet(run)
        check(run)
    finally:
        for agent in run.agents:  # left over only when the run failed
            agent.cancel()
        await asyncio.gather(*run.agents, return_exceptions=True)
        stop.set()
        await watcher
        await env.close()


async def drive(run: Run, token: str) -> None:
    slots = asyncio.Semaphore(WORKERS)
    await run.set_faults("faults", base_rules(spikes=True), FAULT_SEED)
    agents = run.agents

    def spawn(upto: int) -> None:
        while len(agents) < upto:
            agents.append(asyncio.create_task(work_one(run, slots, len(agents), token)))

    spawn(OUTAGE_AFTER)
    await until(run, lambda: len(run.created) >= OUTAGE_AFTER, "the tasks before the outage")
    before = accepts_applied(run)
    await run.set_faults("sync outage", [SYNC_OUTAGE, *base_rules(spikes=False)], FAULT_SEED + 1)
    spawn(TASKS)
    await until(
        run,
        lambda: accepts_applied(run) - before >= OUTAGE_ACCEPTS,
        f"{OUTAGE_ACCEPTS} more accepts while Sync is down",
    )
    await run.set_faults("faults after the outage", base_rules(spikes=True), FAULT_SEED + 2)
    done, _ = await asyncio.wait(agents, timeout=BOUND)
    for finished in done:
        finished.result()  # an agent's assertion, if any
    assert len(run.done) == TASKS, f"{len(run.done)} of {TASKS} tasks done"


def accepts_applied(run: Run) -> int:
    return sum(1 for _, _, status in run.statuses.values() if status in ("accepted", "completed"))


async def quiet(run: Run) -> None:
    """Faults stay on: the bridge must settle everything through them."""

    async def settled(svc: Any) -> bool:
        await svc.coordinator.idle()
        await svc.inbox.idle()
        return not await svc.journal.unsettled()

    async def converged() -> bool:
        if not run.bridge.call(settled, timeout=60):
            return False
        items = run.emu(channel_items)
        return all(
            (item := items.get(sid)) is not None
            and item["phase"] != "pending"
            and item["reservation_status"] == status
            for sid, (_, _, status) in run.statuses.items()
        )

    for _ in range(int(BOUND / 0.5)):
        if await converged():
            break
        await asyncio.sleep(0.5)
    run._close_phase()


def channel_items(emu: Emulator) -> dict[str, dict[str, Any]]:
    """ReservationSid -> the data of its item, as Sync holds it now."""
    out: dict[str, dict[str, Any]] = {}
    for service in emu.sync.services.values():
        for sync_map in service.maps.by_sid.values():
            name = sync_map.unique_name or ""
            if name.startswith("flex-bridge.worker."):
                for key, item in sync_map.items.items():
                    out[key] = {**item.data, "_map": name}
    return out


# ------------------------------------------------------------------------------ the checks
def check(run: Run) -> None:
    env = run.env
    statuses = run.statuses = run.emu(lambda e: reservation_statuses(e, env.state.workspace_sid))
    entries: list[dict[str, Any]] = run.emu(lambda e: e.log.entries())
    rest = [e for e in entries if e["kind"] == "rest"]
    callbacks = [e for e in entries if e["kind"] == "webhook" and e["webhook"] == "assignment"]
    intents: list[Intent] = run.journal(lambda j: j.recent(1_000_000))
    by_reservation: dict[str, list[Intent]] = defaultdict(list)
    for intent in sorted(intents, key=lambda i: i.intent_id):
        by_reservation[intent.reservation_sid].append(intent)

    # Every task done, every reservation accounted for.
    tasks = {task for task, _, _ in statuses.values()}
    assert tasks == set(run.created) and len(tasks) == TASKS
    final = Counter(status for _, _, status in statuses.values())
    assert set(final) <= {"completed", "timeout", "canceled"}, final

    # Zero double accepts; exactly one applied accept for every reservation that got work.
    accepts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in rest:
        found = RESERVATION_PATH.search(e["path"])
        form = e.get("form") or {}
        if (
            e["product"] == "taskrouter"
            and e["method"] == "POST"
            and found
            and form.get("ReservationStatus") == "accepted"
        ):
            accepts[found.group(1)].append(e)
    doubled = {
        sid: n for sid, posts in accepts.items() if (n := sum(p["applied"] for p in posts)) > 1
    }
    assert not doubled, f"double accepts: {doubled}"
    for sid, (_, _, status) in statuses.items():
        applied = [p for p in accepts.get(sid, []) if p["applied"]]
        if status == "completed":
            assert len(applied) == 1, f"{sid}: completed with {len(applied)} applied accepts"

    # Zero lost intents: every reservation the bridge heard of (its callback answered, or an
    # intent journaled) was accepted by the bridge's one policy intent, or that intent settled
    # failed for a reason TaskRouter confirms.
    answered = {c["params"]["ReservationSid"] for c in callbacks if c["status"] == 200}
    heard = answered | {i.reservation_sid for i in intents if i.source == "policy"}
    assert set(statuses) >= heard
    for sid in heard:
        policy = [i for i in by_reservation[sid] if i.source == "policy"]
        assert len(policy) == 1, f"{sid}: {len(policy)} policy intents"
        [intent] = policy
        assert intent.settled, intent
        status = statuses[sid][2]
        if intent.outcome == "applied":
            # TaskRouter's status when the bridge learnt the outcome: after a lost answer it
            # fetches, and the agent may have completed the task by then.
            assert intent.reservation_status in ("accepted", "wrapping", "completed"), intent
            assert len([p for p in accepts[sid] if p["applied"]]) == 1, sid
        else:
            assert intent.reservation_status in ("timeout", "canceled", "rescinded"), intent
            assert status == intent.reservation_status, (intent, status)
    completes = [i for i in intents if i.op == "complete" and i.source == "plugin"]
    assert all(i.settled for i in completes)

    # Every intent settled.
    unsettled = [i for i in intents if not i.settled]
    assert not unsettled, unsettled[:5]

    # Every channel item shows TaskRouter's final status, settled.
    items = run.emu(channel_items)
    for sid, (_, worker, status) in statuses.items():
        item = items.get(sid)
        assert item is not None, f"{sid}: no channel item"
        assert item["_map"] == map_name(worker)
        assert item["phase"] != "pending", item
        assert item["reservation_status"] == status, (item, status)

    # Every Sync item write the bridge sent (whatever became of it) validates.
    validator = jsonschema.Draft202012Validator(json.loads(ITEM_SCHEMA.read_text()))
    writes = 0
    for e in rest:
        found = ITEM_PATH.search(e["path"])
        form = e.get("form") or {}
        if e["product"] != "sync" or e["method"] != "POST" or not found or "Data" not in form:
            continue
        data = json.loads(form["Data"])
        errors = sorted(validator.iter_errors(data), key=str)
        assert not errors, (data, errors[0].message)
        assert data["worker_sid"] == found.group(1), data
        assert data["reservation_sid"] == (found.group(2) or form.get("Key")), data
        writes += 1

    # The run did meet every kind of trouble it claims to.
    faults = Counter(f"{e['product']} {e['fault']}" for e in rest if e.get("fault"))
    for kind in ("error_429", "error_500", "error_503", "lose_drop", "lose_504"):
        assert faults[f"taskrouter {kind}"], (kind, faults)
    for kind in ("error_429", "error_500", "error_503", "lose_drop"):
        assert faults[f"sync {kind}"], (kind, faults)
    assert any(i.late_announce for i in intents), "no change was made while Sync was down"

    summary(run, rest, intents, len(statuses), writes)


def summary(
    run: Run, rest: list[dict[str, Any]], intents: list[Intent], n: int, writes: int
) -> None:
    faults: Counter[str] = Counter()
    outage_seq = next(p.first_seq for p in run.phases if p.name == "sync outage")
    after_seq = next(p.first_seq for p in run.phases if p.name == "faults after the outage")
    for e in rest:
        if e.get("fault"):
            product = "sync" if e["product"] == "sync" else "taskrouter"
            kind = e["fault"].removeprefix("error_")
            if product == "sync" and kind == "503" and outage_seq < e["seq"] <= after_seq:
                kind = "outage 503"
            faults[f"{product} {kind}"] += 1
    spikes = sum(
        r["hits"] for p in run.phases for r in p.faults.get("rules", []) if r["latency_ms"] >= 1000
    )
    jittered = sum(
        r["hits"] for p in run.phases for r in p.faults.get("rules", []) if r["jitter_ms"]
    )
    retries = run.bridge.call(retry_counts)
    late = sum(1 for i in intents if i.late_announce)
    kinds = ", ".join(f"{k}={v}" for k, v in sorted(faults.items()))
    print(
        f"\nchaos: {n} reservations ({TASKS} tasks, {WORKERS} workers), "
        f"{len(intents)} intents, {writes} Sync item writes validated; faults injected: "
        f"{kinds}, latency spikes={spikes}, jittered requests={jittered}; "
        f"bridge retries: {retries}; announced late (Sync down)={late}; "
        f"agent fallback accepts={len(run.fallback_accepts)}, complete retries="
        f"{dict(run.completes_retried)}; lost intents=0, double accepts=0"
    )


async def retry_counts(svc: Any) -> str:
    counts: Counter[str] = Counter()
    for metric in svc.metrics.retries.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["system"]] += int(sample.value)
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"
