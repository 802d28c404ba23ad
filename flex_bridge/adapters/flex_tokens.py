"""Flex token validation at Twilio's IAM endpoint, with a cache and a budget of its own.

Anyone can send the bridge a token, so what a stranger's token costs is bounded:

- **Cache.** A valid answer is cached until ``margin`` seconds before the token expires, and
  at most ``max_cache`` (``MAX_CACHE``, 300 s); a definite "not valid" answer (IAM's 200 with
  ``valid: false``) for ``negative_ttl`` (``NEGATIVE_TTL``, 30 s), so the same forged token
  costs one IAM call per 30 s, not one per request. Entries are keyed by the token's SHA-256
  (tokens are never kept or logged in clear) and bounded by ``max_entries``
  (``MAX_ENTRIES``), least recently used first out. What is not a definite answer is never
  cached: a 5xx, a 429, a timeout or a lost connection (a transient ``UpstreamError``, 503
  to the caller), nor a 4xx refusal of the request (401/403: most likely our own credentials;
  the caller gets 401 and a WARNING is logged).
- **Single flight.** Concurrent validations of one token share one IAM call.
- **A budget of its own.** At most ``max_in_flight`` (``MAX_IN_FLIGHT``, 4) IAM calls are in
  flight at once. A validation that finds them all taken waits at most ``busy_wait``
  (``BUSY_WAIT``, 0.5 s) for one, then fails with :class:`TokenValidationBusy` (a transient
  upstream error: 503 to the caller) instead of queueing. Each call is bounded by
  ``timeout`` (``IAM_TIMEOUT``, 5 s) as a whole, its wait for the pace included. Refusals
  are counted in ``busy_refusals`` and logged as one WARNING per ``BUSY_LOG_EVERY`` seconds.

The IAM call goes through the bridge's ``BridgeHttpClient`` (its connection pool, its
timeout translation), but its pacing key is ``iam`` (``adapters.pacing.Pacing.key``): it
never waits behind TaskRouter's or Sync's pace, nor slows them. With at most
``MAX_IN_FLIGHT`` calls, it never holds more than that many of the pool's connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from flex_bridge.adapters.http import BridgeHttpClient
from flex_bridge.errors import AuthenticationError, TransientUpstreamError, UpstreamError

logger = logging.getLogger("flex_bridge.tokens")
IAM_VALIDATE = "https://iam.twilio.com/v1/Accounts/{account_sid}/Tokens/validate"

MARGIN = 30.0  # seconds before its expiry that a valid token stops being served from the cache
MAX_CACHE = 300.0  # seconds a valid answer is cached at most
NEGATIVE_TTL = 30.0  # seconds a definite "not valid" answer is cached
MAX_ENTRIES = 10_000  # cached answers, valid and not, least recently used first out
MAX_IN_FLIGHT = 4  # IAM calls in flight at once
BUSY_WAIT = 0.5  # seconds a validation waits for a free IAM slot before TokenValidationBusy
IAM_TIMEOUT = 5.0  # seconds one IAM call may take, its wait for the pace included
BUSY_LOG_EVERY = 60.0  # seconds between two WARNINGs about busy refusals


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


class TokenValidationBusy(TransientUpstreamError):
    """Every IAM slot stayed taken for ``busy_wait``: the token was not looked at (503)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=503)


def _expiry(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# A cached answer: the identity (None: not valid), the refusal's message, and until when.
_Entry = tuple[FlexIdentity | None, str, float]


class TwilioTokenValidator:
    def __init__(
        self,
        http: BridgeHttpClient,
        account_sid: str,
        auth: tuple[str, str],
        *,
        clock: Callable[[], float] = time.time,
        margin: float = MARGIN,
        max_cache: float = MAX_CACHE,
        negative_ttl: float = NEGATIVE_TTL,
        max_entries: int = MAX_ENTRIES,
        max_in_flight: int = MAX_IN_FLIGHT,
        busy_wait: float = BUSY_WAIT,
        timeout: float = IAM_TIMEOUT,
    ) -> None:
        if max_in_flight < 1 or max_entries < 1:
            raise ValueError("max_in_flight and max_entries must be at least 1")
        self.http = http
        self.url = IAM_VALIDATE.format(account_sid=account_sid)
        self.auth = auth
        self.clock = clock
        self.margin = margin
        self.max_cache = max_cache
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self.max_in_flight = max_in_flight
        self.busy_wait = busy_wait
        self.timeout = timeout
        self.busy_refusals = 0
        self.in_flight = 0  # IAM calls in flight now
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._flights: dict[str, asyncio.Task[FlexIdentity]] = {}
        self._busy_logged = -BUSY_LOG_EVERY
        self._busy_unlogged = 0

    async def validate(self, token: str) -> FlexIdentity:
        if not token:
            raise AuthenticationError("no Flex token")
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cached(key)
        if cached is not None:
            identity, message, _ = cached
            if identity is None:
                raise AuthenticationError(message)
            return identity
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._ask(token, key))
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        # Shielded: a caller that goes away does not cancel the others' answer.
        return await asyncio.shield(flight)

    def _landed(self, key: str, flight: asyncio.Task[FlexIdentity]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: every caller may have gone away

    def _cached(self, key: str) -> _Entry | None:
        cached = self._cache.get(key)
        if cached is None:
            return None
        if cached[2] <= self.clock():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return cached

    def _remember(self, key: str, entry: _Entry) -> None:
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def _slot(self) -> None:
        """Take an IAM slot, waiting at most ``busy_wait``; else ``TokenValidationBusy``."""
        try:
            async with asyncio.timeout(self.busy_wait):
                await self._slots.acquire()
        except TimeoutError:
            self.busy_refusals += 1
            self._busy_unlogged += 1
            now = time.monotonic()
            if now - self._busy_logged >= BUSY_LOG_EVERY:
                logger.warning(
                    "Flex token validation busy: %d validation(s) refused (%d IAM calls in "
                    "flight, the most allowed)",
                    self._busy_unlogged,
                    self.max_in_flight,
                )
                self._busy_logged, self._busy_unlogged = now, 0
            raise TokenValidationBusy(
                "token validation busy: too many Flex tokens are being checked at once"
            ) from None

    async def _ask(self, token: str, key: str) -> FlexIdentity:
        await self._slot()
        self.in_flight += 1
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    status, body = await self.http.post_json(
                        self.url, {"token": token}, self.auth, timeout=self.timeout
                    )
            except TimeoutError:
                raise TransientUpstreamError("token validation: no answer in time") from None
        finally:
            self.in_flight -= 1
            self._slots.release()
        now = self.clock()
        if 400 <= status < 500:
            # The request was refused (429 and 5xx come as transient errors from below): the
            # caller gets 401, and nothing is cached, as it says nothing sure about the token.
            # Were every token refused so, our own credentials would be the likelier cause,
            # hence the warning.
            logger.warning("Flex token validation refused with HTTP %d", status)
            raise AuthenticationError("the Flex token was refused")
        if status != 200 or not isinstance(body, dict):
            raise UpstreamError(f"token validation answered HTTP {status}", status=status)
        if not body.get("valid"):
            message = str(body.get("message") or "the Flex token is not valid")
            self._remember(key, (None, message, now + self.negative_ttl))
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
            self._remember(key, (identity, "", until))
        return identity
