"""The event-handler registry: isolation of failures, sync and async handlers, loading."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest

from flex_bridge.adapters.journal import SqliteJournal
from flex_bridge.app.events import Event, EventInbox, HandlerRegistry, event_key, load_handler
from flex_bridge.app.metrics import Metrics
from flex_bridge.errors import ConfigError

CANCELED: Event = {"EventType": "task.canceled", "ResourceSid": "WT" + "0" * 32}
ACCEPTED: Event = {"EventType": "reservation.accepted", "ResourceSid": "WR" + "0" * 32}

# Handlers importable by dotted path (``tests.test_handlers:...``).
SEEN: list[str] = []


def on_canceled(event: Event) -> None:
    SEEN.append("sync:" + event["EventType"])


async def on_canceled_async(event: Event) -> None:
    await asyncio.sleep(0)
    SEEN.append("async:" + event["EventType"])


NOT_CALLABLE = 42


def failures(metrics: Metrics, event_type: str) -> float:
    value = metrics.registry.get_sample_value(
        "flex_bridge_event_handler_failures_total", {"event_type": event_type}
    )
    return value or 0.0


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def sync(self, name: str) -> object:
        def handler(event: Event) -> None:
            self.calls.append((name, event.get("EventType", "")))

        return handler

    def async_(self, name: str) -> object:
        async def handler(event: Event) -> None:
            await asyncio.sleep(0)
            self.calls.append((name, event.get("EventType", "")))

        return handler


def boom(event: Event) -> None:
    raise RuntimeError("handler bug")


async def boom_async(event: Event) -> None:
    await asyncio.sleep(0)
    raise ValueError("async handler bug")


# ------------------------------------------------------------------------------ dispatch
async def test_sync_and_async_handlers_run_in_order() -> None:
    registry = HandlerRegistry()
    rec = Recorder()
    registry.register("task.canceled", rec.sync("one"))  # type: ignore[arg-type]
    registry.register("task.canceled", rec.async_("two"))  # type: ignore[arg-type]
    registry.register("task.canceled", rec.sync("three"))  # type: ignore[arg-type]
    assert await registry.dispatch(CANCELED) == 0
    assert rec.calls == [
        ("one", "task.canceled"),
        ("two", "task.canceled"),
        ("three", "task.canceled"),
    ]


async def test_only_handlers_for_the_event_type_run() -> None:
    registry = HandlerRegistry()
    rec = Recorder()
    registry.register("task.canceled", rec.sync("canceled"))  # type: ignore[arg-type]
    registry.register("reservation.accepted", rec.sync("accepted"))  # type: ignore[arg-type]
    await registry.dispatch(ACCEPTED)
    assert rec.calls == [("accepted", "reservation.accepted")]
    assert await registry.dispatch({"EventType": "worker.created"}) == 0
    assert await registry.dispatch({}) == 0
    assert len(rec.calls) == 1


async def test_star_handlers_see_every_event_after_the_specific_ones() -> None:
    registry = HandlerRegistry()
    rec = Recorder()
    registry.register("*", rec.async_("star"), name="star")  # type: ignore[arg-type]
    registry.register("task.canceled", rec.sync("specific"), name="specific")  # type: ignore[arg-type]
    await registry.dispatch(CANCELED)
    await registry.dispatch(ACCEPTED)
    assert rec.calls == [
        ("specific", "task.canceled"),
        ("star", "task.canceled"),
        ("star", "reservation.accepted"),
    ]
    assert [name for name, _ in registry.handlers_for("task.canceled")] == ["specific", "star"]
    assert [name for name, _ in registry.handlers_for("worker.created")] == ["star"]


async def test_a_failing_handler_is_counted_and_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    registry = HandlerRegistry(metrics)
    rec = Recorder()
    registry.register("task.canceled", boom, name="hooks:boom")
    registry.register("task.canceled", rec.sync("after-sync-failure"))  # type: ignore[arg-type]
    registry.register("task.canceled", boom_async, name="hooks:boom_async")
    registry.register("*", rec.async_("star"))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="flex_bridge.events"):
        assert await registry.dispatch(CANCELED) == 2
    assert rec.calls == [("after-sync-failure", "task.canceled"), ("star", "task.canceled")]
    assert failures(metrics, "task.canceled") == 2
    assert failures(metrics, "reservation.accepted") == 0
    logged = [r.getMessage() for r in caplog.records if r.name == "flex_bridge.events"]
    assert any("hooks:boom " in m and "task.canceled" in m for m in logged)
    assert any("hooks:boom_async" in m for m in logged)
    assert all(r.exc_info for r in caplog.records if r.name == "flex_bridge.events")

    await registry.dispatch(CANCELED)
    assert failures(metrics, "task.canceled") == 4
    assert b"flex_bridge_event_handler_failures_total" in metrics.render()


async def test_a_failing_star_handler_is_counted_under_the_event_type() -> None:
    metrics = Metrics()
    registry = HandlerRegistry(metrics)
    registry.register("*", boom)
    assert await registry.dispatch(ACCEPTED) == 1
    assert failures(metrics, "reservation.accepted") == 1


async def test_a_handler_may_return_a_value_or_an_awaitable() -> None:
    registry = HandlerRegistry()
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    registry.register("task.canceled", lambda event: 1)  # type: ignore[arg-type,return-value]
    registry.register("task.canceled", lambda event: done)
    assert await registry.dispatch(CANCELED) == 0


async def test_cancellation_is_not_swallowed() -> None:
    registry = HandlerRegistry()

    async def cancelled(event: Event) -> None:
        raise asyncio.CancelledError

    registry.register("task.canceled", cancelled)
    with pytest.raises(asyncio.CancelledError):
        await registry.dispatch(CANCELED)


async def test_dispatch_soon_and_drain() -> None:
    metrics = Metrics()
    registry = HandlerRegistry(metrics)
    rec = Recorder()
    registry.register("task.canceled", rec.async_("later"))  # type: ignore[arg-type]
    registry.register("task.canceled", boom)
    registry.dispatch_soon(CANCELED)
    registry.dispatch_soon(CANCELED)
    assert rec.calls == []  # not run inline
    await registry.drain()
    assert rec.calls == [("later", "task.canceled")] * 2
    assert failures(metrics, "task.canceled") == 2
    await registry.drain()  # nothing left: returns at once


def test_register_names() -> None:
    registry = HandlerRegistry()
    registry.register("task.canceled", on_canceled)
    registry.register("task.canceled", on_canceled_async, name="custom")
    names = [name for name, _ in registry.handlers_for("task.canceled")]
    assert names == ["on_canceled", "custom"]


# ------------------------------------------------------------------------------ loading
@pytest.mark.parametrize(
    ("path", "handler"),
    [
        ("tests.test_handlers:on_canceled", on_canceled),
        ("tests.test_handlers.on_canceled_async", on_canceled_async),
        ("tests.test_handlers:Recorder", Recorder),
    ],
)
def test_load_handler(path: str, handler: object) -> None:
    assert load_handler(path) is handler


async def test_load_from_the_policy_mapping() -> None:
    SEEN.clear()
    registry = HandlerRegistry()
    registry.load(
        {
            "task.canceled": (
                "tests.test_handlers:on_canceled",
                "tests.test_handlers:on_canceled_async",
            ),
            "*": ("tests.test_handlers.on_canceled",),
        }
    )
    assert [n for n, _ in registry.handlers_for("task.canceled")] == [
        "tests.test_handlers:on_canceled",
        "tests.test_handlers:on_canceled_async",
        "tests.test_handlers.on_canceled",
    ]
    await registry.dispatch(CANCELED)
    assert SEEN == ["sync:task.canceled", "async:task.canceled", "sync:task.canceled"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "must look like package.module:function"),
        ("nodots", "must look like package.module:function"),
        (":function", "must look like package.module:function"),
        ("tests.test_handlers:", "must look like package.module:function"),
        ("no_such_package_xyz.hooks:fn", "cannot import no_such_package_xyz.hooks"),
        ("tests.no_such_module:fn", "cannot import tests.no_such_module"),
        ("tests.test_handlers:missing", "missing is not a callable in tests.test_handlers"),
        ("tests.test_handlers.missing", "missing is not a callable in tests.test_handlers"),
        ("tests.test_handlers:NOT_CALLABLE", "NOT_CALLABLE is not a callable"),
    ],
)
def test_load_handler_errors(path: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_handler(path)
    assert message in str(caught.value)
    assert repr(path) in str(caught.value)


def test_load_errors_stop_the_registry_load() -> None:
    registry = HandlerRegistry()
    with pytest.raises(ConfigError, match=r"tests\.test_handlers:missing"):
        registry.load(
            {"task.canceled": ("tests.test_handlers:on_canceled", "tests.test_handlers:missing")}
        )


@pytest.mark.parametrize(
    "source",
    ["raise RuntimeError('no database in tests')\n", "def broken(:\n", "import no_such_dep_xyz\n"],
)
def test_a_module_that_fails_to_import_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    name = f"hooks_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=f"cannot import {name}"):
        load_handler(f"{name}:fn")


async def test_one_drain_of_the_inbox_at_a_time(tmp_path: Path) -> None:
    """The periodic sweep and the drain after a delivery never apply batches side by side:
    they would apply events out of order, and ``idle`` could return while the sweep was
    still applying what it took."""
    journal = SqliteJournal(tmp_path / "journal.db")
    await journal.open()
    registry = HandlerRegistry()
    inbox = EventInbox(journal, registry, "instance-a")
    applied: list[str] = []
    first_taken, release = asyncio.Event(), asyncio.Event()

    async def handler(event: Event) -> None:
        if event["ResourceSid"] == "first":
            first_taken.set()
            await release.wait()
        applied.append(event["ResourceSid"])

    registry.register("task.canceled", handler)
    try:
        first = {"EventType": "task.canceled", "ResourceSid": "first", "Timestamp": "1"}
        await journal.inbox_put(event_key(first, None), first)
        sweep = asyncio.create_task(inbox.once())  # the periodic sweep takes it
        await first_taken.wait()
        second = {"EventType": "task.canceled", "ResourceSid": "second", "Timestamp": "2"}
        assert await inbox.receive(second, None)  # a delivery: applied soon
        idle = asyncio.create_task(inbox.idle())
        # Time enough for a second drain to apply "second" (the journal answers from its
        # thread): the passing outcome does not depend on this time, only a wrong one does.
        await asyncio.wait({idle}, timeout=0.5)
        assert applied == [] and not idle.done()
        release.set()
        await idle
        assert applied == ["first", "second"]
        await sweep
    finally:
        await journal.close()
