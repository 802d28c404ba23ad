"""Chaos: three bridges on one PostgreSQL journal, a steady stream of tasks, a seeded tenth of
the callbacks lost at the proxy, and one instance (in turn) SIGKILLed and restarted every few
seconds. Once the disruption stops, the bridges must converge on TaskRouter's truth: no offer
lost, none accepted twice, every channel item showing its reservation's status, every intent
settled.

Everything random is drawn from ``SEED``. The figures of the run are printed (``-s`` shows
them). The waits are bounds; what is asserted comes from the emulator's REST log and state and
from the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException

from flex_bridge.adapters.sync_channel import map_name
from tests.multi.conftest import ACCEPT_ALL, Rig, StartRig
from tests.support.bridge import reservation_updates

pytestmark = pytest.mark.slow

SEED = 20261202
LOSS = 0.10  # share of the callbacks (assignments and events) the proxy drops
TASKS = 48
PACE = 0.35  # seconds between two new tasks: about 17 s of traffic
KILL_EVERY = 3.0  # mean seconds between two kills (a restart takes a second or two more)
TALK = 0.5  # seconds between two rounds of "workers complete their accepted tasks"
WORKERS = tuple(f"Agent{i:02d}" for i in range(12))
# Every reservation change is held a while by TaskRouter, so that kills land on accepts in
# flight (the driver dies mid-call; its intent is finished by whichever instance recovers it).
HOLD = {"product": "taskrouter", "method": "POST", "path": "/Reservations/", "latency_ms": 300}
HOLD_JITTER_MS = 300
RESERVATION_TIMEOUT = 30  # a lost offer nobody adopts times out and is offered again
RECONCILE = 2.0  # [reconcile] interval of ACCEPT_ALL
LEASE = 15.0  # an intent's lease: how long a dead driver's work waits for a takeover
CONVERGENCE_BOUND = 3 * RECONCILE + LEASE
DRIVING = (
    "SELECT count(*) AS n FROM intents i JOIN leases l ON l.name = i.intent_id "
    "WHERE i.state <> 'settled' AND l.owner = $1 AND l.expires_at > extract(epoch FROM now())"
)
ADOPTED = "adopted a pending reservation whose callback was missed"
ACCEPTED = frozenset({"accepted", "wrapping", "completed"})  # accepted at some point


@dataclass
class Figures:
    tasks: list[str] = field(default_factory=list)
    kills: list[str] = field(default_factory=list)
    driving: int = 0  # intents the instances were driving when they were killed
    completed: set[str] = field(default_factory=set)


async def complete_assigned(rig: Rig, figures: Figures) -> None:
    """What the workers do: complete the tasks they were assigned."""
    for task in await rig.ws.tasks.list_async(assignment_status="assigned"):
        try:
            await rig.ws.tasks(task.sid).update_async(assignment_status="completed", reason="done")
        except TwilioRestException as exc:  # changed under us: next round
            if exc.status != 400:
                raise
        else:
            figures.completed.add(task.sid)


async def until(stop: asyncio.Event, every: float, step: Callable[[], Awaitable[None]]) -> None:
    while not stop.is_set():
        await step()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def truth(rig: Rig, task_sids: list[str]) -> dict[str, Any]:
    """Every reservation of the tasks, fetched from the emulator, by sid."""
    found: dict[str, Any] = {}
    for sid in task_sids:
        for reservation in await rig.reservations(sid):
            found[reservation.sid] = reservation
    return found


async def channel_items(rig: Rig) -> dict[str, dict[str, Any]]:
    """Every Sync item of every worker's map, by key (the reservation sid)."""
    service = rig.client.sync.v1.services(rig.state.sync_service_sid)
    items: dict[str, dict[str, Any]] = {}
    for worker in rig.state.workers:
        try:
            listed = await service.sync_maps(map_name(worker["sid"])).sync_map_items.list_async()
        except TwilioRestException as exc:
            if exc.status != 404:  # no map: the bridge never wrote for this worker
                raise
            continue
        for item in listed:
            items[item.key] = item.data
    return items


async def differences(rig: Rig, figures: Figures) -> list[str]:
    """What still keeps the run from having converged (empty once it has)."""
    problems = [f"task {t} not completed" for t in figures.tasks if t not in figures.completed]
    reservations = await truth(rig, figures.tasks)
    for key, data in (await channel_items(rig)).items():
        reservation = reservations.get(key)
        if reservation is None:
            problems.append(f"item {key} of no reservation of the run")
        elif data.get("reservation_status") != reservation.reservation_status:
            problems.append(
                f"item {key} shows {data.get('reservation_status')!r}, "
                f"TaskRouter {reservation.reservation_status!r}"
            )
    unsettled = await rig.sql("SELECT intent_id, state FROM intents WHERE state <> 'settled'")
    problems += [f"intent {row['intent_id']} {row['state']}" for row in unsettled]
    # An event taken from the inbox by an instance killed before applying it waits for its
    # inbox lease (60 s, longer than the run) before another instance applies it: such entries
    # may remain (the sweep makes the channel follow TaskRouter meanwhile); no other.
    pending = await rig.sql("SELECT key, lease_owner, lease_until FROM inbox WHERE done_at IS NULL")
    problems += [
        f"inbox entry {row['key']} not applied ({row['lease_owner']}, {row['lease_until']})"
        for row in pending
        if row["lease_until"] is None or row["lease_owner"] not in figures.kills
    ]
    return problems


