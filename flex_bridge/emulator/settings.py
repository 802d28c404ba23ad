"""The emulator's settings from the environment: the credentials it accepts, the server and
the event loop it runs on, the way its REST requests go in, and the admin API's guard (its
token, the origins it admits besides its own)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from flex_bridge.emulator.core import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    DEFAULT_AUTH_TOKEN,
    DEFAULT_REST_PATH,
    REST_PATHS,
    EmulatorConfig,
)
from flex_bridge.errors import ConfigError
from flex_bridge.serving import DEFAULT_LOOP, DEFAULT_SERVER, loop_setting, server_setting

REST_PATH_ENV = "FLEX_BRIDGE_EMULATOR_REST_PATH"
ADMIN_TOKEN_ENV = "FLEX_BRIDGE_EMULATOR_ADMIN_TOKEN"
ADMIN_ORIGINS_ENV = "FLEX_BRIDGE_EMULATOR_ADMIN_ORIGINS"


def admin_origins_setting(name: str, values: Iterable[str]) -> tuple[str, ...]:
    """Origins (``scheme://host[:port]``, http or https, nothing after) admitted by the admin
    API besides the emulator's own, normalised as browsers send them (lower-case scheme and
    host, no default port); ``name`` is the setting they came from, for the error."""
    origins: list[str] = []
    for raw in values:
        value = raw.strip()
        if not value:
            continue
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            parts, port = None, None
        if (
            parts is None
            or parts.scheme.lower() not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or parts.username is not None
        ):
            raise ConfigError(
                f"{name} must list origins such as http://localhost:5173; got {raw!r}"
            )
        scheme, host = parts.scheme.lower(), parts.hostname.lower()
        if ":" in host:
            host = f"[{host}]"
        default = 80 if scheme == "http" else 443
        origin = f"{scheme}://{host}" + ("" if port in (None, default) else f":{port}")
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)


def admin_token_setting(name: str, raw: str | None) -> str | None:
    """``raw`` as the admin API's bearer token, without surrounding whitespace (the guard
    compares the token sent so trimmed): unset (None), no token; given but blank, a
    :class:`ConfigError` naming ``name``, the setting it came from."""
    if raw is None:
        return None
    value = raw.strip()
    if not value:
        raise ConfigError(f"{name} must not be empty")
    return value


def rest_path_setting(name: str, raw: str | None) -> str:
    """``raw`` (unset or empty: the default, ``asgi``) checked as a REST path's name: ``asgi``
    (the front door) or ``quart`` (Quart's routes, as before it); ``name`` is the setting it
    came from, for the error."""
    value = (raw or "").strip()
    if not value:
        return DEFAULT_REST_PATH
    if value not in REST_PATHS:
        raise ConfigError(f"{name} must be {' or '.join(REST_PATHS)}; got {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class EmulatorSettings:
    """What the emulator takes from the environment: the credentials it accepts, and the
    server and event loop (``FLEX_BRIDGE_SERVER``, ``FLEX_BRIDGE_LOOP``, as for the bridge;
    ``flex-bridge emulator --server/--loop`` override them), and how REST requests go in
    (``FLEX_BRIDGE_EMULATOR_REST_PATH``: ``asgi``, the default, or ``quart``), and the admin
    API's token (``FLEX_BRIDGE_EMULATOR_ADMIN_TOKEN``, ``--admin-token``) and extra origins
    (``FLEX_BRIDGE_EMULATOR_ADMIN_ORIGINS``, comma-separated; ``--admin-origin``). An empty
    or blank variable counts as unset, as every ``FLEX_BRIDGE_*`` setting.

    ``api_keys`` are the keys configured; the published default one is accepted only with the
    published default auth token (``EmulatorConfig.usable_api_keys``)."""

    account_sid: str = DEFAULT_ACCOUNT_SID
    auth_token: str = DEFAULT_AUTH_TOKEN
    api_keys: dict[str, str] = field(default_factory=lambda: {DEFAULT_API_KEY: DEFAULT_API_SECRET})
    server: str = DEFAULT_SERVER
    loop: str = DEFAULT_LOOP
    rest_path: str = DEFAULT_REST_PATH
    admin_token: str | None = None
    admin_origins: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EmulatorSettings:
        env = os.environ if environ is None else environ
        account_sid = env.get("TWILIO_ACCOUNT_SID") or DEFAULT_ACCOUNT_SID
        if not (
            len(account_sid) == 34
            and account_sid.startswith("AC")
            and all(c in "0123456789abcdefABCDEF" for c in account_sid[2:])
        ):
            raise ConfigError("TWILIO_ACCOUNT_SID must be AC followed by 32 hex digits")
        auth_token = env.get("TWILIO_AUTH_TOKEN") or DEFAULT_AUTH_TOKEN
        api_keys = {DEFAULT_API_KEY: DEFAULT_API_SECRET}
        key, secret = env.get("TWILIO_API_KEY"), env.get("TWILIO_API_SECRET")
        if bool(key) != bool(secret):
            raise ConfigError("TWILIO_API_KEY and TWILIO_API_SECRET must be set together")
        if key and secret:
            api_keys = {key: secret}
        # Empty or blank, the variable is unset (as every FLEX_BRIDGE_* setting): no token.
        raw_token = env.get(ADMIN_TOKEN_ENV, "")
        return cls(
            account_sid,
            auth_token,
            api_keys,
            server=server_setting("FLEX_BRIDGE_SERVER", env.get("FLEX_BRIDGE_SERVER")),
            loop=loop_setting("FLEX_BRIDGE_LOOP", env.get("FLEX_BRIDGE_LOOP")),
            rest_path=rest_path_setting(REST_PATH_ENV, env.get(REST_PATH_ENV)),
            admin_token=admin_token_setting(
                ADMIN_TOKEN_ENV, raw_token if raw_token.strip() else None
            ),
            admin_origins=admin_origins_setting(
                ADMIN_ORIGINS_ENV, (env.get(ADMIN_ORIGINS_ENV) or "").split(",")
            ),
        )

    def config(self, **overrides: object) -> EmulatorConfig:
        return EmulatorConfig(
            account_sid=self.account_sid,
            auth_token=self.auth_token,
            api_keys=dict(self.api_keys),
            **{  # type: ignore[arg-type]
                "rest_path": self.rest_path,
                "admin_token": self.admin_token,
                "admin_origins": self.admin_origins,
                **overrides,
            },
        )
