"""The bench's machinery: processes, the emulator's admin API, offers, signed callbacks, and
reading the outcome back from the emulator's log and the bridge's journal.

Everything runs on this machine over real sockets: the emulator, the bridge and the baseline
are subprocesses; the load generator is this process (aiohttp). Tasks and reservations are
created through the official ``twilio`` client; the callbacks carry exactly the parameters
TaskRouter sends, taken from those real reservations, signed with the auth token.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from flex_bridge.adapters.http import BridgeHttpClient
from flex_bridge.adapters.journal import Journal

ROOT = Path(__file__).resolve().parents[1]
TASK_ATTRIBUTES = json.dumps({"type": "support", "bench": True})
JSON = dict[str, Any]


class BenchError(Exception):
    """The bench itself could not run a step (not a finding about the bridge)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def loadavg() -> list[str]:
    """The machine's 1-, 5- and 15-minute load averages, from /proc; [] where unreadable."""
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().split()[:3]
    return []


# ------------------------------------------------------------------------------ processes
STARTED: list[Proc] = []


@atexit.register
def _kill_leftovers() -> None:
    """However the bench ends (an error, Ctrl-C), no process it started outlives it."""
    for proc in STARTED:
        proc.kill()


class Proc:
    """A subprocess with its output in a log file."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], cwd: Path, log: Path
    ) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.cwd = cwd
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> Proc:
        STARTED.append(self)
        with self.log.open("ab") as out:
            self.started_at = time.time()
            self.popen = subprocess.Popen(
                self.command, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 8.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)


async def wait_http(
    session: aiohttp.ClientSession, url: str, proc: Proc, timeout: float = 30.0
) -> None:
    """Poll ``url`` until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited at start-up:\n{proc.tail()}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise BenchError(f"{proc.name} did not answer {url} within {timeout:.0f} s:\n{proc.tail()}")


# Passed on to every process the bench starts: the HTTP server and the event loop under test
# (flex_bridge/serving.py), e.g. ``FLEX_BRIDGE_SERVER=hypercorn python -m bench.run``.
PASSED_ON = ("FLEX_BRIDGE_SERVER", "FLEX_BRIDGE_LOOP")


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k in PASSED_ON or not k.startswith(("TWILIO_", "FLEX_BRIDGE_"))
    }


# ------------------------------------------------------------------------------- emulator
class Emulator:
    """The emulator subprocess and its admin API."""

    def __init__(
        self,
        workdir: Path,
        workers: int,
        session: aiohttp.ClientSession,
        *,
        name: str = "emulator",
        args: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.session = session
        self.state_file = workdir / f"{name}.json"
        command = [sys.executable, "-m", "flex_bridge", "emulator", "--port", str(self.port)]
        command += ["--workers", str(workers), "--reservation-timeout", "3600"]
        command += ["--state-file", str(self.state_file), "--fault-seed", "1", *args]
        self.proc = Proc(name, command, clean_env(), ROOT, workdir / f"{name}.log")
        self.state: JSON = {}
        self.seq = 0

    async def start(self) -> None:
        self.proc.start()
        await wait_http(self.session, self.url + "/_emulator/health", self.proc, timeout=60)
        self.state = json.loads(self.state_file.read_text())

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, self.url + path, json=body) as response:
            text = await response.text()
            if response.status >= 400:
                raise BenchError(f"{method} {path}: HTTP {response.status}: {text[:300]}")
            return json.loads(text) if text else None

    async def faults(self, rules: list[JSON]) -> None:
        await self.admin("POST", "/_emulator/faults", {"rules": rules, "seed": 1})

    async def clear_faults(self) -> None:
        await self.admin("DELETE", "/_emulator/faults")

    async def log(self, since: int, kind: str | None = "rest") -> list[JSON]:
        query = f"?since={since}" + (f"&kind={kind}" if kind else "")
        body = await self.admin("GET", "/_emulator/log" + query)
        entries: list[JSON] = body["entries"]
        return entries

    async def mark(self) -> int:
        """The last log sequence number so far: entries after it belong to what follows."""
        for entry in await self.log(self.seq, kind=None):
            self.seq = max(self.seq, int(entry["seq"]))
        return self.seq


def latency_rules(latency_ms: float) -> list[JSON]:
    return [
        {"product": "taskrouter", "latency_ms": latency_ms},
        {"product": "sync", "latency_ms": latency_ms},
    ]


# --------------------------------------------------------------------------------- offers
@dataclass(frozen=True, slots=True)
class Offer:
    """A real pending reservation, and the assignment callback TaskRouter would send for it."""

    reservation_sid: str
    task_sid: str
    worker_sid: str
    params: dict[str, str]


