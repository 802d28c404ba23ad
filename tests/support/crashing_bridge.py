"""``python -m tests.support.crashing_bridge STEP[:N] --host H --port P``: the bridge, as
``flex-bridge serve`` runs it, that SIGKILLs itself the N-th time (default 1st) an intent
reaches journal state STEP (recorded, announced or applied).

The crash tests install the kill as a coordinator observer; production code has no such hook.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from flex_bridge import logs
from flex_bridge.app.metrics import Metrics
from flex_bridge.app.services import Services, open_services
from flex_bridge.cli import serve_bridge
from flex_bridge.domain.intents import Intent
from flex_bridge.settings import Settings

STEPS = ("recorded", "announced", "applied")
logger = logging.getLogger("flex_bridge.crash")


def kill_at(spec: str) -> tuple[str, int]:
    step, _, n = spec.partition(":")
    if step not in STEPS or not (n or "1").isdigit() or int(n or "1") < 1:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(STEPS)}[:n], got {spec!r}")
    return step, int(n or "1")


def main() -> int:
    parser = argparse.ArgumentParser(prog="crashing_bridge")
    parser.add_argument("crash_at", type=kill_at)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    step, remaining = args.crash_at

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
        svc.coordinator.observers.append(observer)
        return svc

    logs.configure("INFO")
    return asyncio.run(serve_bridge(Settings.from_env(), args.host, args.port, services))


if __name__ == "__main__":
    sys.exit(main())
