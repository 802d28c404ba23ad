"""``update_attributes`` over an in-memory TaskRouter: fetch with ETag, merge, write with If-Match.

The fake (``tests.support.fakes.FakeTasks``) keeps one version counter per task, answers 412 to
a stale ``If-Match`` as TaskRouter does, and lets a test stage trouble on the next writes:
another writer getting in first, a write applied whose answer is lost
(``AmbiguousOutcomeError``), a write lost before it was applied, a transient 5xx.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flex_bridge.adapters.retry import set_testing
from flex_bridge.adapters.taskrouter import TaskView
from flex_bridge.app.attributes import (
    MAX_ATTEMPTS,
    PatchResult,
    patch_attributes,
    update_attributes,
)
from flex_bridge.domain.attributes import (
    ATTRIBUTES_LIMIT,
    MalformedExisting,
    TooLarge,
)
from flex_bridge.domain.escalation import escalate
from flex_bridge.domain.policy import TimeoutPolicy
from flex_bridge.errors import (
    AmbiguousOutcomeError,
    ConflictError,
    NotFoundError,
    TransientUpstreamError,
    UpstreamError,
)
from tests.support.fakes import TROUBLE, WT, FakeTasks, StoredTask, Trouble

UNKNOWN = "WT" + "f" * 32


def assert_every_write_was_conditional(fake: FakeTasks) -> None:
    """No write went without If-Match, and each named an ETag a fetch had just returned."""
    for write in fake.writes:
        assert write.if_match is not None, write
        assert write.if_match in fake.fetched_etags, write


ESCALATE = TimeoutPolicy(
    action="escalate", escalate_after=2, priority_step=10, routing={"route": "supervisor"}
)


def escalating(timeouts: int) -> Callable[[dict[str, Any], TaskView], Any]:
    return lambda attributes, task: escalate(ESCALATE, timeouts, attributes, task.priority)


# --------------------------------------------------------------------------- the plain path


async def test_fetch_merge_write_with_if_match() -> None:
    fake = FakeTasks()
    fake.add({"customer": {"name": "Zoë", "tier": "silver"}, "from": "+1555"})

    result = await patch_attributes(
        fake, WT, {"customer": {"tier": "gold", "vip": True}, "from": None}
    )

    expected = {"customer": {"name": "Zoë", "tier": "gold", "vip": True}}
    assert fake.stored() == expected
    assert result == PatchResult(expected, '"2"', 0, True, 1, 0)
    [write] = fake.writes
    assert write.if_match == '"1"'
    assert write.priority is None  # a patch leaves the priority alone
    # Compact, unescaped JSON: what is counted against the limit is what is stored.
    assert write.attributes == '{"customer":{"name":"Zoë","tier":"gold","vip":true}}'


async def test_a_patch_that_changes_nothing_writes_nothing() -> None:
    fake = FakeTasks()
    fake.add('{ "a": 1,  "b": {"c": [1, 2]} }')  # not compact: still the same object

    result = await patch_attributes(fake, WT, {"a": 1, "b": {"c": [1, 2]}, "gone": None})

    assert fake.writes == []
    assert result.changed is False
    assert result.attributes == {"a": 1, "b": {"c": [1, 2]}}
    assert result.etag == '"1"'
    assert fake.tasks[WT].attributes == '{ "a": 1,  "b": {"c": [1, 2]} }'  # not rewritten


async def test_empty_attributes_are_an_empty_object() -> None:
    fake = FakeTasks()
    fake.add("")
    result = await patch_attributes(fake, WT, {"a": 1})
    assert fake.stored() == {"a": 1}
    assert result.changed


async def test_a_task_without_an_etag_is_never_written() -> None:
    fake = FakeTasks()
    fake.add({"a": 1})
    fake.tasks[WT].etag_missing = True

    with pytest.raises(ConflictError, match="without an ETag"):
        await patch_attributes(fake, WT, {"a": 2})

    assert fake.writes == []
    assert fake.stored() == {"a": 1}


async def test_an_unknown_task_is_not_found() -> None:
    fake = FakeTasks()
    with pytest.raises(NotFoundError):
        await patch_attributes(fake, UNKNOWN, {"a": 1})
    assert fake.writes == []


# ------------------------------------------------------------------------------- conflicts


async def test_a_412_refetches_and_reapplies_the_patch_to_the_new_state() -> None:
    fake = FakeTasks()
    fake.add({"customer": {"name": "Zoë"}, "keep": 1})

    def other(task: StoredTask) -> None:  # another writer changes what the patch touches
        task.attributes = json.dumps({"customer": {"name": "Zoë B.", "id": 7}, "keep": 1})

    fake.other_writer = other
    fake.trouble = ["raced"]

    result = await patch_attributes(fake, WT, {"customer": {"tier": "gold"}})

    expected = {"customer": {"name": "Zoë B.", "id": 7, "tier": "gold"}, "keep": 1}
    assert fake.stored() == expected  # the other writer's change is kept, ours is added
    assert [w.outcome for w in fake.writes] == ["412", "ok"]
    assert [w.if_match for w in fake.writes] == ['"1"', '"2"']
    assert json.loads(fake.writes[1].attributes or "") == expected
    assert (result.attempts, result.conflicts, result.changed) == (2, 1, True)
    assert result.attributes == expected
    assert_every_write_was_conditional(fake)


async def test_several_conflicts_in_a_row_are_each_resolved_on_fresh_state() -> None:
    fake = FakeTasks()
    fake.add({})
    fake.trouble = ["raced", "raced", "raced"]

    result = await patch_attributes(fake, WT, {"mine": True})

    assert fake.stored() == {"other_1": 1, "other_2": 2, "other_3": 3, "mine": True}
    assert (result.attempts, result.conflicts) == (4, 3)
    assert [w.if_match for w in fake.writes] == ['"1"', '"2"', '"3"', '"4"']
    assert_every_write_was_conditional(fake)


async def test_gives_up_with_conflict_error_after_max_attempts() -> None:
    fake = FakeTasks()
    fake.add({"a": 1})
    fake.trouble = ["raced"] * 100

    with pytest.raises(ConflictError) as caught:
        await patch_attributes(fake, WT, {"mine": True})

    assert caught.value.status == 412
    assert caught.value.code == 20412
    assert str(MAX_ATTEMPTS) in str(caught.value)
    assert len(fake.writes) == MAX_ATTEMPTS
    assert len(fake.fetched_etags) == MAX_ATTEMPTS
    assert all(w.outcome == "412" for w in fake.writes)
    assert "mine" not in fake.stored()
    assert_every_write_was_conditional(fake)


async def test_max_attempts_is_a_parameter() -> None:
    fake = FakeTasks()
    fake.add({})
    fake.trouble = ["raced"] * 3

    with pytest.raises(ConflictError):
        await patch_attributes(fake, WT, {"mine": True}, max_attempts=3)
    assert len(fake.writes) == 3

    fake.trouble = ["raced"] * 2
    result = await patch_attributes(fake, WT, {"mine": True}, max_attempts=3)
    assert result.attempts == 3
    assert fake.stored()["mine"] is True


# ----------------------------------------------------------------------- ambiguous writes


async def test_an_ambiguous_write_that_applied_is_not_applied_twice() -> None:
    fake = FakeTasks()
    fake.add({"a": 1})
    fake.trouble = ["lost_after"]

    result = await patch_attributes(fake, WT, {"b": 2})

    # The re-fetch shows the write took; re-merging changes nothing, so nothing is resent.
    assert [w.outcome for w in fake.writes] == ["lost_after"]
    assert len(fake.fetched_etags) == 2
    assert fake.stored() == {"a": 1, "b": 2}
    assert fake.tasks[WT].version == 2
    assert result.attributes == {"a": 1, "b": 2}
    assert result.etag == '"2"'
    assert result.conflicts == 1
    assert result.changed is True  # it is there, and most likely by this call


async def test_an_ambiguous_escalation_that_applied_raises_the_priority_once() -> None:
    fake = FakeTasks()
    fake.add({"type": "support"}, priority=5)
    fake.trouble = ["lost_after"]

    result = await update_attributes(fake, WT, escalating(2))

    assert [w.outcome for w in fake.writes] == ["lost_after"]
    assert fake.tasks[WT].priority == 15
    assert fake.stored() == {
        "type": "support",
        "route": "supervisor",
        "escalation": {"level": 1, "reason": "reservation_timeout", "timeouts": 2},
    }
    assert result.priority == 15
    assert result.changed is True


async def test_an_ambiguous_write_that_did_not_apply_is_applied_once_after_the_fetch() -> None:
    fake = FakeTasks()
    fake.add({"a": 1}, priority=5)
    fake.trouble = ["lost_before"]

    result = await update_attributes(fake, WT, escalating(2))

    assert [w.outcome for w in fake.writes] == ["lost_before", "ok"]
    assert fake.writes[0].if_match == fake.writes[1].if_match == '"1"'
    assert fake.tasks[WT].priority == 15
    assert fake.stored()["escalation"]["level"] == 1
    assert (result.changed, result.priority, result.attempts) == (True, 15, 2)
    assert len(fake.applied) == 1


async def test_answers_lost_again_and_again_are_an_outage_not_a_conflict() -> None:
    fake = FakeTasks()
    fake.add({"a": 1})
    fake.trouble = ["lost_before"] * 100

    with pytest.raises(AmbiguousOutcomeError):
        await patch_attributes(fake, WT, {"b": 2})

    assert [w.outcome for w in fake.writes] == ["lost_before"] * 4  # TRANSIENT's bound
    # Each lost answer is resolved by a fetch, the last one too (the change is still to do).
    assert len(fake.fetched_etags) == 5
    assert fake.stored() == {"a": 1}


async def test_when_answers_ran_out_a_last_look_finds_the_change_made() -> None:
    fake = FakeTasks()
    fake.add({"a": 1}, priority=5)
    fake.trouble = ["lost_before", "lost_before", "lost_before", "lost_after"]

    result = await update_attributes(fake, WT, escalating(2))

    assert [w.outcome for w in fake.writes] == ["lost_before"] * 3 + ["lost_after"]
    assert (result.changed, result.priority) == (True, 15)
    assert fake.stored()["escalation"]["level"] == 1


async def test_when_attempts_ran_out_a_last_look_finds_a_lost_answer_took() -> None:
    fake = FakeTasks()
    fake.add({})
    fake.trouble = ["raced", "raced", "lost_after"]

    result = await patch_attributes(fake, WT, {"mine": True}, max_attempts=3)

    assert [w.outcome for w in fake.writes] == ["412", "412", "lost_after"]
    assert result.changed is True
    assert fake.stored()["mine"] is True
    assert len(fake.fetched_etags) == 4  # the last look


async def test_when_attempts_ran_out_on_a_lost_answer_that_did_not_take() -> None:
    fake = FakeTasks()
    fake.add({})
    fake.trouble = ["raced", "raced", "lost_before"]

    with pytest.raises(AmbiguousOutcomeError):
        await patch_attributes(fake, WT, {"mine": True}, max_attempts=3)

    assert len(fake.writes) == 3
    assert "mine" not in fake.stored()


async def test_a_5xx_on_the_write_is_retried_with_the_same_if_match() -> None:
    fake = FakeTasks()
    fake.add({"a": 1})
    fake.trouble = ["5xx", "5xx"]
    fake.fetch_trouble = ["5xx"]

    result = await patch_attributes(fake, WT, {"b": 2})

    assert [w.outcome for w in fake.writes] == ["5xx", "5xx", "ok"]
    assert {w.if_match for w in fake.writes} == {'"1"'}
    assert fake.stored() == {"a": 1, "b": 2}
    assert result.changed


async def test_conflicts_back_off_with_growing_jitter_outside_tests() -> None:
    fake = FakeTasks()
    fake.add({})
    fake.trouble = ["raced", "lost_before", "raced", "raced", "raced", "raced", "raced"]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # the seam: nothing really waits
        waits.append(seconds)

    set_testing(False)
    try:
        result = await patch_attributes(fake, WT, {"mine": True}, sleep=sleep)
    finally:
        set_testing(True)

    assert result.conflicts == 7
    assert len(waits) == 7  # one wait after each conflict, none before the first try
    for attempt, wait in enumerate(waits, start=1):
        assert 0 <= wait <= min(0.5, 0.01 * 2**attempt)


async def test_no_waits_in_tests() -> None:
    fake = FakeTasks()
    fake.add({})
    fake.trouble = ["raced", "raced"]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    await patch_attributes(fake, WT, {"mine": True}, sleep=sleep)
    assert waits == []


async def test_transient_failures_past_their_bound_are_raised() -> None:
    fake = FakeTasks()
    fake.add({"a": 1})
    fake.fetch_trouble = ["5xx"] * 10

    with pytest.raises(TransientUpstreamError):
        await patch_attributes(fake, WT, {"b": 2})
    assert fake.writes == []


# -------------------------------------------------------------------------------- builders


async def test_a_builder_returning_none_writes_nothing() -> None:
    fake = FakeTasks()
    fake.add({"a": 1}, priority=3)
    seen: list[tuple[dict[str, Any], int]] = []

    def build(attributes: dict[str, Any], task: TaskView) -> None:
        seen.append((attributes, task.priority))
        return None

    result = await update_attributes(fake, WT, build)

    assert seen == [({"a": 1}, 3)]
    assert fake.writes == []
    assert result == PatchResult({"a": 1}, '"1"', 3, False, 1, 0)


async def test_the_builder_decides_from_the_state_of_each_attempt() -> None:
    fake = FakeTasks()
    fake.add({"n": 0})
    fake.trouble = ["raced", "raced"]
    seen: list[dict[str, Any]] = []

    def build(attributes: dict[str, Any], task: TaskView) -> tuple[dict[str, Any], None]:
        seen.append(dict(attributes))
        return {"n": attributes["n"] + 1}, None

    await update_attributes(fake, WT, build)

    assert len(seen) == 3
    assert "other_1" not in seen[0] and "other_1" in seen[1] and "other_2" in seen[2]
    assert fake.stored()["n"] == 1


async def test_priority_changes_alone_send_only_the_priority() -> None:
    fake = FakeTasks()
    fake.add({"a": 1}, priority=3)

    result = await update_attributes(fake, WT, lambda attrs, task: ({}, task.priority + 7))

    [write] = fake.writes
    assert (write.attributes, write.priority, write.if_match) == (None, 10, '"1"')
    assert fake.tasks[WT].priority == 10
    assert fake.stored() == {"a": 1}
    assert (result.priority, result.changed) == (10, True)


async def test_an_unchanged_priority_is_not_sent() -> None:
    fake = FakeTasks()
    fake.add({"a": 1}, priority=3)

    result = await update_attributes(fake, WT, lambda attrs, task: ({"a": 1}, 3))
    assert fake.writes == []
    assert result.changed is False

    await update_attributes(fake, WT, lambda attrs, task: ({"b": 2}, 3))
    [write] = fake.writes
    assert write.priority is None
    assert json.loads(write.attributes or "") == {"a": 1, "b": 2}


async def test_escalation_levels_raise_the_priority_once_per_level() -> None:
    fake = FakeTasks()
    fake.add({"type": "support"}, priority=1)

    first = await update_attributes(fake, WT, escalating(1))  # below escalate_after
    assert (first.changed, fake.writes) == (False, [])

    await update_attributes(fake, WT, escalating(2))
    assert fake.tasks[WT].priority == 11
    assert fake.stored()["escalation"] == {
        "level": 1,
        "reason": "reservation_timeout",
        "timeouts": 2,
    }
    again = await update_attributes(fake, WT, escalating(2))  # a retried event
    assert again.changed is False
    assert len(fake.writes) == 1
    assert fake.tasks[WT].priority == 11

    await update_attributes(fake, WT, escalating(3))
    assert fake.tasks[WT].priority == 21
    assert fake.stored()["escalation"]["level"] == 2
    assert fake.stored()["escalation"]["timeouts"] == 3
    assert len(fake.writes) == 2
    assert_every_write_was_conditional(fake)


# ------------------------------------------------------------------- what is never written


async def test_a_result_too_large_is_never_written() -> None:
    fake = FakeTasks()
    fake.add({"a": 1})

    with pytest.raises(TooLarge) as caught:
        await patch_attributes(fake, WT, {"big": "x" * ATTRIBUTES_LIMIT})

    assert caught.value.limit == ATTRIBUTES_LIMIT
    assert caught.value.size == len(
        json.dumps({"a": 1, "big": "x" * ATTRIBUTES_LIMIT}, separators=(",", ":"))
    )
    assert fake.writes == []
    assert fake.stored() == {"a": 1}


@pytest.mark.parametrize("existing", ["{not json", '{"a": 1', "[1]", "null", '{"a":1,"a":2}'])
async def test_malformed_existing_attributes_are_never_overwritten(existing: str) -> None:
    fake = FakeTasks()
    fake.add(existing)

    with pytest.raises(MalformedExisting):
        await patch_attributes(fake, WT, {"a": 2})

    assert fake.writes == []
    assert fake.tasks[WT].attributes == existing


@pytest.mark.parametrize("existing", ["{not json", '{"a": 1', "[1]"])
async def test_malformed_existing_attributes_are_replaced_when_asked(existing: str) -> None:
    fake = FakeTasks()
    fake.add(existing)

    result = await patch_attributes(fake, WT, {"a": 2}, replace_malformed=True)

    assert fake.stored() == {"a": 2}
    assert result.changed
    [write] = fake.writes
    assert write.if_match == '"1"'


async def test_replacing_malformed_attributes_with_an_empty_patch_writes_an_empty_object() -> None:
    fake = FakeTasks()
    fake.add("{not json")
    result = await patch_attributes(fake, WT, {}, replace_malformed=True)
    assert fake.tasks[WT].attributes == "{}"
    assert result.changed


async def test_replace_malformed_leaves_valid_attributes_alone() -> None:
    fake = FakeTasks()
    fake.add({"a": 1})
    await patch_attributes(fake, WT, {"b": 2}, replace_malformed=True)
    assert fake.stored() == {"a": 1, "b": 2}


# --------------------------------------------------------------------- under any trouble

trouble_runs = st.lists(st.sampled_from(TROUBLE), max_size=12)


@settings(max_examples=200, deadline=None)
@given(trouble_runs, st.integers(min_value=2, max_value=4))
def test_under_any_trouble_a_change_lands_at_most_once_or_not_at_all(
    trouble: list[Trouble], timeouts: int
) -> None:
    """Whatever the writes meet, every write is conditional, the patch lands whole on top of
    the other writers' changes or an error is raised, and the priority is raised for each
    new level exactly once."""
    fake = FakeTasks()
    fake.add({"type": "support"}, priority=0)
    fake.trouble = list(trouble)

    async def run() -> tuple[PatchResult | None, Exception | None]:
        try:
            return await update_attributes(fake, WT, escalating(timeouts)), None
        except UpstreamError as exc:  # ConflictError, TransientUpstreamError, lost answers
            return None, exc

    result, error = asyncio.run(run())

    assert_every_write_was_conditional(fake)
    stored = fake.stored()
    others = {k: v for k, v in stored.items() if k.startswith("other_")}
    assert len(others) == fake.others  # no other writer's change was lost
    level = timeouts - 1
    if stored.get("escalation") is not None:
        assert stored["escalation"]["level"] == level
        assert stored["route"] == "supervisor"
        assert fake.tasks[WT].priority == 10 * level
        assert len(fake.applied) == 1  # and applied once only
        assert error is None
        assert result is not None and result.changed
    else:
        assert error is not None
        assert fake.tasks[WT].priority == 0
        assert fake.applied == []
    if error is None:
        assert result is not None
        assert result.attributes == stored
        assert result.priority == fake.tasks[WT].priority