class Workspace:
    """The seeded workspace, driven through the official client (no pacing, no faults)."""

    def __init__(self, emulator: Emulator) -> None:
        state = emulator.state
        self.state = state
        self.http = BridgeHttpClient(emulator.url, pacing=False, connections=64, timeout=30)
        self.client = Client(state["account_sid"], state["auth_token"], http_client=self.http)
        self.ws = self.client.taskrouter.v1.workspaces(state["workspace_sid"])
        self.sync = self.client.sync.v1.services(state["sync_service_sid"])
        self.worker_sids: list[str] = [w["sid"] for w in state["workers"]]
        self.worker_attributes: dict[str, str] = {}

    async def load_workers(self, concurrency: int = 32) -> None:
        """Every worker's attributes. A list shows none (as Twilio's does: only a fetch of
        one worker has them), so each worker listed without them is fetched."""
        gate = asyncio.Semaphore(concurrency)

        async def attributes(sid: str) -> None:
            async with gate:
                worker = await self.ws.workers(sid).fetch_async()
            self.worker_attributes[sid] = worker.attributes

        missing = []
        for worker in await self.ws.workers.list_async(page_size=1000):
            if worker.attributes is None:
                missing.append(worker.sid)
            else:
                self.worker_attributes[worker.sid] = worker.attributes
        await asyncio.gather(*(attributes(sid) for sid in missing))

    async def close(self) -> None:
        await self.http.close()

    async def _offer(self, worker_sid: str) -> Offer:
        task = await self.ws.tasks.create_async(
            attributes=TASK_ATTRIBUTES, routing_target=worker_sid
        )
        for _ in range(100):
            reservations = await self.ws.tasks(task.sid).reservations.list_async()
            pending = [r for r in reservations if r.reservation_status == "pending"]
            if pending:
                res = pending[0]
                break
            await asyncio.sleep(0.05)
        else:
            raise BenchError(f"task {task.sid} was never offered to {worker_sid}")
        params = {
            "Timestamp": str(int(time.time())),
            "AccountSid": self.state["account_sid"],
            "WorkspaceSid": self.state["workspace_sid"],
            "WorkflowSid": task.workflow_sid or "",
            "TaskQueueSid": task.task_queue_sid or "",
            "WorkerSid": res.worker_sid,
            "WorkerAttributes": self.worker_attributes[res.worker_sid],
            "TaskSid": task.sid,
            "TaskAttributes": task.attributes,
            "TaskAge": str(task.age or 0),
            "TaskPriority": str(task.priority or 0),
            "ReservationSid": res.sid,
        }
        return Offer(res.sid, task.sid, res.worker_sid, params)

    async def offer(self, worker_sids: Sequence[str], concurrency: int = 32) -> list[Offer]:
        """One task routed to each worker; the pending reservations TaskRouter made."""
        gate = asyncio.Semaphore(concurrency)

        async def one(sid: str) -> Offer:
            async with gate:
                return await self._offer(sid)

        return list(await asyncio.gather(*(one(sid) for sid in worker_sids)))

    async def release(self, offers: Iterable[Offer], concurrency: int = 32) -> None:
        """Complete (or cancel) the offers' tasks, so their workers are free again."""
        gate = asyncio.Semaphore(concurrency)

        async def one(offer: Offer) -> None:
            async with gate:
                task = self.ws.tasks(offer.task_sid)
                try:
                    await task.update_async(assignment_status="completed")
                except TwilioRestException:
                    with contextlib.suppress(TwilioRestException):
                        await task.update_async(assignment_status="canceled")

        await asyncio.gather(*(one(o) for o in offers))

    async def release_all(self) -> None:
        """Complete or cancel every open task in the workspace."""
        open_tasks: list[Any] = []
        for status in ("pending", "reserved", "assigned"):
            open_tasks += await self.ws.tasks.list_async(assignment_status=[status], page_size=1000)
        await self.release(Offer("", t.sid, "", {}) for t in open_tasks)


def synthetic_offers(count: int, state: JSON, prefix: str) -> list[Offer]:
    """Valid-looking callbacks for reservations that do not exist (the memory scenario)."""
    offers = []
    for i in range(count):
        tag = f"{prefix}{i:08x}".rjust(32, "0")[-32:]
        params = {
            "Timestamp": str(int(time.time())),
            "AccountSid": state["account_sid"],
            "WorkspaceSid": state["workspace_sid"],
            "WorkflowSid": state["workflow_sid"],
            "TaskQueueSid": state["task_queue_sid"],
            "WorkerSid": "WK" + tag,
            "WorkerAttributes": json.dumps({"skills": ["support"], "languages": ["en"]}),
            "TaskSid": "WT" + tag,
            "TaskAttributes": TASK_ATTRIBUTES,
            "TaskAge": "0",
            "TaskPriority": "0",
            "ReservationSid": "WR" + tag,
        }
        offers.append(Offer("WR" + tag, "WT" + tag, "WK" + tag, params))
    return offers


