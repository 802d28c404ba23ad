"""``python -m bench.peers.python_floor --port P``: the floor peer on uvicorn (httptools,
uvloop), configured as the project serves the bridge: no access log, warnings only, no
trust in X-Forwarded-* headers, the bridge's listen backlog and keep-alive."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from bench.peers.python_floor.app import FloorConfig, create_app

BACKLOG = 1024  # the bridge's: no 1-s SYN retransmits under a burst
KEEP_ALIVE = 75  # longer than any client's idle keep-alive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.python_floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8950)
    args = parser.parse_args(argv)
    app = create_app(FloorConfig.from_env("bench.peers.python_floor"))
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        http="httptools",
        loop="uvloop",
        ws="none",
        lifespan="on",
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        backlog=BACKLOG,
        timeout_keep_alive=KEEP_ALIVE,
    )
    print(f"python floor peer listening on http://{args.host}:{args.port}", flush=True)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
