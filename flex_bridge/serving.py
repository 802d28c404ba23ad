"""Serving a Quart app with Hypercorn on a real socket, in this event loop.

Both the bridge and the emulator are served this way, in production and in tests. Binding
the socket here (port 0 picks a free one) tells the caller its address before serving starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

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
