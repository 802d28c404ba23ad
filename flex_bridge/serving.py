"""Serving a Quart app on a real socket, in this event loop: uvicorn or Hypercorn.

Both the bridge and the emulator are served this way, in production and in tests. Binding
the socket here (port 0 picks a free one) tells the caller its address before serving starts.

The server (``uvicorn`` with httptools, or ``hypercorn`` with h11) and the event loop
(``uvloop`` or ``asyncio``'s own) are settings: ``FLEX_BRIDGE_SERVER`` and
``FLEX_BRIDGE_LOOP`` for the bridge, the same or ``--server`` and ``--loop`` for the emulator.
The defaults are the cheapest pair measured (docs/performance.md, "The server and the event
loop"). Either server is imported only when chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from flex_bridge.errors import ConfigError

if TYPE_CHECKING:
    from hypercorn.config import Config as HypercornConfig
    from uvicorn import Config as UvicornConfig

T = TypeVar("T")

SERVERS = ("uvicorn", "hypercorn")
LOOPS = ("uvloop", "asyncio")
DEFAULT_SERVER = "uvicorn"
DEFAULT_LOOP = "uvloop"

# Pending connections the kernel queues before the server accepts them. Both servers listen
# again on the socket with their own backlog (Hypercorn's default is 100): under a burst of
# callbacks a full queue drops connection attempts, and each one costs its sender a 1-second
# SYN retransmit.
BACKLOG = 1024
# Longer than any client's idle keep-alive (aiohttp's is 15 s): a server that closes an idle
# connection first races the client's next request on it.
KEEP_ALIVE = 75
GRACEFUL_TIMEOUT = 2  # seconds for requests in flight to finish at shutdown
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds a client has to send a request's headers
DEFAULT_MAX_CONNECTIONS = 1000  # open HTTP connections at once; more are refused
# What a connection over the cap is told before it is closed.
_REFUSED_BODY = b'{"error": {"code": "too_many_connections", "message": "try again later"}}'
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_REFUSED_BODY), _REFUSED_BODY)
)


@dataclass
class Limits:
    """What one client may hold (``FLEX_BRIDGE_HEADER_TIMEOUT``, ``FLEX_BRIDGE_MAX_CONNECTIONS``).

    A connection that has not sent a whole request's headers ``header_timeout`` seconds after
    it opened, or after the first byte of its next request, is closed: a slow client cannot
    hold a socket for the keep-alive's 75 s. An idle keep-alive connection (no byte of a next
    request yet) keeps its 75 s. A connection beyond ``max_connections`` open at once is
    answered 503 and closed at once. Both servers apply the same rules (see below).
    """

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    open: set[object] = field(default_factory=set, repr=False)


class HeaderTimer:
    """One connection's header deadline, for both servers: ``arm`` when a request begins
    (or the connection opens), ``disarm`` when its headers are in; ``late`` runs if they do
    not come within ``seconds``."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, seconds: float, late: Callable[[], None]
    ) -> None:
        self.loop, self.seconds, self.late = loop, seconds, late
        self._handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        if self._handle is None:
            self._handle = self.loop.call_later(self.seconds, self._fire)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        self.late()


def choice_setting(name: str, raw: str | None, choices: tuple[str, ...], default: str) -> str:
    """``raw`` (unset or empty: ``default``) checked as one of ``choices``; ``name`` is the
    setting it came from, for the error."""
    value = (raw or "").strip()
    if not value:
        return default
    if value not in choices:
        raise ConfigError(f"{name} must be {' or '.join(choices)}; got {raw!r}")
    return value


def server_setting(name: str, raw: str | None) -> str:
    """``raw`` (unset or empty: the default) checked as a server's name; ``name`` is the
    setting it came from, for the error."""
    return choice_setting(name, raw, SERVERS, DEFAULT_SERVER)


def loop_setting(name: str, raw: str | None) -> str:
    """``raw`` (unset or empty: the default) checked as an event loop's name."""
    return choice_setting(name, raw, LOOPS, DEFAULT_LOOP)


