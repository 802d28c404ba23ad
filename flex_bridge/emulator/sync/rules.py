"""Sync's checks of what a request sends: data, TTLs, unique names and ``If-Match``."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from flex_bridge.emulator.api import JSON, ApiError

MAX_TTL = 31_536_000
MAX_DATA_BYTES = 16 * 1024
MAX_STREAM_MESSAGE_BYTES = 4 * 1024
MAX_UNIQUE_NAME_LENGTH = 320

SID_SHAPE = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")


def alive(expires: float | None, now: float) -> bool:
    return expires is None or expires > now


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_data(raw: str, *, not_object: int, what: str, limit: int = MAX_DATA_BYTES) -> JSON:
    """Twilio's ``Data`` parameter: a JSON object of at most ``limit`` serialised bytes."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, 54008, "The specified 'Data' parameter is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, not_object, f"Invalid {what} data: 'Data' must be a JSON object")
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > limit:
        raise ApiError(
            413,
            54006,
            f"The size of the specified 'Data' parameter ({size} bytes) exceeds the "
            f"{limit}-byte limit",
        )
    return value


def check_ttl(value: int | None, name: str) -> int | None:
    if value is not None and not 0 <= value <= MAX_TTL:
        raise ApiError(
            400, 54011, f"Invalid {name}: must be between 0 and {MAX_TTL} seconds; got {value}"
        )
    return value


@dataclass(frozen=True, slots=True)
class Ttls:
    """The TTL parameters of a Map, List or item write, as sent (None: not sent)."""

    ttl: int | None = None
    item_ttl: int | None = None
    collection_ttl: int | None = None

    def collection(self) -> int | None:
        """A Map's or List's own TTL, checked: ``CollectionTtl``, else ``Ttl``."""
        check_ttl(self.ttl, "Ttl")
        check_ttl(self.collection_ttl, "CollectionTtl")
        return self.collection_ttl if self.collection_ttl is not None else self.ttl

    def item(self) -> tuple[int | None, int | None]:
        """An item write's own TTL (``ItemTtl``, else ``Ttl``) and its collection's, checked."""
        check_ttl(self.ttl, "Ttl")
        check_ttl(self.item_ttl, "ItemTtl")
        check_ttl(self.collection_ttl, "CollectionTtl")
        return (self.item_ttl if self.item_ttl is not None else self.ttl), self.collection_ttl


def expiry(ttl: int, now: float) -> float | None:
    """When something written now with ``ttl`` expires; 0 is never."""
    return None if ttl == 0 else now + ttl


def check_unique_name(name: str | None) -> None:
    if name is not None and (
        not name or len(name) > MAX_UNIQUE_NAME_LENGTH or SID_SHAPE.fullmatch(name)
    ):
        raise ApiError(
            400,
            54302,
            f"Invalid unique name {name!r}: it must have 1-{MAX_UNIQUE_NAME_LENGTH} "
            "characters and must not look like a SID",
        )


def check_revision(if_match: str | None, revision: int, code: int, what: str) -> None:
    """``If-Match``: the revision, optionally quoted or weak, or ``*``; else a 412."""
    if if_match is None:
        return
    tag = if_match.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    tag = tag.strip('"')
    if tag in ("*", str(revision)):
        return
    raise ApiError(
        412,
        code,
        f"The revision of the {what} ({revision}) does not match the expected revision "
        f"({if_match})",
    )


def nothing_to_update(what: str) -> ApiError:
    return ApiError(400, 54010, f"No parameters specified: nothing to update on the {what}")


def after(value: Any, start: Any, order: str, bounds: str) -> bool:
    """Whether an item at ``value`` is at or past ``start`` in the listing order."""
    if value == start:
        return bounds != "exclusive"
    return bool(value > start) if order != "desc" else bool(value < start)
