"""Flex token validation at Twilio's IAM endpoint, with a cache.

A valid answer is cached until shortly before the token expires (at most ``max_cache``
seconds); an invalid one briefly (``negative_ttl``), so a flood of bad tokens does not become
a flood of IAM calls. Tokens are cached under their SHA-256, never kept or logged in clear.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from flex_bridge.adapters.http import BridgeHttpClient
from flex_bridge.errors import AuthenticationError, UpstreamError

logger = logging.getLogger("flex_bridge.tokens")
IAM_VALIDATE = "https://iam.twilio.com/v1/Accounts/{account_sid}/Tokens/validate"


@dataclass(frozen=True, slots=True)
class FlexIdentity:
    identity: str
    worker_sid: str | None
    roles: frozenset[str]
    expires: float | None

    @property
    def is_supervisor(self) -> bool:
        return bool(self.roles & {"supervisor", "admin"})


class TokenValidatorPort(Protocol):
    async def validate(self, token: str) -> FlexIdentity:
        """The token's identity; ``AuthenticationError`` when it is not valid."""
        ...


def _expiry(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class TwilioTokenValidator:
    def __init__(
        self,
        http: BridgeHttpClient,
        account_sid: str,
        auth: tuple[str, str],
        *,
        clock: Callable[[], float] = time.time,
        margin: float = 30.0,
        max_cache: float = 300.0,
        negative_ttl: float = 10.0,
        max_entries: int = 10_000,
    ) -> None:
        self.http = http
        self.url = IAM_VALIDATE.format(account_sid=account_sid)
        self.auth = auth
        self.clock = clock
        self.margin = margin
        self.max_cache = max_cache
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[FlexIdentity | None, str, float]] = {}

    async def validate(self, token: str) -> FlexIdentity:
        if not token:
            raise AuthenticationError("no Flex token")
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None and cached[2] > now:
            identity, message, _ = cached
            if identity is None:
                raise AuthenticationError(message)
            return identity
        status, body = await self.http.post_json(self.url, {"token": token}, self.auth)
        refused = 400 <= status < 500
        if not refused and (status != 200 or not isinstance(body, dict)):
            raise UpstreamError(f"token validation answered HTTP {status}", status=status)
        if len(self._cache) >= self.max_entries:
            self._cache = {k: v for k, v in self._cache.items() if v[2] > now}
            while self._cache and len(self._cache) >= self.max_entries:  # live: drop the oldest
                del self._cache[next(iter(self._cache))]
        if refused:
            # The request or the token is bad (429 and 5xx come as transient errors from
            # below): the caller gets 401. Were every token refused so, our own credentials
            # would be the likelier cause, hence the warning.
            logger.warning("Flex token validation refused with HTTP %d", status)
            body = {"valid": False, "message": "the Flex token was refused"}
        assert isinstance(body, dict)
        if not body.get("valid"):
            message = str(body.get("message") or "the Flex token is not valid")
            self._cache[key] = (None, message, now + self.negative_ttl)
            raise AuthenticationError(message)
        roles = body.get("roles") or []
        identity = FlexIdentity(
            identity=str(body.get("identity") or ""),
            worker_sid=body.get("worker_sid") if isinstance(body.get("worker_sid"), str) else None,
            roles=frozenset(r for r in roles if isinstance(r, str)),
            expires=_expiry(body.get("expiration")),
        )
        until = now + self.max_cache
        if identity.expires is not None:
            until = min(until, identity.expires - self.margin)
        if until > now:
            self._cache[key] = (identity, "", until)
        return identity
