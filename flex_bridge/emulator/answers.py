"""What the emulator answers over HTTP, without a web framework: a status, headers, body bytes.

The REST core (:mod:`flex_bridge.emulator.rest`) returns an :class:`Answer`; the Quart routes
turn it into a Quart ``Response`` (``blueprints.responses.to_response``) and the ASGI front
door (:mod:`flex_bridge.emulator.front_door`) sends it as it is. Either way the bytes on the
wire are the same: the headers in the order Quart gave them (the answer's own, then
``Content-Type``; the server adds ``Content-Length`` and ``Date``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flex_bridge.emulator.api import ApiError

JSON_TYPE = "application/json"
# What Quart (werkzeug) gives a response made without a content type: an empty answer (a
# DELETE's 204) has always carried it.
DEFAULT_TYPE = "text/html; charset=utf-8"
# Twilio's codes for the statuses the HTTP layer itself answers (unknown path, wrong method,
# oversized body, unexpected failure).
HTTP_ERROR_CODES = {400: 20001, 401: 20003, 404: 20404, 405: 20004, 500: 20500, 503: 20503}

# json.dumps(body, separators=(",", ":")) builds this encoder on every call.
_encode = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer: ``drop`` asks the server side to lose it (a status line promising a
    body that never comes, then the connection closed: ``front_door.send_dropped``)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    drop: bool = False


DROPPED = Answer(200, {}, b"", drop=True)


def json_answer(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Answer:
    """``body`` as compact JSON (``None``: an empty body), after the given headers."""
    if body is None:
        return Answer(status, {**(headers or {}), "Content-Type": DEFAULT_TYPE}, b"")
    return Answer(
        status, {**(headers or {}), "Content-Type": JSON_TYPE}, _encode(body).encode("utf-8")
    )


def error_answer(exc: ApiError) -> Answer:
    """An error in Twilio's JSON shape, with its headers (``Retry-After``,
    ``WWW-Authenticate``)."""
    return json_answer(exc.body(), exc.status, exc.headers)


def http_error_answer(status: int, message: str, path: str) -> Answer:
    """What the HTTP layer answers itself (no such path, a wrong method, a body over the
    limit, an unexpected failure) in Twilio's shape; a 404 names the path."""
    code = HTTP_ERROR_CODES.get(status, 20500 if status >= 500 else 20001)
    if status == 404:
        message = f"The requested resource {path} was not found"
    return error_answer(ApiError(status, code, message))
