"""``python -m bench.run`` (``make bench``): flex-bridge against the usual approach.

Runs the emulator, the bridge and the baseline as subprocesses on this machine, drives them
from this process over real sockets, prints a table and writes ``bench/results/latest.json``.
The method and the latest figures are in docs/performance.md.

Exit status: 0 when the run finished, whatever the timings; 1 when the bridge lost an intent or
accepted a reservation twice (a correctness failure); 2 when a scenario could not be run at all
(the bench itself failed, so the bridge's correctness was not established).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from twilio.base.exceptions import TwilioRestException

from bench.cpu import CpuScenario
from bench.cpu import table_lines as cpu_table_lines
from bench.emulator_cpu import EmulatorCpuScenario
from bench.harness import (
    ACCEPT_ALL,
    JSON,
    ROOT,
    TASK_ATTRIBUTES,
    BenchError,
    Callbacks,
    Emulator,
    Offer,
    Outcome,
    Server,
    Workspace,
    baseline,
    bridge,
    free_port,
    journal_states,
    latency_rules,
    loadavg,
    metric,
    outcome,
    percentile,
    rss_bytes,
    synthetic_offers,
    wait_http,
    wait_settled,
    wait_settled_in,
)
from flex_bridge.adapters.journal import Journal, SqliteJournal, open_journal, postgres_name
from flex_bridge.adapters.sync_channel import map_name
from flex_bridge.demo.balancer import Balancer
from flex_bridge.demo.postgres import embedded_postgres
from flex_bridge.domain.intents import Intent, channel_item, new_intent_id
from flex_bridge.errors import ConfigError

RESULTS = ROOT / "bench" / "results" / "latest.json"
DEFER_ALL = '[[assignment.rules]]\nname = "all"\nop = "defer"\n'
STRICT_ACCEPT_ALL = '[sync]\nmode = "strict"\n\n' + ACCEPT_ALL
SCENARIOS = (
    "ack",
    "accept_e2e",
    "rate_limited",
    "recovery",
    "cpu",
    "memory",
    "instances",
    "emulator",
)
STANDALONE = ("instances", "emulator")  # scenarios with processes of their own: no shared setup
# Scenarios that need no shared warm-up (a minute, most of it Sync's 20 map creations a
# second): memory uses synthetic workers; cpu warms each system on its own workers.
OWN_WARM_UP = ("instances", "memory", "cpu")
# The Bench method of a scenario, where it is not the scenario's name (Bench.emulator is the
# shared emulator).
METHODS = {"emulator": "emulator_scenario"}
REPLY_BUDGET = 3.5  # the bridge answers a callback within this; see flex_bridge.web.webhooks


@dataclass(frozen=True)
class Config:
    workers: int = 1000  # seeded workers: the pool every scenario draws its reservations from
    latency_ms: float = 50.0  # L, added by the emulator to every TaskRouter and Sync call
    ack_n: int = 1000
    ack_concurrency: int = 200
    ack_rounds: int = 3
    e2e_warmup: int = 40
    e2e_n: int = 300
    e2e_rate: float = 40.0  # callbacks/s, open loop: a moderate, steady load
    instances_n: int = 300  # tasks through two bridges on one PostgreSQL journal
    limit_rps: float = 50.0  # R, TaskRouter's rate limit in the rate-limited scenario
    burst: int = 1000
    burst_concurrency: int = 200
    recovery_k: int = 1000
    memory_n: int = 10_000
    memory_concurrency: int = 100
    cpu_warmup: int = 40
    cpu_n: int = 500  # measured callbacks per round, open loop at cpu_rate: bench/cpu.py
    cpu_rate: float = 50.0  # callbacks/s: a rate the bridge, the baseline and the Node peer sustain
    cpu_rounds: int = 2  # per system, in alternating order; the median counts
    profile_dir: str = ""  # --profile: py-spy and strace rounds of the bridge, written here
    settle_bound: float = 120.0  # seconds to wait for "all quiet" before counting the lost
    budget: float = 540.0  # the whole run; a scenario that would start past it is skipped

    @classmethod
    def quick(cls) -> Config:
        """A small run, for trying the bench out (not for the published figures)."""
        return cls(
            workers=200,
            ack_n=200,
            ack_concurrency=50,
            ack_rounds=1,
            e2e_warmup=10,
            e2e_n=50,
            instances_n=50,
            burst=200,
            burst_concurrency=50,
            recovery_k=200,
            memory_n=1000,
            cpu_warmup=10,
            cpu_n=100,
            cpu_rounds=1,
            settle_bound=60.0,
        )


def median_row(rows: Sequence[JSON]) -> JSON:
    """Per key, the median of the rounds' numbers (the sum for counts of failures)."""
    out: JSON = {}
    for key in rows[0]:
        values = [r.get(key) for r in rows]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if key in ("errors", "over_5s", "lost_intents", "double_accepts"):
            out[key] = sum(numbers)
        elif len(numbers) == len(values):
            out[key] = round(statistics.median(numbers), 2)
        else:
            out[key] = values[0]
    return out


