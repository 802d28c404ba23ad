"""Flex token validation, as ``POST iam.twilio.com/v1/Accounts/{AC}/Tokens/validate`` answers.

Tokens are issued by the admin API (``POST /_emulator/tokens``) for a worker SID, a list of
roles and a lifetime; they expire on the emulator clock, so a test can age one past its
expiry with ``/_emulator/clock/advance``.

The answer is always 200 with every field of :data:`ANSWER_FIELDS`. A valid token gives
``valid: true, code: 0, message: null`` and its identity, as Twilio's own validator documents
it (https://github.com/twilio/twilio-flex-token-validator, "Token Result"), plus the Flex
instance and Flex user SIDs the Flex User Token API puts in a token's ``token_info``
(https://www.twilio.com/docs/flex/developer/user-management/flex-token-api). An invalid one
gives ``valid: false``, a Twilio code and message (20101 unknown token, 20104 expired) and
every other field null: what Twilio puts there is not documented, and null is the answer a
client can least rely on.

A token also names the Sync service it grants (``sync_service_sid``, or None): the emulator's
SDK surface (:mod:`flex_bridge.emulator.blueprints.sdk`) authenticates browsers with it. That
field is in ``describe()`` but not in the validation answer, whose fields stay Twilio's.
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
ANSWER_FIELDS = (
    "valid",
    "code",
    "message",
    "expiration",
    "realm_user_id",
    "identity",
    "roles",
    "worker_sid",
    "flex_instance_sid",
    "flex_user_sid",
)
# https://www.twilio.com/docs/api/errors/20101 and .../20104
UNKNOWN_TOKEN = (20101, "Invalid Access Token")
EXPIRED_TOKEN = (20104, "Access Token expired or expiration date invalid")


class TokenRefused(Exception):
    """A token that does not authenticate: unknown (20101) or expired (20104)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    identity: str
    worker_sid: str | None
    roles: tuple[str, ...]
    expires: float
    realm_user_id: str
    flex_instance_sid: str
    flex_user_sid: str
    sync_service_sid: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "identity": self.identity,
            "worker_sid": self.worker_sid,
            "roles": list(self.roles),
            "expiration": iso(self.expires),
            "realm_user_id": self.realm_user_id,
            "flex_instance_sid": self.flex_instance_sid,
            "flex_user_sid": self.flex_user_sid,
            "sync_service_sid": self.sync_service_sid,
        }


class TokenStore:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.flex_instance_sid = _sid("GO")
        self._tokens: dict[str, IssuedToken] = {}
        self._users: dict[str, str] = {}  # identity -> its Flex user SID, stable across tokens

    def issue(
        self,
        *,
        identity: str,
        worker_sid: str | None,
        roles: list[str],
        ttl: float,
        sync_service_sid: str | None = None,
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
            realm_user_id=_sid("US"),
            flex_instance_sid=self.flex_instance_sid,
            flex_user_sid=self._users.setdefault(identity, _sid("FU")),
            sync_service_sid=sync_service_sid,
        )
        self._tokens[token.token] = token
        return token

    def check(self, token: str) -> IssuedToken:
        """The issued token, if it is known and not expired on the emulator clock; else
        :class:`TokenRefused` with Twilio's code (20101 unknown, 20104 expired)."""
        issued = self._tokens.get(token)
        if issued is None:
            raise TokenRefused(*UNKNOWN_TOKEN)
        if issued.expires <= self.clock.now():
            raise TokenRefused(*EXPIRED_TOKEN)
        return issued

    def validate(self, token: str) -> dict[str, Any]:
        """The validation answer: every field of ``ANSWER_FIELDS``, in that order."""
        try:
            issued = self.check(token)
        except TokenRefused as exc:
            refused: dict[str, Any] = dict.fromkeys(ANSWER_FIELDS)
            refused.update(valid=False, code=exc.code, message=exc.message)
            return refused
        described = issued.describe()
        answer = {name: described.get(name) for name in ANSWER_FIELDS}
        answer.update(valid=True, code=0, message=None)
        return answer

    def count(self) -> int:
        return len(self._tokens)
