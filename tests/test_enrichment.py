"""Enrichment: concurrent, bounded, isolated enrichers; one conditional write; never raises.

Enrichers are loaded by dotted path as in production: ``tests.test_enrichment:registered``
looks the enricher up in ``REGISTRY`` by the spec's ``options.ref``, so a test can hand the
factory any callable (options are plain TOML data and cannot carry one).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from flex_bridge.adapters.taskrouter import TasksPort, TwilioTaskRouter
from flex_bridge.app.enrichment import Enrichment, build_enricher, compose
from flex_bridge.app.metrics import Metrics
from flex_bridge.domain.enrichment import EnricherResult, EnrichmentOutcome, TaskContext
from flex_bridge.domain.policy import EnricherSpec, EnrichmentPolicy
from flex_bridge.errors import ConfigError, NotFoundError
from tests.support.emulator import RunningEmulator, twilio_client
from tests.support.fakes import WT, FakeTasks

PHONE = "+15551234567"
REGISTRY: dict[str, Any] = {}


def registered(options: dict[str, Any]) -> Any:
    """Factory: the enricher registered under ``options["ref"]``."""
    return REGISTRY[options["ref"]]


def broken_factory(options: dict[str, Any]) -> Any:
    raise RuntimeError("cannot build")


def refusing_factory(options: dict[str, Any]) -> Any:
    raise ConfigError("option 'url' is required")


async def async_factory(options: dict[str, Any]) -> Any:
    return registered(options)


def not_an_enricher(options: dict[str, Any]) -> Any:
    return 42


NOT_CALLABLE = "a string"


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    yield
    REGISTRY.clear()


def spec(name: str, enricher: Any, timeout: float = 5.0) -> EnricherSpec:
    REGISTRY[name] = enricher
    return EnricherSpec(name, "tests.test_enrichment:registered", timeout, {"ref": name})


def returning(patch: dict[str, Any]) -> Callable[[TaskContext], Any]:
    async def enricher(context: TaskContext) -> dict[str, Any]:
        return patch

    return enricher


def hanging(release: asyncio.Event) -> Callable[[TaskContext], Any]:
    async def enricher(context: TaskContext) -> dict[str, Any]:
        await release.wait()
        return {"late": True}

    return enricher


def enrichment(tr: TasksPort, *specs: EnricherSpec, metrics: Metrics | None = None) -> Enrichment:
    return Enrichment(EnrichmentPolicy(enrichers=specs), tr, metrics=metrics)


@pytest.fixture
async def release() -> AsyncIterator[asyncio.Event]:
    """Set at teardown, so a hung enricher ends before the loop closes."""
    event = asyncio.Event()
    yield event
    event.set()
    await asyncio.sleep(0)


# ------------------------------------------------------------------------------ the happy path
async def test_enrichers_run_concurrently_and_the_result_is_written_once() -> None:
    started: set[str] = set()
    both = asyncio.Event()

    def waiting_for_the_other(name: str) -> Any:
        async def enricher(context: TaskContext) -> dict[str, Any]:
            started.add(name)
            if len(started) == 2:
                both.set()
            await both.wait()  # run one after the other, and this never returns
            return {name: True}

        return enricher

    tr = FakeTasks.holding('{"type":"support"}')
    e = enrichment(tr, spec("a", waiting_for_the_other("a")), spec("b", waiting_for_the_other("b")))
    outcome = await e.enrich(WT, budget=5.0)
    assert outcome == EnrichmentOutcome(
        "ok", (EnricherResult("a", "ok"), EnricherResult("b", "ok")), patched=True
    )
    assert tr.stored() == {"type": "support", "a": True, "b": True}
    assert len(tr.writes) == 1
    assert tr.writes[0].if_match == '"1"'  # conditional, on the version read


async def test_context_carries_the_task_and_the_reservation() -> None:
    seen: list[TaskContext] = []

    async def enricher(context: TaskContext) -> dict[str, Any]:
        seen.append(context)
        context.attributes["mutated"] = True  # its own copy: nobody else sees this
        return {}

    tr = FakeTasks.holding('{"customer_id":"C-1"}')
    e = enrichment(tr, spec("a", enricher), spec("b", enricher))
    outcome = await e.enrich(WT, budget=5.0, reservation_sid="WR1", worker_sid="WK1")
    assert outcome.status == "ok"
    assert [(c.task_sid, c.reservation_sid, c.worker_sid) for c in seen] == [
        (WT, "WR1", "WK1"),
        (WT, "WR1", "WK1"),
    ]
    assert all(c.attributes == {"customer_id": "C-1", "mutated": True} for c in seen)
    assert seen[0].attributes is not seen[1].attributes
    assert tr.stored() == {"customer_id": "C-1"}  # the mutation was never written


async def test_nothing_to_add_is_ok_and_writes_nothing() -> None:
    tr = FakeTasks.holding('{"a":1}')
    outcome = await enrichment(tr, spec("crm", returning({}))).enrich(WT, budget=5.0)
    assert outcome == EnrichmentOutcome("ok", (EnricherResult("crm", "empty"),), patched=False)
    assert tr.writes == []


async def test_a_patch_already_applied_is_ok_but_not_patched() -> None:
    tr = FakeTasks.holding('{"crm":{"tier":"gold"}}')
    outcome = await enrichment(tr, spec("crm", returning({"crm": {"tier": "gold"}}))).enrich(
        WT, budget=5.0
    )
    assert (outcome.status, outcome.patched) == ("ok", False)
    assert tr.writes == []


async def test_patches_merge_in_policy_order_not_completion_order() -> None:
    second_done = asyncio.Event()

    async def first(context: TaskContext) -> dict[str, Any]:
        await second_done.wait()  # finishes last
        return {"shared": {"who": "first", "a": 1}, "x": 1}

    async def second(context: TaskContext) -> dict[str, Any]:
        second_done.set()
        return {"shared": {"who": "second"}, "stale": None}

    tr = FakeTasks.holding('{"stale":"old","keep":2}')
    outcome = await enrichment(tr, spec("first", first), spec("second", second)).enrich(
        WT, budget=5.0
    )
    assert outcome.status == "ok"
    assert [r.name for r in outcome.results] == ["first", "second"]
    assert tr.stored() == {"keep": 2, "shared": {"who": "second", "a": 1}, "x": 1}


def test_compose_keeps_deletions_and_merges_objects() -> None:
    assert compose({"a": {"b": 1}, "c": 1}, {"a": {"d": 2}, "c": None}) == {
        "a": {"b": 1, "d": 2},
        "c": None,
    }
    assert compose({"a": None}, {"a": 3}) == {"a": 3}
    assert compose({"a": [1]}, {"a": [2]}) == {"a": [2]}


async def test_a_conflicting_writer_is_met_with_if_match_and_a_refetch() -> None:
    tr = FakeTasks.holding('{"a":1}')
    tr.trouble = ["raced"]  # another writer gets in first: the ETag moves, not the attributes
    tr.other_writer = lambda task: None
    outcome = await enrichment(tr, spec("crm", returning({"crm": {"x": 1}}))).enrich(WT, budget=5.0)
    assert (outcome.status, outcome.patched) == ("ok", True)
    assert [w.if_match for w in tr.writes] == ['"1"', '"2"']
    assert tr.stored() == {"a": 1, "crm": {"x": 1}}


# ------------------------------------------------------------------------------ isolation
async def test_a_hung_enricher_times_out_alone(release: asyncio.Event) -> None:
    tr = FakeTasks.holding("{}")
    e = enrichment(
        tr, spec("slow", hanging(release), timeout=0.05), spec("fast", returning({"f": 1}))
    )
    outcome = await e.enrich(WT, budget=5.0)
    assert outcome.status == "partial"
    assert outcome.results == (
        EnricherResult("slow", "timeout", "no answer within its timeout (0.05 s)"),
        EnricherResult("fast", "ok"),
    )
    assert outcome.patched
    assert tr.stored() == {"f": 1}
    assert outcome.to_json() == {
        "status": "partial",
        "enrichers": {"slow": "timeout", "fast": "ok"},
    }
    await e.close()


async def test_an_enricher_that_ignores_cancellation_does_not_hold_the_outcome() -> None:
    finished = asyncio.Event()
    let_go = asyncio.Event()

    async def stubborn(context: TaskContext) -> dict[str, Any]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await let_go.wait()  # swallows the cancellation and carries on
        finished.set()
        return {"stubborn": True}

    tr = FakeTasks.holding("{}")
    e = enrichment(tr, spec("stubborn", stubborn, timeout=0.05), spec("ok", returning({"o": 1})))
    outcome = await e.enrich(WT, budget=5.0)
    assert not finished.is_set()  # the outcome came while the enricher still ran
    assert [r.status for r in outcome.results] == ["timeout", "ok"]
    assert tr.stored() == {"o": 1}
    let_go.set()
    await asyncio.wait_for(finished.wait(), 5)
    await asyncio.sleep(0)
    assert tr.stored() == {"o": 1}  # a late answer is never written
    assert len(tr.writes) == 1
    await e.close()


async def test_a_raising_enricher_is_recorded_without_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def boom(context: TaskContext) -> dict[str, Any]:
        raise RuntimeError(f"no customer for {PHONE}")

    tr = FakeTasks.holding(json.dumps({"from": PHONE}))
    with caplog.at_level(logging.DEBUG, "flex_bridge.enrichment"):
        outcome = await enrichment(tr, spec("boom", boom), spec("ok", returning({"o": 1}))).enrich(
            WT, budget=5.0
        )
    assert outcome.status == "partial"
    assert outcome.results[0] == EnricherResult("boom", "error", "RuntimeError")
    assert tr.stored() == {"from": PHONE, "o": 1}
    assert "enricher boom: error (RuntimeError)" in caplog.text
    assert "test_enrichment.py" in caplog.text  # where it was raised, at debug level
    assert PHONE not in caplog.text


async def test_an_enricher_raising_timeout_error_is_a_timeout() -> None:
    async def own_timeout(context: TaskContext) -> dict[str, Any]:
        raise TimeoutError

    outcome = await enrichment(FakeTasks.holding(), spec("t", own_timeout)).enrich(WT, budget=5.0)
    assert outcome.results == (EnricherResult("t", "timeout", "TimeoutError"),)
    assert outcome.status == "failed"


@pytest.mark.parametrize(
    "answer",
    [["not", "an", "object"], {"n": float("nan")}, {"obj": object()}, None],
    ids=["array", "nan", "not-json", "none"],
)
async def test_an_answer_that_is_not_a_json_object_is_an_error(answer: Any) -> None:
    async def bad(context: TaskContext) -> Any:
        return answer

    tr = FakeTasks.holding('{"a":1}')
    outcome = await enrichment(tr, spec("bad", bad), spec("ok", returning({"o": 1}))).enrich(
        WT, budget=5.0
    )
    assert outcome.results[0].status == "error"
    assert outcome.status == "partial"
    assert tr.stored() == {"a": 1, "o": 1}


async def test_when_every_enricher_fails_the_outcome_is_failed_and_nothing_is_written(
    release: asyncio.Event,
) -> None:
    async def boom(context: TaskContext) -> dict[str, Any]:
        raise ValueError("x")

    tr = FakeTasks.holding('{"a":1}')
    outcome = await enrichment(
        tr, spec("boom", boom), spec("slow", hanging(release), timeout=0.01)
    ).enrich(WT, budget=5.0)
    assert (outcome.status, outcome.patched) == ("failed", False)
    assert outcome.message == "no enricher answered"
    assert outcome.to_json() == {
        "status": "failed",
        "enrichers": {"boom": "error", "slow": "timeout"},
    }
    assert tr.writes == []


# ------------------------------------------------------------------------------ the budget
async def test_the_budget_bounds_every_enricher(release: asyncio.Event) -> None:
    tr = FakeTasks.holding('{"a":1}')
    e = enrichment(tr, spec("a", hanging(release), timeout=30), spec("b", hanging(release)))
    outcome = await e.enrich(WT, budget=0.05)
    assert outcome.status == "failed"
    assert {r.message for r in outcome.results} == {"no answer within the budget left"}
    assert tr.writes == []
    await e.close()


async def test_no_budget_at_all_fails_without_reading_or_calling() -> None:
    called: list[str] = []

    async def enricher(context: TaskContext) -> dict[str, Any]:
        called.append("yes")
        return {"x": 1}

    tr = FakeTasks.holding()
    outcome = await enrichment(tr, spec("a", enricher)).enrich(WT, budget=0)
    assert outcome.status == "failed"
    assert outcome.message == "the task could not be read within the budget"
    assert (called, tr.fetches, tr.writes) == ([], 0, [])


async def test_a_write_that_outlasts_the_budget_fails_without_raising() -> None:
    tr = FakeTasks.holding('{"a":1}')
    tr.hold_writes = asyncio.Event()
    outcome = await enrichment(tr, spec("crm", returning({"crm": {}}))).enrich(WT, budget=0.1)
    assert (outcome.status, outcome.patched) == ("failed", False)
    assert outcome.message == "the write did not finish within the budget"
    assert outcome.results == (EnricherResult("crm", "ok"),)
    assert tr.stored() == {"a": 1}


async def test_a_write_that_is_refused_fails_with_the_reason() -> None:
    tr = FakeTasks.holding('{"a":1}')
    outcome = await enrichment(tr, spec("big", returning({"big": "x" * 5000}))).enrich(
        WT, budget=5.0
    )
    assert outcome.status == "failed"
    assert outcome.message is not None
    assert "4096" in outcome.message
    assert tr.writes == []


# ------------------------------------------------------------------------------ the task
@pytest.mark.parametrize("stored", ['{"a":1', "[1,2]", '{"a":1,"a":2}', "null"])
async def test_malformed_attributes_fail_and_stay_byte_identical(stored: str) -> None:
    called: list[str] = []

    async def enricher(context: TaskContext) -> dict[str, Any]:
        called.append("yes")
        return {"x": 1}

    tr = FakeTasks.holding(stored)
    outcome = await enrichment(tr, spec("a", enricher)).enrich(WT, budget=5.0)
    assert outcome.status == "failed"
    assert outcome.message == "the task's attributes are not a JSON object; left untouched"
    assert (called, tr.writes, tr.tasks[WT].attributes) == ([], [], stored)


async def test_a_task_that_cannot_be_read_fails() -> None:
    tr = FakeTasks.holding()
    tr.fetch_error = NotFoundError("The requested resource was not found", status=404)
    outcome = await enrichment(tr, spec("a", returning({"x": 1}))).enrich(WT, budget=5.0)
    assert outcome.status == "failed"
    assert outcome.message is not None
    assert outcome.message.startswith("the task could not be read: NotFoundError")


async def test_no_enrichers_is_skipped() -> None:
    tr = FakeTasks.holding()
    e = Enrichment(EnrichmentPolicy(), tr)
    assert not e.enabled
    outcome = await e.enrich(WT, budget=5.0)
    assert outcome == EnrichmentOutcome("skipped", (), patched=False)
    assert outcome.to_json() == {"status": "skipped", "enrichers": {}}
    assert tr.fetches == 0


# ------------------------------------------------------------------------------ metrics, close
async def test_outcomes_are_counted() -> None:
    metrics = Metrics()
    tr = FakeTasks.holding()
    e = enrichment(tr, spec("crm", returning({"crm": {"x": 1}})), metrics=metrics)
    await e.enrich(WT, budget=5.0)
    await Enrichment(EnrichmentPolicy(), tr, metrics=metrics).enrich(WT, budget=5.0)
    value = metrics.registry.get_sample_value
    assert value("flex_bridge_enrichments_total", {"status": "ok"}) == 1
    assert value("flex_bridge_enrichments_total", {"status": "skipped"}) == 1
    assert value("flex_bridge_enricher_results_total", {"enricher": "crm", "status": "ok"}) == 1


async def test_close_awaits_every_aclose_even_when_one_fails() -> None:
    closed: list[str] = []

    class Closing:
        def __init__(self, name: str, fail: bool = False) -> None:
            self.name, self.fail = name, fail

        async def __call__(self, context: TaskContext) -> dict[str, Any]:
            return {}

        async def aclose(self) -> None:
            closed.append(self.name)
            if self.fail:
                raise OSError("socket already gone")

    e = enrichment(
        FakeTasks.holding(),
        spec("a", Closing("a", fail=True)),
        spec("b", returning({})),  # no aclose: fine
        spec("c", Closing("c")),
    )
    await e.close()
    assert closed == ["a", "c"]


# ------------------------------------------------------------------------------ loading
@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        ("nodots", "no entry point 'nodots' in group flex_bridge.enrichers"),
        (":factory", "must look like package.module:f"),
        ("tests.no_such_module:factory", "cannot import tests.no_such_module"),
        ("tests.test_enrichment:missing", "missing is not a callable"),
        ("tests.test_enrichment:NOT_CALLABLE", "NOT_CALLABLE is not a callable"),
        ("tests.test_enrichment:broken_factory", "RuntimeError: cannot build"),
        ("tests.test_enrichment:refusing_factory", "option 'url' is required"),
        ("tests.test_enrichment:async_factory", "not an awaitable"),
        ("tests.test_enrichment:not_an_enricher", "returned int, not an async callable"),
    ],
)
def test_a_bad_factory_is_a_config_error_naming_the_enricher(factory: str, expected: str) -> None:
    REGISTRY["r"] = returning({})
    policy = EnrichmentPolicy(enrichers=(EnricherSpec("crm", factory, 1.0, {"ref": "r"}),))
    with pytest.raises(ConfigError) as caught:
        Enrichment(policy, FakeTasks.holding())
    assert str(caught.value).startswith("enricher 'crm': ")
    assert expected in str(caught.value)


def test_dotted_paths_with_a_dot_load_too() -> None:
    REGISTRY["r"] = returning({})
    enricher = build_enricher(
        EnricherSpec("x", "tests.test_enrichment.registered", 1, {"ref": "r"})
    )
    assert enricher is REGISTRY["r"]


def test_the_builtin_crm_factory_loads_from_the_policy() -> None:
    policy = EnrichmentPolicy(
        enrichers=(
            EnricherSpec(
                "crm",
                "flex_bridge.adapters.crm:http_crm",
                1.0,
                {"url": "http://127.0.0.1:9/customers", "keys": ["customer_id"]},
            ),
        )
    )
    assert Enrichment(policy, FakeTasks.holding()).names == ("crm",)


# ------------------------------------------------------------------------------ the emulator
async def test_enrichment_against_the_emulator(emulator: RunningEmulator) -> None:
    assert emulator.state is not None
    client = twilio_client(emulator)
    try:
        tr = TwilioTaskRouter(client, emulator.state.workspace_sid)
        ws = client.taskrouter.v1.workspaces(emulator.state.workspace_sid)
        task = await ws.tasks.create_async(attributes='{"type":"support","customer_id":"C-7"}')

        async def crm(context: TaskContext) -> dict[str, Any]:
            return {"crm": {"id": context.attributes["customer_id"], "tier": "gold"}}

        e = enrichment(tr, spec("crm", crm), spec("none", returning({})))
        outcome = await e.enrich(task.sid, budget=5.0)
        assert (outcome.status, outcome.patched) == ("ok", True)
        fetched = await ws.tasks(task.sid).fetch_async()
        assert json.loads(fetched.attributes) == {
            "type": "support",
            "customer_id": "C-7",
            "crm": {"id": "C-7", "tier": "gold"},
        }
        again = await e.enrich(task.sid, budget=5.0)
        assert (again.status, again.patched) == ("ok", False)
    finally:
        await client.http_client.close()


def test_an_enricher_factory_may_be_named_by_entry_point() -> None:
    from flex_bridge.adapters.crm import http_crm
    from flex_bridge.app.enrichment import load_factory

    assert load_factory("crm", "http_crm") is http_crm
    with pytest.raises(ConfigError, match="no entry point 'nope'"):
        load_factory("crm", "nope")
