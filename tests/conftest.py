from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import settings

from flex_bridge.adapters.retry import set_testing
from flex_bridge.emulator.core import EmulatorConfig
from flex_bridge.emulator.seed import SeedOptions
from tests.support.bridge import RunningBridge, seed_for, settings_for
from tests.support.emulator import (
    Admin,
    CallbackServer,
    RunningEmulator,
    start_callback_server,
    twilio_client,
)
from tests.support.postgres import PostgresServer, running_postgres

DEFAULT_SEED = SeedOptions()

# No wall-clock deadline for property tests: on a loaded CI machine one example can take
# several times its usual 40 ms, and hypothesis would fail it as DeadlineExceeded.
settings.register_profile("flex-bridge", deadline=None)
settings.load_profile("flex-bridge")

TESTS = Path(__file__).parent

# ``slow``: ``make test`` runs everything, ``make test-fast`` (``pytest -m "not slow"``) leaves
# these out. Files and directories are marked here by path (their owners keep them free of
# markers); elsewhere a test over ~2 s carries ``@pytest.mark.slow`` itself.
SLOW_PATHS = (
    "reliability/",  # chaos, crash trials, fuzzing: a minute and more
    "e2e/test_crash_recovery.py",  # kills and restarts a bridge subprocess
    # Its tests share cached response validators (tests/support/schemas.py): marking only the
    # ones over 2 s would move their cost to the last test, which drives every scenario.
    "emulator/test_conformance.py",
)


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            path = item.path.relative_to(TESTS).as_posix()
        except ValueError:
            continue
        if path.startswith(SLOW_PATHS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., RunningEmulator]]:
    started: list[RunningEmulator] = []

    def start(
        config: EmulatorConfig | None = None,
        options: SeedOptions | None = DEFAULT_SEED,
        **config_overrides: Any,
    ) -> RunningEmulator:
        cfg = config or EmulatorConfig(**config_overrides)
        running = RunningEmulator(cfg, options).start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture(autouse=True)
def _no_retry_waits() -> Iterator[None]:
    set_testing(True)
    yield
    set_testing(False)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """For tests that run ``flex-bridge serve``, which configures the root logger: put it
    back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL (``tests/support/postgres.py``): started, skipped or failed
    on first use."""
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def journal_backend(request: pytest.FixtureRequest) -> str:
    """Which journal the bridges of a test use: every test that starts one runs on both."""
    backend: str = request.param
    return backend


@pytest.fixture
def new_journal(
    journal_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], str]]:
    """``new_journal()``: the ``Settings.journal`` of a new, empty journal on the test's
    backend (a file in ``tmp_path``, or a PostgreSQL schema of its own, dropped after the
    test). Each call is another journal."""
    server: PostgresServer | None = None
    if journal_backend == "postgres":
        server = request.getfixturevalue("postgres")
    with contextlib.ExitStack() as stack:
        made: list[str] = []

        def new() -> str:
            if server is not None:
                setting = stack.enter_context(server.schema_blocking())
            else:
                setting = str(tmp_path / f"journal-{len(made)}.db")
            made.append(setting)
            return setting

        yield new


@pytest.fixture
def start_bridge(
    start_emulator: Callable[..., RunningEmulator], new_journal: Callable[[], str]
) -> Iterator[Callable[..., tuple[RunningBridge, RunningEmulator]]]:
    """Start an emulator whose callbacks point at a bridge, then the bridge itself (on the
    journal backend of ``journal_backend``: each test runs on SQLite and on PostgreSQL)."""
    started: list[RunningBridge] = []

    def start(
        policy: dict[str, Any] | None = None,
        seed: dict[str, Any] | None = None,
        emulator_config: dict[str, Any] | None = None,
        **settings: Any,
    ) -> tuple[RunningBridge, RunningEmulator]:
        bridge = RunningBridge()
        running = start_emulator(
            options=seed_for(bridge.url, **(seed or {})), **(emulator_config or {})
        )
        bridge.start(settings_for(running, new_journal(), policy, **settings))
        started.append(bridge)
        return bridge, running

    yield start
    for bridge in started:
        bridge.stop()


@pytest.fixture
def emulator(start_emulator: Callable[..., RunningEmulator]) -> RunningEmulator:
    return start_emulator()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def admin(emulator: RunningEmulator, session: aiohttp.ClientSession) -> Admin:
    return Admin(emulator, session)


@pytest.fixture
async def client(emulator: RunningEmulator) -> AsyncIterator[Any]:
    c = twilio_client(emulator)
    yield c
    await c.http_client.close()


@pytest.fixture
async def callbacks() -> AsyncIterator[CallbackServer]:
    server = await start_callback_server()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()
