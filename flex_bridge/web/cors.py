"""CORS for the ``/flex`` API only: a Flex plugin calls it from the agent's browser, on Flex's
origin, with an ``Authorization`` header, so the browser asks first (a preflight).

The allowed origins are the app's setting (``FLEX_BRIDGE_CORS_ORIGINS``, default
``https://flex.twilio.com``), read per request from ``app.config``; an origin not listed gets no
``Access-Control-Allow-*`` header, so the browser refuses the call. No cookies: the Flex token
travels in ``Authorization``. The webhooks and the ops endpoints have no CORS at all.
"""

from __future__ import annotations

from quart import Blueprint, Quart
from quart_cors import cors

METHODS = ("GET", "POST", "PATCH", "OPTIONS")
HEADERS = ("Authorization", "Content-Type")
MAX_AGE = 600  # seconds a browser may cache a preflight's answer


def allow_plugins(bp: Blueprint) -> Blueprint:
    return cors(
        bp,
        allow_credentials=False,
        allow_headers=HEADERS,
        allow_methods=METHODS,
        max_age=MAX_AGE,
    )


def configure(app: Quart, origins: tuple[str, ...]) -> None:
    app.config["QUART_CORS_ALLOW_ORIGIN"] = list(origins)
