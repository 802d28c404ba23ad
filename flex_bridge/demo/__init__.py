"""``flex-bridge demo``: the emulator, the bridge, simulated agents and a stream of tasks.

Everything runs in one process on real sockets. Every new task is enriched from a small demo
CRM (``crm.json``, served on 127.0.0.1) by the built-in HTTP CRM enricher. The policy accepts
VIP tasks over REST (announced on Sync first, after their enrichment, within its budget) and
defers the rest, which the simulated agents accept through the
``/flex`` API; a few agents look away now and then, so some reservations time out and are
offered to someone else. At the end the demo compares every Sync item with TaskRouter's
truth and counts double accepts; it exits non-zero if either is not zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from twilio.rest import Client

from flex_bridge.adapters.http import BridgeHttpClient
from flex_bridge.adapters.twilio_errors import call
from flex_bridge.demo.agents import Agent, Feed
from flex_bridge.demo.balancer import Balancer
from flex_bridge.demo.crm import DemoCrm, start_crm
from flex_bridge.demo.postgres import embedded_postgres
from flex_bridge.demo.report import Report, build_report
from flex_bridge.domain.policy import parse_policy
from flex_bridge.emulator.app import create_emulator_app
from flex_bridge.emulator.core import Emulator
from flex_bridge.emulator.seed import SeedOptions, seed
from flex_bridge.errors import UpstreamError
from flex_bridge.serving import base_url, bind, serve_app
from flex_bridge.settings import Settings
from flex_bridge.web import create_app

AGENTS = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank")


def demo_policy(crm_url: str) -> dict[str, Any]:
    """The demo's policy file, as the parsed TOML document, enriching from the demo CRM."""
    return {
        "sync": {"mode": "degrade", "announce_timeout": 2.0},
        "recovery": {"interval": 1.0},
        "assignment": {
            "rules": [
                {
                    "name": "vip",
                    "match": {"task_attributes": {"tier": "vip"}},
                    "op": "accept",
                    "before_accept": True,
                },
                {"name": "everyone else", "op": "defer"},
            ]
        },
        "enrichment": {
            "on_task_created": True,
            "enrichers": [
                {
                    "name": "crm",
                    "factory": "flex_bridge.adapters.crm:http_crm",
                    "options": {"url": crm_url, "keys": ["customer_id"], "target": "crm"},
                }
            ],
        },
    }


@dataclass(frozen=True, slots=True)
class DemoOptions:
    tasks: int = 60
    agents: int = 4
    rate: float = 20.0
    vip_share: float = 0.4
    ignore_rate: float = 0.1
    reservation_timeout: int = 3
    seed: int = 7
    deadline: float = 50.0
    quiet: bool = False
    instances: int = 1  # bridges sharing one journal (PostgreSQL when more than one)


