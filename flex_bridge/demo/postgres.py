"""A throwaway PostgreSQL server for ``flex-bridge demo --instances N``: Debian's server
binaries, a cluster in a temporary directory on a free loopback port, stopped and deleted at
the end. PostgreSQL refuses to run as root, so as root the cluster belongs to ``postgres``."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from flex_bridge.errors import ConfigError

MISSING = (
    "--instances above 1 needs PostgreSQL (several bridges share one journal), and no server "
    "binaries were found: install Debian's postgresql package (apt-get install postgresql)"
)


def server_binaries() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb``, if any."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name.split(".")[0]),
    )
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def embedded_postgres() -> Iterator[str]:
    """A running server's ``postgresql://`` URL; ``ConfigError`` when none can be had."""
    binaries = server_binaries()
    if binaries is None:
        raise ConfigError(MISSING)
    root = os.geteuid() == 0
    as_owner = ["runuser", "-u", "postgres", "--"] if root else []
    home = Path(tempfile.mkdtemp(prefix="flex-bridge-demo-pg-"))
    data, port = home / "data", _free_port()
    if root:
        shutil.chown(home, "postgres")

    def run(tool: str, *args: str, check: bool = True) -> None:
        subprocess.run(
            [*as_owner, str(binaries / tool), "-D", str(data), *args],
            check=check,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    try:
        run("initdb", "-A", "trust", "-U", "demo")
        options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"
        run("pg_ctl", "-o", options, "-w", "start")
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(home, ignore_errors=True)
        detail = (getattr(exc, "stderr", b"") or b"").decode(errors="replace").strip()
        raise ConfigError(f"could not start PostgreSQL for the demo: {exc} {detail}") from None
    try:
        yield f"postgresql://demo@127.0.0.1:{port}/postgres"
    finally:
        run("pg_ctl", "-m", "immediate", "stop", check=False)
        shutil.rmtree(home, ignore_errors=True)
