"""PostgreSQL for the tests, from the first of these that is there:

1. ``FLEX_BRIDGE_TEST_POSTGRES``: a DSN (``postgresql://user:password@host:port/database``)
   whose role may create schemas in that database (CI sets it: ``.ci/run``).
2. Debian's server binaries (``/usr/lib/postgresql/<version>/bin/initdb``, from
   ``apt-get install postgresql``): a throwaway cluster in a temporary directory, on a free
   port of 127.0.0.1, for the test session (run as ``postgres`` when the tests run as root),
   with durability off (``fsync=off``: its data is thrown away).
3. Neither: the tests that need PostgreSQL are skipped, with a message saying how to get it,
   except under CI (``CI`` set), where that is a failure: CI never skips them.

Each test gets a schema of its own (``flex_bridge_test_<hex>``, dropped after it): a DSN
with ``?search_path=<schema>``, which asyncpg passes on as a server setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest

from tests.support.net import free_port

ENV = "FLEX_BRIDGE_TEST_POSTGRES"
INITDB = "/usr/lib/postgresql/*/bin/initdb"
SCHEMA_PREFIX = "flex_bridge_test_"

T = TypeVar("T")


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def with_query(dsn: str, **params: str) -> str:
    """``dsn`` with ``params`` added to (or replacing those in) its query."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass(frozen=True, slots=True)
class PostgresServer:
    dsn: str  # a database the tests may create schemas in
    origin: str  # where it came from, for messages

    def in_schema(self, schema: str) -> str:
        return with_query(self.dsn, search_path=schema)

    @contextlib.asynccontextmanager
    async def schema(self) -> AsyncIterator[str]:
        """A new, empty schema for one test; yields a DSN whose search_path is it."""
        name = await self._create_schema()
        try:
            yield self.in_schema(name)
        finally:
            await self._drop_schema(name)

    @contextlib.contextmanager
    def schema_blocking(self) -> Iterator[str]:
        """``schema``, for synchronous code (or code inside an event loop that may not wait
        on it): each step runs on an event loop of its own, in another thread."""
        name = blocking(self._create_schema())
        try:
            yield self.in_schema(name)
        finally:
            blocking(self._drop_schema(name))

    async def _create_schema(self) -> str:
        name = f"{SCHEMA_PREFIX}{uuid.uuid4().hex[:16]}"
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f'CREATE SCHEMA "{name}"')
        finally:
            await conn.close()
        return name

    async def _drop_schema(self, name: str) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()


def blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion on a new event loop in a worker thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def unavailable(reason: str) -> NoReturn:
    """Skip, or under CI fail: the PostgreSQL tests must run there."""
    message = (
        f"PostgreSQL tests: {reason}. Set {ENV}=postgresql://user:password@host:port/database, "
        "or install the server (apt-get install postgresql) for a throwaway cluster"
    )
    if on_ci():
        pytest.fail(f"{message} (CI is set: these tests may not be skipped)", pytrace=False)
    pytest.skip(message)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL (see the module's docstring); skips or fails without one."""
    dsn = os.environ.get(ENV, "").strip()
    if dsn:
        yield PostgresServer(dsn, f"{ENV}")
        return
    binaries = sorted(glob.glob(INITDB), key=_version)
    if not binaries:
        unavailable(f"{ENV} is not set and no server binaries match {INITDB}")
    with throwaway_cluster(Path(binaries[-1]).parent) as server:
        yield server


def _version(initdb: str) -> tuple[int, ...]:
    version = Path(initdb).parent.parent.name
    return tuple(int(n) for n in version.split(".") if n.isdigit())


@contextlib.contextmanager
def throwaway_cluster(bindir: Path) -> Iterator[PostgresServer]:
    """initdb, start on a free port, yield, stop (immediately) and delete."""
    as_user: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="flex-bridge-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(workdir, ignore_errors=True)
            unavailable("running as root and there is no postgres user to run the server as")
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log = workdir / "data", workdir / "server.log"

    def run(*command: str) -> None:
        done = subprocess.run(
            [*as_user, *command], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                f"{server_log}"
            )

    started = False
    try:
        run(
            str(bindir / "initdb"),
            "--pgdata",
            str(data),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        port = free_port()
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -k {workdir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c shared_buffers=16MB -c max_connections=100"
        )
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
        started = True
        yield PostgresServer(
            f"postgresql://postgres@127.0.0.1:{port}/postgres",
            f"a throwaway cluster ({bindir.parent.name}, port {port}, {workdir})",
        )
    finally:
        try:
            if started:
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
