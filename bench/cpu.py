"""The ``cpu`` scenario (issue 12): CPU time per accepted reservation.

The same open-loop load for each system in turn, one system per round: a bridge of the
scenario's own (the bench's policy and production defaults, without the reconcile sweep: see
``CPU_POLICY``), the Flask baseline, the Node peer (``bench/peers/node``: Express and the
official ``twilio`` npm package, inline, as a Twilio Function would) and the Python floor peer
(``bench/peers/python_floor``, system ``floor``: the same job inline on a raw ASGI app on
uvicorn with httptools and uvloop, through the ``twilio`` package's async client; a lower
bound for Python with that package). ``cpu_warmup``
callbacks, then ``cpu_n`` measured ones at ``cpu_rate``/s, with L ms injected on every
TaskRouter and Sync call; ``cpu_rounds`` rounds per system in alternating order (bridge,
baseline, node, floor, then floor, node, baseline, bridge), the median counts.

What is measured, per round: CPU seconds (utime + stime from ``/proc/<pid>/stat``: every
thread, living descendants, reaped children) of the system's server process and, apart, of
the emulator, from the first measured callback until the system is done with them (the
bridge: every intent settled in its journal; the others: every callback answered, which they
do after the settle) plus ``TAIL`` seconds, divided by the reservations accepted (applied
accept POSTs in the emulator's log). Also, per accept: user and system time, the main
thread's share (``/proc/<pid>/task/<pid>/stat``), the emulator's REST requests by endpoint,
the lines the system wrote to its log; and the emulator's CPU per request.

Isolation:

- Where the machine has two cores or more, the system under test runs alone on the first
  core, and everything else the bench started (the emulator, the load generator, the idle
  systems, the profilers) on the second. Other work on a shared machine can still land
  anywhere.
- The systems not under test, and the bench's own bridge, are paused (SIGSTOP) and resumed
  for their own rounds: an idle bridge's sweeps would fetch, repair and adopt (accept) other
  systems' reservations. ``sweep_log_lines`` says whether a sweep logged inside a round.
- Each system is first warmed on the scenario's workers with Sync's rate limits off (``warm``).

Servers and event loops: every process gets ``FLEX_BRIDGE_SERVER`` and ``FLEX_BRIDGE_LOOP``
from the bench's environment (``bench.harness.PASSED_ON``). ``BENCH_CPU_BRIDGES`` (such as
``hypercorn/asyncio,uvicorn/uvloop``) adds one more bridge per pair, measured in its own
rounds like the others (system ``bridge[hypercorn+asyncio]``), to compare them in one run.

With ``--profile DIR`` two more bridge rounds follow, their figures kept apart (profiling
costs CPU): one under py-spy on the bridge and on the emulator (``record --nonblocking
--format raw``, with ``--gil`` and without), one under ``strace -c -f`` on the bridge, for its
fsyncs, writes and futex calls per accept. ``bench/profiles.py`` summarises the profiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench import profiles
from bench.harness import (
    ACCEPT_ALL,
    JSON,
    Proc,
    Server,
    bridge,
    latency_rules,
    node_peer,
    node_peer_ready,
    outcome,
    percentile,
    python_floor,
)

if TYPE_CHECKING:
    from bench.run import Bench

CLK_TCK = os.sysconf("SC_CLK_TCK")
TAIL = 0.5  # seconds counted after the system is done: work that trails the last settle
# The bench's policy, and no reconcile sweep in this scenario's bridge: the sweep is not part
# of an accept (at most ``budget`` fetches a minute, whatever the traffic), and in this bench,
# which sends no TaskRouter events, each sweep would fetch and repair 200 earlier reservations
# inside whichever round it fell in.
CPU_POLICY = ACCEPT_ALL + "\n[reconcile]\ninterval = 86400.0\n"
PY_SPY_RATE = 500  # samples/s (best effort: py-spy shares a core with the emulator)
STRACE_CALLS = "fsync,fdatasync,pwrite64,pread64,write,sendto,recvfrom,epoll_wait,futex"


def bridge_variants(spec: str) -> list[tuple[str, str]]:
    """``BENCH_CPU_BRIDGES``: comma-separated ``server/loop`` pairs."""
    pairs = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        server, _, loop = item.partition("/")
        pairs.append((server, loop or "asyncio"))
    return pairs


# ------------------------------------------------------------------------- /proc readings
def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass(frozen=True)
class Cpu:
    """CPU seconds of a process tree: user and system, and the main thread's share."""

    user: float = 0.0
    system: float = 0.0
    main_thread: float = 0.0  # the main thread of the root process (an event loop's)

    @property
    def total(self) -> float:
        return self.user + self.system

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(
            self.user - other.user,
            self.system - other.system,
            self.main_thread - other.main_thread,
        )