def no_nan(value: Any) -> Any:
    """The results with NaN (a percentile of nothing) as null, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [no_nan(v) for v in value]
    return value


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 2)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        text = f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return text + unit


class Bench:
    def __init__(self, config: Config, workdir: Path, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.workdir = workdir
        self.session = session
        self.t0 = time.monotonic()
        self.emulator = Emulator(workdir, config.workers, session)
        self.ws: Workspace | None = None
        self.bridge: Server | None = None
        self.baseline: Server | None = None
        self.results: JSON = {}
        self.failures: list[str] = []  # the bridge's correctness failures
        self.errors: list[str] = []  # scenarios the bench could not run

    # ---------------------------------------------------------------------------- helpers
    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {message}", flush=True)

    @property
    def workspace(self) -> Workspace:
        assert self.ws is not None
        return self.ws

    def pool(self, n: int) -> list[str]:
        if n > len(self.workspace.worker_sids):
            raise BenchError(f"{n} reservations wanted but only {self.config.workers} workers")
        return self.workspace.worker_sids[:n]

    def systems(self) -> list[Server]:
        assert self.bridge is not None and self.baseline is not None
        return [self.bridge, self.baseline]

    def check_bridge(self, scenario: str, offers: Sequence[Offer], out: Outcome) -> JSON:
        sids = [o.reservation_sid for o in offers]
        lost, doubled = out.lost(sids), out.doubled(sids)
        if lost:
            self.failures.append(f"{scenario}: {len(lost)} lost intent(s), e.g. {lost[:3]}")
        if doubled:
            self.failures.append(f"{scenario}: {len(doubled)} double accept(s), e.g. {doubled[:3]}")
        return {"lost_intents": len(lost), "double_accepts": len(doubled)}

    async def settle(self, server: Server, offers: Sequence[Offer]) -> float | None:
        """When the system is done with ``offers``: for the bridge, every intent settled in
        its journal (at most ``settle_bound`` s); the baseline is done when it has answered."""
        if server.journal is None:
            return time.time()
        sids = [o.reservation_sid for o in offers]
        bound = self.bound()
        done = await wait_settled(server.journal, sids, bound=bound)
        if done is None:
            self.say(f"  {server.name}: not all settled after {bound:.0f} s")
        return done

    def bound(self) -> float:
        """How long to wait for "all quiet": ``settle_bound``, within the run's budget."""
        left = self.config.budget - (time.monotonic() - self.t0)
        return max(5.0, min(self.config.settle_bound, left))

    async def scenario(self, name: str, body: Callable[[], Awaitable[JSON]]) -> None:
        if time.monotonic() - self.t0 > self.config.budget - 30:
            self.errors.append(f"{name}: skipped, the run is past its time budget")
            self.results[name] = {"error": "skipped: past the time budget"}
            self.say(f"== {name}: skipped, the run is past its time budget")
            return
        self.say(f"== {name}")
        try:
            self.results[name] = await body()
        except Exception as exc:
            self.errors.append(f"{name}: {exc!r}")
            self.results[name] = {"error": repr(exc)}
            self.say(f"  {name} could not run: {exc!r}")
            traceback.print_exc()
            with contextlib.suppress(Exception):
                await self.emulator.clear_faults()
            with contextlib.suppress(Exception):
                await self.workspace.release_all()

    # ------------------------------------------------------------------------------ setup
    async def setup(self) -> None:
        self.say(f"starting the emulator ({self.config.workers} workers) in {self.workdir}")
        await self.emulator.start()
        self.ws = Workspace(self.emulator)
        await self.workspace.load_workers()
        self.bridge = bridge("bridge", self.workdir, self.emulator)
        self.baseline = baseline(self.workdir, self.emulator)
        for server in self.systems():
            await server.start(self.session)
            self.say(f"{server.name} up at {server.url} (pid {server.proc.pid})")

    async def teardown(self) -> None:
        for server in [self.bridge, self.baseline]:
            if server is not None:
                server.proc.stop()
        if self.ws is not None:
            await self.ws.close()
        self.emulator.proc.stop()

    async def warm_up(self) -> JSON:
        """Every pool worker's Sync map created and known to each process, the workflow
        fetched, connections and the bridge's pacing warmed: one-time costs kept out."""
        result: JSON = {}
        for server in self.systems():
            offers = await self.workspace.offer(self.pool(self.config.workers))
            run = await server.callbacks.send(offers, concurrency=50)
            await self.settle(server, offers)
            await self.workspace.release(offers)
            result[server.name] = run.summary()
            self.say(f"  {server.name}: {len(offers)} callbacks, no injected latency")
        return result

    # ---------------------------------------------------------------------------- scenarios
    async def ack(self) -> JSON:
        """``ack_rounds`` rounds, the two systems in alternating order; the medians count."""
        c = self.config
        rounds: dict[str, list[JSON]] = {"bridge": [], "baseline": []}
        for number in range(c.ack_rounds):
            order = self.systems() if number % 2 == 0 else self.systems()[::-1]
            for server in order:
                row = await self.ack_round(server)
                rounds[server.name].append(row)
                self.say(
                    f"  round {number + 1}, {server.name}: ack p50 {row['p50_ms']} ms, "
                    f"p99 {row['p99_ms']} ms, {row['rps']} callbacks/s, "
                    f"{row['accepted']}/{row['n']} accepted"
                )
        rows = {name: median_row(runs) for name, runs in rounds.items()}
        br, bl = rows["bridge"], rows["baseline"]
        ceiling = await self.ack_ceiling()
        return {
            "n": c.ack_n,
            "concurrency": c.ack_concurrency,
            "latency_ms": c.latency_ms,
            "bridge_p50_ms": br["p50_ms"],
            "bridge_p99_ms": br["p99_ms"],
            "baseline_p50_ms": bl["p50_ms"],
            "baseline_p99_ms": bl["p99_ms"],
            "p50_ratio_baseline_over_bridge": ratio(bl["p50_ms"], br["p50_ms"]),
            "p99_ratio_baseline_over_bridge": ratio(bl["p99_ms"], br["p99_ms"]),
            "bridge_rps": br["rps"],
            "baseline_rps": bl["rps"],
            "rps_ratio_bridge_over_baseline": ratio(br["rps"], bl["rps"]),
            "bridge_accepts_per_s": br.get("accepts_per_s"),
            "baseline_accepts_per_s": bl.get("accepts_per_s"),
            "target_bridge_p99_ms": 50,
            "target_met": br["p99_ms"] < 50,
            "rounds": c.ack_rounds,
            "bridge": br,
            "baseline": bl,
            "bridge_rounds": rounds["bridge"],
            "baseline_rounds": rounds["baseline"],
            "no_work_ceiling": ceiling,
            # Issue 12: acknowledged callbacks/s against the stack's own no-work ceiling.
            "acks_over_ceiling": ratio(br["rps"], ceiling.get("rps")),
            "target_acks_over_ceiling": 0.8,
        }

    async def ack_round(self, server: Server) -> JSON:
        c = self.config
        offers = await self.workspace.offer(self.pool(c.ack_n))
        seq = await self.emulator.mark()
        await self.emulator.faults(latency_rules(c.latency_ms))
        run = await server.callbacks.send(offers, concurrency=c.ack_concurrency)
        done = await self.settle(server, offers)
        out = outcome(await self.emulator.log(seq), [o.reservation_sid for o in offers])
        await self.emulator.clear_faults()
        await self.workspace.release(offers)
        row = run.summary()
        row["accepted"] = len(out.applied)
        if done is not None:
            row["all_done_s"] = round(done - run.started, 3)
            row["accepts_per_s"] = round(len(out.applied) / (done - run.started), 1)
        if server is self.bridge:
            row.update(self.check_bridge("ack", offers, out))
        return row

    async def ack_ceiling(self) -> JSON:
        """A bridge whose policy defers everything (signature check and reply, no journal,
        no REST) at the same concurrency: the most this stack answers on this machine."""
        c = self.config
        server = bridge("bridge-defer", self.workdir, self.emulator, policy=DEFER_ALL)
        await server.start(self.session)
        try:
            offers = synthetic_offers(c.ack_n, self.emulator.state, "c")
            run = await server.callbacks.send(offers, concurrency=c.ack_concurrency)
        finally:
            server.proc.stop()
        row: JSON = {"policy": "defer", "concurrency": c.ack_concurrency, **run.summary()}
        self.say(
            f"  bridge deferring everything at C={c.ack_concurrency}: p99 {row['p99_ms']} ms, "
            f"{row['rps']} callbacks/s (the ceiling of this stack here)"
        )
        return row

    async def accept_e2e(self) -> JSON:
        c = self.config
        floor = 2 * c.latency_ms
        rows: JSON = {}
        for server in self.systems():
            offers = await self.workspace.offer(self.pool(c.e2e_warmup + c.e2e_n))
            warm, measured = offers[: c.e2e_warmup], offers[c.e2e_warmup :]
            await self.emulator.faults(latency_rules(c.latency_ms))
            await server.callbacks.send(warm, rate=c.e2e_rate)
            await self.settle(server, warm)
            seq = await self.emulator.mark()
            run = await server.callbacks.send(measured, rate=c.e2e_rate)
            await self.settle(server, measured)
            out = outcome(await self.emulator.log(seq), [o.reservation_sid for o in measured])
            await self.emulator.clear_faults()
            await self.workspace.release(offers)
            accept = [
                (out.applied_at[s.reservation_sid] - s.sent_at) * 1000
                for s in run.sent
                if s.reservation_sid in out.applied_at
            ]
            settle = [
                (out.settled_at[s.reservation_sid] - s.sent_at) * 1000
                for s in run.sent
                if s.reservation_sid in out.settled_at
            ]
            row: JSON = {
                "n": len(measured),
                "accepted": len(accept),
                "settled": len(settle),
                "accept_p50_ms": round(percentile(accept, 50), 2),
                "accept_p99_ms": round(percentile(accept, 99), 2),
                "accept_max_ms": round(max(accept), 2) if accept else None,
                "accept_over_1_5x_floor": sum(1 for a in accept if a > 1.5 * floor),
                "settle_p50_ms": round(percentile(settle, 50), 2),
                "settle_p99_ms": round(percentile(settle, 99), 2),
                "ack_p50_ms": run.summary()["p50_ms"],
                "ack_p99_ms": run.summary()["p99_ms"],
            }
            row["accept_p50_ratio_to_floor"] = ratio(row["accept_p50_ms"], floor)
            row["settle_p50_ratio_to_its_floor"] = ratio(row["settle_p50_ms"], 3 * c.latency_ms)
            if server is self.bridge:
                row.update(self.check_bridge("accept_e2e", measured, out))
            rows[server.name] = row
            self.say(
                f"  {server.name}: accept p50 {row['accept_p50_ms']} ms "
                f"({row['accept_p50_ratio_to_floor']}x the floor), p99 {row['accept_p99_ms']} ms;"
                f" settle p50 {row['settle_p50_ms']} ms"
            )
        br, bl = rows["bridge"], rows["baseline"]
        return {
            "latency_ms": c.latency_ms,
            "rate_per_s": c.e2e_rate,
            "warmup": c.e2e_warmup,
            "floor_ms": floor,
            "p50_ms": br["accept_p50_ms"],
            "p99_ms": br["accept_p99_ms"],
            "p50_ratio_to_floor": br["accept_p50_ratio_to_floor"],
            "settle_p50_ms": br["settle_p50_ms"],
            "settle_p99_ms": br["settle_p99_ms"],
            "settle_floor_ms": 3 * c.latency_ms,
            "baseline_p50_ms": bl["accept_p50_ms"],
            "baseline_p99_ms": bl["accept_p99_ms"],
            "baseline_p50_ratio_to_floor": bl["accept_p50_ratio_to_floor"],
            "target_p50_ratio_to_floor": 1.15,
            "target_met": (br["accept_p50_ratio_to_floor"] or math.inf) <= 1.15,
            "bridge": br,
            "baseline": bl,
        }

    async def rate_limited(self) -> JSON:
        c = self.config
        rules = [
            *latency_rules(c.latency_ms),
            {"product": "taskrouter", "rate_limit_rps": c.limit_rps},
        ]
        rows: JSON = {}
        for server in self.systems():
            offers = await self.workspace.offer(self.pool(c.burst))
            sids = [o.reservation_sid for o in offers]
            seq = await self.emulator.mark()
            await self.emulator.faults(rules)
            run = await server.callbacks.send(offers, concurrency=c.burst_concurrency)
            done = await self.settle(server, offers)
            out = outcome(await self.emulator.log(seq), sids)
            await self.emulator.clear_faults()
            await self.workspace.release(offers)
            applied = sorted(out.applied_at.values())
            window = (applied[-1] - run.started) if applied else None
            useful = len(applied) / window if window else 0.0
            row: JSON = {
                "reservations": len(offers),
                "accepted": len(applied),
                "seconds_to_last_accept": round(window, 2) if window else None,
                "useful_accepts_per_s": round(useful, 1),
                "useful_fraction_of_limit": round(useful / c.limit_rps, 3),
                "taskrouter_429s": out.taskrouter_429,
                "sync_429s": out.sync_429,
                "lost_intents": len(out.lost(sids)),
                "double_accepts": len(out.doubled(sids)),
                "acks_over_5s": run.summary()["over_5s"],
                "callback_errors": run.summary()["errors"],
                "all_quiet": done is not None,
            }
            if server is self.bridge:
                self.check_bridge("rate_limited", offers, out)
            rows[server.name] = row
            self.say(
                f"  {server.name}: {row['accepted']}/{len(offers)} accepted in "
                f"{row['seconds_to_last_accept']} s = {row['useful_fraction_of_limit']} of R; "
                f"{row['taskrouter_429s']} 429s; lost {row['lost_intents']}, "
                f"doubled {row['double_accepts']}"
            )
        br, bl = rows["bridge"], rows["baseline"]
        # A client that spends the 1-second burst allowance, then exactly R/s, does this well:
        ideal = c.burst / max(1e-9, (c.burst - c.limit_rps) / c.limit_rps) / c.limit_rps
        return {
            "limit_rps": c.limit_rps,
            "latency_ms": c.latency_ms,
            "reservations": c.burst,
            "useful_fraction_of_limit": br["useful_fraction_of_limit"],
            "ideal_fraction_of_limit": round(ideal, 3),
            "taskrouter_429s": br["taskrouter_429s"],
            "lost_intents": br["lost_intents"],
            "double_accepts": br["double_accepts"],
            "baseline_useful_fraction_of_limit": bl["useful_fraction_of_limit"],
            "baseline_taskrouter_429s": bl["taskrouter_429s"],
            "baseline_lost_intents": bl["lost_intents"],
            "baseline_double_accepts": bl["double_accepts"],
            "target_fraction": 0.9,
            "target_met": br["useful_fraction_of_limit"] >= 0.9
            and br["lost_intents"] == 0
            and br["double_accepts"] == 0,
            "bridge": br,
            "baseline": bl,
        }

    async def recovery(self) -> JSON:
        c = self.config
        ws = self.workspace
        await ws.release_all()  # nothing pending but these: start-up adoption has no work
        offers = await ws.offer(self.pool(c.recovery_k))
        sids = [o.reservation_sid for o in offers]
        path = self.workdir / "bridge-recovery.db"
        await self.crashed_journal(path, offers)
        self.say(f"  {len(offers)} announced intents journaled; starting a bridge on them")
        seq = await self.emulator.mark()
        await self.emulator.faults(latency_rules(c.latency_ms))
        server = bridge("bridge-recovery", self.workdir, self.emulator, journal=path)
        # The bench's own bridge has another journal: its adoption sweep would accept these
        # reservations too (a double accept that is the bench's, not the bridge's). Paused.
        idle = [each.proc.popen for each in self.systems() if each.proc.popen is not None]
        for popen in idle:
            popen.send_signal(signal.SIGSTOP)
        try:
            server.proc.start()
            health = server.url + "/healthz"

            async def answering() -> float:
                await wait_http(self.session, health, server.proc)
                return time.time()

            ready = asyncio.create_task(answering())
            done = await wait_settled(path, sids, bound=self.bound(), interval=0.02)
            ready_at = await ready
        finally:
            server.proc.stop()
            for popen in idle:
                popen.send_signal(signal.SIGCONT)
        entries = await self.emulator.log(seq)
        out = outcome(entries, sids)
        await self.emulator.clear_faults()
        await ws.release(offers)
        checks = self.check_bridge("recovery", offers, out)
        seconds = round(done - server.proc.started_at, 2) if done is not None else None
        self.say(
            f"  {c.recovery_k} intents settled {seconds} s after the process started; "
            f"lost {checks['lost_intents']}, doubled {checks['double_accepts']}"
        )
        return {
            "intents": c.recovery_k,
            "seconds": seconds,
            "answering_after_s": round(ready_at - server.proc.started_at, 2),
            "latency_ms": c.latency_ms,
            "intents_per_s": round(c.recovery_k / seconds, 1) if seconds else None,
            "taskrouter_requests": sum(1 for e in entries if e.get("product") == "taskrouter"),
            **checks,
        }

    async def cpu(self) -> JSON:
        """CPU per accepted reservation: the bridge (and any more from ``BENCH_CPU_BRIDGES``),
        the baseline, the Node peer and the Python floor peer; the emulator's apart
        (bench/cpu.py)."""
        return await CpuScenario(self).run()

    async def emulator_scenario(self) -> JSON:
        """The ``emulator`` scenario: its CPU per REST request, before and after its REST front
        door (bench/emulator_cpu.py). Not ``emulator``: that is the shared emulator."""
        return await EmulatorCpuScenario(self).run()

    async def crashed_journal(self, path: Path, offers: Sequence[Offer]) -> None:
        """The journal as a crash after the announce leaves it: every intent ``announced``
        (its pending item is on the worker's map), no REST attempt made yet."""
        ws = self.workspace
        journal = SqliteJournal(path)
        await journal.open()
        now = time.time()
        gate = asyncio.Semaphore(32)

        async def announced(offer: Offer) -> None:
            intent = Intent(
                intent_id=new_intent_id(now),
                op="accept",
                reservation_sid=offer.reservation_sid,
                task_sid=offer.task_sid,
                worker_sid=offer.worker_sid,
                source="policy",
                params={},
                state="announced",
                deadline=now + 3600,
                created_at=now,
                updated_at=now,
            )
            await journal.submit(intent)
            name = map_name(offer.worker_sid)
            item = channel_item(intent, now)
            async with gate:
                items = ws.sync.sync_maps(name).sync_map_items
                try:
                    await items.create_async(key=offer.reservation_sid, data=item, item_ttl=86400)
                except TwilioRestException as exc:
                    if exc.status != 404:  # no map yet for this worker
                        raise
                    with contextlib.suppress(TwilioRestException):
                        await ws.sync.sync_maps.create_async(unique_name=name)
                    await items.create_async(key=offer.reservation_sid, data=item, item_ttl=86400)

        try:
            await asyncio.gather(*(announced(o) for o in offers))
        finally:
            await journal.close()

    async def memory(self) -> JSON:
        c = self.config
        await self.workspace.release_all()
        server = bridge(
            "bridge-memory",
            self.workdir,
            self.emulator,
            policy=STRICT_ACCEPT_ALL,
            extra_env={"FLEX_BRIDGE_HTTP_TIMEOUT": "900"},
        )
        await server.start(self.session)
        try:
            state = self.emulator.state
            warm = synthetic_offers(200, state, "a")
            await server.callbacks.send(warm, concurrency=50)
            await self.settle(server, warm)
            await asyncio.sleep(REPLY_BUDGET + 0.5)
            before = rss_bytes(server.proc.pid)
            # Sync answers after 10 minutes: every intent waits on its announce (strict mode
            # makes no REST change without one), in flight, until the process is stopped.
            await self.emulator.faults([{"product": "sync", "latency_ms": 600_000}])
            offers = synthetic_offers(c.memory_n, state, "b")
            run = await server.callbacks.send(offers, concurrency=c.memory_concurrency)
            name = "flex_bridge_intents_in_flight"
            in_flight = 0.0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                in_flight = await metric(self.session, server.url, name) or 0.0
                if in_flight >= c.memory_n:
                    break
                await asyncio.sleep(0.2)
            # Past the callbacks' reply budget, so what serving them held is garbage by now.
            await asyncio.sleep(REPLY_BUDGET + 0.5)
            after = rss_bytes(server.proc.pid)
        finally:
            server.proc.kill()
            await self.emulator.clear_faults()
        per = (after - before) / in_flight if in_flight else None
        self.say(
            f"  RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB with {int(in_flight)} "
            f"intents in flight: {_fmt(per)} bytes each"
        )
        return {
            "in_flight": int(in_flight),
            "callbacks_ok": len(run.ok),
            "rss_before_bytes": before,
            "rss_after_bytes": after,
            "bytes_per_inflight_intent": round(per) if per else None,
            "mib_per_10k_inflight": round(per * 10_000 / 2**20, 1) if per else None,
        }

    async def instances(self) -> JSON:
        """Two bridges on one PostgreSQL journal, behind a round-robin balancer that the
        emulator's assignment and event callbacks go to. It has an emulator of its own,
        seeded with those callback URLs; the load is tasks at ``e2e_rate``/s, each one routed
        to a worker of its own, which the policy accepts over REST (as in ``accept_e2e``)."""
        started = time.monotonic()
        async with contextlib.AsyncExitStack() as stack:
            try:
                url = await asyncio.to_thread(stack.enter_context, embedded_postgres())
            except ConfigError as exc:
                reason = f"skipped: PostgreSQL is not available here ({exc})"
                self.say(f"  {reason}")
                return {"skipped": reason}
            self.say(f"  embedded PostgreSQL at {postgres_name(url)}")
            row = await self.instances_on(url, stack)
        row["scenario_s"] = round(time.monotonic() - started, 1)
        return row

    async def instances_on(self, journal_url: str, stack: contextlib.AsyncExitStack) -> JSON:
        c = self.config
        public = f"http://127.0.0.1:{free_port()}"  # the balancer: the URL TaskRouter calls
        callbacks = ["--assignment-url", f"{public}/taskrouter/assignment"]
        callbacks += ["--event-url", f"{public}/taskrouter/events"]
        emulator = Emulator(
            self.workdir,
            c.e2e_warmup + c.instances_n,
            self.session,
            name="emulator-instances",
            args=callbacks,
        )
        stack.callback(emulator.proc.stop)
        await emulator.start()
        ws = Workspace(emulator)
        stack.push_async_callback(ws.close)
        await ws.load_workers()
        servers = [
            bridge(
                f"bridge-{n}",
                self.workdir,
                emulator,
                journal=journal_url,
                extra_env={
                    "FLEX_BRIDGE_INSTANCE_ID": f"bench-bridge-{n}",
                    "FLEX_BRIDGE_PUBLIC_URL": public,
                },
            )
            for n in (1, 2)
        ]
        for server in servers:
            stack.callback(server.proc.stop)
            await server.start(self.session)
            self.say(f"  {server.name} up at {server.url} (pid {server.proc.pid})")
        balancer = Balancer([s.url for s in servers])
        stack.push_async_callback(balancer.close)
        runner = web.AppRunner(balancer.app(), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        port = int(public.rsplit(":", 1)[1])
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        journal = open_journal(journal_url)
        await journal.open()
        stack.push_async_callback(journal.close)
        instance = {s.url: f"bench-bridge-{n}" for n, s in enumerate(servers, 1)}
        self.say(f"  balancer at {public} over {', '.join(instance)}")

        # Warm-up, no latency injected: every worker's map created and known to both
        # instances (synthetic reservations of the real workers, posted to each instance
        # directly, signed for the balancer's URL; their REST accepts meet a 404), then
        # ``e2e_warmup`` real tasks through the balancer at L.
        workers = ws.worker_sids
        for n, server in enumerate(servers, 1):
            fake = [
                Offer(
                    o.reservation_sid,
                    o.task_sid,
                    sid,
                    {**o.params, "WorkerSid": sid, "WorkerAttributes": ws.worker_attributes[sid]},
                )
                for o, sid in zip(
                    synthetic_offers(len(workers), emulator.state, f"i{n}"), workers, strict=True
                )
            ]
            token = emulator.state["auth_token"]
            direct = Callbacks(server.name, server.url, token, public_url=public)
            await direct.send(fake, concurrency=50)
            await wait_settled_in(journal, [o.reservation_sid for o in fake], bound=self.bound())
        await emulator.faults(latency_rules(c.latency_ms))
        warm = await self.instances_load(emulator, ws, journal, workers[: c.e2e_warmup])
        self.say(f"  warm-up: {len(warm['reservations'])} tasks accepted through the balancer")

        before = dict(balancer.answered)
        loadavg = loadavg_1min()
        load = await self.instances_load(emulator, ws, journal, workers[c.e2e_warmup :])
        load["loadavg_1min"] = [loadavg, loadavg_1min()]  # others' work on the machine shows
        await asyncio.sleep(1.0)  # the events that follow the last accepts
        answered = {instance[u]: balancer.answered[u] - before.get(u, 0) for u in balancer.backends}
        await emulator.clear_faults()
        return self.instances_report(load, answered, await journal.count())

    async def instances_load(
        self, emulator: Emulator, ws: Workspace, journal: Journal, workers: Sequence[str]
    ) -> JSON:
        """One task per worker, open loop at ``e2e_rate``/s; then the wait for every accept
        to settle in the journal; what the emulator's log says about them."""
        c = self.config
        seq = await emulator.mark()
        sent: dict[str, float] = {}  # task -> when its creation was sent (time.time)

        async def create(worker_sid: str) -> None:
            at = time.time()
            task = await ws.ws.tasks.create_async(
                attributes=TASK_ATTRIBUTES, routing_target=worker_sid
            )
            sent[task.sid] = at

        started = time.time()
        t0 = time.perf_counter()
        creating = []
        for i, worker_sid in enumerate(workers):
            delay = t0 + i / c.e2e_rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            creating.append(asyncio.create_task(create(worker_sid)))
        await asyncio.gather(*creating)
        # Each task's assignment callback, as the emulator logged it once answered.
        offered: dict[str, JSON] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for entry in await emulator.log(seq, kind="webhook"):
                params = entry.get("params") or {}
                if entry.get("webhook") == "assignment" and params.get("TaskSid") in sent:
                    offered.setdefault(str(params["TaskSid"]), entry)
            if len(offered) == len(sent):
                break
            await asyncio.sleep(0.2)
        sids = [str(e["params"]["ReservationSid"]) for e in offered.values()]
        done = await wait_settled_in(journal, sids, bound=self.bound())
        if done is None:
            self.say(f"  not all settled after {self.bound():.0f} s")
        entries = await emulator.log(seq, kind=None)
        dump = self.workdir / f"emulator-instances-log-{seq}.json"  # kept with --keep
        dump.write_text(json.dumps(entries))
        return {
            "started": started,
            "sent": sent,
            "offered": offered,
            "reservations": sids,
            "entries": entries,
            "states": await journal_states(journal, sids),
        }

    def instances_report(self, load: JSON, answered: dict[str, int], counts: JSON) -> JSON:
        c = self.config
        floor = 2 * c.latency_ms
        sids: list[str] = load["reservations"]
        entries: list[JSON] = load["entries"]
        out = outcome(entries, sids)
        by_res = {str(e["params"]["ReservationSid"]): e for e in load["offered"].values()}
        # From the assignment callback answered (the emulator logs it then: a few ms after it
        # was sent) to the accept applied; and from the task's creation sent (floor 3L).
        accept = [(out.applied_at[r] - float(by_res[r]["time"])) * 1000 for r in out.applied_at]
        from_task = [
            (out.applied_at[r] - load["sent"][str(by_res[r]["params"]["TaskSid"])]) * 1000
            for r in out.applied_at
        ]
        settle = [(out.settled_at[r] - float(by_res[r]["time"])) * 1000 for r in out.settled_at]
        webhooks = [e for e in entries if e.get("kind") == "webhook"]
        failed = [e for e in webhooks if e.get("status") not in (200, 204)]
        applied = sorted(out.applied_at.values())
        window = applied[-1] - load["started"] if applied else None
        lost, doubled = out.lost(sids), out.doubled(sids)
        unsettled = sorted(s for s, state in load["states"].items() if state != "settled")
        no_callback = len(load["sent"]) - len(load["offered"])
        if lost:
            self.failures.append(f"instances: {len(lost)} lost intent(s), e.g. {lost[:3]}")
        if doubled:
            self.failures.append(f"instances: {len(doubled)} double accept(s), e.g. {doubled[:3]}")
        if no_callback:
            self.errors.append(f"instances: {no_callback} task(s) never offered to a bridge")
        row: JSON = {
            "instances": len(answered),
            "journal": "postgresql (embedded, fsync=off)",
            "latency_ms": c.latency_ms,
            "rate_per_s": c.e2e_rate,
            "warmup": c.e2e_warmup,
            "n": len(load["sent"]),
            "offered": len(sids),
            "accepted": len(applied),
            "seconds_to_last_accept": round(window, 2) if window else None,
            "accepts_per_s": round(len(applied) / window, 1) if window else None,
            "floor_ms": floor,
            "accept_p50_ms": round(percentile(accept, 50), 2),
            "accept_p99_ms": round(percentile(accept, 99), 2),
            "accept_max_ms": round(max(accept), 2) if accept else None,
            "accept_p50_ratio_to_floor": ratio(round(percentile(accept, 50), 2), floor),
            "from_task_created_p50_ms": round(percentile(from_task, 50), 2),
            "from_task_created_p99_ms": round(percentile(from_task, 99), 2),
            "settle_p50_ms": round(percentile(settle, 50), 2),
            "settle_p99_ms": round(percentile(settle, 99), 2),
            "callbacks_answered": answered,
            "callbacks_failed": len(failed),
            "callback_failures": sorted({f"{e.get('status')} {e.get('error')}" for e in failed}),
            "lost_intents": len(lost),
            "double_accepts": len(doubled),
            "unsettled": len(unsettled),
            "journal_counts": counts,
            "loadavg_1min_before_after": load["loadavg_1min"],
        }
        split = ", ".join(f"{k}: {v}" for k, v in answered.items())
        self.say(
            f"  {row['accepted']}/{row['n']} accepted, {row['accepts_per_s']} accepts/s; "
            f"accept p50 {row['accept_p50_ms']} ms, p99 {row['accept_p99_ms']} ms; "
            f"callbacks answered: {split}; lost {row['lost_intents']}, "
            f"doubled {row['double_accepts']}, unsettled {row['unsettled']}"
        )
        return row

    async def run(self, only: Sequence[str] = SCENARIOS) -> None:
        if any(name in only for name in SCENARIOS if name not in STANDALONE):
            await self.setup()
            if any(name in only for name in SCENARIOS if name not in OWN_WARM_UP):
                await self.scenario("warm_up", self.warm_up)
        for name in SCENARIOS:
            if name in only:
                await self.scenario(name, getattr(self, METHODS.get(name, name)))


# ------------------------------------------------------------------------------ reporting
def loadavg_1min() -> float | None:
    with contextlib.suppress(IndexError, ValueError):
        return float(loadavg()[0])
    return None


def machine() -> JSON:
    info: JSON = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    if load := loadavg():
        info["loadavg_at_start"] = load
    return info


def git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def table(results: JSON) -> str:
    lines: list[str] = []

    def row(name: str, bridge: Any, base: Any, rat: Any = None, unit: str = "") -> None:
        lines.append(
            f"  {name:<34} {_fmt(bridge, unit):>14} {_fmt(base, unit):>14} {_fmt(rat, 'x'):>9}"
        )

    def head(title: str) -> None:
        lines.append("")
        lines.append(title)
        lines.append(f"  {'':<34} {'bridge':>14} {'baseline':>14} {'ratio':>9}")

    ack = results.get("ack", {})
    if "bridge" in ack:
        head(
            f"ack: N={ack['n']} signed callbacks, C={ack['concurrency']}, "
            f"L={ack['latency_ms']:g} ms (median of {ack['rounds']} round"
            f"{'s' if ack['rounds'] != 1 else ''})"
        )
        row(
            "ack p50",
            ack["bridge_p50_ms"],
            ack["baseline_p50_ms"],
            ack["p50_ratio_baseline_over_bridge"],
            " ms",
        )
        row(
            "ack p99",
            ack["bridge_p99_ms"],
            ack["baseline_p99_ms"],
            ack["p99_ratio_baseline_over_bridge"],
            " ms",
        )
        row(
            "callbacks/s",
            ack["bridge_rps"],
            ack["baseline_rps"],
            ack["rps_ratio_bridge_over_baseline"],
        )
        row(
            "accepts done/s (to all settled)",
            ack["bridge_accepts_per_s"],
            ack["baseline_accepts_per_s"],
            ratio(ack["bridge_accepts_per_s"], ack["baseline_accepts_per_s"]),
        )
        row("acks slower than 5 s", ack["bridge"]["over_5s"], ack["baseline"]["over_5s"])
        ceiling = ack.get("no_work_ceiling", {})
        if "p99_ms" in ceiling:
            lines.append(
                f"  context: a bridge deferring everything (no journal, no REST) at "
                f"C={ceiling['concurrency']}: p99 {_fmt(ceiling['p99_ms'], ' ms')}, "
                f"{_fmt(ceiling['rps'])} callbacks/s; the bridge acknowledged "
                f"{_fmt(ack.get('acks_over_ceiling'))} of that"
            )
        lines.append(f"  target: bridge p99 < 50 ms -> {'met' if ack['target_met'] else 'MISSED'}")
    e2e = results.get("accept_e2e", {})
    if "bridge" in e2e:
        head(
            f"accept_e2e: callback -> REST accept applied, L={e2e['latency_ms']:g} ms, "
            f"floor 2L = {e2e['floor_ms']:g} ms, {e2e['rate_per_s']:g} callbacks/s"
        )
        br, bl = e2e["bridge"], e2e["baseline"]
        row("accept p50", br["accept_p50_ms"], bl["accept_p50_ms"], None, " ms")
        row("accept p99", br["accept_p99_ms"], bl["accept_p99_ms"], None, " ms")
        row("accept p50 / floor", br["accept_p50_ratio_to_floor"], bl["accept_p50_ratio_to_floor"])
        row("settle p50 (floor 3L)", br["settle_p50_ms"], bl["settle_p50_ms"], None, " ms")
        row("settle p99", br["settle_p99_ms"], bl["settle_p99_ms"], None, " ms")
        row(
            "ack p50 at this rate",
            br["ack_p50_ms"],
            bl["ack_p50_ms"],
            ratio(bl["ack_p50_ms"], br["ack_p50_ms"]),
            " ms",
        )
        row(
            "ack p99 at this rate",
            br["ack_p99_ms"],
            bl["ack_p99_ms"],
            ratio(bl["ack_p99_ms"], br["ack_p99_ms"]),
            " ms",
        )
        lines.append(
            f"  target: bridge p50 within 1.15x the floor -> "
            f"{'met' if e2e['target_met'] else 'MISSED'}"
        )
    rl = results.get("rate_limited", {})
    if "bridge" in rl:
        head(
            f"rate_limited: R={rl['limit_rps']:g} req/s on TaskRouter, burst of "
            f"{rl['reservations']}, L={rl['latency_ms']:g} ms"
        )
        br, bl = rl["bridge"], rl["baseline"]
        row("accepted", br["accepted"], bl["accepted"])
        row("useful accepts/s", br["useful_accepts_per_s"], bl["useful_accepts_per_s"])
        row("fraction of R used", br["useful_fraction_of_limit"], bl["useful_fraction_of_limit"])
        row("TaskRouter 429s met", br["taskrouter_429s"], bl["taskrouter_429s"])
        row("Sync 429s met", br["sync_429s"], bl["sync_429s"])
        row("lost intents", br["lost_intents"], bl["lost_intents"])
        row("double accepts", br["double_accepts"], bl["double_accepts"])
        lines.append(
            f"  target: >= 0.9 of R, none lost or doubled -> "
            f"{'met' if rl['target_met'] else 'MISSED'} "
            f"(ideal with the 1-s burst allowance: {rl['ideal_fraction_of_limit']})"
        )
    rec = results.get("recovery", {})
    if "seconds" in rec:
        lines.append("")
        lines.append(
            f"recovery: {rec['intents']} announced intents, start-up -> all settled: "
            f"{_fmt(rec['seconds'], ' s')} ({_fmt(rec['intents_per_s'])}/s, "
            f"L={rec['latency_ms']:g} ms); lost {rec['lost_intents']}, "
            f"doubled {rec['double_accepts']}"
        )
    inst = results.get("instances", {})
    if "skipped" in inst:
        lines.append("")
        lines.append(f"instances: {inst['skipped']}")
    elif "accepted" in inst:
        split = ", ".join(f"{k} {v:,}" for k, v in inst["callbacks_answered"].items())
        lines.append("")
        lines.append(
            f"instances: {inst['instances']} bridges on one PostgreSQL journal behind a "
            f"balancer, {inst['n']} tasks at {inst['rate_per_s']:g}/s, L={inst['latency_ms']:g} ms"
        )
        lines.append(
            f"  {inst['accepted']:,} accepted, {_fmt(inst['accepts_per_s'])} accepts/s; "
            f"callback -> accept applied p50 {_fmt(inst['accept_p50_ms'], ' ms')}, "
            f"p99 {_fmt(inst['accept_p99_ms'], ' ms')} (floor 2L = {inst['floor_ms']:g} ms)"
        )
        lines.append(
            f"  callbacks answered: {split}; lost {inst['lost_intents']}, "
            f"doubled {inst['double_accepts']}, unsettled {inst['unsettled']}"
        )
    cpu = results.get("cpu", {})
    if "bridge_ms_per_accept" in cpu:
        lines += cpu_table_lines(cpu)
    mem = results.get("memory", {})
    if "in_flight" in mem:
        lines.append(
            f"memory: {_fmt(mem['bytes_per_inflight_intent'])} bytes per in-flight intent "
            f"({_fmt(mem['mib_per_10k_inflight'])} MiB per 10,000; {mem['in_flight']:,} in flight)"
        )
    lines += issue_12_lines(results)
    return "\n".join(lines)


def issue_12_targets(results: JSON) -> list[tuple[str, Any, bool | None]]:
    """Issue 12's five targets: (what, measured, met), met None when not measured. The
    verdicts and thresholds are the ones the scenarios stored; only memory's is judged here."""
    cpu, mem = results.get("cpu", {}), results.get("memory", {})
    ack, emu = results.get("ack", {}), results.get("emulator", {})

    def stored(scenario: JSON, verdict: str, *figures: str) -> bool | None:
        """The scenario's stored verdict, None when a figure it rests on is missing."""
        if not all(scenario.get(f) for f in figures) or scenario.get(verdict) is None:
            return None
        return bool(scenario[verdict])

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    per = mem.get("bytes_per_inflight_intent")
    acks, acks_target = ack.get("acks_over_ceiling"), ack.get("target_acks_over_ceiling")
    emu_ratio = emu.get("ratio_after_over_before")
    return [
        ("CPU per accept <= 1/3 of the Flask baseline's", cpu.get("ratio_baseline_over_bridge"),
         stored(cpu, "target_bridge_at_most_third_of_baseline",
                "bridge_ms_per_accept", "baseline_ms_per_accept")),
        ("CPU per accept <= the Node peer's", cpu.get("ratio_node_over_bridge"),
         stored(cpu, "target_bridge_at_most_node", "bridge_ms_per_accept", "node_ms_per_accept")),
        ("<= 4 KB per in-flight intent", per, None if per is None else per <= 4096),
        (f"closed-loop acks/s >= {number(acks_target)} of the no-work ceiling", acks,
         None if acks is None or acks_target is None else acks >= acks_target),
        (f"emulator CPU per request <= {number(emu.get('target_ratio'))} of before", emu_ratio,
         stored(emu, "target_met", "ratio_after_over_before")),
    ]  # fmt: skip


def issue_12_lines(results: JSON) -> list[str]:
    rows = [r for r in issue_12_targets(results) if r[2] is not None]
    if not rows:
        return []
    out = ["", "issue 12 targets (this run):"]
    for what, value, met in rows:
        out.append(f"  {what:<52} {_fmt(value):>10}  {'met' if met else 'MISSED'}")
    return out


async def run_bench(config: Config, workdir: Path, only: Sequence[str]) -> Bench:
    async with aiohttp.ClientSession() as session:
        bench = Bench(config, workdir, session)
        try:
            await bench.run(only)
        except Exception as exc:
            bench.errors.append(f"setup: {exc!r}")
            traceback.print_exc()
        finally:
            await bench.teardown()
    return bench


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run, to try the bench")
    parser.add_argument("--latency-ms", type=float, help="L (default 50)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--keep", action="store_true", help="keep the logs and journals")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="after the cpu scenario's rounds, profile the bridge and the emulator (py-spy) "
        "and count the bridge's syscalls (strace) in two more rounds; files go to DIR",
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios to run (default: all of {','.join(SCENARIOS)})",
    )
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    config = Config.quick() if args.quick else Config()
    if args.latency_ms is not None:
        config = Config(**{**asdict(config), "latency_ms": args.latency_ms})
    if args.profile is not None:
        config = Config(**{**asdict(config), "profile_dir": str(args.profile.resolve())})
    out: Path = args.out.resolve()

    workdir = Path(tempfile.mkdtemp(prefix="flex-bridge-bench-"))
    started = time.time()
    host = machine()  # before the run: its load average is the other work on the machine
    bench = asyncio.run(run_bench(config, workdir, only))
    results: JSON = {
        "ack": bench.results.get("ack", {}),
        "accept_e2e": bench.results.get("accept_e2e", {}),
        "rate_limited": bench.results.get("rate_limited", {}),
        "recovery": bench.results.get("recovery", {}),
        "cpu": bench.results.get("cpu", {}),
        "memory": bench.results.get("memory", {}),
        "instances": bench.results.get("instances", {}),
        "emulator": bench.results.get("emulator", {}),
        "warm_up": bench.results.get("warm_up", {}),
        "machine": host,
        "commit": git("rev-parse", "HEAD"),
        "worktree_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "config": asdict(config),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "correctness_failures": bench.failures,
        "errors": bench.errors,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    results = no_nan(results)
    out.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    print(table(results))
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"\nwritten {shown} in {results['duration_s']:.0f} s")
    status = 0
    if bench.failures:
        print("\nCORRECTNESS FAILURES of the bridge:")
        for failure in bench.failures:
            print(f"  - {failure}")
        status = 1
    elif bench.errors:
        print("\nthe bench could not run every scenario:")
        for error in bench.errors:
            print(f"  - {error}")
        status = 2
    if args.keep or status:
        print(f"logs and journals kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
