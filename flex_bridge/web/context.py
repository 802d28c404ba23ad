"""The app's ``Services``, as a request handler reaches them."""

from __future__ import annotations

from quart import current_app

from flex_bridge.app.services import Services


def services() -> Services:
    return current_app.config["services"]  # type: ignore[no-any-return]
