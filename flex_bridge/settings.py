"""Settings, built once from the environment. Nothing else in flex-bridge reads os.environ."""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from flex_bridge import logs
from flex_bridge.adapters.journal import journal_setting
from flex_bridge.domain.policy import Policy, PolicyError, parse_policy
from flex_bridge.errors import ConfigError
from flex_bridge.serving import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_LOOP,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_SERVER,
    choice_setting,
    loop_setting,
    server_setting,
)

_SID_RE = re.compile(r"^[A-Z]{2}[0-9a-fA-F]{32}$")


def _sid(env: Mapping[str, str], name: str, prefix: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is required")
    if not (_SID_RE.match(value) and value.startswith(prefix)):
        raise ConfigError(f"{name} must be {prefix} followed by 32 hex digits")
    return value


def _url(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http:// or https:// URL; got {value!r}")
    return value.rstrip("/")


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds; got {raw!r}") from None
    if not (value > 0 and math.isfinite(value)):  # NaN fails every comparison
        raise ConfigError(f"{name} must be a positive, finite number of seconds; got {raw!r}")
    return value


DEFAULT_CORS_ORIGINS = ("https://flex.twilio.com",)


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip()
    if raw in ("", "0"):
        return False
    if raw == "1":
        return True
    raise ConfigError(f"{name} must be 0 or 1; got {raw!r}")


def _port(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ConfigError(f"{name} must be a TCP port (1-65535); got {raw!r}")
    return int(raw)


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a positive whole number; got {raw!r}")
    return int(raw)


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated origins (``scheme://host[:port]``), each exactly as a browser sends it."""
    raw = env.get(name, "").strip()
    if not raw:
        return DEFAULT_CORS_ORIGINS
    origins = []
    for value in (v.strip() for v in raw.split(",")):
        parts = urlsplit(value)
        exact = parts.scheme in ("http", "https") and parts.netloc and not parts.path
        if not exact or parts.query or parts.fragment or "*" in value:
            raise ConfigError(
                f"{name} must list origins such as https://flex.twilio.com (scheme and host, "
                f"no path, no wildcard), separated by commas; got {value!r}"
            )
        origins.append(value)
    return tuple(origins)


def _secrets(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Shared-key secrets, comma-separated (two while a key is rotated)."""
    raw = env.get(name, "").strip()
    secrets = tuple(s.strip() for s in raw.split(",")) if raw else ()
    if any(not s for s in secrets):
        raise ConfigError(f"{name} must be one secret or several separated by commas")
    return secrets


def load_policy(path: str | None) -> Policy:
    if not path:
        return Policy()
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"FLEX_BRIDGE_POLICY: cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"FLEX_BRIDGE_POLICY: {path} is not valid TOML: {exc}") from None
    try:
        return parse_policy(data)
    except PolicyError as exc:
        raise ConfigError(f"FLEX_BRIDGE_POLICY: {path}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the bridge takes from its environment, checked once at start-up."""

    account_sid: str
    auth_token: str
    workspace_sid: str
    sync_service_sid: str
    api_key: str | None = None
    api_secret: str | None = None
    twilio_base_url: str | None = None
    public_url: str | None = None
    journal: str = "flex-bridge.db"
    policy: Policy = field(default_factory=Policy)
    policy_path: str | None = None
    http_timeout: float = 10.0
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    webhook_secrets: tuple[str, ...] = ()
    # Lease owner of this instance (rule 9); `serve` makes one from host and port when unset.
    instance_id: str | None = None
    # The HTTP server and the event loop `serve` runs on (flex_bridge/serving.py).
    server: str = DEFAULT_SERVER
    loop: str = DEFAULT_LOOP
    # FLEX_BRIDGE_DEV=1: development, where a missing public URL means trusting ``Host``.
    dev: bool = False
    log_format: str = "text"
    access_log: bool = False
    metrics_port: int | None = None
    metrics_token: str | None = None
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    @property
    def rest_auth(self) -> tuple[str, str]:
        """REST credentials: the API key pair when given, else the account SID and token."""
        if self.api_key and self.api_secret:
            return (self.api_key, self.api_secret)
        return (self.account_sid, self.auth_token)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        account_sid = _sid(env, "TWILIO_ACCOUNT_SID", "AC")
        auth_token = env.get("TWILIO_AUTH_TOKEN", "").strip()
        if not auth_token:
            raise ConfigError(
                "TWILIO_AUTH_TOKEN is required: webhook signatures are verified with it"
            )
        key, secret = env.get("TWILIO_API_KEY") or None, env.get("TWILIO_API_SECRET") or None
        if bool(key) != bool(secret):
            raise ConfigError("TWILIO_API_KEY and TWILIO_API_SECRET must be set together")
        policy_path = env.get("FLEX_BRIDGE_POLICY") or None
        public_url = _url(env, "FLEX_BRIDGE_PUBLIC_URL")
        dev = _flag(env, "FLEX_BRIDGE_DEV")
        if public_url is None and not dev:
            raise ConfigError(
                "FLEX_BRIDGE_PUBLIC_URL is required: the base URL Twilio calls, which webhook "
                "signatures are checked against (set FLEX_BRIDGE_DEV=1 for development, where "
                "the request's Host header is trusted instead)"
            )
        return cls(
            account_sid=account_sid,
            auth_token=auth_token,
            workspace_sid=_sid(env, "FLEX_BRIDGE_WORKSPACE_SID", "WS"),
            sync_service_sid=_sid(env, "FLEX_BRIDGE_SYNC_SERVICE_SID", "IS"),
            api_key=key,
            api_secret=secret,
            twilio_base_url=_url(env, "FLEX_BRIDGE_TWILIO_BASE_URL"),
            public_url=public_url,
            journal=journal_setting(env.get("FLEX_BRIDGE_JOURNAL") or "flex-bridge.db"),
            policy=load_policy(policy_path),
            policy_path=policy_path,
            http_timeout=_float(env, "FLEX_BRIDGE_HTTP_TIMEOUT", 10.0),
            cors_origins=_origins(env, "FLEX_BRIDGE_CORS_ORIGINS"),
            webhook_secrets=_secrets(env, "FLEX_BRIDGE_WEBHOOK_SECRET"),
            instance_id=env.get("FLEX_BRIDGE_INSTANCE_ID", "").strip() or None,
            server=server_setting("FLEX_BRIDGE_SERVER", env.get("FLEX_BRIDGE_SERVER")),
            loop=loop_setting("FLEX_BRIDGE_LOOP", env.get("FLEX_BRIDGE_LOOP")),
            dev=dev,
            log_format=choice_setting(
                "FLEX_BRIDGE_LOG_FORMAT", env.get("FLEX_BRIDGE_LOG_FORMAT"), logs.FORMATS, "text"
            ),
            access_log=_flag(env, "FLEX_BRIDGE_ACCESS_LOG"),
            metrics_port=_port(env, "FLEX_BRIDGE_METRICS_PORT"),
            metrics_token=env.get("FLEX_BRIDGE_METRICS_TOKEN", "").strip() or None,
            header_timeout=_float(env, "FLEX_BRIDGE_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT),
            max_connections=_count(env, "FLEX_BRIDGE_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS),
        )
