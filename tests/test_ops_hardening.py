"""Issue 13, operations: readiness cached with one check at a time, JSON logs and the access
log, ``/metrics`` on its own port or behind a bearer token, slow clients cut off."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from quart import Quart

from flex_bridge import logs
from flex_bridge.app.metrics import Metrics
from flex_bridge.cli import serve_bridge
from flex_bridge.errors import UpstreamError
from flex_bridge.serving import SERVERS, Limits, bind, serve_app
from flex_bridge.settings import Settings
from flex_bridge.web.ops import READY_CACHE_SECONDS, Readiness
from tests.support.bridge import RunningBridge, settings_for
from tests.support.emulator import RunningEmulator
from tests.support.net import free_port


# ------------------------------------------------------------------ 5. readiness, cached
class Pings:
    """Stand-ins for the journal, TaskRouter and Sync: counted pings, held until released."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {"journal": 0, "taskrouter": 0, "sync": 0}
        self.release = asyncio.Event()
        self.failing: set[str] = set()

    def port(self, name: str) -> Any:
        async def ping() -> None:
            self.calls[name] += 1
            await self.release.wait()
            if name in self.failing:
                raise UpstreamError("401 from upstream", status=401)

        return type(name, (), {"ping": staticmethod(ping)})()


def readiness(pings: Pings, now: list[float]) -> Readiness:
    svc: Any = type(
        "Svc",
        (),
        {
            "journal": pings.port("journal"),
            "taskrouter": pings.port("taskrouter"),
            "sync": None,
            "channel": pings.port("sync"),
            "metrics": Metrics(),
        },
    )()
    return Readiness(svc, clock=lambda: now[0])


async def test_concurrent_callers_share_one_check() -> None:
    pings, now = Pings(), [100.0]
    ready = readiness(pings, now)
    callers = [asyncio.create_task(ready.results()) for _ in range(50)]
    await asyncio.sleep(0)
    pings.release.set()
    answers = await asyncio.gather(*callers)
    assert pings.calls == {"journal": 1, "taskrouter": 1, "sync": 1}
    assert all(a == {"journal": "ok", "taskrouter": "ok", "sync": "ok"} for a in answers)


async def test_the_answer_is_cached_for_a_few_seconds() -> None:
    assert 1 <= READY_CACHE_SECONDS <= 10
    pings, now = Pings(), [100.0]
    pings.release.set()
    ready = readiness(pings, now)
    await ready.results()
    now[0] += READY_CACHE_SECONDS - 0.1
    for _ in range(20):
        await ready.results()
    assert pings.calls["taskrouter"] == 1 and ready.runs == 1
    now[0] += 0.2  # the answer is now too old
    pings.failing.add("taskrouter")
    assert (await ready.results())["taskrouter"] == "failing: 401 from upstream"
    assert pings.calls["taskrouter"] == 2 and ready.runs == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_check() -> None:
    pings, now = Pings(), [100.0]
    ready = readiness(pings, now)
    first = asyncio.create_task(ready.results())
    await asyncio.sleep(0)
    first.cancel()
    second = asyncio.create_task(ready.results())
    await asyncio.sleep(0)
    pings.release.set()
    assert (await second)["sync"] == "ok"
    assert ready.runs == 1


def gauges(ready: Readiness) -> dict[str, float]:
    registry = ready.metrics.registry
    values = {
        check: registry.get_sample_value("flex_bridge_ready", {"check": check})
        for check in ("journal", "taskrouter", "sync")
    }
    values["checked"] = registry.get_sample_value("flex_bridge_ready_checked_timestamp_seconds")
    assert all(v is not None for v in values.values()), values
    return values  # type: ignore[return-value]


async def test_the_ready_gauge_follows_each_run() -> None:
    pings, now = Pings(), [100.0]
    ready = readiness(pings, now)
    # Exported before any run, so an alert on a check's 0 has a series from the start.
    assert gauges(ready) == {"journal": 0, "taskrouter": 0, "sync": 0, "checked": 0}
    pings.release.set()
    await ready.results()
    first = gauges(ready)
    assert first["journal"] == first["taskrouter"] == first["sync"] == 1
    assert first["checked"] > 1_000_000_000  # Unix time, for "nobody asked /readyz lately"
    now[0] += READY_CACHE_SECONDS + 0.1
    pings.failing.add("sync")
    await ready.results()
    assert gauges(ready)["sync"] == 0 and gauges(ready)["taskrouter"] == 1
    now[0] += READY_CACHE_SECONDS + 0.1
    pings.failing.clear()
    await ready.results()
    assert gauges(ready)["sync"] == 1


# ------------------------------------------------------------------- serving the bridge


class Served:
    def __init__(self, url: str, settings: Settings, session: aiohttp.ClientSession) -> None:
        self.url, self.settings, self.session = url, settings, session

    async def get(
        self, path: str, *, base: str | None = None, **headers: str
    ) -> tuple[int, str, dict[str, str]]:
        async with self.session.get((base or self.url) + path, headers=headers) as response:
            return response.status, await response.text(), dict(response.headers)


