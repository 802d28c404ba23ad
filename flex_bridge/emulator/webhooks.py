"""Outgoing webhooks: signed form POSTs, as TaskRouter sends them.

Each request carries ``X-Twilio-Signature`` computed with the account's auth token over the
full URL and the sorted form parameters (``twilio.request_validator`` computes it, so the
emulator signs exactly as the validator checks) and an ``I-Twilio-Idempotency-Token`` that
stays the same across retries of one delivery.

Event callbacks that fail (a connection error, a timeout, or a 5xx/429 answer) are retried up
to ``event_attempts`` times in all, after 1 s, 2 s, 4 s, ... (emulator real time). A 4xx
answer other than 429 is final: Twilio does not retry a callback the receiver refused.

Once ``close`` has run (the emulator is shutting down) nothing more is sent: a delivery or an
assignment offer still in flight gets an error result instead of a new HTTP session.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from twilio.request_validator import RequestValidator

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


class WebhookSender:
    def __init__(
        self,
        auth_token: str,
        log: RequestLog,
        *,
        event_timeout: float = 15.0,
        event_attempts: int = 3,
        retry_base: float = 1.0,
    ) -> None:
        self.validator = RequestValidator(auth_token)
        self.log = log
        self.event_timeout = event_timeout
        self.event_attempts = event_attempts
        self.retry_base = retry_base
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
        signature = self.validator.compute_signature(url, dict(params))
        headers = {
            "X-Twilio-Signature": signature,
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
        )

    def send_event(self, url: str, params: Mapping[str, str]) -> None:
        """Deliver an event callback in the background, with the retry rule above."""
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._deliver_event(url, dict(params)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_event(self, url: str, params: dict[str, str]) -> None:
        token = uuid.uuid4().hex
        for attempt in range(1, self.event_attempts + 1):
            result = await self.post(
                "event",
                url,
                params,
                timeout=self.event_timeout,
                idempotency_token=token,
                attempt=attempt,
            )
            final = result.ok or (
                result.status is not None and 400 <= result.status < 500 and result.status != 429
            )
            if final or attempt == self.event_attempts:
                return
            await asyncio.sleep(self.retry_base * 2 ** (attempt - 1))
