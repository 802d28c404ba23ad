"""JSON error answers: ``{"error": {"code", "message"}}``, always."""

from __future__ import annotations

from typing import Any

from quart import Response, jsonify


def error(status: int, code: str | int | None, message: str, **extra: Any) -> Response:
    details = {k: v for k, v in extra.items() if v is not None}
    body: dict[str, Any] = {"error": {"code": code, "message": message, **details}}
    response = jsonify(body)
    response.status_code = status
    return response
