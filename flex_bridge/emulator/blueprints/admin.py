"""The admin API under ``/_emulator/``: health, state, clock, faults, log, tokens, settings,
and TaskRouter's ring times and task retention (``taskrouter_admin``).

Guarded by ``admin_guard`` (its own Host and Origin only, JSON bodies, and the admin token when
one is set); docs/emulator.md describes each endpoint.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from flex_bridge.emulator.blueprints.responses import bad_request, json_body, json_response
from flex_bridge.emulator.blueprints.taskrouter_admin import register_taskrouter_admin
from flex_bridge.emulator.core import Emulator
from flex_bridge.emulator.faults import FaultSpecError, parse_rule
from flex_bridge.emulator.webhooks import parse_signing

# The clock moves by at most a century per call: far beyond any timer the emulator sets, and
# far from the end of the representable date range (year 9999), where every date breaks.
MAX_ADVANCE = 100 * 366 * 86_400
SETTINGS = frozenset({"sync_rate_limit", "assignment_timeout", "event_retry", "webhook_signing"})


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def admin_blueprint(emu: Emulator) -> Blueprint:
    blueprint = Blueprint("admin", __name__, url_prefix="/_emulator")

    @blueprint.get("/health")
    async def health() -> Response:
        return json_response({"ok": True, "account_sid": emu.config.account_sid})

    @blueprint.get("/state")
    async def state() -> Response:
        return json_response(emu.dump())

    @blueprint.get("/clock")
    async def clock() -> Response:
        return json_response({"now": emu.clock.now(), "offset": emu.clock.offset})

    @blueprint.post("/clock/advance")
    async def advance() -> Response:
        body = await json_body()
        seconds = body.get("seconds") if isinstance(body, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            return bad_request('The body must be {"seconds": <a non-negative number>}')
        if seconds > MAX_ADVANCE:
            return bad_request(f"seconds must be at most {MAX_ADVANCE} (a century) per call")
        fired = emu.scheduler.advance(float(seconds))
        return json_response({"now": emu.clock.now(), "offset": emu.clock.offset, "fired": fired})

    @blueprint.get("/faults")
    async def get_faults() -> Response:
        return json_response(emu.faults.describe())

    @blueprint.post("/faults")
    async def set_faults() -> Response:
        body = await json_body()
        if not isinstance(body, dict) or not isinstance(body.get("rules"), list):
            return bad_request('The body must be {"rules": [...], "seed": <int, optional>}')
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            return bad_request("seed must be an integer")
        try:
            rules = [parse_rule(raw) for raw in body["rules"]]
        except FaultSpecError as exc:
            return bad_request(str(exc))
        emu.faults.configure(rules, seed)
        return json_response(emu.faults.describe())

    @blueprint.delete("/faults")
    async def clear_faults() -> Response:
        emu.faults.clear()
        return json_response(emu.faults.describe())

    @blueprint.get("/log")
    async def get_log() -> Response:
        try:
            since = int(request.args.get("since", "0"))
        except ValueError:
            return bad_request("since must be an integer sequence number")
        kind = request.args.get("kind")
        return json_response({"entries": emu.log.entries(since, kind)})

    @blueprint.delete("/log")
    async def clear_log() -> Response:
        emu.log.clear()
        return json_response(None, 204)

    @blueprint.post("/tokens")
    async def issue_token() -> Response:
        body = await json_body()
        if not isinstance(body, dict):
            return bad_request("The body must be a JSON object")
        roles = body.get("roles", ["agent"])
        worker_sid = body.get("worker_sid")
        identity = body.get("identity") or worker_sid or "flex-user"
        ttl = body.get("ttl", 3600)
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            return bad_request("roles must be a list of strings")
        if worker_sid is not None and not isinstance(worker_sid, str):
            return bad_request("worker_sid must be a string")
        if not _number(ttl):
            return bad_request("ttl must be a number of seconds")
        service_sid = body.get("sync_service_sid")  # null: as if not given
        if service_sid is not None:
            if not isinstance(service_sid, str) or service_sid not in emu.sync.services:
                return bad_request(
                    f"sync_service_sid must name an existing Sync service; got {service_sid!r}"
                )
        else:
            # The oldest service (services are kept in creation order), or none.
            service_sid = next(iter(emu.sync.services), None)
        try:
            issued = emu.tokens.issue(
                identity=str(identity),
                worker_sid=worker_sid,
                roles=roles,
                ttl=float(ttl),
                sync_service_sid=service_sid,
            )
        except ValueError as exc:
            return bad_request(str(exc))
        return json_response(issued.describe(), 201)

    def settings_view() -> dict[str, Any]:
        return {
            "sync_rate_limit": emu.sync.rate_limit,
            "assignment_timeout": emu.taskrouter.assignment_timeout,
            "event_retry": emu.sender.retry_events,
            "webhook_signing": [key.describe() for key in emu.sender.signing] or None,
        }

    @blueprint.get("/settings")
    async def get_settings() -> Response:
        return json_response(settings_view())

    @blueprint.post("/settings")
    async def set_settings() -> Response:
        body = await json_body()
        if not isinstance(body, dict):
            return bad_request("The body must be a JSON object")
        unknown = set(body) - SETTINGS
        if unknown:
            return bad_request(f"unknown setting(s): {', '.join(sorted(unknown))}")
        for name in ("sync_rate_limit", "event_retry"):
            if name in body and not isinstance(body[name], bool):
                return bad_request(f"{name} must be true or false")
        try:
            signing = parse_signing(body.get("webhook_signing"))
        except ValueError as exc:
            return bad_request(str(exc))
        if "assignment_timeout" in body:
            value = body["assignment_timeout"]
            if not _number(value) or value <= 0:
                return bad_request("assignment_timeout must be a positive number of seconds")
        if "sync_rate_limit" in body:
            emu.sync.rate_limit = body["sync_rate_limit"]
        if "assignment_timeout" in body:
            emu.taskrouter.assignment_timeout = float(body["assignment_timeout"])
        if "event_retry" in body:
            emu.sender.retry_events = body["event_retry"]
        if "webhook_signing" in body:
            emu.sender.signing = signing
        return json_response(settings_view())

    register_taskrouter_admin(blueprint, emu)
    return blueprint
