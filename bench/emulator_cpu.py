"""The ``emulator`` scenario (issue 12): the emulator's CPU per REST request, before and after
its REST front door.

Configurations of the emulator, side by side in one run:

- ``before``: ``--server hypercorn --loop asyncio --rest-path quart``, REST through Quart:
  the emulator as it was before issue 12;
- ``after``: the defaults, uvicorn on uvloop, REST through the ASGI front door
  (``flex_bridge/emulator/front_door.py``);
- ``quart_on_uvicorn``: the server and loop of ``after`` with REST through Quart, which tells
  the two changes apart (not part of the target).

Rounds alternate (``ORDER``: before, after, quart_on_uvicorn twice, after, before), one
emulator at a time, each a fresh process with ``N + WARMUP`` seeded workers and Sync's rate
limits off (every request is meant to succeed). Per round, unmeasured: one task routed to
each worker, its pending reservation read back, one Sync map. Then, for each reservation, the
REST mix an accept costs the bridge: the Sync map item created, the reservation accepted
(TaskRouter POST), the item updated with ``If-Match``; ``WARMUP`` reservations first,
unmeasured, then ``N`` measured, at ``CONCURRENCY`` requests in flight, from plain aiohttp
(keep-alive, HTTP Basic).

Measured: the emulator process's CPU seconds (utime + stime from ``/proc/<pid>/stat``) over
the ``N`` reservations, divided by the requests sent. Where the machine has two cores or more
the emulator runs alone on the first, the load generator (this process) on the second. The
median of each configuration's rounds counts; ``ratio_after_over_before`` is the target
(<= 0.5).

With ``--profile DIR``, one more ``after`` round runs under py-spy (``record --nonblocking
--format raw``), its figures kept apart; ``bench/profiles.py`` summarises it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import aiohttp

from bench import profiles
from bench.cpu import PY_SPY_RATE, Layout, cpu_seconds, find_py_spy
from bench.harness import JSON, BenchError, Emulator, Proc, loadavg

if TYPE_CHECKING:
    from bench.run import Bench

N = int(os.environ.get("BENCH_EMULATOR_N", "1000"))  # measured reservations per round
WARMUP = 100  # reservations through the same mix first, unmeasured
CONCURRENCY = 20  # requests in flight
SETUP_CONCURRENCY = 32
# ``quart_on_uvicorn`` (uvicorn + uvloop, REST through Quart: the server and loop of
# ``after`` without the front door) tells the two changes apart; it is not part of the target.
ORDER = ("before", "after", "quart_on_uvicorn", "quart_on_uvicorn", "after", "before")
TARGET = 0.5
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass(frozen=True)
class Variant:
    name: str
    server: str
    loop: str
    rest_path: str

    def describe(self) -> str:
        return f"{self.server} + {self.loop}, REST through {self.rest_path}"


VARIANTS = {
    "before": Variant("before", "hypercorn", "asyncio", "quart"),
    "after": Variant("after", "uvicorn", "uvloop", "asgi"),
    "quart_on_uvicorn": Variant("quart_on_uvicorn", "uvicorn", "uvloop", "quart"),
}


@dataclass(frozen=True)
class Pending:
    task_sid: str
    reservation_sid: str


class EmulatorCpuScenario:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.rounds_started = 0

    def say(self, message: str) -> None:
        self.bench.say(message)

    async def run(self) -> JSON:
        layout = Layout.of_machine()
        where = (
            "not pinned: fewer than two cores"
            if layout.system is None or layout.others is None
            else f"pinned: the emulator on core {min(layout.system)}, the load generator "
            f"(pid {os.getpid()}) on core {min(layout.others)}"
        )
        self.say(f"  {where}")
        load_at_start = loadavg()
        rows: dict[str, list[JSON]] = {name: [] for name in VARIANTS}
        try:
            for number, name in enumerate(ORDER, 1):
                row = await self.round(VARIANTS[name], layout)
                rows[name].append(row)
                self.report(f"round {number}, {name}", row)
            profile = None
            if self.bench.config.profile_dir:
                profile = await self.profile(layout, Path(self.bench.config.profile_dir))
        finally:
            layout.restore([os.getpid()])
        before = _median(rows["before"], "ms_per_request")
        after = _median(rows["after"], "ms_per_request")
        middle = _median(rows["quart_on_uvicorn"], "ms_per_request")
        ratio = round(after / before, 3) if before and after else None
        result: JSON = {
            "n": N,
            "warmup": WARMUP,
            "concurrency": CONCURRENCY,
            "order": list(ORDER),
            "pinning": where,
            "loadavg_at_start": load_at_start,
            "loadavg_at_end": loadavg(),
            "before": VARIANTS["before"].describe(),
            "after": VARIANTS["after"].describe(),
            "before_ms_per_request": before,
            "after_ms_per_request": after,
            "quart_on_uvicorn": VARIANTS["quart_on_uvicorn"].describe(),
            "quart_on_uvicorn_ms_per_request": middle,
            "ratio_after_over_before": ratio,
            "target_ratio": TARGET,
            "target_met": bool(ratio is not None and ratio <= TARGET),
            "rounds": rows,
            "profile": profile,
        }
        self.say(
            f"  emulator CPU per REST request: before {before} ms ({result['before']}), after "
            f"{after} ms ({result['after']}); {middle} ms with {result['quart_on_uvicorn']}; "
            f"after / before = {ratio} (target <= {TARGET}: "
            f"{'met' if result['target_met'] else 'MISSED'})"
        )
        return result

    # ---------------------------------------------------------------------------- a round
    def emulator(self, variant: Variant) -> Emulator:
        self.rounds_started += 1
        b = self.bench
        args = ["--server", variant.server, "--loop", variant.loop, "--rest-path"]
        args += [variant.rest_path, "--no-sync-rate-limit"]
        name = f"emulator-cpu-{self.rounds_started}-{variant.name}"
        return Emulator(b.workdir, N + WARMUP, b.session, name=name, args=args)

    async def round(self, variant: Variant, layout: Layout, spy: Path | None = None) -> JSON:
        emu = self.emulator(variant)
        await emu.start()
        tools: list[Proc] = []
        try:
            state = emu.state
            auth = aiohttp.BasicAuth(state["account_sid"], state["auth_token"])
            connector = aiohttp.TCPConnector(limit=max(CONCURRENCY, SETUP_CONCURRENCY))
            async with aiohttp.ClientSession(auth=auth, connector=connector) as http:
                client = RestClient(http, emu.url, state)
                pending = await client.offer(state["workers"], SETUP_CONCURRENCY)
                map_sid = await client.new_map(f"bench-{self.rounds_started}")
                pinned = layout.apply(emu.proc.pid, [os.getpid()])
                warm, measured = pending[:WARMUP], pending[WARMUP:]
                await client.accept_all(warm, map_sid, CONCURRENCY)
                if spy is not None:
                    tools.append(self.py_spy(emu.proc.pid, spy))
                    layout.apply(emu.proc.pid, [os.getpid(), *(t.pid for t in tools)])
                    await asyncio.sleep(1.0)  # py-spy attached
                await asyncio.sleep(0.2)  # the warm-up's tail
                client.statuses.clear()
                cpu_before, wall_before = cpu_seconds(emu.proc.pid), time.monotonic()
                load_before = cpu_seconds(os.getpid())
                await client.accept_all(measured, map_sid, CONCURRENCY)
                await asyncio.sleep(0.1)  # anything the last answers left behind
                cpu_s = cpu_seconds(emu.proc.pid) - cpu_before
                wall = time.monotonic() - wall_before
                load_s = cpu_seconds(os.getpid()) - load_before
            for tool in tools:  # SIGINT: py-spy writes its output, then exits
                if tool.popen is not None and tool.alive():
                    tool.popen.send_signal(signal.SIGINT)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        await asyncio.to_thread(tool.popen.wait, 30)
        finally:
            for tool in tools:
                tool.kill()
            await asyncio.to_thread(emu.proc.stop)
        requests = sum(client.statuses.values())
        unexpected = {k: v for k, v in client.statuses.items() if not k.endswith((" 200", " 201"))}
        if unexpected:
            raise BenchError(f"{variant.name}: unexpected answers {unexpected}")
        return {
            "variant": variant.name,
            "server": variant.server,
            "loop": variant.loop,
            "rest_path": variant.rest_path,
            "reservations": len(measured),
            "requests": requests,
            "by_endpoint": dict(client.statuses),
            "seconds": round(wall, 2),
            "requests_per_s": round(requests / wall, 1) if wall else None,
            "cpu_s": round(cpu_s, 3),
            "ms_per_request": round(cpu_s * 1000 / requests, 3) if requests else None,
            "cpu_share_of_a_core": round(cpu_s / wall, 3) if wall else None,
            "load_generator_ms_per_request": round(load_s * 1000 / requests, 3)
            if requests
            else None,
            "loadavg_after": loadavg(),
            "pinning": pinned,
        }

    def report(self, what: str, row: JSON) -> None:
        self.say(
            f"  {what} ({row['server']} + {row['loop']}, REST through {row['rest_path']}): "
            f"{row['requests']} requests in {row['seconds']} s; emulator {row['cpu_s']} s CPU, "
            f"{row['ms_per_request']} ms per request ({row['cpu_share_of_a_core']} of a core)"
        )

    # -------------------------------------------------------------------------- profiling
    def py_spy(self, pid: int, out: Path) -> Proc:
        spy = find_py_spy()
        assert spy is not None
        command = [spy, "record", "--pid", str(pid), "--rate", str(PY_SPY_RATE), "--nonblocking"]
        command += ["--format", "raw", "--full-filenames", "-o", str(out)]
        workdir = self.bench.workdir
        proc = Proc("py-spy-emulator", command, dict(os.environ), workdir, workdir / "spy.log")
        return proc.start()

    async def profile(self, layout: Layout, where: Path) -> JSON:
        if find_py_spy() is None:
            return {"py_spy": "skipped: py-spy is not installed"}
        await asyncio.to_thread(where.mkdir, parents=True, exist_ok=True)
        out = where / "emulator-front-door.pyspy.raw"
        self.say("  profiling the emulator (after) with py-spy: one more round")
        row = await self.round(VARIANTS["after"], layout, spy=out)
        self.report("after, under py-spy", row)
        result: JSON = {"file": str(out), "round": row, "py_spy_rate_hz": PY_SPY_RATE}
        if await asyncio.to_thread(out.exists):
            result["summary"] = profiles.py_spy_summary(
                out, "emulator, after", row["cpu_s"], PY_SPY_RATE, top=25
            )
        return result


def _median(rows: Sequence[JSON], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


class RestClient:
    """The REST mix of an accept, over plain aiohttp."""

    def __init__(self, http: aiohttp.ClientSession, url: str, state: JSON) -> None:
        self.http = http
        self.workspace = f"{url}/taskrouter/v1/Workspaces/{state['workspace_sid']}"
        self.service = f"{url}/sync/v1/Services/{state['sync_service_sid']}"
        self.statuses: Counter[str] = Counter()

    async def post(
        self, url: str, form: dict[str, str], what: str, headers: dict[str, str] | None = None
    ) -> JSON:
        body = urlencode(form).encode()
        async with self.http.post(url, data=body, headers={**FORM, **(headers or {})}) as answer:
            text = await answer.read()
            self.statuses[f"{what} {answer.status}"] += 1
            if answer.status >= 400:
                raise BenchError(f"{what}: HTTP {answer.status}: {text[:300]!r}")
            result: JSON = json.loads(text)
            return result

    async def offer(self, workers: list[JSON], concurrency: int) -> list[Pending]:
        """One task routed to each worker; its pending reservation."""
        gate = asyncio.Semaphore(concurrency)

        async def one(worker_sid: str) -> Pending:
            async with gate:
                task = await self.post(
                    f"{self.workspace}/Tasks",
                    {"Attributes": '{"bench": "emulator"}', "RoutingTarget": worker_sid},
                    "create task",
                )
                url = f"{self.workspace}/Tasks/{task['sid']}/Reservations"
                for _ in range(100):
                    async with self.http.get(url) as answer:
                        listed = await answer.json()
                    pending = [
                        r for r in listed["reservations"] if r["reservation_status"] == "pending"
                    ]
                    if pending:
                        return Pending(task["sid"], pending[0]["sid"])
                    await asyncio.sleep(0.05)
            raise BenchError(f"task {task['sid']} was never offered to {worker_sid}")

        return list(await asyncio.gather(*(one(w["sid"]) for w in workers)))

    async def new_map(self, name: str) -> str:
        made = await self.post(f"{self.service}/Maps", {"UniqueName": name}, "create map")
        return str(made["sid"])

    async def accept(self, one: Pending, map_sid: str) -> None:
        items = f"{self.service}/Maps/{map_sid}/Items"
        data = {"reservation_sid": one.reservation_sid, "status": "pending"}
        item = await self.post(
            items, {"Key": one.reservation_sid, "Data": json.dumps(data)}, "sync item create"
        )
        await self.post(
            f"{self.workspace}/Tasks/{one.task_sid}/Reservations/{one.reservation_sid}",
            {"ReservationStatus": "accepted"},
            "taskrouter accept",
        )
        data["status"] = "accepted"
        await self.post(
            f"{items}/{one.reservation_sid}",
            {"Data": json.dumps(data)},
            "sync item update",
            {"If-Match": str(item["revision"])},
        )

    async def accept_all(self, pending: Sequence[Pending], map_sid: str, concurrency: int) -> None:
        """Each reservation's three requests in order; ``concurrency`` requests in flight."""
        queue = list(reversed(pending))

        async def worker() -> None:
            while queue:
                await self.accept(queue.pop(), map_sid)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