def cpu_of(pid: int) -> Cpu:
    """utime and stime of a process (all its threads, living or gone) and of its living
    descendants, plus what each has reaped of its children (cutime, cstime)."""
    user = system = 0
    for each in (pid, *descendants(pid)):
        fields = _stat(each)
        if fields is not None:
            user += int(fields[11]) + int(fields[13])
            system += int(fields[12]) + int(fields[14])
    main = 0
    with contextlib.suppress(OSError, IndexError):
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        main = int(fields[11]) + int(fields[12])
    return Cpu(user / CLK_TCK, system / CLK_TCK, main / CLK_TCK)


def cpu_seconds(pid: int) -> float:
    return cpu_of(pid).total


def pin(pid: int, cores: set[int]) -> int:
    """Every thread of a process and its descendants onto ``cores``; how many were moved."""
    moved = 0
    for each in (pid, *descendants(pid)):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{each}/task").iterdir():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task.name), cores)
                    moved += 1
    return moved


def find_py_spy() -> str | None:
    """py-spy on the PATH or beside this interpreter (a virtualenv's bin/)."""
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_since(path: Path, offset: int) -> list[str]:
    """The lines a process wrote to its log file after ``offset`` bytes."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode(errors="replace").splitlines()
    except OSError:
        return []


@dataclass(frozen=True)
class Layout:
    """Which cores the system under test and everything else run on (None: not pinned)."""

    system: set[int] | None
    others: set[int] | None
    original: set[int]

    @classmethod
    def of_machine(cls) -> Layout:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return cls(None, None, set(cores))
        return cls({cores[0]}, {cores[1]}, set(cores))

    def describe(self) -> str:
        if self.system is None or self.others is None:
            return f"not pinned: {len(self.original)} core(s) available to this process"
        return (
            f"pinned: the system under test on core {min(self.system)}; the emulator, the "
            f"load generator (pid {os.getpid()}), the idle systems and any profiler on core "
            f"{min(self.others)}"
        )

    def apply(self, system: int, others: Sequence[int]) -> JSON:
        if self.system is None or self.others is None:
            return {}
        return {
            "system_core": min(self.system),
            "others_core": min(self.others),
            "threads_pinned": pin(system, self.system) + sum(pin(p, self.others) for p in others),
        }

    def restore(self, pids: Sequence[int]) -> None:
        if self.system is not None:
            for pid in pids:
                pin(pid, self.original)


# ------------------------------------------------------------------------------ scenario
def _endpoint(entry: JSON) -> str:
    """``sync POST Maps/{MapSid}/Items 201``: product, method, the path's tail, status."""
    template = str(entry.get("template") or entry.get("path") or "")
    tail = "/".join(template.strip("/").split("/")[-2:])
    return f"{entry.get('product')} {entry.get('method')} {tail} {entry.get('status')}"


def _per(n: float, accepted: int, digits: int = 2) -> float | None:
    return round(n / accepted, digits) if accepted else None


