"""Timeout escalation, as pure decisions (the ``[timeout]`` policy).

After ``escalate_after`` timeouts of the same task, each further timeout is one more
escalation level: level ``k = timeouts - escalate_after + 1``. Escalating merges
``{"escalation": {"level": k, "reason": "reservation_timeout", "timeouts": N}}`` plus the
policy's routing attributes into the task, and raises its priority by ``priority_step`` per
new level. The decision is taken from what the task holds now: a level it already has is not
applied again, so a retried event or a second bridge changes nothing.

The keys written here are the bridge's own (``owned_keys``): agents may not patch them, or
they could stop an escalation (``level`` 99) or turn it into a priority drop (``level``
-1,000,000).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flex_bridge.domain.attributes import BRIDGE_OWNED, ESCALATION
from flex_bridge.domain.policy import TimeoutPolicy
from flex_bridge.domain.types import JSON


def owned_keys(policy: TimeoutPolicy) -> frozenset[str]:
    """The top-level attribute keys the bridge writes under this policy: ``BRIDGE_OWNED``,
    and the ``routing`` keys when it escalates."""
    if policy.action != "escalate":
        return BRIDGE_OWNED
    return BRIDGE_OWNED | frozenset(policy.routing)


def escalation_level(policy: TimeoutPolicy, timeouts: int) -> int:
    """The level ``timeouts`` call for (0: none)."""
    if policy.action != "escalate" or timeouts < policy.escalate_after:
        return 0
    return timeouts - policy.escalate_after + 1


def current_level(attributes: Mapping[str, Any]) -> int:
    escalation = attributes.get(ESCALATION)
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
        ESCALATION: {"level": level, "reason": "reservation_timeout", "timeouts": timeouts},
    }
    new_priority = (
        priority + policy.priority_step * (level - have) if policy.priority_step else None
    )
    return patch, new_priority
