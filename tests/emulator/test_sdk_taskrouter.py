"""The SDK surface's TaskRouter side: a worker's browser accepts or rejects its reservation
(``/sdk/taskrouter/v1/Reservations/<WR>/accept|reject``) exactly as the REST update does."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flex_bridge.emulator.seed import SeedOptions
from tests.support.emulator import Admin, CallbackServer, RunningEmulator, header, ws_path

ORIGIN = "https://flex.example.test"


async def sdk_post(
    admin: Admin, sid: str, action: str, token: str | None
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Origin": ORIGIN}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    path = f"/sdk/taskrouter/v1/Reservations/{sid}/{action}"
    return await admin.request("POST", path, auth=False, headers=headers)


async def offered(admin: Admin, running: RunningEmulator) -> dict[str, Any]:
    """A new task's pending reservation, as the REST API renders it under its task."""
    status, task, _ = await admin.request(
        "POST", ws_path(running) + "/Tasks", data={"Attributes": json.dumps({"n": 1})}
    )
    assert status == 201, task
    status, page, _ = await admin.request(
        "GET", f"{ws_path(running)}/Tasks/{task['sid']}/Reservations"
    )
    assert status == 200
    (reservation,) = page["reservations"]
    assert reservation["reservation_status"] == "pending"
    return dict(reservation)


async def worker_token(admin: Admin, worker_sid: str | None) -> str:
    return await admin.token(worker_sid, ["agent"])


def updates_of(entries: list[dict[str, Any]], sid: str, status: str) -> list[dict[str, Any]]:
    """How a test counts the updates of reservation ``sid`` to ``status``: REST or SDK alike,
    by the REST path's last segment and the form."""
    return [
        e
        for e in entries
        if e["kind"] == "rest"
        and e["product"] == "taskrouter"
        and e["method"] == "POST"
        and e["path"].endswith(f"/Reservations/{sid}")
        and e.get("form", {}).get("ReservationStatus") == status
        and e["applied"]
    ]


async def test_sdk_accept_is_the_rest_accept(emulator: RunningEmulator, admin: Admin) -> None:
    res = await offered(admin, emulator)
    token = await worker_token(admin, res["worker_sid"])
    await admin.request("DELETE", "/_emulator/log")

    status, body, headers = await sdk_post(admin, res["sid"], "accept", token)
    assert status == 200, body
    assert header(headers, "Access-Control-Allow-Origin") == ORIGIN
    assert body["reservation_status"] == "accepted"
    # Rendered as the REST API renders the reservation under its worker.
    rest_path = f"{ws_path(emulator)}/Workers/{res['worker_sid']}/Reservations/{res['sid']}"
    _, fetched, _ = await admin.request("GET", rest_path)
    assert body == fetched
    _, task, _ = await admin.request("GET", f"{ws_path(emulator)}/Tasks/{res['task_sid']}")
    assert task["assignment_status"] == "assigned"
    _, events, _ = await admin.request(
        "GET", f"{ws_path(emulator)}/Events?ReservationSid={res['sid']}"
    )
    kinds = [e["event_type"] for e in events["events"]]
    assert kinds.count("reservation.accepted") == 1

    (entry,) = [e for e in await admin.log("rest") if e["method"] == "POST"]
    assert entry == {
        "seq": entry["seq"],
        "time": entry["time"],
        "kind": "rest",
        "product": "taskrouter",
        "method": "POST",
        "path": rest_path.removeprefix("/taskrouter"),
        "template": "/v1/Workspaces/{WorkspaceSid}/Workers/{WorkerSid}/Reservations/{Sid}",
        "form": {"ReservationStatus": "accepted"},
        "if_match": None,
        "status": 200,
        "applied": True,
        "fault": None,
        "via": "sdk",
    }
    assert token not in json.dumps(await admin.log())


async def test_accepts_count_the_same_by_rest_and_by_sdk(
    emulator: RunningEmulator, admin: Admin
) -> None:
    by_rest = await offered(admin, emulator)
    by_sdk = await offered(admin, emulator)
    assert by_rest["worker_sid"] != by_sdk["worker_sid"]
    status, _, _ = await admin.request(
        "POST",
        f"{ws_path(emulator)}/Tasks/{by_rest['task_sid']}/Reservations/{by_rest['sid']}",
        data={"ReservationStatus": "accepted"},
    )
    assert status == 200
    token = await worker_token(admin, by_sdk["worker_sid"])
    assert (await sdk_post(admin, by_sdk["sid"], "accept", token))[0] == 200

    entries = await admin.log()
    rest_entries = updates_of(entries, by_rest["sid"], "accepted")
    sdk_entries = updates_of(entries, by_sdk["sid"], "accepted")
    assert len(rest_entries) == len(sdk_entries) == 1
    assert "via" not in rest_entries[0]
    assert sdk_entries[0]["via"] == "sdk"
    shape = set(rest_entries[0]) | {"via"}
    assert set(sdk_entries[0]) == shape


