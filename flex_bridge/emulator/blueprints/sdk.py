"""The SDK surface under ``/sdk/``: what a browser adapter uses in place of twilio-sync's
``SyncClient`` and of the accept and reject of Flex's TaskRouter worker SDK.

Neither real SDK can talk to the emulator, so this is a small protocol of the emulator's own
(docs/emulator.md, "The SDK surface (for browsers)"), authenticated with the tokens of
``POST /_emulator/tokens`` rather than with the account's credentials:

- ``POST /sdk/sync/v1/Maps``: open or create a Map in the token's Sync service.
- ``GET /sdk/sync/v1/Maps/<MapSid or unique name>/Items``: a page of its live items.
- ``POST /sdk/taskrouter/v1/Reservations/<WR>/accept`` and ``/reject``: the REST update
  ``ReservationStatus=accepted|rejected`` of that reservation, made through the TaskRouter
  REST route itself (same checks, events, callbacks and rendering), logged as the REST route
  logs it plus ``"via": "sdk"``.
- ``/sdk/sync/v1/ws``: live Map item events over WebSocket, in
  :mod:`flex_bridge.emulator.blueprints.sdk_ws` (its own blueprint, using the token and Map
  look-ups of this module).

HTTP requests carry ``Authorization: Bearer <token>``, validated on the emulator clock. Every
answer under ``/sdk/`` (errors and unknown paths included) carries CORS headers for whatever
``Origin`` asked; nothing outside ``/sdk/`` does. Tokens are never logged.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from quart import Blueprint, Response, request

from flex_bridge.emulator.api import JSON, ApiError, Call, not_found, parse_fields
from flex_bridge.emulator.blueprints.responses import json_body, json_response
from flex_bridge.emulator.clock import iso
from flex_bridge.emulator.core import Emulator
from flex_bridge.emulator.iam import IssuedToken, TokenRefused
from flex_bridge.emulator.log import mask
from flex_bridge.emulator.sync.records import SyncMap
from flex_bridge.emulator.sync.rules import SID_SHAPE, Ttls
from flex_bridge.emulator.taskrouter.models import Reservation, Workspace

PREFIX = "/sdk/"
CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type"
CORS_MAX_AGE = "600"
MODES = ("open_or_create", "open_existing", "create_new")
MAP_FIELDS = frozenset({"id", "mode"})
ITEMS_QUERY = frozenset({"pageSize", "pageToken"})
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
# "Map not found", as the REST API answers it.
MAP_NOT_FOUND = 54200


# -------------------------------------------------------------------- shared with sdk_ws
def check_token(emu: Emulator, token: str) -> IssuedToken:
    """The issued token, or a 401: 20101 unknown, 20104 expired (on the emulator clock)."""
    try:
        return emu.tokens.check(token)
    except TokenRefused as exc:
        raise ApiError(401, exc.code, exc.message) from None


def granted_service(emu: Emulator, token: IssuedToken) -> str:
    """The token's Sync service, which must still exist; else 403 / 20403."""
    sid = token.sync_service_sid
    if sid is None or sid not in emu.sync.services:
        raise ApiError(403, 20403, "The token grants no Sync service")
    return sid


def map_not_found(ref: str) -> ApiError:
    return ApiError(404, MAP_NOT_FOUND, f"Map {ref} not found in the token's Sync service")


def find_map(emu: Emulator, token: IssuedToken, ref: str) -> SyncMap:
    """A live Map of the token's service by SID or unique name (a read, rate-limited)."""
    service_sid = granted_service(emu, token)
    try:
        return emu.sync.get_object(service_sid, SyncMap, ref, emu.clock.now())
    except ApiError as exc:
        if exc.status == 404:
            raise map_not_found(ref) from None
        raise


# -------------------------------------------------------------------------------- HTTP
def _bearer(emu: Emulator) -> IssuedToken:
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, 20101, "Invalid Access Token")
    return check_token(emu, token)


def _map_values(sync_map: SyncMap) -> JSON:
    return {
        "sid": sync_map.sid,
        "unique_name": sync_map.unique_name,
        "revision": str(sync_map.revision),
        "date_expires": iso(sync_map.expires),
    }