# ------------------------------------------------------------------------------ callbacks
@dataclass(frozen=True, slots=True)
class Sent:
    reservation_sid: str
    sent_at: float  # wall clock (time.time), comparable with the emulator log's ``time``
    latency: float  # seconds from send to the whole answer read
    status: int | None
    error: str | None = None


@dataclass
class Run:
    """The outcome of sending a batch of callbacks."""

    sent: list[Sent] = field(default_factory=list)
    started: float = 0.0
    elapsed: float = 0.0

    @property
    def ok(self) -> list[Sent]:
        return [s for s in self.sent if s.status == 200]

    def latencies_ms(self) -> list[float]:
        return [s.latency * 1000 for s in self.ok]

    def summary(self) -> JSON:
        lat = self.latencies_ms()
        return {
            "n": len(self.sent),
            "ok": len(self.ok),
            "errors": len(self.sent) - len(self.ok),
            "p50_ms": round(percentile(lat, 50), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(max(lat), 2) if lat else None,
            "over_5s": sum(1 for s in self.sent if s.latency > 5.0),
            "rps": round(len(self.ok) / self.elapsed, 1) if self.elapsed else None,
            "seconds": round(self.elapsed, 3),
        }


class Callbacks:
    """Sends signed assignment callbacks to one target (bridge or baseline)."""

    def __init__(
        self, name: str, base_url: str, auth_token: str, *, public_url: str | None = None
    ) -> None:
        self.name = name
        self.url = base_url + "/taskrouter/assignment"
        # The URL the signature covers: the one TaskRouter calls (a balancer's, in front).
        self.signed_url = (public_url or base_url) + "/taskrouter/assignment"
        self.validator = RequestValidator(auth_token)

    def prepare(self, offers: Sequence[Offer]) -> list[tuple[str, bytes, dict[str, str]]]:
        prepared = []
        for offer in offers:
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": self.validator.compute_signature(
                    self.signed_url, offer.params
                ),
                "User-Agent": "TwilioProxy/1.1",
            }
            prepared.append((offer.reservation_sid, urlencode(offer.params).encode(), headers))
        return prepared

    async def send(
        self,
        offers: Sequence[Offer],
        *,
        concurrency: int = 100,
        rate: float | None = None,
        timeout: float = 30.0,
    ) -> Run:
        """Closed loop at ``concurrency``, or open loop at ``rate`` callbacks/s.

        Every callback opens its own connection (``force_close``), for both targets alike.
        """
        prepared = self.prepare(offers)
        connector = aiohttp.TCPConnector(limit=0 if rate else concurrency, force_close=True)
        # The load generator's own garbage collection would stall its sends and show up as
        # latency of the system under test: none while sending (it is collected after).
        gc.collect()
        gc.disable()
        try:
            return await self._send(prepared, connector, concurrency, rate, timeout)
        finally:
            gc.enable()

    async def _send(
        self,
        prepared: list[tuple[str, bytes, dict[str, str]]],
        connector: aiohttp.TCPConnector,
        concurrency: int,
        rate: float | None,
        timeout: float,
    ) -> Run:
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        run = Run()
        async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:

            async def one(sid: str, body: bytes, headers: dict[str, str]) -> Sent:
                sent_at = time.time()
                started = time.perf_counter()
                try:
                    async with session.post(self.url, data=body, headers=headers) as response:
                        await response.read()
                        status: int | None = response.status
                        error = None
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, error = None, f"{type(exc).__name__}: {exc}"
                return Sent(sid, sent_at, time.perf_counter() - started, status, error)

            run.started = time.time()
            t0 = time.perf_counter()
            if rate:
                tasks = []
                for i, item in enumerate(prepared):
                    delay = t0 + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(one(*item)))
                run.sent = list(await asyncio.gather(*tasks))
            else:
                queue = iter(prepared)
                results: list[Sent] = []

                async def worker() -> None:
                    for item in queue:
                        results.append(await one(*item))

                await asyncio.gather(*(worker() for _ in range(concurrency)))
                run.sent = results
            run.elapsed = time.perf_counter() - t0
        return run