class Progress:
    """One line, redrawn in place on a terminal; every 10% otherwise."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self.tty = sys.stdout.isatty()
        self.last = -1

    def show(self, done: int, detail: str) -> None:
        if self.quiet:
            return
        width = 30
        filled = int(width * done / self.total) if self.total else width
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} tasks done  {detail}"
        if self.tty:
            print(f"\r{line}", end="", flush=True)
        elif done * 10 // max(1, self.total) != self.last or done == self.total:
            self.last = done * 10 // max(1, self.total)
            print(line, flush=True)

    def finish(self) -> None:
        if self.tty and not self.quiet:
            print(flush=True)


async def run_demo(options: DemoOptions | None = None) -> int:
    opts = options or DemoOptions()
    rng = random.Random(opts.seed)
    started = time.perf_counter()

    crm = await start_crm()
    try:
        if opts.instances == 1:
            return await _run(opts, rng, started, crm, None)
        with embedded_postgres() as journal:
            return await _run(opts, rng, started, crm, journal)
    finally:
        await crm.close()


async def _run(
    opts: DemoOptions, rng: random.Random, started: float, crm: DemoCrm, journal: str | None
) -> int:
    emu = Emulator()
    bridge_socks = [bind("127.0.0.1", 0) for _ in range(opts.instances)]
    bridge_urls = [base_url(sock) for sock in bridge_socks]
    balancer = Balancer(bridge_urls) if opts.instances > 1 else None
    balancer_sock = bind("127.0.0.1", 0) if balancer else None
    # Twilio calls one URL: the balancer's when there are several bridges.
    public_url = base_url(balancer_sock) if balancer_sock else bridge_urls[0]
    names = AGENTS[: opts.agents]
    state = seed(
        emu,
        SeedOptions(
            workers=names,
            assignment_url=f"{public_url}/taskrouter/assignment",
            event_url=f"{public_url}/taskrouter/events",
            reservation_timeout=opts.reservation_timeout,
        ),
    )
    emu_sock = bind("127.0.0.1", 0)
    emu_url = base_url(emu_sock)
    workdir = Path(tempfile.mkdtemp(prefix="flex-bridge-demo-"))
    settings = Settings(
        account_sid=state.account_sid,
        auth_token=state.auth_token,
        workspace_sid=state.workspace_sid,
        sync_service_sid=state.sync_service_sid,
        twilio_base_url=emu_url,
        journal=journal or str(workdir / "journal.db"),
        public_url=public_url,  # what the emulator calls: the balancer, else the bridge
        policy=parse_policy(demo_policy(crm.url)),
    )
    bridge_apps = [
        create_app(replace(settings, instance_id=f"demo-bridge-{n + 1}"))
        for n in range(opts.instances)
    ]
    shutdown = asyncio.Event()
    servers = [asyncio.create_task(serve_app(create_emulator_app(emu), emu_sock, shutdown))]
    servers += [
        asyncio.create_task(serve_app(app, sock, shutdown))
        for app, sock in zip(bridge_apps, bridge_socks, strict=True)
    ]
    balancing = await _serve_balancer(balancer, balancer_sock)
    http = BridgeHttpClient(emu_url)
    client = Client(state.account_sid, state.auth_token, http_client=http)
    ws = client.taskrouter.v1.workspaces(state.workspace_sid)
    available = state.activities["Available"]

    async def set_available(worker_sid: str) -> None:
        with contextlib.suppress(UpstreamError):  # tried again at the agent's next turn
            await call(lambda: ws.workers(worker_sid).update_async(activity_sid=available))

    if not opts.quiet:
        print(f"flex-bridge demo: emulator {emu_url}, bridge {' '.join(bridge_urls)}")
        if balancer:
            print(
                f"  {opts.instances} bridges on one PostgreSQL journal (embedded), behind a "
                f"round-robin balancer at {public_url} that TaskRouter calls"
            )
        print(
            f"  {opts.tasks} tasks at {opts.rate:g}/s, {len(names)} agents, "
            f"{opts.vip_share:.0%} VIP (accepted by policy), reservation timeout "
            f"{opts.reservation_timeout} s, agents look away {opts.ignore_rate:.0%} of the time"
        )
        print(f"  tasks enriched from the demo CRM at {crm.url} ({crm.size} customers on file)")
    feed = Feed(emu_url.replace("http://", "ws://") + "/_emulator/ws")
    agents: list[Agent] = []
    runners: list[asyncio.Task[None]] = []
    session = aiohttp.ClientSession()
    report: Report | None = None
    try:
        for url in bridge_urls:
            await _wait_healthy(session, url)
        for worker in state.workers:
            issued = emu.tokens.issue(
                identity=worker["friendly_name"],
                worker_sid=worker["sid"],
                roles=["agent"],
                ttl=3600,
            )
            agents.append(
                Agent(
                    name=worker["friendly_name"],
                    worker_sid=worker["sid"],
                    token=issued.token,
                    bridge_url=bridge_urls[len(agents) % len(bridge_urls)],
                    feed=feed,
                    http=session,
                    set_available=set_available,
                    rng=random.Random(rng.random()),
                    ignore_rate=opts.ignore_rate,
                )
            )
        feed.start()
        await asyncio.wait_for(feed.ready.wait(), 5)
        runners = [asyncio.create_task(agent.run()) for agent in agents]
        task_sids = await _stream_tasks(ws, opts, rng, emu, agents)
        report = await build_report(
            emu=emu,
            state=state,
            client=client,
            bridge_apps=bridge_apps,
            task_sids=task_sids,
            agents=agents,
            elapsed=time.perf_counter() - started,
        )
    finally:
        for runner in runners:
            runner.cancel()
        for agent in agents:
            await agent.close()
        await feed.close()
        await session.close()
        await http.close()
        shutdown.set()
        await asyncio.gather(*servers, return_exceptions=True)
        if balancing is not None:
            await balancing.cleanup()
        if balancer is not None:
            await balancer.close()
    print(report.render())
    if balancer is not None:
        shares = ", ".join(f"{url}: {balancer.answered[url]}" for url in bridge_urls)
        print(f"callbacks answered per bridge: {shares}")
    return 0 if report.ok else 1


async def _serve_balancer(
    balancer: Balancer | None, sock: socket.socket | None
) -> web.AppRunner | None:
    if balancer is None or sock is None:
        return None
    runner = web.AppRunner(balancer.app(), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


async def _wait_healthy(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(100):
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{url}/healthz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the bridge at {url} did not come up")


async def _stream_tasks(
    ws: Any, opts: DemoOptions, rng: random.Random, emu: Emulator, agents: list[Agent]
) -> list[str]:
    progress = Progress(opts.tasks, opts.quiet)
    sids: list[str] = []
    deadline = time.monotonic() + opts.deadline
    for n in range(opts.tasks):
        vip = rng.random() < opts.vip_share
        attributes = {
            "type": "support",
            "tier": "vip" if vip else "standard",
            "customer_id": f"C-{1000 + n}",
        }
        task = await ws.tasks.create_async(attributes=json.dumps(attributes))
        sids.append(task.sid)
        progress.show(_finished(emu, sids), f"created {n + 1}")
        await asyncio.sleep(1 / opts.rate)
    while time.monotonic() < deadline:
        done = _finished(emu, sids)
        timeouts = sum(a.stats.ignored for a in agents)
        progress.show(done, f"({timeouts} looked away)")
        if done == len(sids):
            break
        await asyncio.sleep(0.2)
    progress.finish()
    return sids


def _finished(emu: Emulator, task_sids: list[str]) -> int:
    done = 0
    for ws in emu.taskrouter.workspaces.values():
        for sid in task_sids:
            task = ws.tasks.get(sid)
            if task is not None and task.assignment_status in ("completed", "canceled"):
                done += 1
    return done
