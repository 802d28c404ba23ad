"""Timeout escalation, as pure decisions (the ``[timeout]`` policy).

After ``escalate_after`` timeouts of the same task, each further timeout is one more
escalation level: level ``k = timeouts - escalate_after + 1``. Escalating merges
``{"escalation": {"level": k, "reason": "reservation_timeout", "timeouts": N}}`` plus the
policy's routing attributes into the task, and raises its priority by ``priority_step`` per
new level. The decision is taken from what the task holds now: a level it already has is not
applied again, so a retried event or a second bridge changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flex_bridge.domain.policy import TimeoutPolicy
from flex_bridge.domain.types import JSON


def escalation_level(policy: TimeoutPolicy, timeouts: int) -> int:
    """The level ``timeouts`` call for (0: none)."""
    if policy.action != "escalate" or timeouts < policy.escalate_after:
        return 0
    return timeouts - policy.escalate_after + 1


def current_level(attributes: Mapping[str, Any]) -> int:
    escalation = attributes.get("escalation")
    if isinstance(escalation, Mapping):
        level = escalation.get("level")
        if isinstance(level, int) and not isinstance(level, bool):
            return level
    return 0


def escalate(
    policy: TimeoutPolicy, timeouts: int, attributes: Mapping[str, Any], priority: int
) -> tuple[JSON, int | None] | None:
    """The merge patch and new priority for this many timeouts, or None when nothing is due."""
    level = escalation_level(policy, timeouts)
    have = current_level(attributes)
    if level <= have:
        return None
    patch: JSON = {
        **policy.routing,
        "escalation": {"level": level, "reason": "reservation_timeout", "timeouts": timeouts},
    }
    new_priority = (
        priority + policy.priority_step * (level - have) if policy.priority_step else None
    )
    return patch, new_priority
