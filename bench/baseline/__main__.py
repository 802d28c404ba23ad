"""``python -m bench.baseline --port P``: the baseline on werkzeug's threaded WSGI server."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from werkzeug.serving import make_server

from bench.baseline.app import BaselineConfig, create_app

BACKLOG = 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8800)
    args = parser.parse_args(argv)
    app = create_app(BaselineConfig.from_env("bench.baseline"))
    server = make_server(args.host, args.port, app, threaded=True)
    # The bridge's listen backlog (werkzeug's own is 128): under a burst neither server loses
    # connection attempts to a full accept queue, so neither pays 1-second SYN retransmits.
    server.socket.listen(BACKLOG)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"baseline listening on http://{args.host}:{server.port}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
