"""Crash and recovery (rule 5): SIGKILL the serving process at each journal step, restart it.

The bridge runs as a real ``flex-bridge serve`` subprocess on a fixed port, against the
emulator served in this process. Started as ``tests.support.crashing_bridge step[:n]``, it
kills itself the n-th time an intent reaches journal state ``step`` (a coordinator observer).
The restarted process (same port, same journal, no crash hook) must finish every intent: the
reservation accepted by exactly one REST accept, the Sync item announced before it and settled
after it, and the journal settled.

A reservation whose assignment callback never reached the bridge (it was dead) is unknown to
it, exactly as with Twilio: with no fallback URL it stays pending until it times out, and the
task is offered again. The several-trials test drives that path with the emulator clock.

The last two tests cover intents answered in the callback's reply (``via = "instruction"``):
recovery leaves them to the callback that is still answering, and finishes them over REST
once the callback is surely gone without having sent them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from flex_bridge.adapters.journal import Journal, SqliteJournal, is_postgres_url, open_journal
from flex_bridge.domain.intents import Intent
from tests.support.bridge import (
    ITEM_SCHEMA,
    applied_changes,
    item_writes,
    reservation_updates,
    seed_for,
    settled_item,
    started,
    wait_until,
)
from tests.support.emulator import Admin, RunningEmulator, twilio_client
from tests.support.net import free_port

POINTS = ("recorded", "announced", "applied")
REPO = str(Path(__file__).resolve().parents[2])  # for ``-m tests.support.crashing_bridge``
BOUND = 30.0  # generous upper bound of every wait; nothing here asserts a duration
RESERVATION_TIMEOUT = 120  # the seeded workflow's, on the emulator clock
POLICY = """\
[recovery]
interval = 0.5

[[assignment.rules]]
name = "all"
op = "accept"
"""
# The same rule answered in the assignment callback's reply; sweeps as often as allowed,
# and room for a slow announce inside the callback's 3.5 s reply budget.
INSTRUCTION_POLICY = """\
[recovery]
interval = 0.1

[sync]
announce_timeout = 3.0