def run(main: Coroutine[Any, Any, T], loop: str = DEFAULT_LOOP) -> T:
    """``asyncio.run(main)`` on the event loop named ``loop``."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: the connections accepted from it carry it, and asyncio's transports
    # set TCP_NODELAY only on sockets that say TCP. Without it (uvicorn on asyncio's loop) a
    # response written in two parts waits for the client's delayed ACK: 40 ms per request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def serve_app(
    app: Any,
    sock: socket.socket,
    shutdown: asyncio.Event,
    server: str = DEFAULT_SERVER,
    limits: Limits | None = None,
) -> None:
    """Serve until ``shutdown`` is set; the socket is closed when serving ends.

    With ``limits``, slow clients and connections beyond the cap are cut off (``Limits``).
    If the app fails to start (its ``before_serving``), this raises after the server has
    logged why.
    """
    try:
        if server == "hypercorn":
            from hypercorn.asyncio import serve

            config = hypercorn_config(sock, limits)
            await serve(app, config, shutdown_trigger=shutdown.wait)
        else:
            await _serve_uvicorn(app, sock, shutdown, limits)
    finally:
        with contextlib.suppress(OSError):
            sock.close()


# -------------------------------------------------------------------------------- Hypercorn
def hypercorn_config(sock: socket.socket, limits: Limits | None = None) -> HypercornConfig:
    import logging

    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.backlog = BACKLOG
    config.accesslog = None
    # Its error log through the process's logging (flex_bridge/logs.py), not a handler of its
    # own: the same format as every other line.
    errorlog = logging.getLogger("hypercorn.error")
    errorlog.setLevel(logging.WARNING)
    config.errorlog = errorlog
    config.loglevel = "WARNING"
    config.graceful_timeout = float(GRACEFUL_TIMEOUT)
    config.keep_alive_timeout = KEEP_ALIVE
    if limits is not None:
        _guard_hypercorn()
        config.flex_limits = limits  # type: ignore[attr-defined]  # read by _GuardedTCPServer
    return config


def _guard_hypercorn() -> None:
    """Hypercorn's connection handler, with ``Limits`` (when its config carries them).

    Hypercorn has neither a connection cap nor a header timeout of its own (its
    ``read_timeout`` bounds every read, also while a long request such as ``?wait=30`` is
    answered): its ``run`` module's ``TCPServer`` is swapped, once, for a subclass that
    behaves as the original unless the config carries ``flex_limits``.
    """
    import hypercorn.asyncio.run as hypercorn_run
    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.events import Updated

    if getattr(hypercorn_run, "TCPServer", None) is not TCPServer:  # swapped already
        return

    class _GuardedTCPServer(TCPServer):
        _waiting = True  # for a request's headers (Hypercorn: "idle")

        async def run(self) -> None:
            limits: Limits | None = getattr(self.config, "flex_limits", None)
            if limits is None:
                await super().run()
                return
            self._limits = limits
            if len(limits.open) >= limits.max_connections:
                await self._refuse()
                return
            limits.open.add(self)
            self._timer = HeaderTimer(self.loop, limits.header_timeout, self._late)
            self._timer.arm()
            try:
                await super().run()
            finally:
                limits.open.discard(self)
                self._timer.disarm()

        async def _refuse(self) -> None:
            """Answer 503, then close; what the client sent is read first (for a second at
            most), so that closing does not reset the connection before it reads the 503."""
            with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                self.writer.write(REFUSED)
                await self.writer.drain()
                self.writer.write_eof()
                async with asyncio.timeout(1.0):
                    while await self.reader.read(65536):
                        pass
            with contextlib.suppress(OSError, RuntimeError):
                self.writer.close()

        def _late(self) -> None:
            if self._waiting:
                self.loop.create_task(self._initiate_server_close())

        async def protocol_send(self, event: Any) -> None:
            if isinstance(event, Updated) and hasattr(self, "_limits"):
                self._waiting = event.idle
                if not event.idle:
                    self._timer.disarm()  # the headers are in
            await super().protocol_send(event)

        async def _read_data(self) -> None:
            if not hasattr(self, "_limits"):
                await super()._read_data()
                return
            read = self.reader.read

            async def reading(n: int = -1) -> bytes:
                data = await read(n)
                if data and self._waiting:
                    self._timer.arm()  # the first bytes of a request: its headers are due
                return data

            self.reader.read = reading  # type: ignore[method-assign]
            await super()._read_data()
            # The client is gone. Hypercorn would keep an idle connection's task until its
            # keep-alive timer ends (75 s), counted against the cap all along: end it now.
            self._limits.open.discard(self)
            if self._waiting:
                await self.idle_task.stop()

    setattr(hypercorn_run, "TCPServer", _GuardedTCPServer)  # noqa: B010  # not exported


# ---------------------------------------------------------------------------------- uvicorn
def uvicorn_config(app: Any, limits: Limits | None = None) -> UvicornConfig:
    """uvicorn as Hypercorn is set up above: no access log, warnings and errors only, no
    logging configuration of its own (the process's stays), no trust in X-Forwarded-*
    headers (webhook signatures cover the URL as received), the same backlog, keep-alive and
    grace, and the same ``limits``."""
    from uvicorn import Config

    return Config(
        app,
        http="httptools" if limits is None else _guarded_httptools(limits),
        ws="websockets-sansio",
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        backlog=BACKLOG,
        timeout_keep_alive=KEEP_ALIVE,
        timeout_graceful_shutdown=GRACEFUL_TIMEOUT,
        ws_ping_interval=None,
    )


def _guarded_httptools(limits: Limits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with ``Limits``: uvicorn times nothing until a request's
    headers are in (its ``limit_concurrency`` answers 503 to requests, it caps no sockets)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class _Guarded(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._timer = HeaderTimer(self.loop, limits.header_timeout, self._late)
            limits.open.add(self)
            if len(limits.open) > limits.max_connections:
                transport.write(REFUSED)
                transport.close()
                return
            self._timer.arm()

        def _late(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._timer.arm()

        def on_headers_complete(self) -> None:
            self._timer.disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._timer.disarm()
            limits.open.discard(self)
            super().connection_lost(exc)

    return _Guarded


async def _serve_uvicorn(
    app: Any, sock: socket.socket, stop: asyncio.Event, limits: Limits | None = None
) -> None:
    from uvicorn import Server

    class _Server(Server):
        """uvicorn's server, stopped as soon as ``stop`` is set.

        Its own ``main_loop`` looks at a flag every 0.1 s, and its ``shutdown`` sleeps 0.1 s,
        then looks every 0.1 s for connections still open: each stop took 0.2 s or more where
        Hypercorn takes none, which added up to most of the emulator's test suite (a server
        per test). The steps are uvicorn 0.54's, with waits that end when their condition does.
        """

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # signals are the caller's: it sets ``stop``

        async def main_loop(self) -> None:
            # on_tick(0) refreshes the Date header; it says whether to exit.
            while not await self.on_tick(0):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await stop.wait()
                        self.should_exit = True

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in self.servers:
                server.close()  # stop accepting; closes the listening socket
            state = self.server_state
            for connection in list(state.connections):
                connection.shutdown()  # idle: closed now; busy: closed after its response
            loop = asyncio.get_running_loop()
            deadline = loop.time() + GRACEFUL_TIMEOUT
            # uvicorn tells nothing when its last connection goes: look every 10 ms.
            while (state.connections or state.tasks) and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            for task in list(state.tasks):
                task.cancel("the graceful shutdown's time is up")
            await self.lifespan.shutdown()

    server = _Server(uvicorn_config(app, limits))
    try:
        await server.serve(sockets=[sock])
    except SystemExit:  # uvicorn's way out when the app's start-up failed
        raise RuntimeError("the app failed to start (uvicorn.error logged why)") from None
