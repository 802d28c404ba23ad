"""The ``flex-bridge`` command (also ``python -m flex_bridge``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flex_bridge.errors import ConfigError

if TYPE_CHECKING:
    from flex_bridge.app.services import ServicesFactory
    from flex_bridge.emulator.settings import EmulatorSettings
    from flex_bridge.settings import Settings


def _server_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    port: int,
    help: str,
    description: str,
) -> argparse.ArgumentParser:
    """A command that serves HTTP: it listens on ``--host`` and ``--port``."""
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=port)
    return p


def _emulator_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _server_parser(
        sub,
        "emulator",
        port=8700,
        help="run the TaskRouter + Sync + Flex token emulator alone",
        description="Run the emulator. It prints its base URL, credentials and seeded SIDs.",
    )
    p.add_argument("--state-file", type=Path, help="write the seeded SIDs here as JSON")
    p.add_argument("--no-seed", action="store_true", help="start with no workspace at all")
    p.add_argument("--assignment-url", help="the seeded workflow's AssignmentCallbackUrl")
    p.add_argument(
        "--fallback-assignment-url", help="the seeded workflow's FallbackAssignmentCallbackUrl"
    )
    p.add_argument("--event-url", help="the seeded workspace's EventCallbackUrl")
    p.add_argument("--workers", type=int, default=3, help="how many seeded workers (default 3)")
    p.add_argument(
        "--reservation-timeout",
        type=int,
        default=120,
        help="the seeded workflow's TaskReservationTimeout in seconds (default 120)",
    )
    p.add_argument(
        "--no-sync-rate-limit",
        action="store_true",
        help="do not enforce Sync's rate limits (reads, writes, creations)",
    )
    p.add_argument(
        "--event-retry",
        action="store_true",
        help="retry failed event callbacks (Twilio documents no retry; off by default)",
    )
    p.add_argument("--fault-seed", type=int, default=0, help="seed of the fault injector")
    # Checked by serving.server_setting / loop_setting: a one-line error, as for the bridge.
    p.add_argument(
        "--server",
        help="the HTTP server, uvicorn or hypercorn (default: FLEX_BRIDGE_SERVER, else uvicorn)",
    )
    p.add_argument(
        "--loop",
        help="the event loop, uvloop or asyncio (default: FLEX_BRIDGE_LOOP, else uvloop)",
    )
    p.add_argument(
        "--rest-path",
        help="how REST requests go in, asgi or quart "
        "(default: FLEX_BRIDGE_EMULATOR_REST_PATH, else asgi)",
    )
    p.add_argument(
        "--admin-token",
        help="require Authorization: Bearer TOKEN on the admin API (/_emulator/...) "
        "(default: FLEX_BRIDGE_EMULATOR_ADMIN_TOKEN, else none)",
    )
    p.add_argument(
        "--admin-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="an origin (http://host:port) admitted by the admin API besides the emulator's "
        "own, such as a dev server forwarding /_emulator; repeatable "
        "(default: FLEX_BRIDGE_EMULATOR_ADMIN_ORIGINS, comma-separated)",
    )


def build_parser() -> argparse.ArgumentParser:
    from flex_bridge import version

    parser = argparse.ArgumentParser(
        prog="flex-bridge",
        description="Sync-first coordination of TaskRouter reservations for Twilio Flex.",
    )
    parser.add_argument("--version", action="version", version=f"flex-bridge {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = _server_parser(
        sub,
        "serve",
        port=8000,
        help="run the bridge (behind uvicorn or Hypercorn: FLEX_BRIDGE_SERVER)",
        description="Run the bridge. Settings come from the environment (see README).",
    )
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    _emulator_parser(sub)
    demo = sub.add_parser(
        "demo",
        help="run the scripted scenario on the embedded emulator",
        description="Start the emulator and drive a short scenario through the official "
        "twilio client, printing each step. Exits non-zero if anything was unexpected.",
    )
    demo.add_argument("--quiet", action="store_true", help="print only the summary")
    demo.add_argument("--tasks", type=int, default=60, help="how many tasks (default 60)")
    demo.add_argument("--agents", type=int, default=4, help="how many agents, 1-6 (default 4)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument(
        "--instances",
        type=int,
        default=1,
        help="bridges behind a round-robin balancer, 1-4 (default 1); more than one shares "
        "an embedded PostgreSQL journal, which needs Debian's postgresql package",
    )
    return parser


def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()


async def run_emulator(args: argparse.Namespace, settings: EmulatorSettings) -> int:
    from flex_bridge.emulator.app import create_emulator_app
    from flex_bridge.emulator.core import Emulator
    from flex_bridge.emulator.seed import SeedOptions, seed
    from flex_bridge.serving import base_url, bind, serve_app

    emu = Emulator(
        settings.config(
            sync_rate_limit=not args.no_sync_rate_limit,
            fault_seed=args.fault_seed,
            event_retry=args.event_retry,
            bind_host=args.host,
        )
    )
    sock = bind(args.host, args.port)
    url = base_url(sock)
    print(f"flex-bridge emulator listening on {url}")
    print(f"  account SID   {emu.config.account_sid}")
    print(f"  auth token    {emu.config.auth_token}")
    for key, secret in emu.api_keys.items():  # those accepted
        print(f"  API key       {key} / {secret}")
    print(f"  set FLEX_BRIDGE_TWILIO_BASE_URL={url}")
    if not args.no_seed:
        if args.workers < 0:
            raise ConfigError("--workers must not be negative")
        names = tuple(f"Worker {i + 1}" for i in range(args.workers))
        if args.workers == 3:
            names = ("Alice", "Bob", "Carol")
        state = seed(
            emu,
            SeedOptions(
                workers=names,
                assignment_url=args.assignment_url,
                fallback_assignment_url=args.fallback_assignment_url,
                event_url=args.event_url,
                reservation_timeout=args.reservation_timeout,
            ),
        )
        print(f"  workspace     {state.workspace_sid}")
        print(f"  workflow      {state.workflow_sid}")
        print(f"  task queue    {state.task_queue_sid}")
        print(f"  sync service  {state.sync_service_sid}")
        for name, sid in state.activities.items():
            print(f"  activity      {sid}  {name}")
        for worker in state.workers:
            print(f"  worker        {worker['sid']}  {worker['friendly_name']}")
        if args.state_file:
            from dataclasses import replace

            args.state_file.write_text(replace(state, base_url=url).to_json() + "\n")
            print(f"  state file    {args.state_file}")
    sys.stdout.flush()
    # The emulator's state only grows (tasks, reservations, items, the log) and lives as long
    # as the process: keep what survived a full collection out of the next ones, whose pauses
    # (hundreds of ms after a few thousand tasks) would otherwise show as latency of whatever
    # is measured against the emulator.
    gc.collect()
    gc.freeze()
    gc.callbacks.append(_freeze_survivors)
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, shutdown.set)
    await serve_app(create_emulator_app(emu), sock, shutdown, settings.server)
    return 0


async def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    from flex_bridge import logs

    logs.configure(args.log_level, settings.log_format)
    return await serve_bridge(settings, args.host, args.port)


async def serve_bridge(
    settings: Settings,
    host: str,
    port: int,
    services: ServicesFactory | None = None,
    *,
    shutdown: asyncio.Event | None = None,
) -> int:
    """Serve the bridge until SIGINT or SIGTERM (or ``shutdown`` is set, when given: then no
    signal handler is installed); ``services`` as for ``create_app``.

    The services are opened before "listening" is said: a journal that cannot be opened or
    user code that cannot be loaded raises ``ConfigError`` (one line, exit 2) instead.
    ``/metrics`` is served on ``FLEX_BRIDGE_METRICS_PORT`` when set.
    """
    import logging

    from flex_bridge.serving import Limits, base_url, bind, serve_app
    from flex_bridge.web import create_app, open_app
    from flex_bridge.web.ops import create_metrics_app

    sock = bind(host, port)
    metrics_sock: socket.socket | None = None
    try:
        bound = sock.getsockname()[1]
        if settings.metrics_port is not None:
            if settings.metrics_port == bound:
                raise ConfigError(
                    f"FLEX_BRIDGE_METRICS_PORT must differ from the bridge's port ({bound})"
                )
            try:
                metrics_sock = bind(host, settings.metrics_port)
            except OSError as exc:
                raise ConfigError(
                    f"FLEX_BRIDGE_METRICS_PORT: cannot listen on {host}:{settings.metrics_port}: "
                    f"{exc.strerror or exc}"
                ) from None
        if settings.instance_id is None:
            # Stable across restarts: a restarted instance (same host, same port: the old
            # process is surely gone, it held the port) takes its own leases back at once
            # (rule 9).
            settings = dataclasses.replace(settings, instance_id=f"{socket.gethostname()}:{bound}")
        app = create_app(settings, services=services)
        await open_app(app)
    except BaseException:
        for opened in (sock, metrics_sock):
            if opened is not None:
                opened.close()
        raise
    # Everything loaded so far lives as long as the process: keep it out of the garbage
    # collector's full passes, whose pauses would otherwise grow with it.
    gc.collect()
    gc.freeze()
    listening = f"flex-bridge listening on {base_url(sock)}"
    if metrics_sock is not None:
        listening += f" (/metrics on {base_url(metrics_sock)})"
    if settings.log_format == "json":
        logging.getLogger("flex_bridge.serve").info(listening)
    else:
        print(listening, flush=True)
    if shutdown is None:
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, shutdown.set)

    def limits() -> Limits:
        return Limits(settings.header_timeout, settings.max_connections)

    serving = [serve_app(app, sock, shutdown, settings.server, limits())]
    if metrics_sock is not None:
        # Limits of its own: connections flooding the main port do not stop the scrapes.
        metrics_app = create_metrics_app(app.config["metrics"], settings.metrics_token)
        serving.append(serve_app(metrics_app, metrics_sock, shutdown, settings.server, limits()))
    await asyncio.gather(*serving)
    return 0


def _stop_line(message: str) -> None:
    """The one line on stderr that says why the command stops: a JSON log record when
    ``FLEX_BRIDGE_LOG_FORMAT=json`` (read here, as the settings may be what failed), else
    ``flex-bridge: <message>``."""
    import logging
    import os

    from flex_bridge import logs

    if os.environ.get("FLEX_BRIDGE_LOG_FORMAT", "").strip() == "json":
        record = logging.LogRecord(
            "flex_bridge.cli", logging.CRITICAL, __file__, 0, message, None, None
        )
        print(logs.formatter("json").format(record), file=sys.stderr)
    else:
        print(f"flex-bridge: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            from flex_bridge.serving import run
            from flex_bridge.settings import Settings

            settings = Settings.from_env()  # before the loop: it names the loop
            return run(run_serve(args, settings), settings.loop)
        if args.command == "emulator":
            from flex_bridge.emulator.blueprints.admin_guard import LOOPBACK
            from flex_bridge.emulator.settings import (
                EmulatorSettings,
                admin_origins_setting,
                admin_token_setting,
                rest_path_setting,
            )
            from flex_bridge.serving import loop_setting, run, server_setting

            # The environment, then each flag given over it (checked as its variable is).
            flags = (
                ("rest_path", "--rest-path", rest_path_setting),
                ("admin_token", "--admin-token", admin_token_setting),
                ("admin_origins", "--admin-origin", admin_origins_setting),
                ("server", "--server", server_setting),
                ("loop", "--loop", loop_setting),
            )
            given: dict[str, Any] = {
                field: check(flag, raw)
                for field, flag, check in flags
                if (raw := getattr(args, flag[2:].replace("-", "_"))) is not None
            }
            emulator_settings = dataclasses.replace(EmulatorSettings.from_env(), **given)
            if args.host not in LOOPBACK:
                print(
                    f"warning: the emulator listens on {args.host}, not on loopback: anyone who "
                    "can reach it can use its admin API"
                    + ("" if emulator_settings.admin_token else " (no admin token is set)"),
                    file=sys.stderr,
                )
            return run(run_emulator(args, emulator_settings), emulator_settings.loop)
        if args.command == "demo":
            from flex_bridge.demo import DemoOptions, run_demo
            from flex_bridge.serving import run

            if not 1 <= args.agents <= 6:
                raise ConfigError("--agents must be between 1 and 6")
            if args.tasks < 1:
                raise ConfigError("--tasks must be at least 1")
            if not 1 <= args.instances <= 4:
                raise ConfigError("--instances must be between 1 and 4")
            options = DemoOptions(
                tasks=args.tasks,
                agents=args.agents,
                seed=args.seed,
                quiet=args.quiet,
                instances=args.instances,
            )
            return run(run_demo(options))
    except ConfigError as exc:
        _stop_line(f"configuration error: {exc}")
        return 2
    except OSError as exc:
        _stop_line(str(exc))
        return 1
    return 2