def _map_request(body: Any) -> tuple[str, str]:
    if not isinstance(body, dict):
        raise ApiError(400, 20001, 'The body must be a JSON object {"id": ..., "mode": ...}')
    unknown = sorted(set(body) - MAP_FIELDS)
    if unknown:
        raise ApiError(400, 20001, f"Unknown field(s) {', '.join(unknown)}: only id and mode")
    ref = body.get("id")
    if not isinstance(ref, str) or not ref:
        raise ApiError(400, 20001, "id must be a non-empty string: a unique name or an MP SID")
    mode = body.get("mode", "open_or_create")
    if mode not in MODES:
        raise ApiError(400, 20001, f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    return ref, str(mode)


def _open_map(emu: Emulator, token: IssuedToken, ref: str, mode: str) -> tuple[SyncMap, int]:
    """Open (200) or create (201) a Map as ``mode`` says; atomic, as nothing awaits."""
    service_sid = granted_service(emu, token)
    if mode != "create_new" or SID_SHAPE.fullmatch(ref):
        try:
            found = find_map(emu, token, ref)
        except ApiError as exc:
            if exc.code != MAP_NOT_FOUND or mode == "open_existing":
                raise
        else:
            if mode == "create_new":
                raise ApiError(409, 54301, f"Map {ref} already exists in service {service_sid}")
            return found, 200
    # The store's rules apply: a SID-shaped id cannot be a unique name (400 / 54302), a name
    # in use is 409 / 54301, an expired holder of the name does not block it.
    created = emu.sync.create_collection(service_sid, SyncMap, ref, Ttls(), emu.clock.now())
    return created, 201


def _page_token(key: str) -> str:
    raw = json.dumps({"after": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after_key(token: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        value = None
    if not isinstance(value, dict) or not isinstance(value.get("after"), str):
        raise ApiError(400, 20001, "pageToken is not a page token this emulator gave out")
    after: str = value["after"]
    return after


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    size = int(raw) if raw.isascii() and raw.isdigit() else 0
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ApiError(400, 20001, f"pageSize must be an integer from 1 to {MAX_PAGE_SIZE}")
    return size


def _find_reservation(emu: Emulator, sid: str) -> tuple[Workspace, Reservation]:
    for ws in emu.taskrouter.workspaces.values():
        res = ws.reservations.get(sid)
        if res is not None:
            return ws, res
    raise not_found("Reservation", sid)


def _update_reservation(emu: Emulator, token: IssuedToken, sid: str, status: str) -> Response:
    """``ReservationStatus=<status>`` through the TaskRouter REST route of the reservation
    under its worker, logged once as that route logs it, plus ``"via": "sdk"``."""
    ws, res = _find_reservation(emu, sid)
    path = f"/v1/Workspaces/{ws.sid}/Workers/{res.worker_sid}/Reservations/{res.sid}"
    op, params, handler = emu.routers["taskrouter"].resolve("POST", path)
    items = [("ReservationStatus", status)]
    form = parse_fields(op.form_fields, items, where="form", required=op.required)
    entry: dict[str, Any] = {
        "product": "taskrouter",
        "method": "POST",
        "path": path,
        "template": op.template,
        "form": mask(form),
        "if_match": None,
    }
    try:
        if token.worker_sid is None:
            raise ApiError(403, 20403, "The token names no worker: it cannot answer reservations")
        if token.worker_sid != res.worker_sid:
            raise ApiError(403, 20403, f"Reservation {sid} is not offered to the token's worker")
        reply = handler(Call(op, params, form, {}, {}, emu.clock.now(), path))
    except ApiError as exc:
        emu.log.append("rest", **entry, status=exc.status, code=exc.code, applied=False, via="sdk")
        raise
    emu.log.append("rest", **entry, status=reply.status, applied=True, fault=None, via="sdk")
    return json_response(reply.body, reply.status, reply.headers)


# ---------------------------------------------------------------------------- blueprint
def sdk_blueprint(emu: Emulator) -> Blueprint:
    blueprint = Blueprint("sdk", __name__, url_prefix="/sdk")

    @blueprint.before_app_request
    async def preflight() -> Response | None:
        if request.method == "OPTIONS" and request.path.startswith(PREFIX):
            return Response("", status=204)
        return None

    @blueprint.after_app_request
    async def cors(response: Response) -> Response:
        if request.path.startswith(PREFIX):
            response.headers["Access-Control-Allow-Origin"] = request.headers.get("Origin", "*")
            response.vary.add("Origin")
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
                response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
                response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
        return response

    @blueprint.post("/sync/v1/Maps")
    async def open_map() -> Response:
        token = _bearer(emu)
        granted_service(emu, token)
        ref, mode = _map_request(await json_body())
        sync_map, status = _open_map(emu, token, ref, mode)
        return json_response(_map_values(sync_map), status)

    @blueprint.get("/sync/v1/Maps/<path:map_ref>/Items")
    async def map_items(map_ref: str) -> Response:
        token = _bearer(emu)
        service_sid = granted_service(emu, token)
        unknown = sorted(set(request.args) - ITEMS_QUERY)
        if unknown:
            raise ApiError(400, 20001, f"Unknown query parameter(s) {', '.join(unknown)}")
        size = _page_size(request.args.get("pageSize"))
        raw_token = request.args.get("pageToken")
        after = None if raw_token is None else _after_key(raw_token)
        try:
            _, items = emu.sync.list_items(
                service_sid, SyncMap, map_ref, emu.clock.now(), start=after, bounds="exclusive"
            )
        except ApiError as exc:
            if exc.status == 404:
                raise map_not_found(map_ref) from None
            raise
        chunk = items[:size]
        rows = [
            {
                "key": item.address,
                "data": item.data,
                "revision": str(item.revision),
                "date_updated": iso(item.date_updated),
                "date_expires": iso(item.expires),
            }
            for item in chunk
        ]
        more = len(items) > size
        next_token = _page_token(chunk[-1].address) if more else None
        return json_response({"items": rows, "next_page_token": next_token})

    @blueprint.post("/taskrouter/v1/Reservations/<reservation_sid>/accept")
    async def accept(reservation_sid: str) -> Response:
        return _update_reservation(emu, _bearer(emu), reservation_sid, "accepted")

    @blueprint.post("/taskrouter/v1/Reservations/<reservation_sid>/reject")
    async def reject(reservation_sid: str) -> Response:
        return _update_reservation(emu, _bearer(emu), reservation_sid, "rejected")

    return blueprint
