"""Crash trials: SIGKILL the serving process at every protocol step, with work in flight.

The rig of ``tests/e2e/test_crash_recovery.py`` runs ``flex-bridge serve`` as a real
subprocess; started as ``tests.support.crashing_bridge step:n`` it kills itself (SIGKILL)
the n-th time an intent reaches journal state ``step``. Those tests kill one accept at each
step; this suite scales that up: six seeded trials, each with eight intents in flight at
once, covering every step (recorded, announced, applied) for both kinds of intent the bridge drives:

- **accept** trials: eight tasks arrive together; the policy accepts them (assignment callback,
  then Sync announce and REST accept). Callbacks that reach the dead process are adopted at
  the restart (the journal never saw them) or resumed by recovery (it did).
- **complete** trials: the eight accepted tasks of the previous trial are completed together
  through the ``/flex`` API, as a plugin would, answered at once (``?wait=0``). After the
  restart the plugin sends each request again (it may have seen a connection error): a
  request for a change in flight joins it, one for a change already made is answered with it.

After each restart everything settles, and then: exactly one REST change per intent (one
accept per reservation, one complete per reservation, never sent again), the Sync item
announced before that change and settled after it with TaskRouter's status, every item write
valid against the schema, and nothing unsettled in the journal.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable
from typing import Any

import aiohttp

from flex_bridge.domain.intents import Intent
from tests.e2e.test_crash_recovery import (
    POINTS,
    Rig,
    assert_one_accept,
    eventually,
    opened,
    validate_items,
)
from tests.support.bridge import item_writes, reservation_updates, settled_item

TRIALS_SEED = 11
TASKS = 8  # intents in flight in each trial
PAIRS = 3  # an accept trial then a complete trial, three times: six trials
WORKERS = tuple(f"Agent {i + 1}" for i in range(TASKS + 2))
TARGET = {"accept": "accepted", "complete": "completed"}
FORM_STATUS = {"accept": "accepted", "complete": "completed"}


def plan() -> list[tuple[str, str, int]]:
    """(kind, step, n): each step once per kind, in a seeded order, n among the eight."""
    rng = random.Random(TRIALS_SEED)
    accept_points = rng.sample(POINTS, len(POINTS))
    complete_points = rng.sample(POINTS, len(POINTS))
    trials = []
    for accept_point, complete_point in zip(accept_points, complete_points, strict=True):
        trials.append(("accept", accept_point, rng.randint(1, TASKS)))
        trials.append(("complete", complete_point, rng.randint(1, TASKS)))
    return trials


async def plugin_complete(
    rig: Rig, token: str, task_sid: str, reservation_sid: str, wait: float
) -> tuple[int, Any]:
    url = f"{rig.bridge.url}/flex/reservations/{reservation_sid}/complete?wait={wait}"
    async with rig.admin.session.post(
        url, json={"task_sid": task_sid}, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        return response.status, await response.json()


async def settle(rig: Rig, batch: dict[str, str], target: str, where: str) -> None:
    """Every reservation of the batch at ``target`` in TaskRouter and on its settled item,
    and nothing unsettled in the journal."""
    seen: dict[str, Any] = {}

    async def converged() -> bool:
        statuses = {}
        for task_sid, reservation_sid in batch.items():
            fetched = await rig.ws.tasks(task_sid).reservations(reservation_sid).fetch_async()
            statuses[reservation_sid] = fetched.reservation_status
        async with opened(rig.journal) as journal:  # WAL: a reader beside the bridge
            unsettled = [(i.intent_id, i.op, i.state) for i in await journal.unsettled()]
        items = {sid: await settled_item(rig.admin, sid) for sid in batch.values()}
        seen.update(statuses=statuses, unsettled=unsettled)
        return (
            not unsettled
            and all(s == target for s in statuses.values())
            and all(item and item["reservation_status"] == target for item in items.values())
        )

    await eventually(converged, lambda: f"{where} to settle; last seen {seen}", rig.bridge)


def check_trial(
    kind: str, batch: dict[str, str], entries: list[dict[str, Any]], intents: list[Intent]
) -> None:
    """Exactly one REST change per intent, announced before and settled after it."""
    for reservation_sid in batch.values():
        mine = [i for i in intents if i.reservation_sid == reservation_sid and i.op == kind]
        assert len(mine) == 1, f"{reservation_sid}: {len(mine)} {kind} intents"
        [intent] = mine
        assert (intent.state, intent.outcome) == ("settled", "applied"), intent
        assert intent.source == ("policy" if kind == "accept" else "plugin"), intent
        # ``attempts`` counts sends begun (journaled before each one); killed between that
        # and the request, an intent begins again after a fetch. What went out is in the log.
        assert intent.attempts >= 1, intent
        assert intent.reservation_status == TARGET[kind], intent
        if kind == "accept":
            change = assert_one_accept(entries, reservation_sid)
        else:
            posts = reservation_updates(entries, reservation_sid)
            changes = [p for p in posts if p["form"].get("ReservationStatus") == "completed"]
            assert len(changes) == 1 and changes[0]["applied"], changes
            [change] = changes
            accepts = [p for p in posts if p["form"].get("ReservationStatus") == "accepted"]
            assert len(posts) == 2 and len(accepts) == 1, posts  # the accept, the complete
        writes = item_writes(entries, reservation_sid)
        validate_items(writes)
        own = [w for w in writes if w["data"]["intent_id"] == intent.intent_id]
        phases = [w["data"]["phase"] for w in own]
        # Killed between a Sync write and the journal step that records it, an intent writes
        # the same item again after the restart (pending again before the change, applied
        # again after it); never pending after the change, never applied before it.
        pending = [w for w in own if w["data"]["phase"] == "pending"]
        applied = [w for w in own if w["data"]["phase"] == "applied"]
        assert pending and applied and len(pending) + len(applied) == len(own), phases
        assert pending[-1]["seq"] < change["seq"] < applied[0]["seq"], (reservation_sid, phases)
        assert own[-1]["data"]["reservation_status"] == TARGET[kind]
        assert writes[-1] is own[-1], "a later write moved the item on"


async def test_crash_trials_settle_with_one_rest_change_per_intent(
    start_rig: Callable[..., Rig],
) -> None:
    rig = start_rig(WORKERS)
    bridge, admin = rig.bridge, rig.admin
    token = await admin.token(None, ["supervisor"])
    trials = plan()
    assert {(kind, point) for kind, point, _ in trials} == {
        (kind, point) for kind in TARGET for point in POINTS
    }
    batch: dict[str, str] = {}  # TaskSid -> ReservationSid of the trial's tasks
    killed: list[str] = []
    missed = 0
    for number, (kind, point, n) in enumerate(trials, 1):
        where = f"trial {number} ({kind}, killed at {point}:{n}) of {trials}"
        bridge.start(crash_at=f"{point}:{n}")
        await bridge.ready(admin.session)
        if kind == "accept":
            tasks = await asyncio.gather(*(rig.create_task() for _ in range(TASKS)))
            batch = {}
            for task in tasks:
                [reservation] = await rig.reservations(task.sid)
                batch[task.sid] = reservation.sid
        else:
            sent = await asyncio.gather(
                *(plugin_complete(rig, token, t, r, wait=0) for t, r in batch.items()),
                return_exceptions=True,
            )
            for answer in sent:  # journaled (202), or cut off by the kill
                if isinstance(answer, BaseException):
                    assert isinstance(answer, aiohttp.ClientError | ValueError), answer
                else:
                    assert answer[0] == 202, answer
        assert await bridge.exited() == -signal.SIGKILL, f"{where}\n{bridge.output()}"
        async with opened(rig.journal) as journal:
            killed += [f"{i.op}@{i.state}" for i in await journal.unsettled()]
            if kind == "accept":  # callbacks that found the process dead: never journaled
                for reservation_sid in batch.values():
                    callback = await rig.assignment_attempt(reservation_sid)
                    if callback["status"] != 200:
                        known = await journal.latest_for_reservation(reservation_sid)
                        missed += known is None

        bridge.start()
        await bridge.ready(admin.session)
        if kind == "complete":
            # The plugin tries again: it joins the change in flight, or gets the one made.
            for task_sid, reservation_sid in batch.items():
                status, body = await plugin_complete(rig, token, task_sid, reservation_sid, 10)
                assert status == 200, f"{where}: {status} {body}"
                assert body["intent"]["reservation_status"] == "completed", body
        await settle(rig, batch, TARGET[kind], where)
        assert await bridge.stop() == 0, f"{where}\n{bridge.output()}"

        entries = await admin.log("rest")
        async with opened(rig.journal) as journal:
            assert await journal.unsettled() == [], where
            intents = await journal.recent(10_000)
        check_trial(kind, batch, entries, intents)

    print(
        f"\ncrash trials: {len(trials)} SIGKILLs at {[f'{k}:{p}:{n}' for k, p, n in trials]}, "
        f"{len(trials) * TASKS} intents in flight, {len(killed)} left unsettled by the kills "
        f"({', '.join(sorted(set(killed)))}), {missed} callbacks lost to the dead process "
        f"(adopted at the restart); all settled, one REST change each"
    )
