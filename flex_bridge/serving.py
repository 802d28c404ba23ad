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
from collections.abc import Coroutine, Iterator
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


def _choice(name: str, raw: str | None, choices: tuple[str, ...], default: str) -> str:
    value = (raw or "").strip()
    if not value:
        return default
    if value not in choices:
        raise ConfigError(f"{name} must be {' or '.join(choices)}; got {raw!r}")
    return value


def server_setting(name: str, raw: str | None) -> str:
    """``raw`` (unset or empty: the default) checked as a server's name; ``name`` is the
    setting it came from, for the error."""
    return _choice(name, raw, SERVERS, DEFAULT_SERVER)


def loop_setting(name: str, raw: str | None) -> str:
    """``raw`` (unset or empty: the default) checked as an event loop's name."""
    return _choice(name, raw, LOOPS, DEFAULT_LOOP)


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
    app: Any, sock: socket.socket, shutdown: asyncio.Event, server: str = DEFAULT_SERVER
) -> None:
    """Serve until ``shutdown`` is set; the socket is closed when serving ends.

    If the app fails to start (its ``before_serving``), this raises after the server has
    logged why.
    """
    try:
        if server == "hypercorn":
            from hypercorn.asyncio import serve

            await serve(app, hypercorn_config(sock), shutdown_trigger=shutdown.wait)
        else:
            await _serve_uvicorn(app, sock, shutdown)
    finally:
        with contextlib.suppress(OSError):
            sock.close()


# -------------------------------------------------------------------------------- Hypercorn
def hypercorn_config(sock: socket.socket) -> HypercornConfig:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.backlog = BACKLOG
    config.accesslog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = float(GRACEFUL_TIMEOUT)
    config.keep_alive_timeout = KEEP_ALIVE
    return config


# ---------------------------------------------------------------------------------- uvicorn
def uvicorn_config(app: Any) -> UvicornConfig:
    """uvicorn as Hypercorn is set up above: no access log, warnings and errors only, no
    logging configuration of its own (the process's stays), no trust in X-Forwarded-*
    headers (webhook signatures cover the URL as received), the same backlog, keep-alive and
    grace."""
    from uvicorn import Config

    return Config(
        app,
        http="httptools",
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


async def _serve_uvicorn(app: Any, sock: socket.socket, stop: asyncio.Event) -> None:
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

    server = _Server(uvicorn_config(app))
    try:
        await server.serve(sockets=[sock])
    except SystemExit:  # uvicorn's way out when the app's start-up failed
        raise RuntimeError("the app failed to start (uvicorn.error logged why)") from None
