"""The admin API's guard: what keeps a web page from steering the emulator.

The admin API (``/_emulator/...``, the live feed's WebSocket included) changes the emulator's
clock, faults, settings and issues Flex tokens; a page the developer happens to open must not
reach it. Every admin request, HTTP or WebSocket, is checked in this order, before routing:

1. **Host** (a DNS-rebinding guard): when present, its host must be a loopback name
   (``127.0.0.1``, ``localhost``, ``::1``), the host the emulator was bound to, or the
   address the connection came in on, and its port the port the emulator serves on (or the
   port of an admitted origin, for a dev server that forwards ``/_emulator`` as it is).
   Else 421 (code 20421).
2. **Origin**: when present, it must be the emulator's own origin (``http://HOST:PORT``
   with HOST as above and PORT its own) or one admitted by ``EmulatorConfig.admin_origins``.
   Else 403 (code 20403). Clients other than browsers send no ``Origin``.
3. **Admin token**: with ``EmulatorConfig.admin_token`` set, ``Authorization: Bearer
   <token>``. Else 401 (code 20003).
4. **JSON bodies**: a POST, PUT or PATCH to an admin route must say ``Content-Type:
   application/json``, so that no HTML form (``text/plain``, url-encoded) can make one.
   Else 415 (code 20415).

The REST API (Basic auth), IAM and the ``/sdk/`` surface (Flex tokens, CORS for any origin)
are not guarded here. docs/emulator.md, "Security", says what this does and does not protect.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from quart import Quart, Response, request, websocket

from flex_bridge.emulator.api import ApiError
from flex_bridge.emulator.blueprints.responses import error_response
from flex_bridge.emulator.core import EmulatorConfig

PREFIX = "/_emulator"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def is_admin_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def _split(netloc: str, scheme: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host[:port]`` (the host in lower case, an IPv6 one without its
    brackets; the port defaulting to the scheme's), or None when it cannot be read."""
    try:
        parts = urlsplit("//" + netloc)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host or parts.path or parts.query or parts.username is not None:
        return None
    return host.lower().rstrip("."), DEFAULT_PORTS.get(scheme, 80) if port is None else port


class AdminGuard:
    """The checks above, for one emulator configuration; framework-free (:meth:`refusal`)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.token = config.admin_token
        self.origins = frozenset(config.admin_origins)
        hosts = set(LOOPBACK)
        if config.bind_host:
            hosts.add(config.bind_host.strip("[]").lower())
        self.hosts = frozenset(hosts)
        self.extra_ports = frozenset(
            split[1]
            for origin in config.admin_origins
            if (split := _split(urlsplit(origin).netloc, urlsplit(origin).scheme)) is not None
        )

    def refusal(
        self,
        scheme: str,
        server: Collection[Any] | None,
        headers: Mapping[str, str],
    ) -> ApiError | None:
        """Why an admin request is refused, or None. ``scheme`` is the ASGI scope's (http,
        https, ws, wss), ``server`` its ``(host, port)`` (None: unknown), ``headers`` the
        request's, any case."""
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        hosts, own_port = set(self.hosts), None
        if server:
            address, port = tuple(server)[:2]
            if address:
                hosts.add(str(address).strip("[]").lower())
            own_port = port if isinstance(port, int) else None
        host = headers.get("host")
        if host is not None:
            split = _split(host, scheme)
            if (
                split is None
                or split[0] not in hosts
                or (
                    own_port is not None
                    and split[1] != own_port
                    and split[1] not in self.extra_ports
                )
            ):
                return ApiError(
                    421, 20421, "The admin API answers only to its own host (Host header refused)"
                )
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            parts = urlsplit(origin)
            split = _split(parts.netloc, parts.scheme) if parts.scheme == scheme else None
            if (
                split is None
                or split[0] not in hosts
                or (own_port is not None and split[1] != own_port)
                or parts.path
            ):
                return ApiError(
                    403, 20403, "The admin API answers only to its own origin (Origin refused)"
                )
        if self.token is not None:
            scheme_name, _, given = (headers.get("authorization") or "").partition(" ")
            if scheme_name.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.token.encode()
            ):
                return ApiError(
                    401,
                    20003,
                    "The admin API needs Authorization: Bearer <admin token>",
                    {"WWW-Authenticate": 'Bearer realm="flex-bridge emulator admin"'},
                )
        return None


def _headers(items: Any) -> dict[str, str]:
    """The first value of each header, names in lower case."""
    headers: dict[str, str] = {}
    for name, value in items:
        headers.setdefault(name.lower(), value)
    return headers


def install_admin_guard(app: Quart, config: EmulatorConfig) -> None:
    """Check every admin request (HTTP and WebSocket) before it is routed."""
    guard = AdminGuard(config)

    @app.before_request
    async def guard_http() -> Response | None:
        if not is_admin_path(request.path):
            return None
        refused = guard.refusal(
            request.scope["scheme"], request.scope.get("server"), _headers(request.headers.items())
        )
        if refused is not None:
            return error_response(refused)
        if (
            request.method in BODY_METHODS
            and request.routing_exception is None  # a wrong method or path: its own answer
            and request.mimetype != "application/json"
        ):
            given = request.mimetype or "none"
            return error_response(
                ApiError(
                    415,
                    20415,
                    f"The admin API takes Content-Type: application/json bodies; got {given}",
                )
            )
        return None

    @app.before_websocket
    async def guard_websocket() -> Response | None:
        if not is_admin_path(websocket.path):
            return None
        refused = guard.refusal(
            websocket.scope["scheme"],
            websocket.scope.get("server"),
            _headers(websocket.headers.items()),
        )
        return None if refused is None else error_response(refused)
