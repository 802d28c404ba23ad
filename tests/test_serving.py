"""Serving: the listen backlog Hypercorn is given."""

from __future__ import annotations

from flex_bridge.serving import BACKLOG, bind, hypercorn_config


def test_hypercorn_listens_with_our_backlog_not_its_default_of_100() -> None:
    """Hypercorn listens again on the socket with ``config.backlog``: with its default of 100
    a burst of callbacks overflows the queue and each dropped SYN costs its sender 1 s."""
    sock = bind("127.0.0.1", 0)
    try:
        assert hypercorn_config(sock).backlog == BACKLOG >= 1024
    finally:
        sock.close()
