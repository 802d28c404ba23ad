"""Event handlers that the e2e tests register by dotted path in the policy file.

The bridge runs in a thread of the test process, so the tests read ``RECORDED`` directly.
"""

from __future__ import annotations

from collections.abc import Mapping

RECORDED: list[dict[str, str]] = []


def record(event: Mapping[str, str]) -> None:
    """A plain (synchronous) handler: remembers every event it is given."""
    RECORDED.append(dict(event))


async def boom(event: Mapping[str, str]) -> None:
    """An async handler that always fails."""
    raise RuntimeError(f"this handler fails on purpose ({event.get('EventType')})")


def recorded(resource_sid: str) -> list[dict[str, str]]:
    return [e for e in RECORDED if e.get("ResourceSid") == resource_sid]
