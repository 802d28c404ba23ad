"""Fault injection through ``POST /_emulator/faults``, seen by the official client and raw HTTP.

Every test talks to the emulator over a real socket. Nothing here measures wall-clock time:
latency is proven by ordering (a delayed request finishes after one sent later), the other
faults by status, code, headers and by fetching the state afterwards.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from flex_bridge.errors import AmbiguousOutcomeError, TransientUpstreamError
from tests.support.emulator import Admin, RunningEmulator, header, refused, ws, ws_path


async def describe_faults(admin: Admin) -> dict[str, Any]:
    status, body, _ = await admin.request("GET", "/_emulator/faults")
    assert status == 200
    assert isinstance(body, dict)
    return body


async def task_count(client: Any, running: RunningEmulator) -> int:
    return len(await ws(client, running).tasks.list_async())


# ------------------------------------------------------------------------------ latency
async def test_latency_delays_a_request_but_it_still_succeeds(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    task = await ws(client, emulator).tasks.create_async(attributes='{"n": 1}')
    await admin.faults([{"method": "GET", "path": f"/Tasks/{task.sid}$", "latency_ms": 1000}])

    slow = asyncio.create_task(ws(client, emulator).tasks(task.sid).fetch_async())
    # The rule counts a hit when the request arrives, before the delay: from then on the
    # slow request is held by the emulator.
    for _ in range(500):
        rules = (await describe_faults(admin))["rules"]
        if rules[0]["hits"] == 1:
            break
        await asyncio.sleep(0.01)
    assert rules[0]["hits"] == 1
    assert not slow.done()

    # A request sent later, on a path the rule does not match, is served first.
    fast = await ws(client, emulator).fetch_async()
    assert emulator.state is not None
    assert fast.sid == emulator.state.workspace_sid
    fetched = await slow
    assert fetched.sid == task.sid
    assert fetched.attributes == '{"n": 1}'

    rest = [e for e in await admin.log("rest") if e["method"] == "GET"]
    order = [e["path"] for e in rest]
    workspace_at = order.index(ws_path(emulator).removeprefix("/taskrouter"))
    task_at = order.index(f"{ws_path(emulator).removeprefix('/taskrouter')}/Tasks/{task.sid}")
    assert workspace_at < task_at
    assert all(e["applied"] for e in rest)
    # Latency alone is not an injected fault.
    assert (await describe_faults(admin))["injected"] == {}


# ------------------------------------------------------------------------------ errors
async def test_probability_one_429_carries_retry_after_and_20429(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    await admin.faults(
        [{"product": "taskrouter", "error_rates": {"429": 1}, "retry_after": 2.5}], seed=3
    )
    status, body, headers = await admin.request("GET", ws_path(emulator))
    assert status == 429
    assert body["code"] == 20429
    assert body["status"] == 429
    assert body["more_info"] == "https://www.twilio.com/docs/errors/20429"
    assert header(headers, "Retry-After") == "3"  # whole seconds, rounded up

    assert await refused(ws(client, emulator).tasks.create_async(attributes="{}")) == (
        429,
        20429,
    )

    # A 429 is "not processed": the task was never created.
    await admin.request("DELETE", "/_emulator/faults")
    assert await task_count(client, emulator) == 0
    not_applied = [e for e in await admin.log("rest") if e.get("fault") == "error_429"]
    assert len(not_applied) == 2
    assert all(e["applied"] is False and e["status"] == 429 for e in not_applied)
    assert (await describe_faults(admin))["injected"] == {"429": 2}


@pytest.mark.parametrize(("status", "code"), [(500, 20500), (503, 20503)])
async def test_probability_one_server_errors(
    client: Any, emulator: RunningEmulator, admin: Admin, status: int, code: int
) -> None:
    await admin.faults([{"method": "POST", "error_rates": {str(status): 1}}])
    assert await refused(ws(client, emulator).tasks.create_async(attributes="{}")) == (
        status,
        code,
    )

    raw_status, body, headers = await admin.request(
        "POST", ws_path(emulator) + "/Tasks", data={"Attributes": "{}"}
    )
    assert raw_status == status
    assert body["code"] == code
    assert header(headers, "Retry-After") is None  # only 429 carries it

    # GETs are not matched by the rule, and nothing was created by the refused POSTs.
    assert await task_count(client, emulator) == 0
    assert (await describe_faults(admin))["injected"] == {str(status): 2}


async def test_rate_limit_refuses_part_of_a_burst(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    await admin.faults([{"product": "taskrouter", "method": "GET", "rate_limit_rps": 1}])
    burst = 20

    async def one() -> tuple[int, Any, dict[str, str]]:
        return await admin.request("GET", ws_path(emulator))

    results = await asyncio.gather(*(one() for _ in range(burst)))
    statuses = [status for status, _, _ in results]
    limited = [(body, headers) for status, body, headers in results if status == 429]
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) >= 1  # the bucket starts full (capacity 1)
    assert len(limited) >= burst // 2  # 1 request/s: a burst cannot mostly pass
    for body, headers in limited:
        assert body["code"] == 20429
        assert header(headers, "Retry-After") == "1"

    described = await describe_faults(admin)
    assert described["injected"] == {"rate_limit": len(limited)}
    assert described["rules"][0]["hits"] == burst
    log = [e for e in await admin.log("rest") if e.get("fault") == "error_429"]
    assert len(log) == len(limited)

    # The official client sees the same 429 on a request the bucket refuses.
    async def reads() -> None:
        for _ in range(burst):
            await ws(client, emulator).fetch_async()

    assert await refused(reads()) == (429, 20429)


# ------------------------------------------------------------------------ lost responses
async def test_lose_after_commit_504_applies_the_change(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    task = await ws(client, emulator).tasks.create_async(attributes='{"v": 1}')
    await admin.faults(
        [{"method": "POST", "path": "/Tasks/WT", "lose_after_commit": 1, "lose_mode": "504"}]
    )
    update = ws(client, emulator).tasks(task.sid).update_async(attributes='{"v": 2}')
    assert await refused(update) == (504, 20504)

    # The client was told "gateway timeout", but the write happened.
    fetched = await ws(client, emulator).tasks(task.sid).fetch_async()
    assert fetched.attributes == '{"v": 2}'

    lost = [e for e in await admin.log("rest") if e.get("fault") == "lose_504"]
    assert len(lost) == 1
    assert lost[0]["applied"] is True
    assert lost[0]["form"] == {"Attributes": '{"v": 2}'}
    assert (await describe_faults(admin))["injected"] == {"lose_504": 1}


async def test_a_refused_request_is_not_counted_as_lost(
    emulator: RunningEmulator, admin: Admin
) -> None:
    await admin.faults([{"method": "POST", "lose_after_commit": 1, "lose_mode": "504"}])
    status, body, _ = await admin.request("POST", f"{ws_path(emulator)}/Tasks", data={"Bogus": "1"})
    assert status == 400
    assert "Bogus" in body["message"]
    assert (await describe_faults(admin))["injected"] == {}


async def test_lose_after_commit_drop_is_ambiguous_for_a_post(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    await admin.faults(
        [{"method": "POST", "path": "/Tasks$", "lose_after_commit": 1, "lose_mode": "drop"}]
    )
    with pytest.raises(AmbiguousOutcomeError) as caught:
        await ws(client, emulator).tasks.create_async(attributes='{"dropped": true}')
    assert "may have been applied" in str(caught.value)

    # The connection was dropped after the commit: the task exists.
    await admin.request("DELETE", "/_emulator/faults")
    # A list shows no attributes (as Twilio's): fetch the task to read them.
    [listed] = await ws(client, emulator).tasks.list_async()
    assert listed.attributes is None
    fetched = await ws(client, emulator).tasks(listed.sid).fetch_async()
    assert fetched.attributes == '{"dropped": true}'
    lost = [e for e in await admin.log("rest") if e.get("fault") == "lose_drop"]
    assert len(lost) == 1
    assert lost[0]["applied"] is True
    assert lost[0]["status"] == 201


async def test_lose_after_commit_drop_on_a_read_is_transient(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    await admin.faults([{"method": "GET", "lose_after_commit": 1, "lose_mode": "drop", "count": 1}])
    with pytest.raises(TransientUpstreamError) as caught:
        await ws(client, emulator).fetch_async()
    assert not isinstance(caught.value, AmbiguousOutcomeError)
    # count 1: the next read goes through on a fresh connection.
    assert (await ws(client, emulator).fetch_async()).sid == ws_path(emulator).rsplit("/", 1)[1]


# --------------------------------------------------------------------------- determinism
async def run_sequence(admin: Admin, running: RunningEmulator, n: int = 40) -> list[int]:
    statuses = []
    for _ in range(n):
        status, _, _ = await admin.request("GET", ws_path(running))
        statuses.append(status)
    return statuses


async def test_same_seed_same_sequence_same_faults(emulator: RunningEmulator, admin: Admin) -> None:
    rules = [
        {
            "product": "taskrouter",
            "error_rates": {"500": 0.2, "503": 0.2, "429": 0.1},
            "jitter_ms": 1,
        },
        {"product": "taskrouter", "lose_after_commit": 0.3, "lose_mode": "504"},
    ]
    await admin.faults(rules, seed=1234)
    first = await run_sequence(admin, emulator)
    await admin.faults(rules, seed=1234)  # the same rules, reset: the draws start over
    second = await run_sequence(admin, emulator)
    assert first == second
    assert {200, 429, 500, 503, 504} <= set(first)

    # Without a seed, the current seed is kept and the draws start over too.
    status, body, _ = await admin.request("POST", "/_emulator/faults", json_body={"rules": rules})
    assert status == 200
    assert body["seed"] == 1234
    assert await run_sequence(admin, emulator) == first

    await admin.faults(rules, seed=4321)
    assert await run_sequence(admin, emulator) != first


# ------------------------------------------------------------------------------- filters
async def test_rules_filter_by_product_method_and_path(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    assert emulator.state is not None
    sync = client.sync.v1.services(emulator.state.sync_service_sid)

    await admin.faults([{"product": "sync", "error_rates": {"500": 1}}])
    assert (await ws(client, emulator).fetch_async()).sid == emulator.state.workspace_sid
    assert await refused(sync.sync_maps.create_async(unique_name="m")) == (500, 20500)

    await admin.faults([{"method": "DELETE", "error_rates": {"503": 1}}])
    sync_map = await sync.sync_maps.create_async(unique_name="m")
    assert await refused(sync.sync_maps(sync_map.sid).delete_async()) == (503, 20503)

    await admin.faults([{"path": r"/Workers/WK[0-9a-f]{32}$", "error_rates": {"500": 1}}])
    workers = await ws(client, emulator).workers.list_async()
    assert len(workers) == 3
    assert await refused(ws(client, emulator).workers(workers[0].sid).fetch_async()) == (
        500,
        20500,
    )
    reservations = await ws(client, emulator).workers(workers[0].sid).reservations.list_async()
    assert reservations == []

    # IAM is a product too.
    await admin.faults([{"product": "iam", "error_rates": {"503": 1}}])
    token = await admin.token(workers[0].sid, ["agent"])
    status, body, _ = await admin.request(
        "POST",
        f"/iam/v1/Accounts/{emulator.config.account_sid}/Tokens/validate",
        json_body={"token": token},
    )
    assert (status, body["code"]) == (503, 20503)


async def test_count_limits_how_many_requests_a_rule_touches(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    await admin.faults(
        [{"method": "POST", "path": "/Tasks$", "error_rates": {"500": 1}, "count": 2}]
    )
    for _ in range(2):
        assert await refused(ws(client, emulator).tasks.create_async(attributes="{}")) == (
            500,
            20500,
        )
    task = await ws(client, emulator).tasks.create_async(attributes="{}")
    assert task.assignment_status in ("pending", "reserved")
    rule = (await describe_faults(admin))["rules"][0]
    assert rule["remaining"] == 0
    assert rule["hits"] == 2
    assert await task_count(client, emulator) == 1


# ----------------------------------------------------------------------- bad specs, clear
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"rules": {"error_rates": {"500": 1}}}, '{"rules": [...]'),
        ({}, '{"rules": [...]'),
        ({"rules": [], "seed": "7"}, "seed must be an integer"),
        ({"rules": [], "seed": True}, "seed must be an integer"),
        ({"rules": ["latency"]}, "each rule must be a JSON object"),
        ({"rules": [{"latency": 10}]}, "unknown rule field(s): latency"),
        ({"rules": [{"product": "voice"}]}, "product must be taskrouter, sync or iam"),
        ({"rules": [{"method": "PUT"}]}, "method must be GET, POST or DELETE"),
        ({"rules": [{"path": "(unclosed"}]}, "path is not a valid regular expression"),
        ({"rules": [{"path": 5}]}, "path must be a regular expression string"),
        ({"rules": [{"latency_ms": -5}]}, "latency_ms must be a number between 0 and 600000"),
        ({"rules": [{"jitter_ms": "x"}]}, "jitter_ms must be a number between 0 and 600000"),
        ({"rules": [{"error_rates": {"404": 1}}]}, "status 404 is not one of 429, 500, 503"),
        ({"rules": [{"error_rates": {"500": 1.5}}]}, "error_rates[500] must be a probability"),
        ({"rules": [{"error_rates": [500]}]}, "error_rates must map a status"),
        ({"rules": [{"error_rates": {"500": 0.6, "503": 0.6}}]}, "add up to at most 1"),
        ({"rules": [{"rate_limit_rps": 0}]}, "rate_limit_rps must be positive"),
        ({"rules": [{"lose_after_commit": 2}]}, "lose_after_commit must be a probability"),
        ({"rules": [{"lose_mode": "timeout"}]}, "lose_mode must be 'drop' or '504'"),
        ({"rules": [{"count": 0}]}, "count must be a positive integer"),
        ({"rules": [{"count": 1.5}]}, "count must be a positive integer"),
    ],
)
async def test_bad_fault_specs_are_refused_with_400(
    admin: Admin, body: dict[str, Any], message: str
) -> None:
    await admin.faults([{"latency_ms": 1}], seed=9)
    status, answer, _ = await admin.request("POST", "/_emulator/faults", json_body=body)
    assert status == 400
    assert answer["code"] == 20001
    assert message in answer["message"]
    # A refused configuration leaves the previous one in place.
    kept = await describe_faults(admin)
    assert kept["seed"] == 9
    assert [r["latency_ms"] for r in kept["rules"]] == [1]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("rules=oops", "not valid JSON"),
        ('{"rules": [{"latency_ms": NaN}]}', "NaN is not a JSON value"),
        ('{"rules": [{"error_rates": {"429": 1}, "retry_after": Infinity}]}', "Infinity"),
        ('{"rules": [{"latency_ms": 1e999}]}', "the number 1e999 is out of range"),
    ],
)
async def test_a_body_that_is_not_strict_json_is_refused(
    client: Any, emulator: RunningEmulator, admin: Admin, raw: str, message: str
) -> None:
    status, answer, _ = await admin.request(
        "POST", "/_emulator/faults", data=raw, headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert answer["code"] == 20001
    assert message in answer["message"]
    assert (await describe_faults(admin))["rules"] == []
    assert emulator.state is not None
    assert (await ws(client, emulator).fetch_async()).sid == emulator.state.workspace_sid


async def test_delete_clears_every_rule(
    client: Any, emulator: RunningEmulator, admin: Admin
) -> None:
    configured = await admin.faults(
        [
            {"product": "taskrouter", "error_rates": {"500": 1}},
            {"product": "sync", "error_rates": {"503": 1}},
        ]
    )
    assert len(configured["rules"]) == 2
    assert await refused(ws(client, emulator).fetch_async()) == (500, 20500)

    status, body, _ = await admin.request("DELETE", "/_emulator/faults")
    assert status == 200
    assert body["rules"] == []
    assert (await describe_faults(admin))["rules"] == []
    assert emulator.state is not None
    assert (await ws(client, emulator).fetch_async()).sid == emulator.state.workspace_sid
    sync = client.sync.v1.services(emulator.state.sync_service_sid)
    doc = await sync.documents.create_async(unique_name="d", data=json.dumps({"a": 1}))
    assert doc.data == {"a": 1}
