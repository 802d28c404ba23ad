"""What the inline peers share (the Flask baseline, the Python floor): their settings, the
emulator's address rewrite, and the channel item they write. No web framework here: each
peer imports only what it runs on. The peers stand for code written without flex-bridge, so
they do not import it (the rewrite mirrors ``flex_bridge.adapters.http.rewrite_url``)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ITEM_TTL = 86_400  # the bridge's default item TTL, sent on every write as the bridge does
REQUIRED = (
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "FLEX_BRIDGE_WORKSPACE_SID",
    "FLEX_BRIDGE_SYNC_SERVICE_SID",
)


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """The environment the bench gives every system it compares."""

    account_sid: str
    auth_token: str
    workspace_sid: str
    sync_service_sid: str
    base_url: str | None = None
    public_url: str | None = None

    @classmethod
    def from_env(cls, who: str, env: Mapping[str, str] | None = None) -> PeerConfig:
        """``who`` names the peer in the error when a variable is missing."""
        env = os.environ if env is None else env
        missing = [name for name in REQUIRED if not env.get(name)]
        if missing:
            raise SystemExit(f"{who}: missing {', '.join(missing)}")
        return cls(
            account_sid=env["TWILIO_ACCOUNT_SID"],
            auth_token=env["TWILIO_AUTH_TOKEN"],
            workspace_sid=env["FLEX_BRIDGE_WORKSPACE_SID"],
            sync_service_sid=env["FLEX_BRIDGE_SYNC_SERVICE_SID"],
            base_url=env.get("FLEX_BRIDGE_TWILIO_BASE_URL") or None,
            public_url=(env.get("FLEX_BRIDGE_PUBLIC_URL") or "").rstrip("/") or None,
        )


def rewrite(url: str, base_url: str | None) -> str:
    """``https://<product>.twilio.com/<path>`` to ``<base_url>/<product>/<path>`` (the
    emulator's address scheme); unchanged without a base URL or for another host."""
    if not base_url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host.endswith(".twilio.com"):
        return url
    base = urlsplit(base_url.rstrip("/"))
    product = host.split(".", 1)[0]
    return urlunsplit(
        (base.scheme, base.netloc, f"{base.path}/{product}{parts.path}", parts.query, "")
    )


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def pending_item(task_sid: str, reservation_sid: str, worker_sid: str) -> dict[str, Any]:
    """The item the bridge writes when it announces an accept (it passes the channel's
    schema: the intent id has the bridge's shape)."""
    now = time.time()
    return {
        "v": 1,
        "intent_id": f"in_{int(now * 1000):012x}{os.urandom(5).hex()}",
        "op": "accept",
        "phase": "pending",
        "task_sid": task_sid,
        "reservation_sid": reservation_sid,
        "worker_sid": worker_sid,
        "source": "policy",
        "requested_at": iso(now),
        "updated_at": iso(now),
        "reservation_status": None,
        "error": None,
    }


def settle(item: dict[str, Any], status: str | None, code: Any = None, message: str = "") -> None:
    """The item as the settle writes it: applied with the reservation's status, or failed
    with TaskRouter's error (``status`` None)."""
    if status is not None:
        item.update(phase="applied", reservation_status=status)
    else:
        item.update(phase="failed", error={"code": code, "message": message[:1024]})
    item["updated_at"] = iso(time.time())