async def test_a_second_accept_is_refused_as_rest_refuses_it(
    emulator: RunningEmulator, admin: Admin
) -> None:
    res = await offered(admin, emulator)
    token = await worker_token(admin, res["worker_sid"])
    assert (await sdk_post(admin, res["sid"], "accept", token))[0] == 200
    status, by_sdk, headers = await sdk_post(admin, res["sid"], "accept", token)
    status_rest, by_rest, _ = await admin.request(
        "POST",
        f"{ws_path(emulator)}/Workers/{res['worker_sid']}/Reservations/{res['sid']}",
        data={"ReservationStatus": "accepted"},
    )
    assert (status, by_sdk) == (status_rest, by_rest)
    assert (status, by_sdk["code"]) == (400, 20001)
    assert "not in expected state" in by_sdk["message"]
    assert header(headers, "Access-Control-Allow-Origin") == ORIGIN
    refused = [e for e in await admin.log("rest") if e.get("via") == "sdk" and not e["applied"]]
    assert [(e["status"], e["code"]) for e in refused] == [(400, 20001)]
    assert len(updates_of(await admin.log(), res["sid"], "accepted")) == 1


async def test_only_the_reservation_s_worker_may_answer_it(
    emulator: RunningEmulator, admin: Admin
) -> None:
    res = await offered(admin, emulator)
    assert emulator.state is not None
    other_worker = next(w["sid"] for w in emulator.state.workers if w["sid"] != res["worker_sid"])
    cases: list[tuple[str | None, int, int]] = [
        (await worker_token(admin, other_worker), 403, 20403),
        (await worker_token(admin, None), 403, 20403),
        (None, 401, 20101),
        ("flex-emulator.unknown", 401, 20101),
    ]
    for token, status, code in cases:
        for action in ("accept", "reject"):
            got, body, headers = await sdk_post(admin, res["sid"], action, token)
            assert (got, body["code"]) == (status, code), body
            assert header(headers, "Access-Control-Allow-Origin") == ORIGIN
    _, still, _ = await admin.request(
        "GET", f"{ws_path(emulator)}/Tasks/{res['task_sid']}/Reservations/{res['sid']}"
    )
    assert still["reservation_status"] == "pending"
    assert updates_of(await admin.log(), res["sid"], "accepted") == []

    token = await worker_token(admin, res["worker_sid"])
    status, body, _ = await sdk_post(admin, "WR" + "0" * 32, "accept", token)
    assert (status, body["code"]) == (404, 20404)


async def test_an_expired_token_cannot_accept(emulator: RunningEmulator, admin: Admin) -> None:
    res = await offered(admin, emulator)
    token = await admin.token(res["worker_sid"], ["agent"], ttl=30)
    await admin.advance(30)
    status, body, _ = await sdk_post(admin, res["sid"], "accept", token)
    assert (status, body["code"]) == (401, 20104)


async def test_sdk_reject_requeues_the_task_and_calls_back(
    start_emulator: Callable[..., RunningEmulator], admin: Admin, callbacks: CallbackServer
) -> None:
    running = start_emulator(options=SeedOptions(event_url=callbacks.url + "/events"))
    admin = Admin(running, admin.session)
    res = await offered(admin, running)
    token = await worker_token(admin, res["worker_sid"])
    status, body, _ = await sdk_post(admin, res["sid"], "reject", token)
    assert (status, body["reservation_status"]) == (200, "rejected")

    _, page, _ = await admin.request(
        "GET", f"{ws_path(running)}/Tasks/{res['task_sid']}/Reservations"
    )
    statuses = {r["worker_sid"]: r["reservation_status"] for r in page["reservations"]}
    assert statuses.pop(res["worker_sid"]) == "rejected"
    assert list(statuses.values()) == ["pending"]  # offered to the next worker

    def rejected(received: list[Any]) -> bool:
        return any(
            r.form.get("EventType") == "reservation.rejected"
            and r.form.get("ReservationSid") == res["sid"]
            for r in received
        )

    await callbacks.wait_for(rejected)
    (entry,) = updates_of(await admin.log(), res["sid"], "rejected")
    assert entry["via"] == "sdk"
