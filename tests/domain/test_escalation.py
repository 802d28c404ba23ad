"""Timeout escalation as pure decisions: which level N timeouts call for, and what to write."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flex_bridge.domain.attributes import merge_patch
from flex_bridge.domain.escalation import current_level, escalate, escalation_level
from flex_bridge.domain.policy import TimeoutPolicy

POLICY = TimeoutPolicy(
    action="escalate", escalate_after=2, priority_step=10, routing={"route": "supervisor"}
)


@pytest.mark.parametrize(("timeouts", "level"), [(0, 0), (1, 0), (2, 1), (3, 2), (7, 6)])
def test_levels_start_at_escalate_after(timeouts: int, level: int) -> None:
    assert escalation_level(POLICY, timeouts) == level


def test_requeue_never_escalates() -> None:
    assert escalation_level(TimeoutPolicy(), 100) == 0
    assert escalate(TimeoutPolicy(), 100, {}, 0) is None


def test_the_first_level() -> None:
    decided = escalate(POLICY, 2, {"type": "support"}, 5)
    assert decided == (
        {
            "route": "supervisor",
            "escalation": {"level": 1, "reason": "reservation_timeout", "timeouts": 2},
        },
        15,
    )


def test_a_level_already_there_is_not_applied_again() -> None:
    have = {"escalation": {"level": 1, "reason": "reservation_timeout", "timeouts": 2}}
    assert escalate(POLICY, 2, have, 15) is None
    assert escalate(POLICY, 1, have, 15) is None  # a late event for an earlier timeout


def test_skipped_levels_raise_the_priority_for_each() -> None:
    """Timeout 2's write failed and timeout 3 comes: both steps at once."""
    patch, priority = escalate(POLICY, 3, {}, 0) or ({}, None)
    assert patch["escalation"]["level"] == 2
    assert priority == 20


def test_no_priority_step_leaves_the_priority_alone() -> None:
    policy = TimeoutPolicy(action="escalate", escalate_after=1)
    decided = escalate(policy, 1, {}, 3)
    assert decided is not None
    assert decided[1] is None
    assert decided[0] == {
        "escalation": {"level": 1, "reason": "reservation_timeout", "timeouts": 1}
    }


@pytest.mark.parametrize(
    ("attributes", "level"),
    [
        ({}, 0),
        ({"escalation": "high"}, 0),
        ({"escalation": {"level": "2"}}, 0),
        ({"escalation": {"level": True}}, 0),
        ({"escalation": {}}, 0),
        ({"escalation": {"level": 3}}, 3),
    ],
)
def test_the_current_level_is_read_defensively(attributes: dict[str, Any], level: int) -> None:
    assert current_level(attributes) == level


@given(st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=12))
def test_applying_decisions_in_any_order_ends_at_the_highest_level_and_step(
    counts: list[int],
) -> None:
    """Events handled in any order and any number of times: the task ends at the level of
    the highest count, and its priority rose by one step per level, never more."""
    attributes: dict[str, Any] = {"type": "support"}
    priority = 0
    for timeouts in counts:
        decided = escalate(POLICY, timeouts, attributes, priority)
        if decided is not None:
            patch, new_priority = decided
            attributes = merge_patch(attributes, patch)
            priority = new_priority if new_priority is not None else priority
    level = escalation_level(POLICY, max(counts))
    assert current_level(attributes) == level
    assert priority == 10 * level