# ---------------------------------------------------------------------------- the journal
def _journal_rows(path: Path) -> list[tuple[str, str, str | None]]:
    if not path.exists():
        return []
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = con.execute("SELECT reservation_sid, state, error_message FROM intents").fetchall()
    except sqlite3.OperationalError:
        return []  # not created yet
    finally:
        con.close()
    return [(str(r[0]), str(r[1]), r[2]) for r in rows]


async def journal_rows(path: Path) -> list[tuple[str, str, str | None]]:
    """The bridge's intents, read-only: (reservation_sid, state, error_message)."""
    return await asyncio.to_thread(_journal_rows, path)


async def wait_settled(
    journal: Path,
    reservations: Iterable[str],
    *,
    bound: float,
    interval: float = 0.1,
) -> float | None:
    """Wait until every given reservation has a settled intent and none is unsettled;
    the time (time.time) it was first seen so, or None at the bound."""
    wanted = set(reservations)
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        rows = await journal_rows(journal)
        settled = {sid for sid, state, _ in rows if state == "settled"}
        unsettled = any(state != "settled" for sid, state, _ in rows if sid in wanted)
        if wanted <= settled and not unsettled:
            return time.time()
        await asyncio.sleep(interval)
    return None


# ---------------------------------------------------------------------------- the log
def is_accept(entry: JSON) -> bool:
    return (
        entry.get("product") == "taskrouter"
        and entry.get("method") == "POST"
        and "/Reservations/" in entry.get("path", "")
        and (entry.get("form") or {}).get("ReservationStatus") == "accepted"
    )


def reservation_of(entry: JSON) -> str:
    return str(entry.get("path", "")).rsplit("/", 1)[-1]


@dataclass
class Outcome:
    """What the emulator's log says about a set of reservations."""

    applied_at: dict[str, float] = field(default_factory=dict)  # first applied accept
    settled_at: dict[str, float] = field(default_factory=dict)  # first settling item write
    handled: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    applied: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    taskrouter_429: int = 0
    sync_429: int = 0
    requests: int = 0

    def lost(self, reservations: Iterable[str]) -> list[str]:
        return [sid for sid in reservations if self.applied.get(sid, 0) == 0]

    def doubled(self, reservations: Iterable[str]) -> list[str]:
        """More than one accept POST TaskRouter processed (not counting 429s, which Twilio
        did not process): a resend, whether or not TaskRouter refused the second."""
        return [
            sid
            for sid in reservations
            if self.handled.get(sid, 0) > 1 or self.applied.get(sid, 0) > 1
        ]


def outcome(entries: Iterable[JSON], reservations: Iterable[str]) -> Outcome:
    wanted = set(reservations)
    out = Outcome()
    for entry in entries:
        if entry.get("kind", "rest") != "rest":
            continue
        out.requests += 1
        status = entry.get("status")
        if status == 429:
            if entry.get("product") == "taskrouter":
                out.taskrouter_429 += 1
            elif entry.get("product") == "sync":
                out.sync_429 += 1
        if is_accept(entry):
            sid = reservation_of(entry)
            if sid not in wanted:
                continue
            if status != 429 and not str(entry.get("fault") or "").startswith("error_"):
                out.handled[sid] += 1
            if entry.get("applied"):
                out.applied[sid] += 1
                out.applied_at.setdefault(sid, float(entry["time"]))
            continue
        if (
            entry.get("product") == "sync"
            and entry.get("method") == "POST"
            and entry.get("applied")
            and "/Items" in entry.get("path", "")
        ):
            form = entry.get("form") or {}
            key = form.get("Key") or reservation_of(entry)
            if key not in wanted or "Data" not in form:
                continue
            with contextlib.suppress(ValueError, TypeError):
                if json.loads(form["Data"]).get("phase") in ("applied", "failed"):
                    out.settled_at.setdefault(key, float(entry["time"]))
    return out


