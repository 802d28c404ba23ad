"""Issue 13, start-up: what cannot work stops ``flex-bridge serve`` with one line and exit 2
before "listening"; the public URL is required outside development; a wrong SID or token is
named by a WARNING at start-up; ``--version`` and ``flex_bridge_build_info``."""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flex_bridge import version
from flex_bridge.app.metrics import Metrics
from flex_bridge.cli import main
from flex_bridge.errors import ConfigError
from flex_bridge.settings import Settings
from tests.support.bridge import SETTINGS_ENV, RunningBridge, settings_for, wait_until
from tests.support.emulator import RunningEmulator

BASE = {
    **{k: v for k, v in SETTINGS_ENV.items() if k != "FLEX_BRIDGE_DEV"},  # production
    # Nothing listens there: start-up must fail before any upstream call matters.
    "FLEX_BRIDGE_TWILIO_BASE_URL": "http://127.0.0.1:9",
}


Serve = Callable[..., tuple[int, str, str]]


@pytest.fixture
def serve(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    restore_logging: None,
) -> Serve:
    """``flex-bridge serve`` in this process with ``BASE`` and ``changes`` as its environment:
    ``(exit status, stdout, stderr)``."""

    def run(policy: str | None = None, **changes: str) -> tuple[int, str, str]:
        for key in list(__import__("os").environ):
            if key.startswith(("TWILIO_", "FLEX_BRIDGE_")):
                monkeypatch.delenv(key)
        env = {**BASE, "FLEX_BRIDGE_JOURNAL": str(tmp_path / "journal.db"), **changes}
        if policy is not None:
            path = tmp_path / "policy.toml"
            path.write_text(policy)
            env["FLEX_BRIDGE_POLICY"] = str(path)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        code = main(["serve", "--host", "127.0.0.1", "--port", "0"])
        out, err = capsys.readouterr()
        return code, out, err

    return run


async def eventually(predicate: Callable[[], object]) -> None:
    async def check() -> object:
        return predicate()

    await wait_until(check)


def _one_line(err: str, named: str) -> None:
    assert err.count("\n") == 1, err
    assert err.startswith(f"flex-bridge: configuration error: {named}"), err
    assert "Traceback" not in err


# --------------------------------------------------------------------- 1. the public URL
def test_the_public_url_is_required_outside_development(serve: Serve) -> None:
    code, out, err = serve()
    assert code == 2
    assert "listening" not in out
    _one_line(err, "FLEX_BRIDGE_PUBLIC_URL is required")
    assert "FLEX_BRIDGE_DEV=1" in err


def test_development_may_go_without_it() -> None:
    settings = Settings.from_env({**BASE, "FLEX_BRIDGE_DEV": "1"})
    assert settings.dev and settings.public_url is None
    public = Settings.from_env({**BASE, "FLEX_BRIDGE_PUBLIC_URL": "https://bridge.example.com"})
    assert not public.dev and public.public_url == "https://bridge.example.com"


@pytest.mark.parametrize("value", ["yes", "true", "2"])
def test_the_dev_flag_is_0_or_1(value: str) -> None:
    with pytest.raises(ConfigError, match="FLEX_BRIDGE_DEV must be 0 or 1"):
        Settings.from_env({**BASE, "FLEX_BRIDGE_DEV": value})


async def test_development_warns_that_host_is_trusted(
    start_emulator: Callable[..., RunningEmulator],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator = start_emulator()
    caplog.set_level(logging.WARNING)
    bridge = RunningBridge().start(settings_for(emulator, tmp_path / "j.db"))
    try:

        def warnings_() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "FLEX_BRIDGE_PUBLIC_URL is unset" in r.message]

        await eventually(lambda: bool(warnings_()))
        warnings = warnings_()
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        assert "Host" in warnings[0].message
    finally:
        bridge.stop()


# ------------------------------------------------------------------------ 2. the journal URL
@pytest.mark.parametrize("journal", ["sqlite:///", ":memory:", "sqlite://:memory:"])
def test_an_in_memory_journal_is_refused_at_start_up(serve: Serve, journal: str) -> None:
    code, out, err = serve(FLEX_BRIDGE_DEV="1", FLEX_BRIDGE_JOURNAL=journal)
    assert code == 2
    assert "listening" not in out
    _one_line(err, "FLEX_BRIDGE_JOURNAL")


# ----------------------------------------------------------------- 3. start-up errors: 1 line
def test_a_journal_that_cannot_be_opened(serve: Serve, tmp_path: Path) -> None:
    journal = tmp_path / "a directory"  # SQLite cannot open a directory as its file
    journal.mkdir()
    code, out, err = serve(FLEX_BRIDGE_DEV="1", FLEX_BRIDGE_JOURNAL=str(journal))
    assert code == 2
    assert "listening" not in out
    _one_line(err, "FLEX_BRIDGE_JOURNAL: the journal cannot be opened")


HANDLER = """
[events.handlers]
"task.canceled" = ["no_such_package.hooks:on_task_canceled"]
"""
NO_URL = """
[[enrichment.enrichers]]
name = "crm"
factory = "flex_bridge.adapters.crm:http_crm"
options = { keys = ["customer_id"] }
"""
NO_MODULE = """
[[enrichment.enrichers]]
name = "crm"
factory = "no_such_package.crm:factory"
"""


