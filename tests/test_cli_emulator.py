"""``flex-bridge emulator``: its flags over its environment, into one EmulatorSettings, and
what it prints being what it accepts."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Coroutine
from typing import Any

import pytest

import flex_bridge.cli
import flex_bridge.emulator.app
import flex_bridge.serving
from flex_bridge.cli import main
from flex_bridge.emulator.core import DEFAULT_API_KEY, DEFAULT_API_SECRET, Emulator
from flex_bridge.emulator.settings import EmulatorSettings
from flex_bridge.serving import DEFAULT_LOOP, DEFAULT_SERVER

ENV = (
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_API_KEY",
    "TWILIO_API_SECRET",
    "FLEX_BRIDGE_SERVER",
    "FLEX_BRIDGE_LOOP",
    "FLEX_BRIDGE_EMULATOR_REST_PATH",
    "FLEX_BRIDGE_EMULATOR_ADMIN_TOKEN",
    "FLEX_BRIDGE_EMULATOR_ADMIN_ORIGINS",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in ENV:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def started_with(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> tuple[EmulatorSettings, str]:
    """The settings ``main(argv)`` hands ``run_emulator`` and the loop it runs it on."""
    seen: dict[str, Any] = {}

    async def fake_run_emulator(args: Any, settings: EmulatorSettings) -> int:
        seen["settings"] = settings
        return 0

    def fake_run(main: Coroutine[Any, Any, int], loop: str = DEFAULT_LOOP) -> int:
        seen["loop"] = loop
        return asyncio.run(main)

    monkeypatch.setattr(flex_bridge.cli, "run_emulator", fake_run_emulator)
    monkeypatch.setattr(flex_bridge.serving, "run", fake_run)
    assert main(["emulator", *argv]) == 0
    return seen["settings"], seen["loop"]


def test_the_server_and_loop_flags_override_the_environment(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("FLEX_BRIDGE_SERVER", "hypercorn")
    settings, loop = started_with(clean_env, ["--loop", "asyncio"])
    assert (settings.server, settings.loop, loop) == ("hypercorn", "asyncio", "asyncio")
    settings, loop = started_with(clean_env, ["--server", "uvicorn"])
    assert (settings.server, settings.loop, loop) == ("uvicorn", DEFAULT_LOOP, DEFAULT_LOOP)
    clean_env.delenv("FLEX_BRIDGE_SERVER")
    settings, loop = started_with(clean_env, [])
    assert (settings.server, settings.loop, loop) == (DEFAULT_SERVER, DEFAULT_LOOP, DEFAULT_LOOP)


def test_the_admin_token_flag_is_trimmed_and_overrides_the_environment(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("FLEX_BRIDGE_EMULATOR_ADMIN_TOKEN", " from-env ")
    settings, _ = started_with(clean_env, [])
    assert settings.admin_token == "from-env"
    settings, _ = started_with(clean_env, ["--admin-token", " from-flag\t"])
    assert settings.admin_token == "from-flag"
    clean_env.setenv("FLEX_BRIDGE_EMULATOR_ADMIN_TOKEN", "  ")
    settings, _ = started_with(clean_env, [])
    assert settings.admin_token is None


@pytest.mark.parametrize("token", ["", "  ", "\t"])
def test_a_blank_admin_token_flag_stops_the_start_in_one_line(
    token: str, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["emulator", "--port", "0", "--admin-token", token]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "flex-bridge: configuration error: --admin-token must not be empty\n"


@pytest.mark.parametrize(
    ("env", "printed"),
    [
        ({}, [f"{DEFAULT_API_KEY} / {DEFAULT_API_SECRET}"]),
        ({"TWILIO_AUTH_TOKEN": "my-own-token"}, []),
        (
            {
                "TWILIO_AUTH_TOKEN": "my-own-token",
                "TWILIO_API_KEY": "SK1",
                "TWILIO_API_SECRET": "s",
            },
            ["SK1 / s"],
        ),
    ],
)
def test_the_api_keys_printed_are_those_accepted(
    env: dict[str, str],
    printed: list[str],
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A custom auth token retires the published API key: it is not printed either."""
    for key, value in env.items():
        clean_env.setenv(key, value)
    started: list[Emulator] = []

    def fake_app(emu: Emulator) -> object:
        started.append(emu)
        return object()

    async def fake_serve_app(app: Any, sock: socket.socket, shutdown: Any, server: str) -> None:
        sock.close()

    clean_env.setattr(flex_bridge.emulator.app, "create_emulator_app", fake_app)
    clean_env.setattr(flex_bridge.serving, "serve_app", fake_serve_app)
    # run_emulator freezes the garbage collector's survivors: not this test process's.
    clean_env.setattr(gc, "freeze", lambda: None)
    clean_env.setattr(gc, "callbacks", [])
    assert main(["emulator", "--port", "0", "--no-seed", "--loop", "asyncio"]) == 0
    out = capsys.readouterr().out
    lines = [line.split(maxsplit=2)[2] for line in out.splitlines() if "API key" in line]
    assert lines == printed
    [emu] = started
    for line in lines:
        key, _, secret = line.partition(" / ")
        assert emu.credentials_ok(key, secret)
    if not any(line.startswith(DEFAULT_API_KEY) for line in lines):
        assert not emu.credentials_ok(DEFAULT_API_KEY, DEFAULT_API_SECRET)
