"""The emulator as one object: its state, clock, faults, log, feed and outgoing webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from flex_bridge.emulator.api import Router
from flex_bridge.emulator.clock import Clock, Scheduler
from flex_bridge.emulator.faults import Faults
from flex_bridge.emulator.feed import Feed
from flex_bridge.emulator.iam import TokenStore
from flex_bridge.emulator.log import RequestLog
from flex_bridge.emulator.runtime import Runtime
from flex_bridge.emulator.spec import load_spec
from flex_bridge.emulator.sync import SyncStore, register_sync_routes
from flex_bridge.emulator.taskrouter import (
    ASSIGNMENT_TIMEOUT,
    TaskRouter,
    register_taskrouter_routes,
)
from flex_bridge.emulator.webhooks import SharedKey, WebhookSender

DEFAULT_ACCOUNT_SID = "ACf1eb0000000000000000000000000001"
DEFAULT_AUTH_TOKEN = "emulator-auth-token"
DEFAULT_API_KEY = "SKf1eb0000000000000000000000000001"
DEFAULT_API_SECRET = "emulator-api-secret"
# How REST requests reach the REST core: the ASGI front door (emulator/front_door.py), or
# Quart's routes, as before it (docs/emulator.md).
REST_PATHS = ("asgi", "quart")
DEFAULT_REST_PATH = "asgi"


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    account_sid: str = DEFAULT_ACCOUNT_SID
    auth_token: str = DEFAULT_AUTH_TOKEN
    api_keys: dict[str, str] = field(default_factory=lambda: {DEFAULT_API_KEY: DEFAULT_API_SECRET})
    fault_seed: int = 0
    sync_rate_limit: bool = True
    assignment_timeout: float = ASSIGNMENT_TIMEOUT
    event_retry: bool = False  # Twilio documents no retry of event callbacks
    event_attempts: int = 3
    event_retry_base: float = 1.0
    webhook_signing: tuple[SharedKey, ...] = ()  # empty: the auth token signs (HMAC-SHA1)
    rest_path: str = DEFAULT_REST_PATH  # one of REST_PATHS
    # The admin API's guard (blueprints/admin_guard.py, docs/emulator.md "Security"): a bearer
    # token every admin request must carry (None: none needed), the host the emulator was
    # bound to (accepted in ``Host`` besides the loopback names), and origins allowed besides
    # the emulator's own (a dev server forwarding ``/_emulator`` to it).
    admin_token: str | None = None
    bind_host: str | None = None
    admin_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.rest_path not in REST_PATHS:
            raise ValueError(f"rest_path must be {' or '.join(REST_PATHS)}; got {self.rest_path!r}")

    def usable_api_keys(self) -> dict[str, str]:
        """The API keys accepted (the one place that says so): the published default key
        stops being valid as soon as the auth token is not the published default one."""
        if self.auth_token == DEFAULT_AUTH_TOKEN:
            return self.api_keys
        return {
            key: secret
            for key, secret in self.api_keys.items()
            if (key, secret) != (DEFAULT_API_KEY, DEFAULT_API_SECRET)
        }


class Emulator:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.clock = Clock()
        self.scheduler = Scheduler(self.clock)
        self.log = RequestLog(self.clock)
        self.feed = Feed()
        self.faults = Faults(self.config.fault_seed)
        self.sender = WebhookSender(
            self.config.auth_token,
            self.log,
            retry_events=self.config.event_retry,
            event_attempts=self.config.event_attempts,
            retry_base=self.config.event_retry_base,
            signing=self.config.webhook_signing,
        )
        rt = self.runtime = Runtime(
            self.config.account_sid, self.clock, self.scheduler, self.feed, self.log, self.sender
        )
        self.taskrouter = TaskRouter(rt, assignment_timeout=self.config.assignment_timeout)
        self.sync = SyncStore(
            rt.account_sid, rt.clock, rt.scheduler, rt.feed, rate_limit=self.config.sync_rate_limit
        )
        self.tokens = TokenStore(self.clock)
        self.api_keys = self.config.usable_api_keys()  # once: every API-key login reads it
        self.routers = {
            "taskrouter": Router(load_spec("taskrouter")),
            "sync": Router(load_spec("sync")),
        }
        register_taskrouter_routes(self.routers["taskrouter"], self.taskrouter)
        register_sync_routes(self.routers["sync"], self.sync)
        self._scheduler_task: asyncio.Task[None] | None = None

    def credentials_ok(self, username: str, password: str) -> bool:
        """The account SID and its auth token, or an API key and its secret; the published
        default API key only while the auth token is the published default one too."""
        if username == self.config.account_sid:
            return hmac.compare_digest(password.encode(), self.config.auth_token.encode())
        secret = self.api_keys.get(username)
        return secret is not None and hmac.compare_digest(password.encode(), secret.encode())

    async def start(self) -> None:
        if self._scheduler_task is None:
            self._scheduler_task = asyncio.get_running_loop().create_task(self.scheduler.run())

    async def close(self) -> None:
        if self._scheduler_task is not None:
            self._scheduler_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler_task
            self._scheduler_task = None
        await self.taskrouter.close()
        await self.sender.close()

    def dump(self) -> dict[str, Any]:
        return {
            "account_sid": self.config.account_sid,
            "clock": {"now": self.clock.now(), "offset": self.clock.offset},
            "taskrouter": {"workspaces": self.taskrouter.dump()},
            "sync": self.sync.dump(),
            "tokens": self.tokens.count(),
            "faults": self.faults.describe(),
        }