@pytest.mark.parametrize(
    ("policy", "says"),
    [
        (HANDLER, "cannot import no_such_package.hooks"),
        (NO_URL, "http_crm option 'url' is required"),
        (NO_MODULE, "cannot import no_such_package.crm"),
    ],
)
def test_user_code_that_cannot_be_loaded(serve: Serve, policy: str, says: str) -> None:
    code, out, err = serve(policy, FLEX_BRIDGE_DEV="1")
    assert code == 2
    assert "listening" not in out
    _one_line(err, "FLEX_BRIDGE_POLICY")
    assert says in err


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLEX_BRIDGE_LOG_FORMAT", "xml"),
        ("FLEX_BRIDGE_ACCESS_LOG", "yes"),
        ("FLEX_BRIDGE_METRICS_PORT", "http"),
        ("FLEX_BRIDGE_METRICS_PORT", "70000"),
        ("FLEX_BRIDGE_HEADER_TIMEOUT", "0"),
        ("FLEX_BRIDGE_MAX_CONNECTIONS", "0"),
        ("FLEX_BRIDGE_MAX_CONNECTIONS", "many"),
    ],
)
def test_bad_operations_settings(serve: Serve, name: str, value: str) -> None:
    code, _, err = serve(**{"FLEX_BRIDGE_DEV": "1", name: value})
    assert code == 2
    _one_line(err, name)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FLEX_BRIDGE_MAX_CONNECTIONS": "many"}, "FLEX_BRIDGE_MAX_CONNECTIONS"),
        ({"FLEX_BRIDGE_SERVER": "gunicorn"}, "FLEX_BRIDGE_SERVER"),
    ],
)
def test_with_json_logs_the_stop_line_is_json_too(
    serve: Serve, env: dict[str, str], named: str
) -> None:
    """A log pipeline reading stderr gets the reason for exit 2 as a record like any other."""
    code, out, err = serve(FLEX_BRIDGE_DEV="1", FLEX_BRIDGE_LOG_FORMAT="json", **env)
    assert code == 2 and "listening" not in out
    assert err.count("\n") == 1, err
    record = json.loads(err)
    assert record["level"] == "CRITICAL" and record["logger"] == "flex_bridge.cli"
    assert record["message"].startswith(f"configuration error: {named}"), record
    assert {"timestamp", "level", "logger", "message"} <= set(record)


def test_operations_settings() -> None:
    default = Settings.from_env({**BASE, "FLEX_BRIDGE_DEV": "1"})
    assert (default.log_format, default.access_log) == ("text", False)
    assert (default.metrics_port, default.metrics_token) == (None, None)
    assert (default.header_timeout, default.max_connections) == (10.0, 1000)
    settings = Settings.from_env(
        {
            **BASE,
            "FLEX_BRIDGE_DEV": "1",
            "FLEX_BRIDGE_LOG_FORMAT": "json",
            "FLEX_BRIDGE_ACCESS_LOG": "1",
            "FLEX_BRIDGE_METRICS_PORT": "9100",
            "FLEX_BRIDGE_METRICS_TOKEN": "scrape-me",
            "FLEX_BRIDGE_HEADER_TIMEOUT": "2.5",
            "FLEX_BRIDGE_MAX_CONNECTIONS": "50",
        }
    )
    assert (settings.log_format, settings.access_log) == ("json", True)
    assert (settings.metrics_port, settings.metrics_token) == (9100, "scrape-me")
    assert (settings.header_timeout, settings.max_connections) == (2.5, 50)


# ------------------------------------------------- 4. a WARNING when the first check fails
@pytest.mark.parametrize(
    ("overrides", "what", "hint"),
    [
        ({"auth_token": "not-the-token"}, "TaskRouter workspace fetch", "TWILIO_AUTH_TOKEN"),
        ({"workspace_sid": "WS" + "0" * 32}, "TaskRouter workspace fetch", "WORKSPACE_SID"),
        ({"sync_service_sid": "IS" + "0" * 32}, "Sync service fetch", "SYNC_SERVICE_SID"),
    ],
)
async def test_a_wrong_sid_or_token_is_named_at_start_up(
    start_emulator: Callable[..., RunningEmulator],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    overrides: dict[str, Any],
    what: str,
    hint: str,
) -> None:
    emulator = start_emulator()
    caplog.set_level(logging.WARNING)
    settings = settings_for(emulator, tmp_path / "j.db", **overrides)
    bridge = RunningBridge().start(settings)
    try:

        def warned() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.message.startswith("start-up check")]

        await eventually(lambda: bool(warned()))
        messages = [r.message for r in warned()]
        assert any(what in m and hint in m for m in messages), messages
        assert all(r.levelno == logging.WARNING for r in warned())
        assert "not-the-token" not in caplog.text
    finally:
        bridge.stop()


async def test_no_warning_when_the_first_check_passes(
    start_emulator: Callable[..., RunningEmulator],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator = start_emulator()
    caplog.set_level(logging.WARNING)
    bridge = RunningBridge().start(settings_for(emulator, tmp_path / "j.db"))
    try:
        await eventually(lambda: "readiness" in bridge.app.config)
        readiness = bridge.app.config["readiness"]
        await eventually(lambda: readiness.runs >= 1 and readiness._running is None)
        assert not [r for r in caplog.records if r.message.startswith("start-up check")]
    finally:
        bridge.stop()


# --------------------------------------------------------- 6. --version, build_info metric
def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"flex-bridge {version()}\n"
    assert version() == "0.1.0"  # pyproject.toml's, from the installed package's metadata


def test_build_info_metric() -> None:
    text = Metrics().render().decode()
    assert "# TYPE flex_bridge_build_info gauge" in text
    sample = f'flex_bridge_build_info{{python="{platform.python_version()}",version="{version()}"}}'
    assert f"{sample} 1.0" in text