@pytest.fixture
async def serve(
    start_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """``await serve(**settings)``: ``serve_bridge`` in this loop, as ``flex-bridge serve``
    runs it, against an emulator."""
    stops: list[tuple[asyncio.Event, asyncio.Task[int]]] = []
    session = aiohttp.ClientSession()

    async def start(**overrides: Any) -> Served:
        emulator = start_emulator()
        settings = settings_for(emulator, tmp_path / f"j{len(stops)}.db", **overrides)
        port = free_port()
        stop = asyncio.Event()
        task = asyncio.create_task(serve_bridge(settings, "127.0.0.1", port, shutdown=stop))
        stops.append((stop, task))
        served = Served(f"http://127.0.0.1:{port}", settings, session)
        for _ in range(400):
            if task.done():
                task.result()  # start-up failed: say why
            try:
                if (await served.get("/healthz"))[0] == 200:
                    return served
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.025)
        raise AssertionError("the bridge did not start")

    yield start
    await session.close()
    for stop, task in stops:
        stop.set()
        await task


async def test_readyz_checks_upstream_once_for_many_anonymous_callers(
    start_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    bridge = RunningBridge().start(settings_for(start_emulator(), tmp_path / "j.db"))
    try:
        async with aiohttp.ClientSession() as session:

            async def readyz() -> int:
                async with session.get(bridge.url + "/readyz") as response:
                    return response.status

            assert await readyz() == 200  # before_serving has run: the readiness is there
            readiness: Readiness = bridge.app.config["readiness"]
            readiness.ttl = 3600  # no answer grows old during this test, however slow
            statuses = await asyncio.gather(*(readyz() for _ in range(30)))
        assert set(statuses) == {200}
        # One run: the start-up check's, which the 31 callers shared or found cached.
        assert readiness.runs == 1
    finally:
        bridge.stop()


# ------------------------------------------------------------ 7. JSON logs, access log
@pytest.mark.parametrize("server", SERVERS)
async def test_json_logs_and_the_access_log(
    serve: Callable[..., Any],
    server: str,
    restore_logging: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("INFO", "json")
    capsys.readouterr()
    served = await serve(server=server, log_format="json", access_log=True)
    status, _, _ = await served.get("/readyz?token=s3cr3t&From=%2B15551234567")
    assert status == 200
    await served.get("/no/such/path")
    await asyncio.sleep(0.05)
    out, err = capsys.readouterr()
    assert "listening" not in out  # said in the log, as JSON
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert lines, err
    for line in lines:
        assert {"timestamp", "level", "logger", "message"} <= set(line)
    [listening] = [line for line in lines if line["message"].startswith("flex-bridge listening")]
    assert listening["level"] == "INFO" and listening["logger"] == "flex_bridge.serve"
    access = [line for line in lines if line["logger"] == "flex_bridge.access"]
    by_path = {line["path"]: line for line in access}
    assert by_path["/readyz"]["status"] == 200 and by_path["/readyz"]["method"] == "GET"
    assert by_path["/no/such/path"]["status"] == 404
    assert isinstance(by_path["/readyz"]["duration_ms"], float)
    assert by_path["/readyz"]["message"].startswith("GET /readyz 200 ")
    assert "s3cr3t" not in err and "5551234567" not in err and "token=" not in err


def test_json_lines_carry_the_intent_and_the_reservation() -> None:
    record = logging.LogRecord(
        "flex_bridge.coordinator", logging.WARNING, "x", 1, "%s", ("hi",), None
    )
    record.intent_id, record.reservation_sid = "01J", "WR" + "0" * 32
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "hi" and line["level"] == "WARNING"
    assert line["logger"] == "flex_bridge.coordinator"
    assert (line["intent_id"], line["reservation_sid"]) == ("01J", "WR" + "0" * 32)
    assert line["timestamp"].endswith("+00:00")


async def test_no_access_log_unless_asked(
    serve: Callable[..., Any], restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", "text")
    served = await serve()
    await served.get("/healthz")
    out, err = capsys.readouterr()
    assert "flex-bridge listening on" in out  # text: as before, on stdout
    assert "flex_bridge.access" not in err


# -------------------------------------------------- 8. /metrics: own port, bearer token
async def test_metrics_on_their_own_port_behind_a_token(serve: Callable[..., Any]) -> None:
    metrics_port = free_port()
    served = await serve(metrics_port=metrics_port, metrics_token="scrape-me")
    elsewhere = f"http://127.0.0.1:{metrics_port}"

    status, body, _ = await served.get("/metrics", Authorization="Bearer scrape-me")
    assert status == 404
    assert json.loads(body)["error"]["code"] == "not_found"

    status, body, headers = await served.get("/metrics", base=elsewhere)
    assert status == 401
    assert json.loads(body)["error"]["code"] == "unauthorized"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    for wrong in ("Bearer scrape-m", "Bearer scrape-me2", "Basic scrape-me", "scrape-me"):
        assert (await served.get("/metrics", base=elsewhere, Authorization=wrong))[0] == 401

    status, body, headers = await served.get(
        "/metrics", base=elsewhere, Authorization="Bearer scrape-me"
    )
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert "flex_bridge_build_info{" in body
    assert (await served.get("/readyz", base=elsewhere))[0] == 404  # /metrics only


async def test_a_flood_on_the_main_port_does_not_stop_the_scrapes(
    serve: Callable[..., Any],
) -> None:
    metrics_port = free_port()
    served = await serve(metrics_port=metrics_port, max_connections=2)
    host, port = "127.0.0.1", int(served.url.rsplit(":", 1)[1])
    held = [await asyncio.open_connection(host, port) for _ in range(2)]
    try:
        over = b""
        for _ in range(100):  # until the server has counted both held connections
            over = await _get(host, port)
            if over.startswith(b"HTTP/1.1 503"):
                break
            await asyncio.sleep(0.05)
        assert b"too_many_connections" in over, over
        status, body, _ = await served.get("/metrics", base=f"http://{host}:{metrics_port}")
        assert status == 200 and "flex_bridge_build_info{" in body
    finally:
        for _, writer in held:
            writer.close()
            await writer.wait_closed()


async def test_metrics_behind_a_token_on_the_main_port(serve: Callable[..., Any]) -> None:
    served = await serve(metrics_token="scrape-me")
    status, body, _ = await served.get("/metrics")
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
    status, body, _ = await served.get("/metrics", Authorization="bearer scrape-me")
    assert status == 200 and "flex_bridge_intents_in_flight" in body


async def test_metrics_stay_open_without_a_token(serve: Callable[..., Any]) -> None:
    served = await serve()
    assert (await served.get("/metrics"))[0] == 200


# ----------------------------------------------------------------------- 9. slow clients
def _app() -> Quart:
    app = Quart("tiny")

    @app.get("/")
    async def index() -> str:
        return "ok"

    return app


@pytest.fixture
async def limited() -> AsyncIterator[Callable[..., Any]]:
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(server: str, limits: Limits) -> tuple[str, int]:
        sock = bind("127.0.0.1", 0)
        port = sock.getsockname()[1]
        stop = asyncio.Event()
        stops.append((stop, asyncio.create_task(serve_app(_app(), sock, stop, server, limits))))
        return "127.0.0.1", port

    yield start
    for stop, task in stops:
        stop.set()
        await task


async def _get(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    return data


@pytest.mark.parametrize("server", SERVERS)
async def test_half_a_request_line_is_cut_off(limited: Callable[..., Any], server: str) -> None:
    host, port = await limited(server, Limits(header_timeout=0.3, max_connections=10))
    assert (await _get(host, port)).startswith(b"HTTP/1.1 200")
    # Half a request line, then nothing: closed by the server after its header timeout.
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET / HT")
    await writer.drain()
    try:
        async with asyncio.timeout(30):
            data = await reader.read()
    except ConnectionResetError:
        data = b""
    assert reader.at_eof() or data == b""
    assert not data.startswith(b"HTTP/1.1 200")
    writer.close()
    # A connection that says nothing at all goes the same way.
    reader, writer = await asyncio.open_connection(host, port)
    async with asyncio.timeout(30):
        assert await reader.read() == b""
    writer.close()


@pytest.mark.parametrize("server", SERVERS)
async def test_a_keep_alive_connection_gets_the_header_timeout_again(
    limited: Callable[..., Any], server: str
) -> None:
    host, port = await limited(server, Limits(header_timeout=0.3, max_connections=10))
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(30):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        await reader.readexactly(length)
        writer.write(b"GET / HT")  # the next request, started and never finished
        await writer.drain()
        with contextlib.suppress(ConnectionResetError):
            assert await reader.read() == b""
    writer.close()


@pytest.mark.parametrize("server", SERVERS)
async def test_connections_over_the_cap_are_refused(
    limited: Callable[..., Any], server: str
) -> None:
    host, port = await limited(server, Limits(header_timeout=60, max_connections=2))
    held = [await asyncio.open_connection(host, port) for _ in range(2)]
    await asyncio.sleep(0.1)  # both accepted
    over = await _get(host, port)
    assert over.startswith(b"HTTP/1.1 503"), over
    assert b"too_many_connections" in over
    for _, writer in held:
        writer.close()
        await writer.wait_closed()
    # Once they are gone, a new connection is served again.
    for _ in range(100):
        answer = await _get(host, port)
        if answer.startswith(b"HTTP/1.1 200"):
            break
        await asyncio.sleep(0.05)
    assert answer.startswith(b"HTTP/1.1 200")
