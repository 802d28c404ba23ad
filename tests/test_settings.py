"""Settings from an environment mapping: every variable checked, every error naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flex_bridge.domain.policy import Policy
from flex_bridge.emulator.settings import EmulatorSettings
from flex_bridge.errors import ConfigError
from flex_bridge.settings import Settings, load_policy
from tests.support.bridge import SETTINGS_ENV

BASE = SETTINGS_ENV
AC = BASE["TWILIO_ACCOUNT_SID"]
WS = BASE["FLEX_BRIDGE_WORKSPACE_SID"]
IS = BASE["FLEX_BRIDGE_SYNC_SERVICE_SID"]
WA = "WA" + "b" * 32


def env(**changes: str | None) -> dict[str, str]:
    out = dict(BASE)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def test_the_minimal_environment() -> None:
    settings = Settings.from_env(BASE)
    assert settings.account_sid == AC
    assert settings.auth_token == "secret-token"
    assert settings.workspace_sid == WS
    assert settings.sync_service_sid == IS
    assert settings.api_key is None and settings.api_secret is None
    assert settings.rest_auth == (AC, "secret-token")
    assert settings.twilio_base_url is None
    assert settings.public_url is None
    assert settings.journal == "flex-bridge.db"
    assert settings.policy == Policy()
    assert settings.policy_path is None
    assert settings.http_timeout == 10.0


def test_settings_are_frozen() -> None:
    settings = Settings.from_env(BASE)
    with pytest.raises(AttributeError):
        settings.journal = "x"  # type: ignore[misc]


def test_from_env_reads_nothing_but_the_mapping_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEX_BRIDGE_JOURNAL", "redis://elsewhere")
    assert Settings.from_env(BASE).journal == "flex-bridge.db"


def test_from_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FLEX_BRIDGE_HTTP_TIMEOUT", "2.5")
    assert Settings.from_env().http_timeout == 2.5


def test_everything_set() -> None:
    settings = Settings.from_env(
        env(
            TWILIO_API_KEY="SK" + "c" * 32,
            TWILIO_API_SECRET="api-secret",
            FLEX_BRIDGE_TWILIO_BASE_URL="http://127.0.0.1:8700/",
            FLEX_BRIDGE_PUBLIC_URL="https://bridge.example.com",
            FLEX_BRIDGE_JOURNAL="sqlite:////var/lib/flex/journal.db",
            FLEX_BRIDGE_HTTP_TIMEOUT="3",
        )
    )
    assert settings.rest_auth == ("SK" + "c" * 32, "api-secret")
    assert settings.twilio_base_url == "http://127.0.0.1:8700"
    assert settings.public_url == "https://bridge.example.com"
    assert settings.journal == "/var/lib/flex/journal.db"
    assert settings.http_timeout == 3.0


def test_values_are_trimmed() -> None:
    settings = Settings.from_env(env(TWILIO_ACCOUNT_SID=f"  {AC}\n", FLEX_BRIDGE_WORKSPACE_SID=WS))
    assert settings.account_sid == AC


REQUIRED = [
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "FLEX_BRIDGE_WORKSPACE_SID",
    "FLEX_BRIDGE_SYNC_SERVICE_SID",
]


@pytest.mark.parametrize("name", REQUIRED)
@pytest.mark.parametrize("value", [None, "", "   "])
def test_each_required_variable_missing(name: str, value: str | None) -> None:
    with pytest.raises(ConfigError, match=f"{name} is required"):
        Settings.from_env(env(**{name: value}))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TWILIO_ACCOUNT_SID", "AC123"),
        ("TWILIO_ACCOUNT_SID", "AC" + "g" * 32),
        ("TWILIO_ACCOUNT_SID", "AC" + "0" * 33),
        ("TWILIO_ACCOUNT_SID", WS),
        ("TWILIO_ACCOUNT_SID", "ac" + "0" * 32),
        ("FLEX_BRIDGE_WORKSPACE_SID", IS),
        ("FLEX_BRIDGE_WORKSPACE_SID", "WS" + "0" * 31),
        ("FLEX_BRIDGE_WORKSPACE_SID", "WS" + "0" * 32 + "x"),
        ("FLEX_BRIDGE_SYNC_SERVICE_SID", WS),
        ("FLEX_BRIDGE_SYNC_SERVICE_SID", "IS-default"),
        ("FLEX_BRIDGE_SYNC_SERVICE_SID", "IS" + "0" * 16 + " " + "0" * 15),
    ],
)
def test_each_malformed_sid(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env(**{name: value}))
    message = str(caught.value)
    assert name in message
    assert "followed by 32 hex digits" in message


@pytest.mark.parametrize(
    "given",
    [{"TWILIO_API_KEY": "SK" + "c" * 32}, {"TWILIO_API_SECRET": "api-secret"}],
)
def test_api_key_and_secret_come_together(given: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="TWILIO_API_KEY and TWILIO_API_SECRET"):
        Settings.from_env(env(**given))


def test_empty_api_key_and_secret_mean_unset() -> None:
    settings = Settings.from_env(env(TWILIO_API_KEY="", TWILIO_API_SECRET=""))
    assert settings.rest_auth == (AC, "secret-token")


def test_the_auth_token_is_required_even_with_an_api_key() -> None:
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN is required"):
        Settings.from_env(
            env(TWILIO_AUTH_TOKEN=None, TWILIO_API_KEY="SK" + "c" * 32, TWILIO_API_SECRET="s")
        )


@pytest.mark.parametrize("name", ["FLEX_BRIDGE_TWILIO_BASE_URL", "FLEX_BRIDGE_PUBLIC_URL"])
@pytest.mark.parametrize("value", ["localhost:8700", "ftp://host", "http://", "/relative"])
def test_malformed_urls(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env(**{name: value}))


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf", "-inf"])
def test_malformed_http_timeout(value: str) -> None:
    with pytest.raises(ConfigError, match="FLEX_BRIDGE_HTTP_TIMEOUT"):
        Settings.from_env(env(FLEX_BRIDGE_HTTP_TIMEOUT=value))


# ------------------------------------------------------------------------------ CORS
@pytest.mark.parametrize(
    ("value", "origins"),
    [
        (None, ("https://flex.twilio.com",)),
        ("", ("https://flex.twilio.com",)),
        ("https://flex.example.com", ("https://flex.example.com",)),
        (
            " https://a.example , http://localhost:3000",
            ("https://a.example", "http://localhost:3000"),
        ),
    ],
)
def test_cors_origins(value: str | None, origins: tuple[str, ...]) -> None:
    assert Settings.from_env(env(FLEX_BRIDGE_CORS_ORIGINS=value)).cors_origins == origins


@pytest.mark.parametrize(
    "value",
    [
        "*",
        "flex.twilio.com",
        "https://flex.twilio.com/",
        "https://a.example/path",
        "ftp://a.b",
        ",",
    ],
)
def test_malformed_cors_origins(value: str) -> None:
    with pytest.raises(ConfigError, match="FLEX_BRIDGE_CORS_ORIGINS"):
        Settings.from_env(env(FLEX_BRIDGE_CORS_ORIGINS=value))


@pytest.mark.parametrize(
    ("value", "secrets"),
    [(None, ()), ("", ()), ("k1", ("k1",)), (" k1 , k2 ", ("k1", "k2"))],
)
def test_webhook_secrets(value: str | None, secrets: tuple[str, ...]) -> None:
    assert Settings.from_env(env(FLEX_BRIDGE_WEBHOOK_SECRET=value)).webhook_secrets == secrets


@pytest.mark.parametrize("value", [",", "k1,", " , k2"])
def test_malformed_webhook_secrets(value: str) -> None:
    with pytest.raises(ConfigError, match="FLEX_BRIDGE_WEBHOOK_SECRET"):
        Settings.from_env(env(FLEX_BRIDGE_WEBHOOK_SECRET=value))


# ------------------------------------------------------------------------------ journal
@pytest.mark.parametrize(
    ("value", "journal"),
    [
        ("", "flex-bridge.db"),
        ("state/journal.db", "state/journal.db"),
        ("/data/journal.db", "/data/journal.db"),
        ("sqlite:///journal.db", "journal.db"),
        ("sqlite:////data/journal.db", "/data/journal.db"),
    ],
)
def test_journal_forms(value: str, journal: str) -> None:
    assert Settings.from_env(env(FLEX_BRIDGE_JOURNAL=value)).journal == journal


@pytest.mark.parametrize(
    "value",
    [
        "postgresql://db/flex",
        "postgres://flex:secret@db.internal:5433/flex",
        "postgresql://flex:p%40ss@10.0.0.5/flex_bridge?sslmode=require",
        "postgresql://flex@/flex?host=/var/run/postgresql",
        "POSTGRESQL://db/flex",
    ],
)
def test_a_postgres_journal_is_kept_whole(value: str) -> None:
    assert Settings.from_env(env(FLEX_BRIDGE_JOURNAL=value)).journal == value


@pytest.mark.parametrize(
    "value",
    [
        "redis://localhost/0",
        "http://x/journal.db",
        "postgresql://db",  # no database
        "postgresql://flex:secret@db:5432/",  # no database
        "postgresql:///flex",  # no host
        "postgresql://flex:secret@db:port/flex",  # a port that is no number
        "sqlite:///",  # names no file (it used to be an in-memory journal)
        ":memory:",  # not durable: the Python API only
        "sqlite://:memory:",
    ],
)
def test_unsupported_journal(value: str) -> None:
    with pytest.raises(ConfigError, match="FLEX_BRIDGE_JOURNAL") as refused:
        Settings.from_env(env(FLEX_BRIDGE_JOURNAL=value))
    assert "secret" not in str(refused.value)


# ------------------------------------------------------------------------------ policy file
POLICY = f"""
[sync]
mode = "strict"

