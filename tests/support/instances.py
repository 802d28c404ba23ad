"""Several bridge instances, as real ``python -m flex_bridge serve`` subprocesses, on one
PostgreSQL journal (rule 9; docs/bridge.md, "Several instances").

Each instance has a fixed port and its own ``FLEX_BRIDGE_INSTANCE_ID`` (the journal's lease
owner), and may be started, SIGKILLed and restarted at will; started with a crash point it
runs ``tests.support.crashing_bridge`` instead. Every instance checks webhook signatures
against ``public_url`` (the proxy's, the URL TaskRouter calls).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.bridge import started, wait_until
from tests.support.emulator import RunningEmulator
from tests.support.net import free_port

REPO = str(Path(__file__).resolve().parents[2])  # for ``-m tests.support.crashing_bridge``
BOUND = 30.0  # generous upper bound of every wait; nothing asserts a duration


class Instance:
    """One bridge process on one port, started and stopped at will."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "FLEX_BRIDGE_INSTANCE_ID": name}
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}-{self.runs}.log"

    def output(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return f"{self.name}: (no output)"
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.log_path.name} (last {len(tail)} lines) ---\n" + "\n".join(tail)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, crash_at: str | None = None) -> None:
        assert not self.alive, f"{self.name} is still running"
        self.runs += 1
        env = dict(self.env)
        command = [sys.executable, "-m", "flex_bridge", "serve"]
        if crash_at:
            command = [sys.executable, "-m", "tests.support.crashing_bridge", crash_at]
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                command, env=env, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT
            )

    async def ready(self, session: aiohttp.ClientSession) -> None:
        async def up() -> bool:
            assert self.proc is not None
            code = self.proc.poll()
            if code is not None:
                raise AssertionError(f"{self.name} exited ({code}) at start-up\n{self.output()}")
            return await started(session, self.url)

        await eventually(up, f"{self.name} answering /healthz", self.output)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    async def exited(self) -> int:
        async def gone() -> bool:
            return self.proc is not None and self.proc.poll() is not None

        await eventually(gone, f"{self.name} to exit", self.output)
        assert self.proc is not None
        return self.proc.returncode


async def eventually(
    predicate: Callable[[], Awaitable[Any]],
    what: str | Callable[[], str],
    output: Callable[[], str] = lambda: "",
    *,
    timeout: float = BOUND,
    interval: float = 0.1,
) -> Any:
    try:
        return await wait_until(predicate, timeout=timeout, interval=interval)
    except TimeoutError:
        what = what() if callable(what) else what
        raise AssertionError(f"timed out waiting for {what}\n{output()}") from None


class Instances:
    """``count`` instances of one bridge configuration on one journal."""

    def __init__(
        self,
        emulator: RunningEmulator,
        journal: str,
        policy_path: Path,
        public_url: str,
        workdir: Path,
        count: int = 3,
    ) -> None:
        state = emulator.state
        assert state is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "FLEX_BRIDGE_"))}
        env.update(
            TWILIO_ACCOUNT_SID=state.account_sid,
            TWILIO_AUTH_TOKEN=state.auth_token,
            FLEX_BRIDGE_WORKSPACE_SID=state.workspace_sid,
            FLEX_BRIDGE_SYNC_SERVICE_SID=state.sync_service_sid,
            FLEX_BRIDGE_TWILIO_BASE_URL=emulator.url,
            FLEX_BRIDGE_PUBLIC_URL=public_url,
            FLEX_BRIDGE_JOURNAL=journal,
            FLEX_BRIDGE_POLICY=str(policy_path),
        )
        self.journal = journal
        self.all = [Instance(f"bridge-{i}", env, workdir) for i in range(count)]

    def __getitem__(self, index: int) -> Instance:
        return self.all[index]

    @property
    def urls(self) -> list[str]:
        return [i.url for i in self.all]

    def named(self, name: str) -> Instance:
        [found] = [i for i in self.all if i.name == name]
        return found

    async def start(
        self, session: aiohttp.ClientSession, crash_at: dict[int, str] | None = None
    ) -> None:
        for index, instance in enumerate(self.all):
            instance.start((crash_at or {}).get(index))
        for instance in self.all:
            await instance.ready(session)

    def output(self) -> str:
        return "\n".join(i.output() for i in self.all)

    def kill_all(self) -> None:
        for instance in self.all:
            instance.kill()
