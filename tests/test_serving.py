"""Serving: the server and event loop settings, and what each server must do for the bridge and
the emulator (flex_bridge/serving.py): listen with our backlog on the socket we bound, drop a
connection when the emulator loses a response on purpose, stop on ``shutdown``."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import aiohttp
import pytest
from quart import Quart
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from flex_bridge.cli import main
from flex_bridge.emulator.app import create_emulator_app
from flex_bridge.emulator.core import Emulator, EmulatorConfig
from flex_bridge.emulator.seed import SeedOptions, SeedState, seed
from flex_bridge.emulator.settings import EmulatorSettings
from flex_bridge.errors import ConfigError
from flex_bridge.serving import (
    BACKLOG,
    DEFAULT_LOOP,
    DEFAULT_SERVER,
    LOOPS,
    SERVERS,
    bind,
    hypercorn_config,
    loop_setting,
    run,
    serve_app,
    server_setting,
    uvicorn_config,
)
from flex_bridge.settings import Settings
from tests.support.bridge import SETTINGS_ENV
from tests.support.threaded import ThreadedServer

BRIDGE_ENV = SETTINGS_ENV


# ------------------------------------------------------------------------------- settings
def test_the_defaults_are_uvicorn_on_uvloop() -> None:
    """The cheapest pair measured (docs/performance.md, "The server and the event loop")."""
    assert (DEFAULT_SERVER, DEFAULT_LOOP) == ("uvicorn", "uvloop")
    settings = Settings.from_env(BRIDGE_ENV)
    assert (settings.server, settings.loop) == ("uvicorn", "uvloop")
    emulator = EmulatorSettings.from_env({})
    assert (emulator.server, emulator.loop) == ("uvicorn", "uvloop")


@pytest.mark.parametrize("raw", [None, "", "  "])
def test_unset_or_empty_is_the_default(raw: str | None) -> None:
    assert server_setting("X", raw) == DEFAULT_SERVER
    assert loop_setting("X", raw) == DEFAULT_LOOP


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("loop", LOOPS)
def test_each_pair_is_read_by_the_bridge_and_the_emulator(server: str, loop: str) -> None:
    env = {**BRIDGE_ENV, "FLEX_BRIDGE_SERVER": f" {server} ", "FLEX_BRIDGE_LOOP": loop}
    settings = Settings.from_env(env)
    assert (settings.server, settings.loop) == (server, loop)
    emulator = EmulatorSettings.from_env(env)
    assert (emulator.server, emulator.loop) == (server, loop)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLEX_BRIDGE_SERVER", "granian"),
        ("FLEX_BRIDGE_SERVER", "Uvicorn"),
        ("FLEX_BRIDGE_SERVER", "uvloop"),
        ("FLEX_BRIDGE_LOOP", "trio"),
        ("FLEX_BRIDGE_LOOP", "uvicorn"),
    ],
)
def test_an_unknown_value_is_refused_naming_the_variable(name: str, value: str) -> None:
    for read in (Settings.from_env, EmulatorSettings.from_env):
        with pytest.raises(ConfigError) as refused:
            read({**BRIDGE_ENV, name: value})
        assert str(refused.value).startswith(f"{name} must be ")
        assert repr(value) in str(refused.value)


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["serve"], {"FLEX_BRIDGE_SERVER": "nginx"}, "FLEX_BRIDGE_SERVER"),
        (["serve"], {"FLEX_BRIDGE_LOOP": "trio"}, "FLEX_BRIDGE_LOOP"),
        (["emulator", "--server", "nginx"], {}, "--server"),
        (["emulator", "--loop", "trio"], {}, "--loop"),
        (["emulator"], {"FLEX_BRIDGE_SERVER": "nginx"}, "FLEX_BRIDGE_SERVER"),
        (["emulator", "--rest-path", "flask"], {}, "--rest-path"),
        (
            ["emulator"],
            {"FLEX_BRIDGE_EMULATOR_REST_PATH": "flask"},
            "FLEX_BRIDGE_EMULATOR_REST_PATH",
        ),
    ],
)
def test_an_unknown_value_stops_the_start_with_one_line_and_exit_2(
    argv: list[str],
    env: dict[str, str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key in ("FLEX_BRIDGE_SERVER", "FLEX_BRIDGE_LOOP", "FLEX_BRIDGE_EMULATOR_REST_PATH"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {**BRIDGE_ENV, **env}.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"flex-bridge: configuration error: {named} must be ")


@pytest.mark.parametrize(("loop", "module"), [("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_run_runs_on_the_loop_named(loop: str, module: str) -> None:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    assert run(which(), loop) == module


# ------------------------------------------------------------------------ socket, config
def test_hypercorn_listens_with_our_backlog_not_its_default_of_100() -> None:
    """Hypercorn listens again on the socket with ``config.backlog``: with its default of 100
    a burst of callbacks overflows the queue and each dropped SYN costs its sender 1 s."""
    sock = bind("127.0.0.1", 0)
    try:
        assert hypercorn_config(sock).backlog == BACKLOG >= 1024
    finally:
        sock.close()


def test_uvicorn_is_set_up_as_hypercorn_is() -> None:
    config = uvicorn_config(Quart(__name__))
    assert config.backlog == BACKLOG
    assert config.timeout_keep_alive == 75  # longer than a client's idle keep-alive
    assert config.timeout_graceful_shutdown == 2
    assert config.http == "httptools"
    # Signatures cover the URL as received: no X-Forwarded-* rewriting of the scope.
    assert config.proxy_headers is False
    # The process's logging stays as it is; no access log.
    assert config.log_config is None
    assert config.access_log is False
    assert config.ws_ping_interval is None  # Hypercorn sends no pings either


def test_accepted_connections_say_tcp_and_do_not_wait_for_acks() -> None:
    """asyncio's transports set TCP_NODELAY only on a socket whose protocol is TCP; an
    accepted socket has its listener's. Without it uvicorn on asyncio's loop held each
    two-part response for the client's delayed ACK (40 ms)."""
    listener = bind("127.0.0.1", 0)
    listener.setblocking(True)
    client = socket.create_connection(listener.getsockname()[:2])
    accepted, _ = listener.accept()
    try:
        assert listener.proto == accepted.proto == socket.IPPROTO_TCP
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        for each in (accepted, client, listener):
            each.close()


