"""The coordinator over in-memory ports: paths the emulator cannot stage on demand."""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any

from flex_bridge.adapters.journal import SqliteJournal
from flex_bridge.adapters.taskrouter import ReservationView, TaskView
from flex_bridge.app.coordinator import Coordinator
from flex_bridge.app.recovery import Recovery
from flex_bridge.domain.ops import RULES
from flex_bridge.domain.policy import Policy
from flex_bridge.domain.protocol import INSTRUCTION_GRACE
from flex_bridge.errors import ConflictError

WR = "WR" + "a" * 32
WT = "WT" + "b" * 32
WK = "WK" + "c" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeTaskRouter:
    def __init__(self, status: str = "pending") -> None:
        self.status = status
        self.updates: list[dict[str, Any]] = []

    def view(self) -> ReservationView:
        return ReservationView(WR, WT, WK, self.status, None)

    async def fetch_reservation(self, task_sid: str, reservation_sid: str) -> ReservationView:
        return self.view()

    async def update_reservation(
        self, task_sid: str, reservation_sid: str, form: Mapping[str, Any]
    ) -> ReservationView:
        self.updates.append(dict(form))
        op = (
            form.get("Instruction")
            or {
                "accepted": "accept",
                "rejected": "reject",
                "wrapping": "wrapup",
                "completed": "complete",
            }[form["ReservationStatus"]]
        )
        rule = RULES[op]
        if self.status not in rule.requires:
            raise ConflictError(f"reservation is {self.status}", status=400, code=40136)
        self.status = rule.leads_to
        return self.view()

    async def fetch_task(self, task_sid: str) -> TaskView:  # pragma: no cover - unused
        raise NotImplementedError

    async def update_task(self, task_sid: str, **kw: Any) -> TaskView:  # pragma: no cover
        raise NotImplementedError

    async def reservation_timeout(self, workflow_sid: str) -> int:  # pragma: no cover
        return 120

    async def ping(self) -> None:  # pragma: no cover
        return None


class FakeChannel:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    async def publish(self, worker_sid: str, key: str, data: dict[str, Any]) -> bool:
        self.items.append(data)
        return True

    async def read(self, worker_sid: str, key: str) -> dict[str, Any] | None:
        return self.items[-1] if self.items else None

    async def ping(self) -> None:
        return None


async def make(status: str = "pending") -> tuple[Coordinator, FakeTaskRouter, FakeChannel, Clock]:
    clock = Clock()
    journal = SqliteJournal(":memory:", clock=clock)
    await journal.open()
    tr, channel = FakeTaskRouter(status), FakeChannel()
    return Coordinator(journal, channel, tr, Policy(), clock=clock), tr, channel, clock


async def instructed(coord: Coordinator, op: str, params: dict[str, Any]) -> str:
    intent, created = await coord.submit(
        op=op,
        reservation_sid=WR,
        task_sid=WT,
        worker_sid=WK,
        source="policy",
        params=params,
        deadline=None,
        via="instruction",
    )
    assert created
    intent = await coord.announce_only(intent, 1.0)
    intent = await coord.mark_instructed(intent)
    assert intent.state == "instructed"
    return intent.intent_id


async def test_an_instruction_reply_that_had_no_effect_goes_over_rest_after_the_grace() -> None:
    coord, tr, channel, clock = await make()
    intent_id = await instructed(coord, "accept", {})
    # Within the grace the callback owns it: recovery leaves it alone.
    await Recovery(coord).sweep()
    await coord.idle()
    assert tr.updates == []
    # Long after the reply, the reservation is still pending: TaskRouter never acted on it.
    clock.now += INSTRUCTION_GRACE + 1
    await Recovery(coord).sweep()
    await coord.idle()
    assert tr.updates == [{"ReservationStatus": "accepted"}]
    settled = await coord.journal.get(intent_id)
    assert settled is not None and settled.state == "settled" and settled.outcome == "applied"
    assert channel.items[-1]["phase"] == "applied"
    await coord.journal.close()


async def test_a_call_instruction_without_accept_is_taken_as_given() -> None:
    coord, tr, _, clock = await make()
    intent_id = await instructed(coord, "call", {"from": "+15550100", "url": "https://x.test/t"})
    clock.now += INSTRUCTION_GRACE + 1
    await Recovery(coord).sweep()
    await coord.idle()
    # Never resent: a call leaves no trace in the status, so it cannot be checked.
    assert tr.updates == []
    settled = await coord.journal.get(intent_id)
    assert settled is not None and settled.outcome == "applied"
    await coord.journal.close()


async def test_a_refused_conference_is_not_reported_applied_when_someone_else_accepted() -> None:
    coord, _, channel, _ = await make(status="accepted")
    intent, _ = await coord.submit(
        op="conference",
        reservation_sid=WR,
        task_sid=WT,
        worker_sid=WK,
        source="plugin",
        params={},
        deadline=None,
    )
    await coord.idle()
    settled = await coord.journal.get(intent.intent_id)
    assert settled is not None
    assert settled.outcome == "failed"
    assert settled.error is not None and settled.error.code == 40136
    assert channel.items[-1]["phase"] == "failed"
    await coord.journal.close()


async def test_an_intent_driver_does_not_keep_its_callers_context() -> None:
    """Started from a request handler, the driver (and its done callback) must not hold the
    handler's context: it would keep the request and its connection alive while in flight."""
    coord, tr, channel, _clock = await make()

    class Held:
        pass

    var: contextvars.ContextVar[Held] = contextvars.ContextVar("request")
    seen: list[Held | None] = []
    publish = channel.publish

    async def recording_publish(worker_sid: str, key: str, data: dict[str, Any]) -> bool:
        seen.append(var.get(None))
        return await publish(worker_sid, key, data)

    channel.publish = recording_publish  # type: ignore[method-assign]
    held = Held()
    var.set(held)
    await coord.submit(
        op="accept",
        reservation_sid=WR,
        task_sid=WT,
        worker_sid=WK,
        source="policy",
        params={},
        deadline=None,
    )
    await coord.idle()
    assert seen and all(s is None for s in seen)
    assert tr.updates == [{"ReservationStatus": "accepted"}]
