"""``python -m tests.support.crashing_bridge STEP[:N] --host H --port P``: the bridge, as
``flex-bridge serve`` runs it, that SIGKILLs itself the N-th time (default 1st) an intent
reaches journal state STEP (recorded, announced or applied).

``python -m tests.support.crashing_bridge inbox:EVENT_TYPE ...``: the bridge that, once it has
recorded an event of that type in the journal's inbox, applies no more events (neither at once
nor in its inbox sweep) and SIGKILLs itself ``INBOX_KILL_DELAY`` seconds later, after its
answer (the 204) has gone out: the event is left recorded and unapplied, for another instance.

The crash tests install the kill as a coordinator observer, or around the inbox; production
code has no such hook.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping

from flex_bridge import logs
from flex_bridge.app.metrics import Metrics
from flex_bridge.app.services import Services, open_services
from flex_bridge.cli import serve_bridge
from flex_bridge.domain.intents import Intent
from flex_bridge.serving import run
from flex_bridge.settings import Settings

STEPS = ("recorded", "announced", "applied")
INBOX = "inbox"
INBOX_KILL_DELAY = 2.0  # seconds: far more than the 204 takes to leave, even on a loaded CI
logger = logging.getLogger("flex_bridge.crash")


def kill_at(spec: str) -> tuple[str, int]:
    step, _, n = spec.partition(":")
    if step not in STEPS or not (n or "1").isdigit() or int(n or "1") < 1:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(STEPS)}[:n], got {spec!r}")
    return step, int(n or "1")


def crash_point(spec: str) -> tuple[str, int] | tuple[str, str]:
    """``kill_at``'s STEP[:N], or ``inbox:EVENT_TYPE``."""
    kind, _, event_type = spec.partition(":")
    if kind == INBOX:
        if not event_type:
            raise argparse.ArgumentTypeError(f"expected inbox:EVENT_TYPE, got {spec!r}")
        return INBOX, event_type
    return kill_at(spec)


def kill_after_recording(svc: Services, event_type: str) -> None:
    """Wrap ``svc.inbox``: the first event of ``event_type`` it records is its last."""
    inbox = svc.inbox
    receive = inbox.receive

    def kill() -> None:
        logger.warning("crash hook: killing the process after recording %s", event_type)
        os.kill(os.getpid(), signal.SIGKILL)

    async def nothing() -> int:
        return 0

    dispatch = svc.handlers.dispatch

    async def dispatching(event: Mapping[str, str]) -> int:
        # A drain already under way (the periodic sweep) may take the event after it was
        # recorded: it must not apply it either, so it waits here for the kill.
        if event.get("EventType") == event_type:
            await asyncio.Event().wait()
        return await dispatch(event)

    svc.handlers.dispatch = dispatching  # type: ignore[method-assign]

    async def receiving(event: Mapping[str, str], token: str | None) -> bool:
        if event.get("EventType") != event_type:
            return await receive(event, token)
        inbox.drain = nothing  # type: ignore[method-assign]  # from now on, apply nothing
        recorded = await receive(event, token)
        asyncio.get_running_loop().call_later(INBOX_KILL_DELAY, kill)
        return recorded

    inbox.receive = receiving  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser(prog="crashing_bridge")
    parser.add_argument("crash_at", type=crash_point)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    step, where = args.crash_at
    remaining = where if isinstance(where, int) else 0

    def observer(intent: Intent) -> None:
        nonlocal remaining
        if intent.state != step:
            return
        remaining -= 1
        if remaining == 0:
            logger.warning("crash hook: killing the process at %s", step)
            os.kill(os.getpid(), signal.SIGKILL)

    async def services(settings: Settings, metrics: Metrics) -> Services:
        svc = await open_services(settings, metrics)
        if step == INBOX:
            kill_after_recording(svc, str(where))
        else:
            svc.coordinator.observers.append(observer)
        return svc

    logs.configure("INFO")
    settings = Settings.from_env()
    return run(serve_bridge(settings, args.host, args.port, services), settings.loop)


if __name__ == "__main__":
    sys.exit(main())