async def metric(session: aiohttp.ClientSession, base_url: str, name: str) -> float | None:
    """One unlabelled sample from the bridge's /metrics."""
    async with session.get(base_url + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            return float(line.rsplit(" ", 1)[1])
    return None


# ------------------------------------------------------------------- bridge and baseline
ACCEPT_ALL = """\
# The bench's policy: accept every reservation, over REST after a Sync announcement.
[[assignment.rules]]
name = "all"
op = "accept"
via = "rest"
"""


class Server:
    """The bridge (``flex-bridge serve``), the baseline (``python -m bench.baseline``), the
    Node peer (``node bench/peers/node/server.js``) or the Python floor peer (``python -m
    bench.peers.python_floor``)."""

    def __init__(
        self,
        name: str,
        module: str,
        workdir: Path,
        emulator: Emulator,
        *,
        args: Sequence[str] = ("serve",),
        journal: Path | str | None = None,
        policy: str | None = None,
        extra_env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A SQLite journal's path (read directly); a PostgreSQL URL is read via open_journal.
        self.journal = journal if isinstance(journal, Path) else None
        state = emulator.state
        env = clean_env()
        env.update(
            TWILIO_ACCOUNT_SID=state["account_sid"],
            TWILIO_AUTH_TOKEN=state["auth_token"],
            FLEX_BRIDGE_WORKSPACE_SID=state["workspace_sid"],
            FLEX_BRIDGE_SYNC_SERVICE_SID=state["sync_service_sid"],
            FLEX_BRIDGE_TWILIO_BASE_URL=emulator.url,
            # The callbacks may come through a proxy (latency, faults): trust their Host.
            FLEX_BRIDGE_DEV="1",
        )
        if journal is not None:
            env["FLEX_BRIDGE_JOURNAL"] = str(journal)
        if policy is not None:
            policy_path = workdir / f"{name}.policy.toml"
            policy_path.write_text(policy)
            env["FLEX_BRIDGE_POLICY"] = str(policy_path)
        env.update(extra_env or {})
        # ``command`` (another runtime's server, e.g. the Node peer) replaces the Python module;
        # either way it is told ``--host`` and ``--port``.
        argv = [*command] if command else [sys.executable, "-m", module, *args]
        argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = Proc(name, argv, env, ROOT, workdir / f"{name}.log")
        self.callbacks = Callbacks(name, self.url, state["auth_token"])

    async def start(self, session: aiohttp.ClientSession) -> None:
        self.proc.start()
        await wait_http(session, self.url + "/healthz", self.proc)


def bridge(
    name: str,
    workdir: Path,
    emulator: Emulator,
    *,
    policy: str = ACCEPT_ALL,
    extra_env: dict[str, str] | None = None,
    journal: Path | str | None = None,
) -> Server:
    return Server(
        name,
        "flex_bridge",
        workdir,
        emulator,
        journal=journal or workdir / f"{name}.db",
        policy=policy,
        extra_env=extra_env,
    )


def baseline(workdir: Path, emulator: Emulator) -> Server:
    return Server("baseline", "bench.baseline", workdir, emulator, args=())


NODE_PEER = ROOT / "bench" / "peers" / "node"


def node_peer_ready(say: Callable[[str], None]) -> str | None:
    """Install the Node peer's packages from its lockfile if they are missing (``npm ci``);
    None when it can run, else why not (no ``node``/``npm`` here, or the install failed)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node and npm are not installed"
    if not (NODE_PEER / "node_modules" / "twilio").is_dir():
        say(f"  installing the Node peer's packages (npm ci in {NODE_PEER.relative_to(ROOT)})")
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_PEER,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            return f"npm ci failed: {(done.stderr or done.stdout).strip()[-500:]}"
    return None


def node_peer(workdir: Path, emulator: Emulator) -> Server:
    """The Node peer: Express and the official ``twilio`` npm package, inline (``server.js``)."""
    command = [shutil.which("node") or "node", str(NODE_PEER / "server.js")]
    return Server(
        "node", "", workdir, emulator, command=command, extra_env={"NODE_ENV": "production"}
    )


def python_floor(workdir: Path, emulator: Emulator) -> Server:
    """The Python floor peer (``bench/peers/python_floor``): the baseline's job, inline, on a
    raw ASGI app on uvicorn (httptools, uvloop) with the ``twilio`` package's async client."""
    return Server("floor", "bench.peers.python_floor", workdir, emulator, args=())


# ----------------------------------------------------- any journal, through its own interface
async def journal_states(journal: Journal, reservations: Iterable[str]) -> dict[str, str | None]:
    """The state of each reservation's latest intent (None: no intent), read through the
    ``Journal`` interface (``open_journal``), so SQLite and PostgreSQL alike."""
    states: dict[str, str | None] = {}
    for sid in reservations:
        intent = await journal.latest_for_reservation(sid)
        states[sid] = intent.state if intent is not None else None
    return states


async def wait_settled_in(
    journal: Journal,
    reservations: Iterable[str],
    *,
    bound: float,
    interval: float = 0.2,
) -> float | None:
    """``wait_settled`` for any journal: the time (time.time) every given reservation's latest
    intent was first seen settled, or None at the bound."""
    waiting = set(reservations)
    deadline = time.monotonic() + bound
    while True:
        states = await journal_states(journal, sorted(waiting))
        waiting = {sid for sid, state in states.items() if state != "settled"}
        if not waiting:
            return time.time()
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(interval)