async def test_lost_callbacks_and_killed_instances_lose_nothing_double_nothing_and_converge(
    start_rig: StartRig,
) -> None:
    rig = await start_rig(ACCEPT_ALL, workers=WORKERS, reservation_timeout=RESERVATION_TIMEOUT)
    chance = random.Random(SEED)
    figures = Figures()
    await rig.admin.faults([{**HOLD, "jitter_ms": HOLD_JITTER_MS}], seed=SEED)
    rig.proxy.lose(LOSS, SEED)
    created = asyncio.Event()
    calm = asyncio.Event()

    async def create() -> None:
        for _ in range(TASKS):
            figures.tasks.append((await rig.create_task()).sid)
            await asyncio.sleep(PACE)
        created.set()

    async def kill_in_turn() -> None:
        turn = chance.randrange(len(rig.instances.all))
        while True:
            try:
                await asyncio.wait_for(created.wait(), KILL_EVERY * (0.5 + chance.random()))
                return
            except TimeoutError:
                pass
            victim = rig.instances[turn % len(rig.instances.all)]
            [row] = await rig.sql(DRIVING, victim.name)
            victim.kill()
            figures.driving += row["n"]
            figures.kills.append(victim.name)
            victim.start()
            await victim.ready(rig.session)
            turn += 1

    workers = asyncio.create_task(until(calm, TALK, lambda: complete_assigned(rig, figures)))
    started = time.monotonic()
    await asyncio.gather(create(), kill_in_turn())
    rig.proxy.lose(0.0)
    calm_at = time.monotonic()
    disruption = calm_at - started

    # Convergence, within a bound: the workers go on completing what they are given.
    problems: list[str] = []
    checks = 0
    while time.monotonic() - calm_at < CONVERGENCE_BOUND:
        problems = await differences(rig, figures)
        checks += 1
        if not problems:
            break
        await asyncio.sleep(0.5)
    converged_in = time.monotonic() - calm_at
    calm.set()
    await workers
    assert not problems, (
        f"not converged {CONVERGENCE_BOUND:g} s after the disruption: "
        f"{len(problems)} problem(s), first {problems[:10]}\n{rig.output()}"
    )

    # 0 lost, 0 doubled: per task, one reservation accepted, by exactly one applied accept.
    entries = await rig.admin.log("rest")
    reservations = await truth(rig, figures.tasks)
    accepts: dict[str, int] = {}
    for sid in reservations:
        accepts[sid] = sum(
            1
            for u in reservation_updates(entries, sid)
            if u.get("applied") and (u.get("form") or {}).get("ReservationStatus") == "accepted"
        )
    doubled = {sid: n for sid, n in accepts.items() if n > 1}
    assert not doubled, f"reservations accepted more than once: {doubled}"
    statuses: Counter[str] = Counter()
    for task_sid in figures.tasks:
        mine = [r for r in reservations.values() if r.task_sid == task_sid]
        statuses.update(r.reservation_status for r in mine)
        taken = [r for r in mine if r.reservation_status in ACCEPTED]
        assert len(taken) == 1, (task_sid, [(r.sid, r.reservation_status) for r in mine])
        assert accepts[taken[0].sid] == 1, (task_sid, taken[0].sid, "accepted, not by the bridge")
        others = {r.reservation_status for r in mine} - ACCEPTED
        assert others <= {"timeout"}, (task_sid, [(r.sid, r.reservation_status) for r in mine])

    # The figures of the run.
    dropped = Counter(
        (path.rsplit("/", 1)[-1], form.get("EventType", "")) for path, _, form in rig.proxy.dropped
    )
    dropped_offers = {
        form["ReservationSid"]
        for path, _, form in rig.proxy.dropped
        if path.endswith("/assignment") and "ReservationSid" in form
    }
    hows = Counter(how for _, how, _ in rig.proxy.dropped)
    items = await channel_items(rig)
    shown = Counter(data.get("reservation_status") for data in items.values())
    waiting = await rig.sql("SELECT key FROM inbox WHERE done_at IS NULL")
    workdir = rig.instances[0].workdir
    adoptions = sum(
        log.read_text(errors="replace").count(ADOPTED) for log in workdir.glob("bridge-*.log")
    )
    print(
        f"\nchaos (seed {SEED}): {len(figures.tasks)} tasks, {len(reservations)} reservations "
        f"{dict(statuses)}, {len(figures.kills)} kills {figures.kills} "
        f"({figures.driving} intents in flight on the victims), "
        f"{len(rig.proxy.dropped)} callbacks dropped {dict(dropped)} "
        f"({len(dropped_offers)} offers; {dict(hows)}), {sum(accepts.values())} applied accepts, "
        f"{adoptions} adoptions (sweep or start-up), "
        f"{sum(len(reservation_updates(entries, sid)) for sid in reservations)} reservation POSTs, "
        f"disruption {disruption:.1f} s, "
        f"converged {converged_in:.1f} s after it ({checks} checks), "
        f"{len(waiting)} inbox entries of killed instances awaiting their lease, "
        f"{len(items)} items, showing {dict(shown)}"
    )
    assert sum(accepts.values()) == len(figures.tasks)