class CpuScenario:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.config = bench.config
        self.tools: list[Proc] = []  # profilers running in this round
        self.bridge: Server | None = None  # the scenario's own bridge
        self.systems: dict[str, Server] = {}  # bridge, baseline, node, floor: those measured
        self.bridge_rows: list[JSON] = []  # every bridge round's checks, profiled ones too

    def idle(self, server: Server | None) -> list[Server]:
        """Every system the bench has up but ``server``: the bench's own bridge as well."""
        shared = [s for s in self.bench.systems() if s not in self.systems.values()]
        return [s for s in (*self.systems.values(), *shared) if s is not server]

    def focus(self, server: Server | None) -> None:
        """Resume ``server`` (None: every system), pause (SIGSTOP) the others: an idle
        bridge's recovery and reconcile sweeps would otherwise run in another system's
        round, and its adoption of missed offers would accept that system's reservations."""
        for each in (*self.idle(server), *([server] if server else [])):
            if each.proc.popen is not None and each.proc.alive():
                paused = server is not None and each is not server
                each.proc.popen.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def others(self, server: Server) -> list[int]:
        """Every process the bench started that is not the system under test, and itself."""
        procs = [self.bench.emulator.proc, *(s.proc for s in self.idle(server)), *self.tools]
        return [p.pid for p in procs if p.alive()] + [os.getpid()]

    async def run(self) -> JSON:
        b, c = self.bench, self.config
        layout = Layout.of_machine()
        b.say(f"  {layout.describe()}")
        # A bridge of its own: production defaults, but no reconcile sweep (CPU_POLICY).
        self.bridge = bridge("bridge-cpu", b.workdir, b.emulator, policy=CPU_POLICY)
        self.systems["bridge"] = self.bridge
        variants = bridge_variants(os.environ.get("BENCH_CPU_BRIDGES", ""))
        for server, loop in variants:
            env = {"FLEX_BRIDGE_SERVER": server, "FLEX_BRIDGE_LOOP": loop}
            name = f"bridge-cpu-{server}-{loop}"
            self.systems[f"bridge[{server}+{loop}]"] = bridge(
                name, b.workdir, b.emulator, policy=CPU_POLICY, extra_env=env
            )
        assert b.baseline is not None
        self.systems["baseline"] = b.baseline
        why_not = await asyncio.to_thread(node_peer_ready, b.say)
        started = [self.bridge, *(s for n, s in self.systems.items() if n.startswith("bridge["))]
        if why_not is None:
            self.systems["node"] = node_peer(b.workdir, b.emulator)
            started.append(self.systems["node"])
        else:
            b.say(f"  node peer skipped: {why_not}")
        self.systems["floor"] = python_floor(b.workdir, b.emulator)
        started.append(self.systems["floor"])
        rounds: dict[str, list[JSON]] = {name: [] for name in self.systems}
        profile: JSON | None = None
        try:
            for server in started:
                await server.start(b.session)
                b.say(f"  {server.name} up at {server.url} (pid {server.proc.pid})")
            for server in self.systems.values():
                self.focus(server)
                await self.warm(server)
            for number in range(c.cpu_rounds):
                order = list(self.systems.items())
                for name, server in order if number % 2 == 0 else order[::-1]:
                    row = await self.round(server, layout)
                    rounds[name].append(row)
                    self.report(f"round {number + 1}, {name}", row)
            if c.profile_dir:
                profile = await self.profile(layout, Path(c.profile_dir))
        finally:
            self.focus(None)
            layout.restore([b.emulator.proc.pid, *(s.proc.pid for s in self.idle(None))])
            layout.restore([os.getpid()])
            for server in started:
                server.proc.stop()
        return self.result(layout, rounds, profile, why_not)

    async def warm(self, server: Server) -> None:
        """One callback per pool worker the scenario uses, no latency injected, so that every
        worker's map is known to the process and its pools are open.

        Sync's rate limits are off meanwhile. A map creation counts against the service's
        20/s even when it meets a 409, and the baseline and the Node peer learn a map only
        from a 201 or a 409 (a 429 fails their announce): after the bench's warm-up, whose
        bridge spent the bucket, most of the baseline's maps are unknown to it, and each would
        cost it one more request in the measured rounds.
        """
        b = self.bench
        offers = await b.workspace.offer(b.pool(self.config.cpu_warmup + self.config.cpu_n))
        seq = await b.emulator.mark()
        await b.emulator.admin("POST", "/_emulator/settings", {"sync_rate_limit": False})
        try:
            run = await server.callbacks.send(offers, concurrency=50)
            await b.settle(server, offers)
        finally:
            await b.emulator.admin("POST", "/_emulator/settings", {"sync_rate_limit": True})
        creations = Counter(
            str(e.get("status"))
            for e in await b.emulator.log(seq)
            if e.get("method") == "POST" and str(e.get("template", "")).endswith("/Maps")
        )
        await b.workspace.release(offers)
        b.say(
            f"  {server.name}: warmed with {len(run.ok)}/{len(offers)} callbacks, no latency, "
            f"Sync limits off; map creations by status: {dict(creations) or 'none'}"
        )

    async def round(
        self,
        server: Server,
        layout: Layout,
        tools: Callable[[], list[Proc]] | None = None,
    ) -> JSON:
        b, c = self.bench, self.config
        ws = b.workspace
        self.focus(server)
        offers = await ws.offer(b.pool(c.cpu_warmup + c.cpu_n))
        warm, measured = offers[: c.cpu_warmup], offers[c.cpu_warmup :]
        sids = [o.reservation_sid for o in measured]
        await b.emulator.faults(latency_rules(c.latency_ms))
        pinned = layout.apply(server.proc.pid, self.others(server))
        await server.callbacks.send(warm, rate=c.cpu_rate)
        await b.settle(server, warm)
        self.tools = tools() if tools else []
        if self.tools:
            layout.apply(server.proc.pid, self.others(server))
            await asyncio.sleep(1.0)  # the profilers attached
        seq = await b.emulator.mark()
        log_at = await asyncio.to_thread(log_size, server.proc.log)
        emulator_pid = b.emulator.proc.pid
        before = (cpu_of(server.proc.pid), cpu_seconds(emulator_pid), time.monotonic())
        load_before = cpu_seconds(os.getpid())
        run = await server.callbacks.send(measured, rate=c.cpu_rate)
        await b.settle(server, measured)
        await asyncio.sleep(TAIL)
        after = (cpu_of(server.proc.pid), cpu_seconds(emulator_pid), time.monotonic())
        load = cpu_seconds(os.getpid()) - load_before
        lines = await asyncio.to_thread(log_since, server.proc.log, log_at)
        for tool in self.tools:  # SIGINT: py-spy and strace write their output, then exit
            if tool.popen is not None and tool.alive():
                tool.popen.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(tool.popen.wait, 30)
            tool.kill()
        self.tools = []
        entries = await b.emulator.log(seq)
        await b.emulator.clear_faults()
        await ws.release(offers)
        out = outcome(entries, sids)
        accepted = len(out.applied)
        used = after[0] - before[0]
        emulator_s, wall = after[1] - before[1], after[2] - before[2]
        system_s = used.total
        sweeps = [line for line in lines if "flex_bridge.reconcile" in line or "adoption" in line]
        endpoints = Counter(_endpoint(e) for e in entries if e.get("kind", "rest") == "rest")
        lost, doubled = out.lost(sids), out.doubled(sids)
        if server is self.bridge:
            self.bridge_rows.append(b.check_bridge("cpu", measured, out))
        acks = run.latencies_ms()
        return {
            "n": len(measured),
            "accepted": accepted,
            "rate_per_s": c.cpu_rate,
            "seconds": round(wall, 2),
            "cpu_s": round(system_s, 2),
            "ms_per_accept": _per(system_s * 1000, accepted),
            "user_ms_per_accept": _per(used.user * 1000, accepted),
            "system_ms_per_accept": _per(used.system * 1000, accepted),
            # The main thread (the bridge's and the emulator's event loop, Node's JS thread)
            # against every other thread (the bridge's journal thread; werkzeug's per-request
            # threads; libuv's and V8's helpers).
            "main_thread_ms_per_accept": _per(used.main_thread * 1000, accepted),
            "other_threads_ms_per_accept": _per((system_s - used.main_thread) * 1000, accepted),
            "emulator_cpu_s": round(emulator_s, 2),
            "emulator_ms_per_accept": _per(emulator_s * 1000, accepted),
            "emulator_requests": out.requests,
            "emulator_ms_per_request": _per(emulator_s * 1000, out.requests, 3),
            "load_generator_ms_per_callback": _per(load * 1000, len(measured)),
            "cpu_share_of_a_core": round(system_s / wall, 3) if wall else None,
            "requests_per_accept": _per(out.requests, accepted),
            "requests_by_endpoint": dict(endpoints.most_common()),
            "log_lines_per_accept": _per(len(lines), accepted),
            "sweep_log_lines": len(sweeps),  # the bridge's reconcile sweep ran in the round
            "ack_p50_ms": round(percentile(acks, 50), 2),
            "ack_p99_ms": round(percentile(acks, 99), 2),
            "callback_errors": len(run.sent) - len(run.ok),
            "lost_intents": len(lost),
            "double_accepts": len(doubled),
            "pinning": pinned,
        }

    def report(self, what: str, row: JSON) -> None:
        self.bench.say(
            f"  {what}: {row['accepted']}/{row['n']} accepted in {row['seconds']} s; "
            f"{row['ms_per_accept']} ms CPU per accept ({row['cpu_share_of_a_core']} of a core); "
            f"emulator {row['emulator_ms_per_accept']} ms per accept, "
            f"{row['emulator_ms_per_request']} ms per request; "
            f"{row['requests_per_accept']} requests and {row['log_lines_per_accept']} log lines "
            f"per accept; lost {row['lost_intents']}, doubled {row['double_accepts']}"
        )

    # ---------------------------------------------------------------------------- profiling
    async def profile(self, layout: Layout, where: Path) -> JSON:
        b = self.bench
        bridge = self.bridge
        assert bridge is not None
        await asyncio.to_thread(where.mkdir, parents=True, exist_ok=True)
        result: JSON = {"dir": str(where)}
        spy = find_py_spy()
        if spy is not None:
            # Two views of each process: samples of the thread holding the GIL (Python's own
            # CPU time: py-spy's idle detection misses threads that wake hundreds of times a
            # second, such as the journal's), and every thread py-spy deems active.
            pids = {"bridge": bridge.proc.pid, "emulator": b.emulator.proc.pid}
            files = {
                (name, view): where / f"{name}.{view}.pyspy.raw"
                for name in pids
                for view in ("gil", "all_threads")
            }
            options = ["--rate", str(PY_SPY_RATE), "--nonblocking", "--format", "raw"]
            options.append("--full-filenames")

            def spies() -> list[Proc]:
                return [
                    self.tool(
                        f"py-spy-{name}-{view}",
                        [spy, "record", "--pid", str(pids[name]), *options, "-o", str(path)]
                        + (["--gil"] if view == "gil" else []),
                    )
                    for (name, view), path in files.items()
                ]

            b.say("  profiling the bridge and the emulator with py-spy (one more bridge round)")
            row = await self.round(bridge, layout, spies)
            self.report("bridge under py-spy", row)
            result["py_spy_round"] = row
            result["py_spy_rate_hz"] = PY_SPY_RATE
            cpu_s = {"bridge": row["cpu_s"], "emulator": row["emulator_cpu_s"]}
            for (name, view), path in files.items():
                if not await asyncio.to_thread(path.exists):
                    continue
                result.setdefault(name, {})[view] = profiles.py_spy_summary(
                    path, f"{name}, {view}", cpu_s[name], PY_SPY_RATE
                )
        else:
            result["py_spy"] = "skipped: py-spy is not installed (pip install py-spy)"
        strace = shutil.which("strace")
        if strace:
            out = where / "bridge.strace.txt"

            def tracer() -> list[Proc]:
                command = [strace, "-c", "-f", "-e", f"trace={STRACE_CALLS}"]
                return [self.tool("strace", [*command, "-p", str(bridge.proc.pid), "-o", str(out)])]

            b.say("  counting the bridge's syscalls with strace -c (one more bridge round)")
            row = await self.round(bridge, layout, tracer)
            self.report("bridge under strace", row)
            text = await asyncio.to_thread(out.read_text) if out.exists() else ""
            calls = profiles.strace_counts(text)
            accepted = row["accepted"]
            result["strace_round"] = row
            result["syscalls_per_accept"] = {k: _per(v, accepted) for k, v in calls.items()}
            b.say(f"  bridge syscalls per accept: {result['syscalls_per_accept']}")
        else:
            result["strace"] = "skipped: strace is not installed"
        return result

    def tool(self, name: str, command: list[str]) -> Proc:
        workdir = self.bench.workdir
        proc = Proc(name, command, dict(os.environ), workdir, workdir / f"{name}.log")
        return proc.start()

    # ------------------------------------------------------------------------------ result
    def result(
        self,
        layout: Layout,
        rounds: dict[str, list[JSON]],
        profile: JSON | None,
        node_skipped: str | None,
    ) -> JSON:
        c = self.config

        def median(name: str, key: str) -> float | None:
            values = [r[key] for r in rounds.get(name, []) if r.get(key) is not None]
            return round(statistics.median(values), 2) if values else None

        br = median("bridge", "ms_per_accept")
        bl = median("baseline", "ms_per_accept")
        nd = median("node", "ms_per_accept")
        fl = median("floor", "ms_per_accept")
        return {
            "n": c.cpu_n,
            "warmup": c.cpu_warmup,
            "rate_per_s": c.cpu_rate,
            "latency_ms": c.latency_ms,
            "rounds": c.cpu_rounds,
            "pinning": layout.describe(),
            "bridge_ms_per_accept": br,
            "baseline_ms_per_accept": bl,
            "node_ms_per_accept": nd,
            "node_skipped": node_skipped,
            # The Python floor peer: the least a Python server with the twilio package spends.
            "floor_ms_per_accept": fl,
            # The emulator in the bridge's rounds (what the bridge costs it); each system's
            # own figure is in emulator_ms_per_accept_by_system.
            "emulator_ms_per_accept": median("bridge", "emulator_ms_per_accept"),
            "emulator_ms_per_accept_by_system": {
                name: median(name, "emulator_ms_per_accept") for name in rounds
            },
            "emulator_ms_per_request": median("bridge", "emulator_ms_per_request"),
            "emulator_ms_per_request_by_system": {
                name: median(name, "emulator_ms_per_request") for name in rounds
            },
            "ms_per_accept_by_system": {name: median(name, "ms_per_accept") for name in rounds},
            "ratio_baseline_over_bridge": round(bl / br, 2) if br and bl else None,
            "ratio_node_over_bridge": round(nd / br, 2) if br and nd else None,
            "ratio_baseline_over_floor": round(bl / fl, 2) if fl and bl else None,
            "ratio_floor_over_node": round(fl / nd, 2) if fl and nd else None,
            # The bridge's, over every round it ran here (profiled ones too).
            "lost_intents": sum(r["lost_intents"] for r in self.bridge_rows),
            "double_accepts": sum(r["double_accepts"] for r in self.bridge_rows),
            "target_bridge_at_most_third_of_baseline": bool(br and bl and br <= bl / 3),
            "target_bridge_at_most_node": bool(br and nd and br <= nd),
            # Whether even the floor meets the bridge's 1/3 target: if not, no Python server
            # keeping the twilio package can.
            "floor_within_third_of_baseline": bool(fl and bl and fl <= bl / 3),
            "by_system": {name: rows for name, rows in rounds.items()},
            "profile": profile,
        }