[[assignment.rules]]
name = "reject all"
op = "reject"
params = {{ activity_sid = "{WA}" }}
"""


def write(tmp_path: Path, text: str, name: str = "policy.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_policy_file(tmp_path: Path) -> None:
    path = write(tmp_path, POLICY)
    settings = Settings.from_env(env(FLEX_BRIDGE_POLICY=path))
    assert settings.policy_path == path
    assert settings.policy.sync.mode == "strict"
    assert [r.name for r in settings.policy.rules] == ["reject all"]
    assert settings.policy.rules[0].params == {"activity_sid": WA}


def test_no_policy_file_is_the_default_policy() -> None:
    assert load_policy(None) == Policy()
    assert load_policy("") == Policy()
    assert Settings.from_env(env(FLEX_BRIDGE_POLICY="")).policy == Policy()


def test_missing_policy_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env(FLEX_BRIDGE_POLICY=str(missing)))
    assert "FLEX_BRIDGE_POLICY" in str(caught.value)
    assert str(missing) in str(caught.value)


def test_a_directory_is_not_a_policy_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FLEX_BRIDGE_POLICY: cannot read"):
        load_policy(str(tmp_path))


@pytest.mark.parametrize(
    "text", ["[sync\nmode = 'strict'", "mode = ", "a = 1\na = 2", "\xff = 1", "[[x]]\n[x]"]
)
def test_bad_toml(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith(f"FLEX_BRIDGE_POLICY: {path} is not valid TOML")


def test_bad_toml_bytes(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe[sync]")
    with pytest.raises(ConfigError, match="FLEX_BRIDGE_POLICY"):
        load_policy(str(path))


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[sync]\nmode = 'fast'\n", "sync.mode"),
        ("[retry]\nmax_attempts = 0\n", "retry.max_attempts"),
        ("[recovery]\ninterval = nan\n", "recovery.interval"),
        ("[[assignment.rules]]\nop = 'hold'\n", "assignment.rules[0].op"),
        ("[[assignment.rules]]\nop = 'reject'\nparams = { activity_sid = 'x' }\n", "activity_sid"),
        ("unknown = 1\n", "unknown"),
    ],
)
def test_bad_policy(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env(FLEX_BRIDGE_POLICY=path))
    message = str(caught.value)
    assert message.startswith(f"FLEX_BRIDGE_POLICY: {path}: ")
    assert key in message


# ------------------------------------------------------------------------------ emulator settings
def test_emulator_settings_defaults() -> None:
    settings = EmulatorSettings.from_env({})
    default = EmulatorSettings()
    assert settings == default
    config = settings.config()
    assert config.account_sid == default.account_sid
    assert config.api_keys == default.api_keys


def test_emulator_settings_from_env() -> None:
    settings = EmulatorSettings.from_env(
        {
            "TWILIO_ACCOUNT_SID": AC,
            "TWILIO_AUTH_TOKEN": "tok",
            "TWILIO_API_KEY": "SK1",
            "TWILIO_API_SECRET": "s1",
        }
    )
    assert (settings.account_sid, settings.auth_token, settings.api_keys) == (
        AC,
        "tok",
        {"SK1": "s1"},
    )


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ({"TWILIO_ACCOUNT_SID": "AC1"}, "TWILIO_ACCOUNT_SID"),
        ({"TWILIO_API_KEY": "SK1"}, "TWILIO_API_KEY"),
        ({"TWILIO_API_SECRET": "s"}, "TWILIO_API_SECRET"),
    ],
)
def test_emulator_settings_errors(given: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        EmulatorSettings.from_env(given)


def test_instance_id() -> None:
    assert Settings.from_env(env()).instance_id is None  # `serve` names it host:port
    assert Settings.from_env(env(FLEX_BRIDGE_INSTANCE_ID=" bridge-2 ")).instance_id == "bridge-2"
