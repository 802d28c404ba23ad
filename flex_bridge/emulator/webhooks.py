"""Outgoing webhooks: signed form POSTs, as TaskRouter sends them.

Each request carries ``X-Twilio-Signature`` over the full URL and the sorted form parameters
(``twilio.request_validator`` computes it, so the emulator signs exactly as the validator
checks) and an ``I-Twilio-Idempotency-Token`` that stays the same across retries of one
delivery. By default the signature is HMAC-SHA1 with the account's auth token. With shared
keys set (``signing``), it is made with a SharedKey's secret and algorithm instead, and
``X-Twilio-Webhooks-Signature-Settings: key=<id>,algorithm=<algorithm>`` says so, as Twilio
does when a Webhook Rule matches the URL, see
https://www.twilio.com/docs/usage/webhooks/webhook-shared-keys. Two keys model a Rule that
splits traffic between two Settings while a key is rotated: each webhook (each attempt) is
signed with one of them, drawn by their ``percent``.

Event callbacks are sent once: Twilio documents no retry of TaskRouter event callbacks. With
``retry_events`` on, one that fails (a connection error, a timeout, or a 5xx/429 answer) is
retried up to ``event_attempts`` times in all, after 1 s, 2 s, 4 s, ... (real time); a 4xx
answer other than 429 is final.

Once ``close`` has run (the emulator is shutting down) nothing more is sent: a delivery or an
assignment offer still in flight gets an error result instead of a new HTTP session.
"""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from twilio.request_validator import (
    HMAC_SHA1,
    HMAC_SHA256,
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
)

from flex_bridge.emulator.log import RequestLog, mask


@dataclass(frozen=True, slots=True)
class WebhookResult:
    status: int | None
    body: str
    content_type: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


ALGORITHMS = (HMAC_SHA256, HMAC_SHA1)
SIGNING_FIELDS = frozenset({"key", "secret", "algorithm", "percent"})
EVENT_TIMEOUT = 15.0  # seconds an event callback may take to answer


@dataclass(frozen=True, slots=True)
class SharedKey:
    """A webhook-signing SharedKey, as a Webhook Setting names it with its algorithm."""

    key: str  # the SharedKey's id (``webhooks_sharedkey_...``)
    secret: str
    algorithm: str = HMAC_SHA256
    percent: float = 100.0  # the share of webhooks it signs, when two keys are set

    def describe(self) -> dict[str, Any]:
        """The key without its secret."""
        return {"key": self.key, "algorithm": self.algorithm, "percent": self.percent}


def parse_signing(raw: Any) -> tuple[SharedKey, ...]:
    """Shared keys from their JSON form: null (sign with the auth token), one object
    ``{"key", "secret", "algorithm"}``, or a list of one or two such objects with a
    ``percent`` each (adding up to 100; equal shares when left out). ``ValueError`` names
    what is wrong."""
    if raw is None:
        return ()
    entries = raw if isinstance(raw, list) else [raw]
    if not 1 <= len(entries) <= 2:
        raise ValueError("webhook_signing must be null, one shared key or a list of one or two")
    keys = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError('each shared key must be an object {"key", "secret", "algorithm"}')
        unknown = set(entry) - SIGNING_FIELDS
        if unknown:
            raise ValueError(f"unknown shared key field(s): {', '.join(sorted(unknown))}")
        key, secret = entry.get("key"), entry.get("secret")
        algorithm = entry.get("algorithm", HMAC_SHA256)
        percent = entry.get("percent", 100 / len(entries))
        if not isinstance(key, str) or not key or not isinstance(secret, str) or not secret:
            raise ValueError("a shared key needs a non-empty key (its id) and secret")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise ValueError("percent must be a number")
        if not 0 <= percent <= 100:
            raise ValueError("percent must be between 0 and 100")
        keys.append(SharedKey(key, secret, algorithm, float(percent)))
    if not math.isclose(sum(k.percent for k in keys), 100):
        raise ValueError("the percents of the shared keys must add up to 100")
    return tuple(keys)


