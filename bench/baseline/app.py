"""The baseline's Flask app: one assignment-callback handler doing everything inline."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flask import Flask, Response, jsonify, request
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator
from twilio.rest import Client

logger = logging.getLogger("bench.baseline")
ITEM_TTL = 86_400  # the bridge's default item TTL, sent on every write as the bridge does


class LocalTwilioHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """The package's own synchronous client, with one change: requests for
    ``https://<product>.twilio.com/<path>`` go to ``<base_url>/<product>/<path>`` (the
    emulator's address scheme). Pooling, timeouts (none) and retries (none) stay the defaults.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def rewrite(self, url: str) -> str:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if not host.endswith(".twilio.com"):
            return url
        base = urlsplit(self.base_url)
        product = host.split(".", 1)[0]
        return urlunsplit(
            (base.scheme, base.netloc, f"{base.path}/{product}{parts.path}", parts.query, "")
        )

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> TwilioResponse:
        return super().request(method, self.rewrite(url), *args, **kwargs)


@dataclass(frozen=True, slots=True)
class BaselineConfig:
    account_sid: str
    auth_token: str
    workspace_sid: str
    sync_service_sid: str
    base_url: str | None = None
    public_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BaselineConfig:
        env = os.environ if env is None else env
        missing = [
            name
            for name in (
                "TWILIO_ACCOUNT_SID",
                "TWILIO_AUTH_TOKEN",
                "FLEX_BRIDGE_WORKSPACE_SID",
                "FLEX_BRIDGE_SYNC_SERVICE_SID",
            )
            if not env.get(name)
        ]
        if missing:
            raise SystemExit(f"bench.baseline: missing {', '.join(missing)}")
        return cls(
            account_sid=env["TWILIO_ACCOUNT_SID"],
            auth_token=env["TWILIO_AUTH_TOKEN"],
            workspace_sid=env["FLEX_BRIDGE_WORKSPACE_SID"],
            sync_service_sid=env["FLEX_BRIDGE_SYNC_SERVICE_SID"],
            base_url=env.get("FLEX_BRIDGE_TWILIO_BASE_URL") or None,
            public_url=(env.get("FLEX_BRIDGE_PUBLIC_URL") or "").rstrip("/") or None,
        )


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _intent_id(now: float) -> str:
    """The same shape as the bridge's ids, so the item passes the channel's schema."""
    return f"in_{int(now * 1000):012x}{os.urandom(5).hex()}"


def create_app(config: BaselineConfig) -> Flask:
    http = LocalTwilioHttpClient(config.base_url) if config.base_url else TwilioHttpClient()
    client = Client(config.account_sid, config.auth_token, http_client=http)
    workspace = client.taskrouter.v1.workspaces(config.workspace_sid)
    sync = client.sync.v1.services(config.sync_service_sid)
    validator = RequestValidator(config.auth_token)
    known_maps: set[str] = set()  # maps this process created or found: one call per worker

    def ensure_map(name: str) -> None:
        if name in known_maps:
            return
        try:
            sync.sync_maps.create(unique_name=name)
        except TwilioRestException as exc:
            if exc.status != 409:  # 409: it exists already, which is what we want
                raise
        known_maps.add(name)

    app = Flask("bench.baseline")

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"ok": True})

    @app.post("/taskrouter/assignment")
    def assignment() -> Response | tuple[Response, int]:
        url = request.url
        if config.public_url:
            url = config.public_url + request.full_path.rstrip("?")
        signature = request.headers.get("X-Twilio-Signature", "")
        if not validator.validate(url, request.form, signature):
            return jsonify({"error": "invalid signature"}), 403
        form = request.form
        reservation_sid = form.get("ReservationSid", "")
        task_sid = form.get("TaskSid", "")
        worker_sid = form.get("WorkerSid", "")
        if not (reservation_sid and task_sid and worker_sid):
            return jsonify({"error": "missing parameters"}), 400

        # 1. Announce on the worker's Sync map that the server is accepting.
        name = f"flex-bridge.worker.{worker_sid}"
        now = time.time()
        item: dict[str, Any] = {
            "v": 1,
            "intent_id": _intent_id(now),
            "op": "accept",
            "phase": "pending",
            "task_sid": task_sid,
            "reservation_sid": reservation_sid,
            "worker_sid": worker_sid,
            "source": "policy",
            "requested_at": _iso(now),
            "updated_at": _iso(now),
            "reservation_status": None,
            "error": None,
        }
        try:
            ensure_map(name)
            created = sync.sync_maps(name).sync_map_items.create(
                key=reservation_sid, data=item, item_ttl=ITEM_TTL
            )
        except TwilioRestException as exc:
            # Not announced (or a retried callback whose item exists): change nothing, leave
            # the reservation to the agent.
            logger.warning("%s: announce failed: %s", reservation_sid, exc.msg)
            return jsonify({})

        # 2. Accept over REST.
        try:
            reservation = (
                workspace.tasks(task_sid)
                .reservations(reservation_sid)
                .update(reservation_status="accepted")
            )
            item.update(phase="applied", reservation_status=reservation.reservation_status)
        except TwilioRestException as exc:
            logger.warning("%s: accept failed: %s", reservation_sid, exc.msg)
            item.update(phase="failed", error={"code": exc.code, "message": str(exc.msg)[:1024]})

        # 3. Settle the item, conditional on the revision the announce wrote.
        item["updated_at"] = _iso(time.time())
        try:
            sync.sync_maps(name).sync_map_items(reservation_sid).update(
                data=item, if_match=str(created.revision), item_ttl=ITEM_TTL
            )
        except TwilioRestException as exc:
            logger.warning("%s: settle failed: %s", reservation_sid, exc.msg)
        return jsonify({})

    return app