[[assignment.rules]]
name = "all"
op = "accept"
via = "instruction"
"""
# Seed 6 plans ("applied", 1), ("announced", 2), ("recorded", 1): every crash point, and a
# count above one. The test checks that the plan still covers every point.
TRIALS_SEED = 6
TRIALS = 3
TASKS_PER_TRIAL = 3
# 9 accepted tasks, plus at most 2 workers per trial left in the timeout activity.
TRIAL_WORKERS = tuple(f"Agent {i + 1}" for i in range(TRIALS * TASKS_PER_TRIAL + 2 * TRIALS + 1))


class BridgeProcess:
    """``python -m flex_bridge serve`` on one port and one journal, started and stopped at will."""

    def __init__(self, port: int, env: dict[str, str], workdir: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = env
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"bridge-{self.runs}.log"

    def output(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no output)"
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.log_path.name} (last {len(tail)} lines) ---\n" + "\n".join(tail)

    def start(self, crash_at: str | None = None) -> None:
        assert self.proc is None or self.proc.poll() is not None, "the bridge is still running"
        self.runs += 1
        env = dict(self.env)
        command = [sys.executable, "-m", "flex_bridge", "serve"]
        if crash_at:
            # The same bridge, with a coordinator observer that SIGKILLs it at that step.
            command = [sys.executable, "-m", "tests.support.crashing_bridge", crash_at]
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                command, env=env, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def running(self) -> subprocess.Popen[bytes]:
        assert self.proc is not None
        return self.proc

    async def ready(self, session: aiohttp.ClientSession) -> None:
        async def up() -> bool:
            code = self.running.poll()
            if code is not None:
                raise AssertionError(f"the bridge exited ({code}) at start-up\n{self.output()}")
            return await started(session, self.url)

        await eventually(up, "the bridge answering /healthz", self)

    async def exited(self) -> int:
        async def gone() -> bool:
            return self.running.poll() is not None

        await eventually(gone, "the bridge process to exit", self)
        return self.running.returncode

    async def stop(self) -> int:
        """SIGTERM: a graceful stop, so the journal is closed cleanly."""
        self.running.send_signal(signal.SIGTERM)
        return await self.exited()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)


async def eventually(
    predicate: Callable[[], Awaitable[Any]],
    what: str | Callable[[], str],
    bridge: BridgeProcess,
    *,
    timeout: float = BOUND,
    interval: float = 0.05,
) -> Any:
    try:
        return await wait_until(predicate, timeout=timeout, interval=interval)
    except TimeoutError:
        what = what() if callable(what) else what
        raise AssertionError(f"timed out waiting for {what}\n{bridge.output()}") from None


class Rig:
    def __init__(
        self, bridge: BridgeProcess, emulator: RunningEmulator, journal: str, admin: Admin
    ) -> None:
        self.bridge = bridge
        self.emulator = emulator
        self.journal = journal
        self.admin = admin
        self.client = twilio_client(emulator)
        assert emulator.state is not None
        self.ws = self.client.taskrouter.v1.workspaces(emulator.state.workspace_sid)

    async def create_task(self) -> Any:
        return await self.ws.tasks.create_async(attributes=json.dumps({"type": "support"}))

    async def reservations(self, task_sid: str) -> list[Any]:
        return list(await self.ws.tasks(task_sid).reservations.list_async())

    async def assignment_attempt(self, reservation_sid: str) -> dict[str, Any]:
        """The (first) assignment callback attempt for the reservation, once it has finished."""

        async def attempt() -> dict[str, Any] | None:
            for entry in await self.admin.log("webhook"):
                params = entry.get("params") or {}
                if entry["webhook"] == "assignment" and params["ReservationSid"] == reservation_sid:
                    return entry
            return None

        found: dict[str, Any] = await eventually(
            attempt, f"the assignment callback for {reservation_sid}", self.bridge
        )
        return found


@pytest.fixture
async def start_rig(
    start_emulator: Callable[..., RunningEmulator],
    new_journal: Callable[[], str],
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Rig]]:
    """The emulator (calling back a bridge port chosen up front) and the bridge's process,
    on the test's journal backend (``journal_backend``: a SQLite file or a PostgreSQL
    schema), which its restarts keep."""
    rigs: list[Rig] = []
    async with aiohttp.ClientSession() as session:

        def start(
            workers: tuple[str, ...] = ("Alice", "Bob", "Carol"), policy: str = POLICY
        ) -> Rig:
            port = free_port()
            emulator = start_emulator(options=seed_for(f"http://127.0.0.1:{port}", workers=workers))
            state = emulator.state
            assert state is not None
            policy_path = tmp_path / "policy.toml"
            policy_path.write_text(policy)
            journal = new_journal()
            env = {
                k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "FLEX_BRIDGE_"))
            }
            env.update(
                TWILIO_ACCOUNT_SID=state.account_sid,
                TWILIO_AUTH_TOKEN=state.auth_token,
                FLEX_BRIDGE_WORKSPACE_SID=state.workspace_sid,
                FLEX_BRIDGE_SYNC_SERVICE_SID=state.sync_service_sid,
                FLEX_BRIDGE_TWILIO_BASE_URL=emulator.url,
                FLEX_BRIDGE_JOURNAL=journal,
                FLEX_BRIDGE_POLICY=str(policy_path),
                FLEX_BRIDGE_PUBLIC_URL=f"http://127.0.0.1:{port}",  # as the callbacks are signed
            )
            bridge = BridgeProcess(port, env, tmp_path)
            rig = Rig(bridge, emulator, journal, Admin(emulator, session))
            rigs.append(rig)
            return rig

        try:
            yield start
        finally:
            for rig in rigs:
                rig.bridge.kill()
                await rig.client.http_client.close()


@contextlib.asynccontextmanager
async def opened(setting: str) -> AsyncIterator[Journal]:
    """The rig's journal, opened beside the bridge (running or not): a SQLite file read-only
    (no lock; WAL lets a reader in beside the writer), or the PostgreSQL schema."""
    journal: Journal
    if is_postgres_url(setting):
        journal = open_journal(setting)
    else:
        journal = SqliteJournal(Path(setting), read_only=True)
    await journal.open()
    try:
        yield journal
    finally:
        await journal.close()


def validate_items(writes: list[dict[str, Any]]) -> None:
    schema = json.loads(ITEM_SCHEMA.read_text())
    for write in writes:
        jsonschema.validate(write["data"], schema)


def assert_one_accept(entries: list[dict[str, Any]], reservation_sid: str) -> dict[str, Any]:
    """Exactly one REST change for the reservation: the accept, applied. Returns it."""
    updates = reservation_updates(entries, reservation_sid)
    applied = [u for u in updates if u.get("applied")]
    assert len(applied) == 1, f"{reservation_sid}: {len(applied)} applied REST changes"
    assert len(updates) == 1, f"{reservation_sid}: a change was sent again: {updates}"
    assert applied[0]["form"]["ReservationStatus"] == "accepted"
    return applied[0]


# ------------------------------------------------------------------------ one crash point
@pytest.mark.parametrize("point", POINTS)
async def test_killed_at_a_step_the_restart_settles_with_one_accept(
    start_rig: Callable[..., Rig], point: str
) -> None:
    rig = start_rig()
    bridge, admin = rig.bridge, rig.admin
    bridge.start(crash_at=point)
    await bridge.ready(admin.session)

    task = await rig.create_task()
    [reservation] = await rig.reservations(task.sid)
    assert await bridge.exited() == -signal.SIGKILL, bridge.output()

    # Where it died, as seen from outside.
    callback = await rig.assignment_attempt(reservation.sid)
    entries = await admin.log("rest")
    before_writes = [w["data"]["phase"] for w in item_writes(entries, reservation.sid)]
    before_updates = reservation_updates(entries, reservation.sid)
    fetched = await rig.ws.tasks(task.sid).reservations(reservation.sid).fetch_async()
    if point == "recorded":  # journaled, then killed before the reply
        assert callback["status"] is None and callback["error"], callback
        assert (before_writes, before_updates) == ([], [])
        assert fetched.reservation_status == "pending"
    elif point == "announced":  # replied {}, announced on Sync, killed before the REST call
        assert callback["status"] == 200, callback
        assert (before_writes, before_updates) == (["pending"], [])
        assert fetched.reservation_status == "pending"
    else:  # replied {}, announced, accepted over REST, killed before the settle
        assert callback["status"] == 200, callback
        assert before_writes == ["pending"]
        assert len(before_updates) == 1 and before_updates[0]["applied"]
        assert fetched.reservation_status == "accepted"

    bridge.start()
    await bridge.ready(admin.session)
    item: dict[str, Any] = await eventually(
        lambda: settled_item(admin, reservation.sid), "the Sync item to settle", bridge
    )
    assert await bridge.stop() == 0, bridge.output()

    assert item["phase"] == "applied" and item["reservation_status"] == "accepted", item
    assert item["op"] == "accept" and item["source"] == "policy" and item["error"] is None
    fetched = await rig.ws.tasks(task.sid).reservations(reservation.sid).fetch_async()
    assert fetched.reservation_status == "accepted"

    entries = await admin.log("rest")
    accept = assert_one_accept(entries, reservation.sid)
    writes = item_writes(entries, reservation.sid)
    validate_items(writes)
    assert [w["data"]["phase"] for w in writes] == ["pending", "applied"]
    assert writes[0]["seq"] < accept["seq"] < writes[1]["seq"]  # announce, REST, settle
    assert {w["data"]["intent_id"] for w in writes} == {item["intent_id"]}

    async with opened(rig.journal) as journal:
        intent = await journal.latest_for_reservation(reservation.sid)
        assert await journal.unsettled() == []
    assert intent is not None
    assert intent.intent_id == item["intent_id"]
    assert (intent.state, intent.outcome, intent.op) == ("settled", "applied", "accept")
    assert intent.reservation_status == "accepted"
    # The first attempt is journaled with ``announced``. Killed there, before the send, the
    # restart counts one more: it fetched first (pending) and sent once (one accept above).
    assert intent.attempts == (2 if point == "announced" else 1)


# --------------------------------------------------------------------- several trials
async def _settle_trial(rig: Rig, task_sids: list[str], missed: set[str]) -> None:
    """Wait until every task has an accepted, settled reservation and the journal is settled.

    A reservation whose callback failed and that the journal does not know is one the bridge
    never heard of: advance the emulator clock past its timeout so the task is offered again.
    """
    bridge, admin = rig.bridge, rig.admin

    seen: dict[str, Any] = {}

    async def converged() -> bool:
        status: dict[str, list[str]] = {}
        for task_sid in task_sids:
            for r in await rig.reservations(task_sid):
                status.setdefault(r.reservation_status, []).append(r.sid)
        accepted, timed_out = status.get("accepted", []), status.get("timeout", [])
        pending = status.get("pending", [])
        # Reading the journal of the running bridge: WAL lets a reader in beside the writer.
        async with opened(rig.journal) as journal:
            unsettled = await journal.unsettled()
            unknown = [r for r in pending if await journal.latest_for_reservation(r) is None]
        seen.update(reservations=status, unsettled=[(i.intent_id, i.state) for i in unsettled])
        stuck = [r for r in unknown if r in missed]
        if stuck and not unsettled:
            await admin.advance(RESERVATION_TIMEOUT + 1)
            return False
        if unsettled or pending or len(accepted) != len(task_sids):
            return False
        for sid in accepted:
            item = await settled_item(admin, sid)
            if item is None or item["reservation_status"] != "accepted":
                return False
        for sid in timed_out:  # rule 6: TaskRouter's event settles the item
            item = await settled_item(admin, sid)
            if item is None or item["reservation_status"] != "timeout":
                return False
        return True

    await eventually(
        converged,
        lambda: f"every intent of the trial to settle; last seen {seen}",
        bridge,
        interval=0.2,
    )


async def test_several_crashes_with_tasks_in_flight_all_settle_with_one_accept_each(
    start_rig: Callable[..., Rig],
) -> None:
    rig = start_rig(TRIAL_WORKERS)
    bridge, admin = rig.bridge, rig.admin
    rng = random.Random(TRIALS_SEED)
    plan = [(rng.choice(POINTS), rng.randint(1, TASKS_PER_TRIAL)) for _ in range(TRIALS)]
    assert {point for point, _ in plan} == set(POINTS), plan
    all_tasks: list[str] = []
    for trial, (point, n) in enumerate(plan):
        where = f"trial {trial} of {plan}"
        bridge.start(crash_at=f"{point}:{n}")
        await bridge.ready(admin.session)
        tasks = await asyncio.gather(*(rig.create_task() for _ in range(TASKS_PER_TRIAL)))
        task_sids = [t.sid for t in tasks]
        all_tasks += task_sids
        assert await bridge.exited() == -signal.SIGKILL, f"{where}\n{bridge.output()}"

        # Every callback of the trial has been tried before the restart, so a reservation
        # the journal does not know after it will never be known.
        missed = set()
        for task_sid in task_sids:
            [reservation] = await rig.reservations(task_sid)
            callback = await rig.assignment_attempt(reservation.sid)
            if callback["status"] != 200:
                missed.add(reservation.sid)

        bridge.start()
        await bridge.ready(admin.session)
        await _settle_trial(rig, task_sids, missed)
        assert await bridge.stop() == 0, f"{where}\n{bridge.output()}"

    entries = await admin.log("rest")
    async with opened(rig.journal) as journal:
        assert await journal.unsettled() == []
        latest: dict[str, Intent | None] = {}
        by_task = {t: await rig.reservations(t) for t in all_tasks}
        for reservations in by_task.values():
            for r in reservations:
                latest[r.sid] = await journal.latest_for_reservation(r.sid)

    for task_sid, reservations in by_task.items():
        statuses = sorted(r.reservation_status for r in reservations)
        assert statuses.count("accepted") == 1, f"{task_sid}: {statuses}"
        assert set(statuses) <= {"accepted", "timeout"}, f"{task_sid}: {statuses}"
        for r in reservations:
            writes = item_writes(entries, r.sid)
            validate_items(writes)
            intent = latest[r.sid]
            assert intent is not None and intent.settled, f"{r.sid}: {intent}"
            if r.reservation_status == "accepted":
                accept = assert_one_accept(entries, r.sid)
                # An intent killed between its Sync write and the journal's "announced" is
                # announced again at recovery (the same pending item); never after the REST.
                phases = [w["data"]["phase"] for w in writes]
                assert phases[-1] == "applied", f"{r.sid}: {phases}"
                assert set(phases[:-1]) == {"pending"}, f"{r.sid}: {phases}"
                assert writes[-2]["seq"] < accept["seq"] < writes[-1]["seq"], r.sid
                assert {w["data"]["intent_id"] for w in writes} == {intent.intent_id}
                assert writes[-1]["data"]["reservation_status"] == "accepted"
                assert (intent.op, intent.outcome, intent.source) == ("accept", "applied", "policy")
            else:  # offered while the bridge was down: never changed, settled by the event
                assert writes[-1]["data"]["phase"] == "failed"
                assert writes[-1]["data"]["reservation_status"] == "timeout"
                assert intent.outcome == "failed", f"{r.sid}: {intent}"
                updates = reservation_updates(entries, r.sid)
                if intent.source == "policy":
                    # The restarted bridge adopted the offer just as _settle_trial moved the
                    # clock past its timeout (a slow machine widens that window): the accept
                    # failed, and nothing was changed.
                    assert applied_changes(entries, r.sid) == [], f"{r.sid}: {updates}"
                else:
                    assert intent.source == "timeout", f"{r.sid}: {intent}"
                    assert updates == [], r.sid


# ------------------------------------------------------------------ instructions in the reply
async def test_recovery_leaves_an_instruction_to_the_callback_still_answering(
    start_rig: Callable[..., Rig],
) -> None:
    """A sweep while the callback is announcing must not also send the op over REST."""
    rig = start_rig(policy=INSTRUCTION_POLICY)
    bridge, admin = rig.bridge, rig.admin
    bridge.start()
    await bridge.ready(admin.session)
    # The announce takes a second (its first item write is slow): sweeps run meanwhile.
    await admin.faults(
        [{"product": "sync", "method": "POST", "path": "/Items", "latency_ms": 1000, "count": 1}]
    )

    task = await rig.create_task()
    [reservation] = await rig.reservations(task.sid)
    callback = await rig.assignment_attempt(reservation.sid)
    assert callback["status"] == 200, callback
    item: dict[str, Any] = await eventually(
        lambda: settled_item(admin, reservation.sid), "the Sync item to settle", bridge
    )
    assert await bridge.stop() == 0, bridge.output()

    assert item["phase"] == "applied" and item["reservation_status"] == "accepted", item
    entries = await admin.log()
    assert reservation_updates(entries, reservation.sid) == []  # accepted by the reply alone
    notes = [e["message"] for e in entries if e["kind"] == "note"]
    assert not [n for n in notes if "ignored" in n], notes
    writes = item_writes(entries, reservation.sid)
    validate_items(writes)
    assert [w["data"]["phase"] for w in writes] == ["pending", "applied"]
    assert writes[0]["seq"] < callback["seq"]  # announced before the instruction went out
    async with opened(rig.journal) as journal:
        intent = await journal.latest_for_reservation(reservation.sid)
    assert intent is not None
    assert (intent.via, intent.state, intent.outcome, intent.attempts) == (
        "instruction",
        "settled",
        "applied",
        0,
    )


async def test_killed_before_replying_with_an_instruction_the_restart_applies_it_over_rest(
    start_rig: Callable[..., Rig],
) -> None:
    """Announced, then killed before the reply carried the instruction: after the grace
    during which a live callback would own it, recovery sends the op over REST, once."""
    rig = start_rig(policy=INSTRUCTION_POLICY)
    bridge, admin = rig.bridge, rig.admin
    bridge.start(crash_at="announced")
    await bridge.ready(admin.session)

    task = await rig.create_task()
    [reservation] = await rig.reservations(task.sid)
    assert await bridge.exited() == -signal.SIGKILL, bridge.output()
    callback = await rig.assignment_attempt(reservation.sid)
    assert callback["status"] is None and callback["error"], callback
    fetched = await rig.ws.tasks(task.sid).reservations(reservation.sid).fetch_async()
    assert fetched.reservation_status == "pending"

    bridge.start()
    await bridge.ready(admin.session)
    item: dict[str, Any] = await eventually(
        lambda: settled_item(admin, reservation.sid), "the Sync item to settle", bridge
    )
    assert await bridge.stop() == 0, bridge.output()

    assert item["phase"] == "applied" and item["reservation_status"] == "accepted", item
    entries = await admin.log("rest")
    accept = assert_one_accept(entries, reservation.sid)
    writes = item_writes(entries, reservation.sid)
    validate_items(writes)
    assert [w["data"]["phase"] for w in writes] == ["pending", "applied"]
    assert writes[0]["seq"] < accept["seq"] < writes[1]["seq"]
    async with opened(rig.journal) as journal:
        intent = await journal.latest_for_reservation(reservation.sid)
        assert await journal.unsettled() == []
    assert intent is not None
    assert (intent.state, intent.outcome, intent.attempts) == ("settled", "applied", 1)
