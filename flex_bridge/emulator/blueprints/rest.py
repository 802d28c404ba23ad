"""Twilio's REST APIs: one blueprint per emulated product, served by that product's router.

``/<product>/v1/...`` is resolved against the product's OpenAPI document, checked, applied by
its handler and logged; a product the emulator does not serve is a 404.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from flex_bridge.emulator.api import ApiError, Call, parse_fields
from flex_bridge.emulator.blueprints.guard import authenticated, inject, lose, unauthenticated
from flex_bridge.emulator.blueprints.responses import error_response, json_response
from flex_bridge.emulator.core import Emulator
from flex_bridge.emulator.log import mask

METHODS = ["GET", "POST", "DELETE"]


def product_blueprint(emu: Emulator, product: str) -> Blueprint:
    """``/<product>/v1/...`` for a product the emulator has a router for."""
    blueprint = Blueprint(product, __name__, url_prefix=f"/{product}")

    @blueprint.route("/v1/<path:rest>", methods=METHODS)
    async def rest_api(rest: str) -> Response:
        return await serve(emu, product, "/v1/" + rest)

    return blueprint


def unknown_products() -> Blueprint:
    """Any other ``/<product>/v1/...``."""
    blueprint = Blueprint("unknown_products", __name__)

    @blueprint.route("/<product>/v1/<path:rest>", methods=METHODS)
    async def unknown(product: str, rest: str) -> Response:
        return error_response(ApiError(404, 20404, f"Unknown product {product!r}"))

    return blueprint


async def serve(emu: Emulator, product: str, path: str) -> Response:
    """Authenticate, inject faults, resolve, check, apply and log one REST request."""
    router = emu.routers[product]
    if not authenticated(emu):
        return unauthenticated()
    method = request.method
    form_items: list[tuple[str, str]] = []
    if method == "POST":
        form_items = list((await request.form).items(multi=True))
    decision, injected = await inject(emu, product, method, path, dict(form_items))
    if injected is not None:
        return injected
    entry: dict[str, Any] = {"product": product, "method": method, "path": path}
    try:
        op, params, handler = router.resolve(method, path)
        form = parse_fields(op.form_fields, form_items, where="form", required=op.required)
        query = parse_fields(op.query_params, list(request.args.items(multi=True)), where="query")
        headers = {k.lower(): v for k, v in request.headers.items()}
        call = Call(op, params, form, query, headers, emu.clock.now(), path)
        entry["template"] = op.template
        entry["form"] = mask(form)
        entry["if_match"] = call.if_match()
        reply = handler(call)
    except ApiError as exc:
        emu.log.append("rest", **entry, status=exc.status, code=exc.code, applied=False)
        return error_response(exc)
    emu.log.append(
        "rest",
        **entry,
        status=reply.status,
        applied=True,
        fault=f"lose_{decision.lose_mode}" if decision.lose_mode else None,
    )
    lost = lose(emu, decision)
    if lost is not None:
        return lost
    return json_response(reply.body, reply.status, reply.headers)
