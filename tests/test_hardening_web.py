"""Issue 13, the web layer: what strangers, and agents, may no longer do.

One bridge app in process (Quart's test client) over the in-memory fakes and a real SQLite
journal. Each refusal below is a 4xx with a JSON error naming the problem, writes nothing
(no journal entry, no Sync item, no TaskRouter change) and logs one WARNING line at most.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client
from twilio.request_validator import RequestValidator

from flex_bridge.adapters.journal import SqliteJournal
from flex_bridge.app.assignment import adopt_missed_offers
from flex_bridge.app.enrichment import Enrichment
from flex_bridge.app.metrics import Metrics
from flex_bridge.app.services import Services
from flex_bridge.domain.enrichment import Enricher, TaskContext
from flex_bridge.domain.intents import Intent
from flex_bridge.domain.policy import parse_policy
from flex_bridge.domain.types import JSON
from flex_bridge.settings import Settings
from flex_bridge.web import create_app
from tests.support.clock import Clock
from tests.support.fakes import WK, WR, WT, FakeChannel, FakeTaskRouter, FakeTokens
from tests.test_reconcile import AUTH_TOKEN, services, signed_post

ACCOUNT = "AC" + "f" * 32  # ... and its account and workspace
WORKSPACE = "WS" + "f" * 32
OTHER_ACCOUNT = "AC" + "1" * 32
OTHER_WORKSPACE = "WS" + "1" * 32
AGENT, SUPERVISOR = "agent-token", "supervisor-token"
CA = "CA" + "c" * 32
ACCEPT_ALL: dict[str, Any] = {"assignment": {"rules": [{"name": "all", "op": "accept"}]}}
DEEP = '{"a":' * 1000 + "1" + "}" * 1000
NOT_UTF8 = b"\xff\xfe"


class CountingJournal(SqliteJournal):
    """The real journal, counting what would be recorded."""

    submits = 0
    inbox_puts = 0

    async def submit(self, intent: Intent) -> tuple[Intent, bool]:
        self.submits += 1
        return await super().submit(intent)

    async def submit_leased(
        self, intent: Intent, owner: str, ttl: float
    ) -> tuple[Intent, bool, int | None]:
        self.submits += 1
        return await super().submit_leased(intent, owner, ttl)

    async def inbox_put(self, key: str, body: dict[str, str]) -> bool:
        self.inbox_puts += 1
        return await super().inbox_put(key, body)


@dataclass
class Rig:
    client: Client
    svc: Services
    tr: FakeTaskRouter
    channel: FakeChannel
    journal: CountingJournal

    @property
    def wrote_nothing(self) -> bool:
        return (
            self.journal.submits == 0
            and self.journal.inbox_puts == 0
            and not self.channel.publishes
            and self.tr.changes == 0
        )


OpenRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def open_rig(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[OpenRig]:
    journals: list[CountingJournal] = []
    running: list[Any] = []

    async def open_(policy: dict[str, Any] | None = None) -> Rig:
        journal = CountingJournal(tmp_path / f"journal-{len(journals)}.db", clock=Clock())
        await journal.open()
        journals.append(journal)
        tr, channel = FakeTaskRouter(), FakeChannel()
        tr.reservations.add("pending")
        tr.tasks.add({"type": "support"})
        svc = services(journal, tr, channel, Clock(), policy or {})
        tokens = FakeTokens()
        tokens.add(AGENT, worker_sid=WK)
        tokens.add(SUPERVISOR, "sup@example.com", worker_sid=None, roles=("supervisor",))
        svc.tokens = tokens

        async def factory(settings: Settings, metrics: Metrics) -> Services:
            return svc

        app = create_app(svc.settings, services=factory)
        context = app.test_app()
        started = await context.__aenter__()
        running.append(context)
        await svc.coordinator.idle()
        journal.submits = journal.inbox_puts = 0  # start-up adoption found nothing anyway
        caplog.clear()  # what start-up logged is not the test's
        return Rig(started.test_client(), svc, tr, channel, journal)

    yield open_
    for context in running:
        await context.__aexit__(None, None, None)
    for journal in journals:
        await journal.close()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def error_of(body: Any, code: str) -> dict[str, Any]:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"], body
    return body["error"]  # type: ignore[no-any-return]


async def signed_json(client: Client, path: str, body: bytes) -> tuple[int, Any]:
    """A JSON callback as Twilio signs one: the URL (with ``bodySHA256``) only."""
    signature = RequestValidator(AUTH_TOKEN).compute_signature(f"http://localhost{path}", {})
    response = await client.post(
        path,
        data=body,
        headers={"Content-Type": "application/json", "X-Twilio-Signature": signature},
    )
    return response.status_code, await response.get_json()


def assignment(**extra: str) -> dict[str, str]:
    return {"ReservationSid": WR, "TaskSid": WT, "WorkerSid": WK, "TaskAttributes": "{}", **extra}


def event(**extra: str) -> dict[str, str]:
    return {
        "EventType": "reservation.accepted",
        "ResourceSid": WR,
        "ReservationSid": WR,
        "TaskSid": WT,
        "WorkerSid": WK,
        "TimestampMs": "1700000000000",
        **extra,
    }


async def patch(
    client: Client, body: str | bytes, token: str = AGENT, task_sid: str = WT
) -> tuple[int, Any]:
    response = await client.patch(
        f"/flex/tasks/{task_sid}/attributes",
        data=body,
        headers={
            "Content-Type": "application/merge-patch+json",
            "Authorization": f"Bearer {token}",
        },
    )
    return response.status_code, await response.get_json()


async def action(client: Client, op: str, body: Any, token: str = AGENT) -> tuple[int, Any]:
    response = await client.post(
        f"/flex/reservations/{WR}/{op}?wait=0",
        data=body if isinstance(body, str | bytes) else json.dumps(body),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    return response.status_code, await response.get_json()


# ----------------------------------------------------- item 1: the bridge's own attributes
ESCALATING: dict[str, Any] = {
    "timeout": {"action": "escalate", "priority_step": 10, "routing": {"route": "supervisor"}}
}


@pytest.mark.parametrize(
    ("patch_body", "keys"),
    [
        ({"escalation": {"level": -1_000_000}}, "escalation"),
        ({"escalation": {"level": 99}}, "escalation"),
        ({"escalation": None}, "escalation"),  # deleting is touching
        ({"note": "hi", "escalation": {"timeouts": 0}}, "escalation"),
        ({"route": None}, "route"),  # a routing key the escalation writes
        ({"route": "vip", "escalation": 1}, "escalation, route"),
    ],
)
async def test_an_agent_cannot_patch_the_keys_the_bridge_owns(
    open_rig: OpenRig, caplog: pytest.LogCaptureFixture, patch_body: JSON, keys: str
) -> None:
    rig = await open_rig(ESCALATING)
    before = rig.tr.tasks.stored()
    status, body = await patch(rig.client, json.dumps(patch_body))
    assert status == 403, body
    err = error_of(body, "bridge_owned_attributes")
    assert keys in err["message"]
    assert rig.tr.tasks.writes == [] and rig.tr.tasks.stored() == before


async def test_the_other_keys_stay_open_to_agents_and_supervisors_may_reset_escalation(
    open_rig: OpenRig,
) -> None:
    rig = await open_rig(ESCALATING)
    status, body = await patch(rig.client, json.dumps({"note": "called back"}))
    assert status == 200, body
    assert rig.tr.tasks.stored() == {"type": "support", "note": "called back"}
    status, body = await patch(rig.client, '{"escalation": null, "route": null}', SUPERVISOR)
    assert status == 200, body


async def test_without_escalation_routing_keys_are_not_the_bridges(open_rig: OpenRig) -> None:
    rig = await open_rig({"timeout": {"routing": {"route": "supervisor"}}})  # requeue
    status, body = await patch(rig.client, json.dumps({"route": "vip"}))
    assert status == 200, body
    status, body = await patch(rig.client, json.dumps({"escalation": {"level": 99}}))
    assert status == 403, body


def owning_enricher(options: JSON) -> Enricher:
    async def enrich(context: TaskContext) -> JSON:
        return {"crm": {"vip": True}, "escalation": {"level": 99}}

    return enrich


async def test_an_enricher_cannot_write_the_bridges_keys() -> None:
    policy = parse_policy(
        {
            "enrichment": {
                "enrichers": [
                    {"name": "crm", "factory": "tests.test_hardening_web:owning_enricher"}
                ]
            }
        }
    )
    tr = FakeTaskRouter()
    tr.tasks.add({"type": "support"})
    outcome = await Enrichment(policy.enrichment, tr).enrich(WT, budget=2.0)
    assert outcome.status == "failed"
    assert [r.status for r in outcome.results] == ["error"]
    message = outcome.results[0].message or ""
    assert "escalation" in message
    assert tr.tasks.writes == []


# ------------------------------------------------ item 2: callbacks for another account
@pytest.mark.parametrize(
    "foreign",
    [
        {"AccountSid": OTHER_ACCOUNT},
        {"WorkspaceSid": OTHER_WORKSPACE},
        {"AccountSid": ACCOUNT, "WorkspaceSid": OTHER_WORKSPACE},
        {"AccountSid": "not a sid", "WorkspaceSid": WORKSPACE},
    ],
)
async def test_callbacks_for_another_account_or_workspace_are_refused(
    open_rig: OpenRig, caplog: pytest.LogCaptureFixture, foreign: dict[str, str]
) -> None:
    rig = await open_rig(ACCEPT_ALL)
    caplog.set_level(logging.INFO)
    status, body = await signed_post(rig.client, "/taskrouter/assignment", assignment(**foreign))
    assert status == 403, body
    error_of(body, "wrong_account")
    status, body = await signed_post(rig.client, "/taskrouter/events", event(**foreign))
    assert status == 403, body
    error_of(body, "wrong_account")
    await rig.svc.coordinator.idle()
    await rig.svc.inbox.idle()
    assert rig.wrote_nothing
    assert await rig.journal.latest_for_reservation(WR) is None
    logged = warnings(caplog)
    assert len(logged) == 2, logged  # one line per refused callback
    assert all("another" in line and AUTH_TOKEN not in line for line in logged)


async def test_callbacks_for_this_account_and_workspace_go_through(open_rig: OpenRig) -> None:
    rig = await open_rig(ACCEPT_ALL)
    own = {"AccountSid": ACCOUNT, "WorkspaceSid": WORKSPACE}
    status, body = await signed_post(rig.client, "/taskrouter/events", event(**own))
    assert status == 204, body
    assert rig.journal.inbox_puts == 1
    status, body = await signed_post(rig.client, "/taskrouter/assignment", assignment(**own))
    assert status == 200, body
    assert rig.journal.submits >= 1


# ------------------------------------------- item 3: malformed signed requests, deep JSON
@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("?bodySHA256=", b'{"EventType": "task.created"}'),
        ("?bodySHA256=", b"\xff\xfe\x00"),
        ("?bodySHA256=" + hashlib.sha256(NOT_UTF8).hexdigest(), NOT_UTF8),
        ("?bodySHA256=abc&bodySHA256=def", b"{}"),
    ],
)
@pytest.mark.parametrize("endpoint", ["events", "assignment"])
async def test_a_malformed_body_hash_or_body_is_a_signature_problem(
    open_rig: OpenRig,
    caplog: pytest.LogCaptureFixture,
    endpoint: str,
    query: str,
    body: bytes,
) -> None:
    rig = await open_rig(ACCEPT_ALL)
    status, answer = await signed_json(rig.client, f"/taskrouter/{endpoint}{query}", body)
    assert status == 403, answer
    error_of(answer, "invalid_signature")
    assert len(warnings(caplog)) == 1, warnings(caplog)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert rig.wrote_nothing


async def test_a_valid_json_callback_still_passes(open_rig: OpenRig) -> None:
    rig = await open_rig(ACCEPT_ALL)
    raw = json.dumps(event()).encode()
    path = f"/taskrouter/events?bodySHA256={hashlib.sha256(raw).hexdigest()}"
    status, answer = await signed_json(rig.client, path, raw)
    assert status == 204, answer


async def test_deeply_nested_task_attributes_in_a_callback_are_a_400(
    open_rig: OpenRig, caplog: pytest.LogCaptureFixture
) -> None:
    rig = await open_rig(ACCEPT_ALL)
    form = assignment(TaskAttributes=DEEP)
    status, body = await signed_post(rig.client, "/taskrouter/assignment", form)
    assert status == 400, body
    assert "TaskAttributes" in error_of(body, "invalid_attributes")["message"]
    assert len(warnings(caplog)) == 1, warnings(caplog)
    assert rig.wrote_nothing


async def test_deeply_nested_json_callbacks_are_a_400(
    open_rig: OpenRig, caplog: pytest.LogCaptureFixture
) -> None:
    rig = await open_rig(ACCEPT_ALL)
    fields = f'"ReservationSid":"{WR}","TaskSid":"{WT}","WorkerSid":"{WK}"'
    raw = "{" + fields + ',"TaskAttributes":' + DEEP + "}"
    body = raw.encode()
    path = f"/taskrouter/assignment?bodySHA256={hashlib.sha256(body).hexdigest()}"
    status, answer = await signed_json(rig.client, path, body)
    assert status == 400, answer
    error_of(answer, "invalid_attributes")
    assert len(warnings(caplog)) == 1, warnings(caplog)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert rig.wrote_nothing


async def test_a_deeply_nested_patch_or_action_body_is_a_400_with_one_warning(
    open_rig: OpenRig, caplog: pytest.LogCaptureFixture
) -> None:
    rig = await open_rig()
    status, body = await patch(rig.client, DEEP)
    assert status == 400, body
    assert "nested deeper than" in error_of(body, "invalid_patch")["message"]
    assert len(warnings(caplog)) == 1, warnings(caplog)
    caplog.clear()
    status, body = await action(rig.client, "accept", f'{{"task_sid": "{WT}", "x": ' + DEEP + "}")
    assert status == 400, body
    error_of(body, "invalid_body")
    assert len(warnings(caplog)) == 1, warnings(caplog)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert rig.wrote_nothing


async def test_start_up_adoption_skips_an_offer_it_cannot_read_and_adopts_the_others(
    open_rig: OpenRig, caplog: pytest.LogCaptureFixture
) -> None:
    rig = await open_rig(ACCEPT_ALL)
    second = "WR" + "b" * 32
    deep = rig.tr.reservations.add("pending", sid="WR" + "d" * 32)
    rig.tr.offers.offer(deep, task_attributes=DEEP)  # first in the listing
    rig.tr.offers.offer(rig.tr.reservations.add("pending", sid=second))
    caplog.clear()
    assert await adopt_missed_offers(rig.svc) == 1
    assert await rig.journal.latest_for_reservation(second) is not None
    assert await rig.journal.latest_for_reservation(deep.sid) is None
    logged = warnings(caplog)
    assert len(logged) == 1 and "skipped" in logged[0], logged


# ------------------------------------------------------ item 4: URIs and what agents ask
@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "/relative/twiml", "ftp://x.example/t", "data:text/xml,<x/>"]
)
async def test_call_urls_must_be_absolute_http_urls(open_rig: OpenRig, url: str) -> None:
    rig = await open_rig()
    status, body = await action(
        rig.client, "call", {"task_sid": WT, "from": "+15550100", "url": url}
    )
    assert status == 400, body
    assert error_of(body, "invalid_params")["message"].startswith("url: ")
    status, body = await action(
        rig.client, "redirect", {"task_sid": WT, "call_sid": CA, "url": url}
    )
    assert status == 400, body
    status, body = await action(
        rig.client,
        "conference",
        {"task_sid": WT, "status_callback": url},
    )
    assert status == 400, body
    assert rig.wrote_nothing


AGENTS: dict[str, Any] = {
    "agents": {
        "call_urls": ["https://handler.example.com/twiml/"],
        "callback_urls": ["https://handler.example.com/status/"],
        "caller_ids": ["+15550100"],
        "dial_to": ["client:", "+1555"],
    }
}


@pytest.mark.parametrize(
    ("op", "params", "field"),
    [
        ("call", {"from": "+15550100", "url": "https://evil.example/twiml/"}, "url"),
        ("call", {"from": "+15550100", "url": "https://handler.example.com/other"}, "url"),
        ("redirect", {"call_sid": CA, "url": "https://evil.example/t"}, "url"),
        ("call", {"from": "+19005550199", "url": "https://handler.example.com/twiml/a"}, "from"),
        ("conference", {"from": "+19005550199"}, "from"),
        ("dequeue", {"from": "+19005550199"}, "from"),
        # The agent's leg: a premium-rate number is not the agent's phone.
        ("conference", {"from": "+15550100", "to": "+19005550199"}, "to"),
        ("dequeue", {"from": "+15550100", "to": "sip:x@evil.example"}, "to"),
        (
            "call",
            {
                "from": "+15550100",
                "to": "+447700900000",
                "url": "https://handler.example.com/twiml/a",
            },
            "to",
        ),
        (
            "conference",
            {"from": "+15550100", "status_callback": "https://evil.example/s"},
            "status_callback",
        ),
    ],
)
async def test_the_agents_policy_restricts_plugin_actions(
    open_rig: OpenRig, op: str, params: dict[str, Any], field: str
) -> None:
    rig = await open_rig(AGENTS)
    status, body = await action(rig.client, op, {"task_sid": WT, **params})
    assert status == 403, body
    err = error_of(body, "not_allowed_by_policy")
    assert set(err) == {"code", "message"}  # the plugin error contract: no other field
    assert err["message"].startswith(f"{field}: ")
    assert rig.wrote_nothing
    status, body = await action(rig.client, op, {"task_sid": WT, **params}, SUPERVISOR)
    assert status == 403, body


async def test_what_the_agents_policy_allows_goes_through(open_rig: OpenRig) -> None:
    rig = await open_rig(AGENTS)
    params = {
        "task_sid": WT,
        "from": "+15550100",
        "to": "client:agent",
        "url": "https://handler.example.com/twiml/a",
    }
    status, body = await action(rig.client, "call", params)
    assert status in (200, 202), body
    assert rig.journal.submits >= 1


async def test_a_token_check_over_its_budget_is_a_503_naming_it(open_rig: OpenRig) -> None:
    from flex_bridge.adapters.flex_tokens import TokenValidationBusy

    rig = await open_rig()
    assert isinstance(rig.svc.tokens, FakeTokens)
    rig.svc.tokens.error = TokenValidationBusy("every IAM slot is taken")
    status, body = await patch(rig.client, json.dumps({"note": "x"}))
    assert status == 503, body
    error_of(body, "token_validation_busy")
    assert rig.tr.tasks.writes == []
