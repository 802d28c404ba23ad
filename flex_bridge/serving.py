"""Serving a Quart app with Hypercorn on a real socket: in this event loop, or in a thread.

Both the bridge and the emulator are served this way, in production and in tests. Binding
the socket here (port 0 picks a free one) tells the caller its address before serving starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from flex_bridge.emulator.app import ResponseLost


class _QuietLostResponses(logging.Filter):
    """Injected dropped responses are expected; don't report them as server errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ResponseLost))


logging.getLogger("hypercorn.error").addFilter(_QuietLostResponses())


# Pending connections the kernel queues before the server accepts them. Hypercorn listens
# again on the socket with its own backlog (default 100): under a burst of callbacks a full
# queue drops connection attempts, and each one costs its sender a 1-second SYN retransmit.
BACKLOG = 1024


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def hypercorn_config(sock: socket.socket) -> Config:
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.backlog = BACKLOG
    config.accesslog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = 75
    return config


async def serve_app(app: Any, sock: socket.socket, shutdown: asyncio.Event) -> None:
    """Serve until ``shutdown`` is set; the socket is closed when serving ends."""
    try:
        await serve(app, hypercorn_config(sock), shutdown_trigger=shutdown.wait)
    finally:
        with contextlib.suppress(OSError):
            sock.close()


class ThreadedServer:
    """Serve an app built by ``factory`` on its own event loop in a daemon thread.

    The factory runs inside that thread's loop, so everything the app creates belongs to it.
    """

    def __init__(self, factory: Callable[[], Any], host: str = "127.0.0.1", port: int = 0):
        self.factory = factory
        self.sock = bind(host, port)
        self.url = base_url(self.sock)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.app: Any = None
        self._shutdown: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"server {self.url}", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._shutdown = asyncio.Event()
            try:
                self.app = self.factory()
                server = asyncio.create_task(serve_app(self.app, self.sock, self._shutdown))
            except BaseException as exc:  # reported to the starting thread
                self._error = exc
                self._ready.set()
                raise
            self._ready.set()
            await server

        asyncio.run(main())

    def start(self, timeout: float = 10.0) -> ThreadedServer:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"server at {self.url} did not start within {timeout} s")
        if self._error is not None:
            raise RuntimeError(f"server at {self.url} failed to start") from self._error
        return self

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` on the server's loop and return its result (for test set-up)."""
        assert self.loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if not self._thread.is_alive():
            return
        if self.loop is not None and self._shutdown is not None:
            self.loop.call_soon_threadsafe(self._shutdown.set)
        self._thread.join(timeout)
        with contextlib.suppress(OSError):  # Hypercorn may have closed it already
            self.sock.close()

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