def table_lines(cpu: JSON) -> list[str]:
    """The cpu scenario's lines for the bench's closing table."""

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} ms"

    by = cpu.get("emulator_ms_per_accept_by_system", {})
    floor = cpu.get("floor_ms_per_accept")
    lines = [
        "",
        f"cpu: {cpu['n']} accepts per round at {cpu['rate_per_s']:g}/s, L={cpu['latency_ms']:g} "
        f"ms, median of {cpu['rounds']} round(s) per system; {cpu['pinning']}",
        f"  {'CPU per accepted reservation':<34} {'bridge':>14} {'baseline':>14} {'node':>14} "
        f"{'python floor':>14}",
        f"  {'system under test':<34} {fmt(cpu['bridge_ms_per_accept']):>14} "
        f"{fmt(cpu['baseline_ms_per_accept']):>14} {fmt(cpu['node_ms_per_accept']):>14} "
        f"{fmt(floor):>14}",
        f"  {'emulator, in that round':<34} {fmt(by.get('bridge')):>14} "
        f"{fmt(by.get('baseline')):>14} {fmt(by.get('node')):>14} {fmt(by.get('floor')):>14}",
        f"  baseline / bridge: {cpu['ratio_baseline_over_bridge']}x; node / bridge: "
        f"{cpu['ratio_node_over_bridge']}x; emulator per request (bridge round): "
        f"{fmt(cpu['emulator_ms_per_request'])}",
        f"  target: bridge <= 1/3 of the baseline -> "
        f"{'met' if cpu['target_bridge_at_most_third_of_baseline'] else 'MISSED'}; "
        f"bridge <= node -> {'met' if cpu['target_bridge_at_most_node'] else 'MISSED'}; "
        f"lost {cpu['lost_intents']}, doubled {cpu['double_accepts']}",
    ]
    if floor is not None:
        within = cpu.get("floor_within_third_of_baseline")
        lines.append(
            f"  python floor: baseline / floor {cpu.get('ratio_baseline_over_floor')}x, "
            f"floor / node {cpu.get('ratio_floor_over_node')}x; the floor within 1/3 of the "
            f"baseline -> {'yes' if within else 'NO'}"
        )
    if cpu.get("node_skipped"):
        lines.append(f"  node peer skipped: {cpu['node_skipped']}")
    return lines