# ------------------------------------------------------------------------ each server
def _emulator(server: str) -> tuple[ThreadedServer, dict[str, Any]]:
    made: dict[str, Any] = {}

    def factory() -> Any:
        made["emu"] = emu = Emulator(EmulatorConfig())
        made["state"] = seed(emu, SeedOptions())
        return create_emulator_app(emu)

    return ThreadedServer(factory, server=server).start(), made


@pytest.mark.parametrize("server", SERVERS)
async def test_a_dropped_response_is_a_dropped_connection_after_the_change(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The emulator's ``lose_mode: drop`` (emulator/blueprints/guard.py) relies on the server:
    the exception after a partial answer must cut the connection, and (filtered in
    emulator/app.py) must not be logged as a server error."""
    running, made = _emulator(server)
    try:
        state: SeedState = made["state"]
        auth = {"Authorization": aiohttp.encode_basic_auth(state.account_sid, state.auth_token)}
        tasks = f"{running.url}/taskrouter/v1/Workspaces/{state.workspace_sid}/Tasks"
        rule = {"method": "POST", "path": "/Tasks$", "lose_after_commit": 1, "lose_mode": "drop"}
        caplog.set_level(logging.WARNING)
        async with aiohttp.ClientSession(headers=auth) as session:
            async with session.post(
                f"{running.url}/_emulator/faults", json={"rules": [rule], "seed": 1}
            ) as answer:
                assert answer.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                async with session.post(tasks, data={"Attributes": "{}"}) as answer:
                    assert answer.status == 200  # the promise of a body that never comes
                    await answer.read()
            async with session.get(tasks) as answer:
                listed = (await answer.json())["tasks"]
        assert len(listed) == 1  # applied all the same
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors]
    finally:
        running.stop()


async def test_shutdown_closes_websockets_with_1012_and_runs_after_serving() -> None:
    """uvicorn (the default) tells WebSocket clients "service restart" at once, instead of
    holding the shutdown for its grace period; the app's after_serving runs."""
    running, made = _emulator(DEFAULT_SERVER)
    feed = await connect(running.url.replace("http://", "ws://", 1) + "/_emulator/ws")
    try:
        assert "hello" in str(await asyncio.wait_for(feed.recv(), 10))
        await asyncio.to_thread(running.stop)
        assert not running._thread.is_alive()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(feed.recv(), 10)
        assert feed.close_code == 1012
        assert made["emu"]._scheduler_task is None  # Emulator.close ran
    finally:
        await feed.close()


@pytest.mark.parametrize("server", SERVERS)
async def test_a_request_in_flight_at_shutdown_is_answered_then_after_serving_runs(
    server: str,
) -> None:
    app = Quart(__name__)
    entered, release, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    closed: list[bool] = []

    @app.get("/slow")
    async def slow() -> str:
        entered.set()
        await release.wait()
        return "done"

    @app.after_serving
    async def after() -> None:
        closed.append(True)

    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/slow"
    serving = asyncio.create_task(serve_app(app, sock, stop, server))
    async with aiohttp.ClientSession() as session:

        async def get() -> tuple[int, str]:
            async with session.get(url) as answer:
                return answer.status, await answer.text()

        request = asyncio.create_task(get())
        await asyncio.wait_for(entered.wait(), 10)
        stop.set()
        await asyncio.sleep(0.05)  # the server is stopping; the request is still in flight
        assert not closed
        release.set()
        assert await asyncio.wait_for(request, 10) == (200, "done")
    await asyncio.wait_for(serving, 10)
    assert closed == [True]


@pytest.mark.parametrize("server", SERVERS)
async def test_a_failed_start_is_an_exception_not_an_exit(server: str) -> None:
    """uvicorn exits the process when the app's start-up fails; here it raises instead, as
    Hypercorn does, so that the caller (the CLI, a test's server thread) sees it."""
    app = Quart(__name__)

    @app.before_serving
    async def fail() -> None:
        raise RuntimeError("no journal")

    with pytest.raises(Exception) as caught:  # SystemExit is no Exception: it would escape
        await serve_app(app, bind("127.0.0.1", 0), asyncio.Event(), server)
    assert "no journal" in str(caught.value) or "failed to start" in str(caught.value)
