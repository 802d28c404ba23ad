"""The emulator's settings from the environment: the credentials it accepts, the server and
the event loop it runs on, and the way its REST requests go in."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

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
    (``FLEX_BRIDGE_EMULATOR_REST_PATH``: ``asgi``, the default, or ``quart``)."""

    account_sid: str = DEFAULT_ACCOUNT_SID
    auth_token: str = DEFAULT_AUTH_TOKEN
    api_keys: dict[str, str] = field(default_factory=lambda: {DEFAULT_API_KEY: DEFAULT_API_SECRET})
    server: str = DEFAULT_SERVER
    loop: str = DEFAULT_LOOP
    rest_path: str = DEFAULT_REST_PATH

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
        return cls(
            account_sid,
            auth_token,
            api_keys,
            server=server_setting("FLEX_BRIDGE_SERVER", env.get("FLEX_BRIDGE_SERVER")),
            loop=loop_setting("FLEX_BRIDGE_LOOP", env.get("FLEX_BRIDGE_LOOP")),
            rest_path=rest_path_setting(REST_PATH_ENV, env.get(REST_PATH_ENV)),
        )

    def config(self, **overrides: object) -> EmulatorConfig:
        return EmulatorConfig(
            account_sid=self.account_sid,
            auth_token=self.auth_token,
            api_keys=dict(self.api_keys),
            **{"rest_path": self.rest_path, **overrides},  # type: ignore[arg-type]
        )
