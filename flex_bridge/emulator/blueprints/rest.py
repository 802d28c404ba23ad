"""Twilio's REST APIs through Quart: one blueprint per emulated product, served by that
product's router, and the 404 of any other product.

The compatibility path (``EmulatorConfig.rest_path = "quart"``), and what the ASGI front door
(:mod:`flex_bridge.emulator.front_door`) leaves to Quart. Both are thin adapters over the
REST core, :func:`flex_bridge.emulator.rest.serve`: here the request's parts come from
Quart's ``request``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from quart import Blueprint, Response, request

from flex_bridge.emulator import rest as core
from flex_bridge.emulator.blueprints.guard import request_headers
from flex_bridge.emulator.blueprints.responses import to_response
from flex_bridge.emulator.core import Emulator

UNKNOWN_PRODUCTS = "unknown_products"  # the blueprint's name


def product_blueprint(emu: Emulator, product: str) -> Blueprint:
    """``/<product>/v1/...`` for a product the emulator has a router for."""
    blueprint = Blueprint(product, __name__, url_prefix=f"/{product}")

    @blueprint.route("/v1/<path:rest>", methods=core.METHODS)
    async def rest_api(rest: str) -> Response:
        return await serve(emu, product, "/v1/" + rest)

    return blueprint


def unknown_products() -> Blueprint:
    """Any other ``/<product>/v1/...``."""
    blueprint = Blueprint(UNKNOWN_PRODUCTS, __name__)

    @blueprint.route("/<product>/v1/<path:rest>", methods=core.METHODS)
    async def unknown(product: str, rest: str) -> Response:
        return to_response(core.unknown_product(product))

    return blueprint


def rest_endpoints(products: Iterable[str]) -> set[str]:
    """The endpoints the two blueprints above register (``<blueprint>.<view function>``),
    for ``products``' blueprints."""
    return {f"{product}.rest_api" for product in products} | {f"{UNKNOWN_PRODUCTS}.unknown"}


async def _form() -> list[tuple[str, str]]:
    # Quart's form: werkzeug's RequestEntityTooLarge over MAX_CONTENT_LENGTH (app.http_error).
    return list((await request.form).items(multi=True))


def _query() -> Iterator[tuple[str, str]]:
    # Lazy: the query is parsed once the operation is known, as it always was.
    yield from request.args.items(multi=True)


async def serve(emu: Emulator, product: str, path: str) -> Response:
    """Authenticate, inject faults, resolve, check, apply and log one REST request."""
    answer = await core.serve(
        emu, product, request.method, path, request_headers(), _form, _query()
    )
    return to_response(answer)
