from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.e2e.env import Env
from tests.support.bridge import RunningBridge, wait_until
from tests.support.emulator import RunningEmulator

OpenEnv = Callable[..., Awaitable[Env]]


async def _startup_listing(env: Env) -> None:
    """Wait until the bridge's start-up adoption has listed the reserved tasks, when its policy
    adopts any. It runs beside the first requests: a task the test creates before that
    listing would be adopted (and maybe accepted) at start-up, unlike what the test meant."""
    settings = env.bridge.settings
    assert settings is not None
    if all(rule.op == "defer" for rule in settings.policy.rules):
        return
    tasks = f"/v1/Workspaces/{env.state.workspace_sid}/Tasks"

    async def listed() -> bool:
        return any(e.get("method") == "GET" and e.get("path") == tasks for e in await env.rest())

    await wait_until(listed)


@pytest.fixture
async def open_env(
    start_bridge: Callable[..., tuple[RunningBridge, RunningEmulator]],
) -> AsyncIterator[OpenEnv]:
    """``await open_env(policy=..., **start_bridge_arguments)``: a bridge, its emulator, clients."""
    opened: list[Env] = []

    async def open_(**kwargs: Any) -> Env:
        bridge, emulator = start_bridge(**kwargs)
        env = Env(bridge, emulator)
        opened.append(env)
        # The socket listens before the app's before_serving has run; the server serves the
        # first request only once it has, so one answered request means the bridge is ready.
        status, body, _ = await env.request("GET", "/healthz")
        assert status == 200, body
        # The start-up check of TaskRouter and Sync runs beside start-up; /readyz waits for
        # that run, so a fault a test installs next meets the test's requests, not the check's.
        await env.request("GET", "/readyz")
        await _startup_listing(env)
        return env

    yield open_
    for env in opened:
        await env.close()
