"""The baseline's Flask app: one assignment-callback handler doing everything inline."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from bench.peers.common import ITEM_TTL, PeerConfig, pending_item, rewrite, settle

logger = logging.getLogger("bench.baseline")


class LocalTwilioHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """The package's own synchronous client, with one change: requests for
    ``https://<product>.twilio.com/<path>`` go to ``<base_url>/<product>/<path>`` (the
    emulator's address scheme). Pooling, timeouts (none) and retries (none) stay the defaults.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> TwilioResponse:
        return super().request(method, rewrite(url, self.base_url), *args, **kwargs)


BaselineConfig = PeerConfig  # the name the baseline has always had


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
        item = pending_item(task_sid, reservation_sid, worker_sid)
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
            settle(item, reservation.reservation_status)
        except TwilioRestException as exc:
            logger.warning("%s: accept failed: %s", reservation_sid, exc.msg)
            settle(item, None, exc.code, str(exc.msg))

        # 3. Settle the item, conditional on the revision the announce wrote.
        try:
            sync.sync_maps(name).sync_map_items(reservation_sid).update(
                data=item, if_match=str(created.revision), item_ttl=ITEM_TTL
            )
        except TwilioRestException as exc:
            logger.warning("%s: settle failed: %s", reservation_sid, exc.msg)
        return jsonify({})

    return app