class WebhookSender:
    def __init__(
        self,
        auth_token: str,
        log: RequestLog,
        *,
        retry_events: bool = False,
        event_attempts: int = 3,
        retry_base: float = 1.0,
        signing: tuple[SharedKey, ...] = (),
    ) -> None:
        self.validator = RequestValidator(auth_token)
        self.log = log
        self.retry_events = retry_events
        self.event_attempts = event_attempts
        self.retry_base = retry_base
        self.signing = signing
        self._rng = random.Random(0)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the webhook sender is closed")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, force_close=False)
            )
        return self._session

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def signature_headers(self, url: str, params: Mapping[str, str]) -> dict[str, str]:
        """``X-Twilio-Signature``, and with a shared key the header naming it."""
        key = self._shared_key()
        if key is None:
            return {SIGNATURE_HEADER: self.validator.compute_signature(url, dict(params))}
        signature = RequestValidator(key.secret).compute_signature(url, dict(params), key.algorithm)
        return {
            SIGNATURE_HEADER: signature,
            SIGNATURE_SETTINGS_HEADER: f"key={key.key},algorithm={key.algorithm}",
        }

    def _shared_key(self) -> SharedKey | None:
        if not self.signing:
            return None
        draw = self._rng.uniform(0, 100)
        for key in self.signing:
            if draw < key.percent:
                return key
            draw -= key.percent
        return self.signing[-1]

    async def post(
        self,
        kind: str,
        url: str,
        params: Mapping[str, str],
        *,
        timeout: float,
        idempotency_token: str | None = None,
        attempt: int = 1,
    ) -> WebhookResult:
        headers = {
            **self.signature_headers(url, params),
            "I-Twilio-Idempotency-Token": idempotency_token or uuid.uuid4().hex,
            "User-Agent": "TwilioProxy/1.1 (flex-bridge emulator)",
        }
        result: WebhookResult
        if self._closed:
            # Shutting down: say so in the log rather than open a session nobody will close.
            result = WebhookResult(None, "", "", error="not sent: the emulator is shutting down")
            self._record(kind, url, params, result, attempt, headers)
            return result
        try:
            async with self.session().post(
                url,
                data=dict(params),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                body = await response.text()
                result = WebhookResult(
                    response.status, body, response.headers.get("Content-Type", "")
                )
        except TimeoutError:
            result = WebhookResult(None, "", "", error=f"no answer within {timeout:g} s")
        except aiohttp.ClientError as exc:
            result = WebhookResult(None, "", "", error=f"{type(exc).__name__}: {exc}")
        self._record(kind, url, params, result, attempt, headers)
        return result

    def _record(
        self,
        kind: str,
        url: str,
        params: Mapping[str, str],
        result: WebhookResult,
        attempt: int,
        headers: Mapping[str, str],
    ) -> None:
        self.log.append(
            "webhook",
            webhook=kind,
            url=url,
            params=mask(dict(params)),
            status=result.status,
            error=result.error,
            attempt=attempt,
            idempotency_token=headers["I-Twilio-Idempotency-Token"],
            signature_settings=headers.get(SIGNATURE_SETTINGS_HEADER),
        )

    def send_event(self, url: str, params: Mapping[str, str]) -> None:
        """Deliver an event callback in the background: once, or with the retry rule above."""
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._deliver_event(url, dict(params)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_event(self, url: str, params: dict[str, str]) -> None:
        token = uuid.uuid4().hex
        attempts = self.event_attempts if self.retry_events else 1
        for attempt in range(1, attempts + 1):
            result = await self.post(
                "event",
                url,
                params,
                timeout=EVENT_TIMEOUT,
                idempotency_token=token,
                attempt=attempt,
            )
            final = result.ok or (
                result.status is not None and 400 <= result.status < 500 and result.status != 429
            )
            if final or attempt == attempts:
                return
            await asyncio.sleep(self.retry_base * 2 ** (attempt - 1))
