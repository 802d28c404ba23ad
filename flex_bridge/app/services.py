"""What the web layer needs, opened in ``before_serving`` and closed in ``after_serving``.

``Services`` is the seam between the HTTP layer and the outside world: ``open_services``
builds the real adapters from ``Settings``; a test may hand ``create_app`` its own factory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from twilio.rest import Client

from flex_bridge.adapters.flex_tokens import TokenValidatorPort, TwilioTokenValidator
from flex_bridge.adapters.http import BridgeHttpClient
from flex_bridge.adapters.journal import Journal, open_journal
from flex_bridge.adapters.sync_channel import SyncChannelPort, TwilioSyncChannel
from flex_bridge.adapters.taskrouter import TaskRouterPort, TwilioTaskRouter
from flex_bridge.app.coordinator import Coordinator
from flex_bridge.app.enrichment import Enrichment
from flex_bridge.app.events import EventInbox, HandlerRegistry
from flex_bridge.app.metrics import Metrics
from flex_bridge.app.reconcile import Reconciler
from flex_bridge.app.recovery import Recovery
from flex_bridge.errors import ConfigError, FlexBridgeError, JournalError
from flex_bridge.settings import Settings

logger = logging.getLogger("flex_bridge.web")


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    journal: Journal
    taskrouter: TaskRouterPort
    channel: SyncChannelPort
    tokens: TokenValidatorPort
    coordinator: Coordinator
    handlers: HandlerRegistry
    enrichment: Enrichment | None = None
    # What was opened, in the order it was: ``close`` runs them in reverse.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    recovery: Recovery = field(init=False)
    inbox: EventInbox = field(init=False)
    reconciler: Reconciler = field(init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.recovery = Recovery(self.coordinator)
        self.inbox = EventInbox(self.journal, self.handlers, self.coordinator.ownership.owner)
        self.reconciler = Reconciler(self)

    def spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        await self.handlers.drain()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.recovery.close()
        await self.inbox.close()
        await self.reconciler.close()
        await self.coordinator.close()
        for closer in reversed(self.closers):
            with contextlib.suppress(FlexBridgeError, OSError):
                await closer()


ServicesFactory = Callable[[Settings, Metrics], Awaitable[Services]]


async def open_checked(factory: ServicesFactory, settings: Settings, metrics: Metrics) -> Services:
    """``factory(settings, metrics)``, with what stops start-up as one ``ConfigError`` naming
    the setting at fault: the journal (``FLEX_BRIDGE_JOURNAL``) that cannot be opened, the
    user code of the policy file (``FLEX_BRIDGE_POLICY``) that cannot be loaded or built."""
    try:
        return await factory(settings, metrics)
    except JournalError as exc:
        raise ConfigError(f"FLEX_BRIDGE_JOURNAL: the journal cannot be opened: {exc}") from None
    except ConfigError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the module raised
        if not message.startswith("FLEX_BRIDGE_"):
            message = f"FLEX_BRIDGE_POLICY ({settings.policy_path or 'the policy'}): {message}"
        raise ConfigError(message) from None


async def open_services(settings: Settings, metrics: Metrics) -> Services:
    """The real adapters, over the official client (pointed at Twilio or the emulator).

    On failure, what was opened is closed again before the error goes on.
    """
    closers: list[Callable[[], Awaitable[None]]] = []
    try:
        return await _open(settings, metrics, closers)
    except BaseException:
        for closer in reversed(closers):
            with contextlib.suppress(Exception):
                await closer()
        raise


async def _open(
    settings: Settings, metrics: Metrics, closers: list[Callable[[], Awaitable[None]]]
) -> Services:
    """Open the adapters, each one's ``close`` added to ``closers`` as it opens: closed in
    reverse (``Services.close``), the journal last, after the HTTP client and the
    enrichment (whose ``close`` cancels enricher calls that may still be using the client)."""
    journal = open_journal(settings.journal)
    await journal.open()
    closers.append(journal.close)
    http = BridgeHttpClient(settings.twilio_base_url, timeout=settings.http_timeout)
    closers.append(http.close)
    user, password = settings.rest_auth
    client = Client(user, password, account_sid=settings.account_sid, http_client=http)
    taskrouter = TwilioTaskRouter(client, settings.workspace_sid)
    channel = TwilioSyncChannel(
        client,
        settings.sync_service_sid,
        ttl=settings.policy.sync.item_ttl,
        on_write=lambda outcome: metrics.sync_writes.labels(outcome).inc(),
    )
    tokens = TwilioTokenValidator(http, settings.account_sid, settings.rest_auth)
    enrichment: Enrichment | None = None
    if settings.policy.enrichment.enrichers:
        enrichment = Enrichment(settings.policy.enrichment, taskrouter, metrics=metrics)
        closers.append(enrichment.close)
    coordinator = Coordinator(
        journal,
        channel,
        taskrouter,
        settings.policy,
        metrics=metrics,
        enrich=enrichment.for_intent if enrichment else None,
        owner=settings.instance_id,
    )
    handlers = HandlerRegistry(metrics)
    handlers.load(settings.policy.event_handlers)
    return Services(
        settings=settings,
        metrics=metrics,
        journal=journal,
        taskrouter=taskrouter,
        channel=channel,
        tokens=tokens,
        coordinator=coordinator,
        handlers=handlers,
        enrichment=enrichment,
        closers=closers,
    )
