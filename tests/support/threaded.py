"""A Quart app served on its own event loop in a daemon thread (tests only): by default on the
server and loop that ``flex-bridge serve`` and ``flex-bridge emulator`` default to."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from flex_bridge.serving import DEFAULT_LOOP, DEFAULT_SERVER, base_url, bind, run, serve_app


class ThreadedServer:
    """Serve an app built by ``factory`` on its own event loop in a daemon thread.

    The factory runs inside that thread's loop, so everything the app creates belongs to it.
    ``server`` and ``loop`` name the server and the event loop (``flex_bridge.serving``); they
    may be changed until ``start``.
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        server: str = DEFAULT_SERVER,
        loop: str = DEFAULT_LOOP,
    ):
        self.factory = factory
        self.server = server
        self.loop_name = loop
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
                server = asyncio.create_task(
                    serve_app(self.app, self.sock, self._shutdown, self.server)
                )
            except BaseException as exc:  # reported to the starting thread
                self._error = exc
                self._ready.set()
                raise
            self._ready.set()
            await server

        run(main(), self.loop_name)

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
        with contextlib.suppress(OSError):  # the server may have closed it already
            self.sock.close()

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
