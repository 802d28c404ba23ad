"""Flex token validation, as ``POST iam.twilio.com/v1/Accounts/{AC}/Tokens/validate`` answers.

Tokens are issued by the admin API (``POST /_emulator/tokens``) for a worker SID, a list of
roles and a lifetime; they expire on the emulator clock, so a test can age one past its
expiry with ``/_emulator/clock/advance``.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

from flex_bridge.emulator.clock import Clock, iso

ROLES = frozenset({"agent", "supervisor", "admin"})
# Far longer than any Flex token lives (Twilio caps access tokens at 24 h), yet every expiry
# stays a date that can be rendered.
MAX_TTL = 10 * 365 * 86_400


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    identity: str
    worker_sid: str | None
    roles: tuple[str, ...]
    expires: float
    realm_user_id: str

    def describe(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "identity": self.identity,
            "worker_sid": self.worker_sid,
            "roles": list(self.roles),
            "expiration": iso(self.expires),
            "realm_user_id": self.realm_user_id,
        }


class TokenStore:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._tokens: dict[str, IssuedToken] = {}

    def issue(
        self,
        *,
        identity: str,
        worker_sid: str | None,
        roles: list[str],
        ttl: float,
    ) -> IssuedToken:
        bad = [r for r in roles if r not in ROLES]
        if bad or not roles:
            raise ValueError(f"roles must be a non-empty subset of {sorted(ROLES)}; got {roles}")
        if not math.isfinite(ttl) or not 0 < ttl <= MAX_TTL:
            raise ValueError(f"ttl must be a positive number of seconds, at most {MAX_TTL}")
        token = IssuedToken(
            token="flex-emulator." + secrets.token_urlsafe(24),
            identity=identity,
            worker_sid=worker_sid,
            roles=tuple(roles),
            expires=self.clock.now() + ttl,
            realm_user_id="US" + secrets.token_hex(16),
        )
        self._tokens[token.token] = token
        return token

    def validate(self, token: str) -> dict[str, Any]:
        issued = self._tokens.get(token)
        if issued is None:
            return {"valid": False, "message": "Token is not valid"}
        if issued.expires <= self.clock.now():
            return {"valid": False, "message": "Token has expired"}
        return {
            "valid": True,
            "identity": issued.identity,
            "worker_sid": issued.worker_sid,
            "roles": list(issued.roles),
            "realm_user_id": issued.realm_user_id,
            "expiration": iso(issued.expires),
        }

    def count(self) -> int:
        return len(self._tokens)
