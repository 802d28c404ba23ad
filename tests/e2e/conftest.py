from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.e2e.env import Env
from tests.support.bridge import RunningBridge
from tests.support.emulator import RunningEmulator

OpenEnv = Callable[..., Awaitable[Env]]


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
        # The socket listens before the app's before_serving has run; Hypercorn serves the
        # first request only once it has, so one answered request means the bridge is ready.
        status, body, _ = await env.request("GET", "/healthz")
        assert status == 200, body
        return env

    yield open_
    for env in opened:
        await env.close()
