"""One end-to-end environment: a bridge on a real socket, its emulator, and clients for both.

``Env`` bundles what the e2e tests do over and over: create a task and find its reservation,
call the ``/flex`` API as a plugin would, post signed (or forged) webhooks, and read the
emulator's log, whose ``seq`` numbers prove ordering.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
from twilio.request_validator import RequestValidator

from tests.support.bridge import RunningBridge, reservation_updates
from tests.support.emulator import Admin, RunningEmulator, twilio_client

ERROR_KEYS = {"code", "message"}


class Env:
    def __init__(self, bridge: RunningBridge, emulator: RunningEmulator) -> None:
        assert emulator.state is not None
        self.bridge = bridge
        self.emulator = emulator
        self.state = emulator.state
        self.session = aiohttp.ClientSession()
        self.admin = Admin(emulator, self.session)
        self.client: Any = twilio_client(emulator)
        self.ws: Any = self.client.taskrouter.v1.workspaces(self.state.workspace_sid)
        self.validator = RequestValidator(emulator.config.auth_token)

    async def close(self) -> None:
        await self.client.http_client.close()
        await self.session.close()

    # ---------------------------------------------------------------------------- TaskRouter
    async def create_task(
        self, attributes: Mapping[str, Any] | None = None, *, voice: bool = False
    ) -> tuple[Any, Any]:
        """A new task and the pending reservation the emulator made for it. ``voice``: on the
        voice channel, with the caller's call in its attributes (what a voice instruction
        needs)."""
        chosen = dict(attributes or {"type": "support"})
        channel = {}
        if voice:
            chosen.setdefault("call_sid", "CA" + os.urandom(16).hex())
            channel = {"task_channel": "voice"}
        task = await self.ws.tasks.create_async(attributes=json.dumps(chosen), **channel)
        [reservation] = await self.ws.tasks(task.sid).reservations.list_async()
        return task, reservation

    async def reservation(self, task_sid: str, reservation_sid: str) -> Any:
        return await self.ws.tasks(task_sid).reservations(reservation_sid).fetch_async()

    def worker_sids(self) -> list[str]:
        return [w["sid"] for w in self.state.workers]

    # -------------------------------------------------------------------------------- bridge
    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any, Mapping[str, str]]:
        async with self.session.request(
            method, self.bridge.url + path, json=json_body, data=data, headers=dict(headers or {})
        ) as response:
            text = await response.text()
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = text
            return response.status, body, response.headers

    async def plugin(
        self,
        reservation_sid: str,
        op: str,
        body: Mapping[str, Any] | None,
        *,
        token: str | None = None,
        wait: str | float | None = None,
    ) -> tuple[int, Any]:
        """``POST /flex/reservations/<sid>/<op>`` as a Flex plugin sends it."""
        query = "" if wait is None else "?" + urlencode({"wait": wait})
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        status, answer, _ = await self.request(
            "POST",
            f"/flex/reservations/{reservation_sid}/{op}{query}",
            json_body=dict(body) if body is not None else None,
            headers=headers,
        )
        return status, answer

    async def intent(self, intent_id: str, token: str) -> tuple[int, Any]:
        status, body, _ = await self.request(
            "GET", f"/flex/intents/{intent_id}", headers={"Authorization": f"Bearer {token}"}
        )
        return status, body

    async def settled_intent(self, intent_id: str, token: str) -> Any:
        status, body = await self.intent(intent_id, token)
        assert status == 200, body
        return body["intent"] if body["intent"]["state"] == "settled" else None

    def journal_count(self) -> dict[str, int]:
        return self.bridge.call(lambda svc: svc.journal.count())  # type: ignore[no-any-return]

    def latest_for(self, reservation_sid: str) -> Any:
        return self.bridge.call(lambda svc: svc.journal.latest_for_reservation(reservation_sid))

    def idle(self) -> None:
        self.bridge.call(lambda svc: svc.coordinator.idle())

    # ------------------------------------------------------------------------------ webhooks
    def url(self, path: str) -> str:
        return self.bridge.url + path

    def sign(self, url: str, params: Mapping[str, str] | None, algorithm: str | None = None) -> str:
        return str(self.validator.compute_signature(url, dict(params or {}), algorithm))

    async def post_webhook(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        signature: str | None = None,
        sign_url: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """POST a form webhook; signed for ``sign_url`` (default: the URL posted to)."""
        sent = dict(headers or {})
        if signature is None and sign_url != "":
            signature = self.sign(sign_url or self.url(path), params)
        if signature is not None:
            sent["X-Twilio-Signature"] = signature
        status, body, _ = await self.request("POST", path, data=dict(params), headers=sent)
        return status, body

    async def assignment_callbacks(self, reservation_sid: str) -> list[dict[str, Any]]:
        return [
            e
            for e in await self.admin.log("webhook")
            if e["webhook"] == "assignment" and e["params"].get("ReservationSid") == reservation_sid
        ]

    async def events_sent(self, event_type: str, resource_sid: str) -> list[dict[str, Any]]:
        return [
            e
            for e in await self.admin.log("webhook")
            if e["webhook"] == "event"
            and e["params"].get("EventType") == event_type
            and e["params"].get("ResourceSid") == resource_sid
        ]

    # ---------------------------------------------------------------------------------- log
    async def rest(self, since: int = 0) -> list[dict[str, Any]]:
        return await self.admin.log("rest", since=since)

    async def last_seq(self) -> int:
        entries = await self.admin.log()
        return int(entries[-1]["seq"]) if entries else 0

    async def accepts(self, reservation_sid: str, since: int = 0) -> list[dict[str, Any]]:
        """REST reservation updates that asked for ``accepted``, in log order."""
        return [
            e
            for e in reservation_updates(await self.rest(since), reservation_sid)
            if (e.get("form") or {}).get("ReservationStatus") == "accepted"
        ]


def assert_error(body: Any, code: Any = None) -> dict[str, Any]:
    """The body is ``{"error": {"code", "message"}}`` (and the code is ``code`` when given)."""
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == ERROR_KEYS, body
    assert isinstance(err["message"], str) and err["message"], body
    if code is not None:
        assert err["code"] == code, body
    return err  # type: ignore[no-any-return]
