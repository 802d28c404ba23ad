"""The HTTP client under the official ``twilio`` package.

It does three things the package's own ``AsyncTwilioHttpClient`` does not:

- **base-URL rewrite**: with ``FLEX_BRIDGE_TWILIO_BASE_URL=http://host:port`` every request
  for ``https://<product>.twilio.com/v1/...`` goes to ``http://host:port/<product>/v1/...``
  (the emulator's address scheme); unset, requests go to Twilio unchanged;
- **a real timeout** on every request (the package ignores its own ``timeout=``);
- **no retries** of its own (the package's ``max_retries`` would resend POSTs on 5xx):
  retry policy lives in one place, ``adapters/retry``;
- **adaptive pacing** (``adapters/pacing``): requests to each limit (TaskRouter, each Sync
  object) leave at a pace learnt from the 429s met, so a burst turns into useful work rather
  than a storm of 429s.

Transport failures and the retryable statuses are translated here, because only here are
the response headers (``Retry-After``) still at hand:

- a refused connection is transient (nothing was sent);
- 429 is transient: Twilio did not process the request (``RateLimitedError`` carries
  ``Retry-After``);
- a 5xx, a timeout or a dropped connection after the request went out is transient for a read
  and **ambiguous** for a write: the change may have happened, and only a fetch can tell.

Other 4xx answers are left to the ``twilio`` package, which raises ``TwilioRestException``;
the product adapters translate those.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response

from flex_bridge.adapters.pacing import Pacing
from flex_bridge.adapters.retry import current_deadline
from flex_bridge.errors import AmbiguousOutcomeError, RateLimitedError, TransientUpstreamError

DEFAULT_TIMEOUT = 10.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def rewrite_url(url: str, base_url: str | None) -> str:
    """Map ``https://<product>.twilio.com/<path>`` to ``<base_url>/<product>/<path>``."""
    if not base_url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host.endswith(".twilio.com"):
        return url
    product = host.split(".", 1)[0]
    base = urlsplit(base_url.rstrip("/"))
    return urlunsplit(
        (base.scheme, base.netloc, f"{base.path}/{product}{parts.path}", parts.query, "")
    )


def _code(text: str) -> int | None:
    """Twilio's error code from an error body, if there is one."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) else None


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds, or None (absent, an HTTP date, or not finite)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare from Twilio; fall back to our own backoff
    if not math.isfinite(seconds):
        return None  # "inf" would stop retries (or wait forever without a deadline)
    return max(0.0, seconds)


class BridgeHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """An ``AsyncTwilioHttpClient`` with the rewrite, a timeout and no retries.

    Build it inside a running event loop and ``await close()`` it on shutdown.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connections: int = 100,
        pacing: bool = True,
    ) -> None:
        super().__init__(pool_connections=False, timeout=timeout)
        self.pacing = Pacing() if pacing else None
        self.base_url = base_url
        self.request_timeout = timeout
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections))

    async def request(
        self,
        method: str,
        url: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        method = method.upper()
        status, text, answer_headers = await self._send(
            method,
            url,
            safe=method in SAFE_METHODS,
            auth=auth,
            headers=headers,
            timeout=timeout,
            params=params,
            data=data,
            allow_redirects=allow_redirects,
        )
        return Response(status, text, answer_headers)

    async def post_json(
        self, url: str, body: Mapping[str, Any], auth: tuple[str, str], timeout: float | None = None
    ) -> tuple[int, Any]:
        """POST a JSON body (the IAM token endpoint takes JSON, which the package cannot send).

        Validating a token changes nothing, so every failure here is safe to retry."""
        status, text, _ = await self._send(
            "POST", url, safe=True, auth=auth, timeout=timeout, json=dict(body)
        )
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, None

    async def _send(
        self,
        method: str,
        url: str,
        *,
        safe: bool,
        auth: tuple[str, str] | None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> tuple[int, str, Any]:
        """One request, with every failure translated (see the module docstring)."""
        sent_headers = dict(headers or {})
        if auth:
            sent_headers["Authorization"] = aiohttp.encode_basic_auth(auth[0], auth[1])
        where = f"{method} {urlsplit(url).path}"
        pace = self.pacing.pace(url) if self.pacing is not None else None
        deadline = current_deadline()
        within = None if deadline is None else deadline - time.time()
        sent_at = await pace.acquire(within) if pace is not None else None
        try:
            async with self.session.request(
                method,
                rewrite_url(url, self.base_url),
                headers=sent_headers,
                timeout=aiohttp.ClientTimeout(total=timeout or self.request_timeout),
                **kwargs,
            ) as response:
                text = await response.text()
                status, answer_headers = response.status, response.headers
        except aiohttp.ClientConnectorError as exc:
            raise TransientUpstreamError(f"{where}: cannot connect ({exc.os_error})") from exc
        except TimeoutError as exc:
            raise self._lost(safe, where, "no answer in time") from exc
        except aiohttp.ClientError as exc:
            raise self._lost(safe, where, f"connection lost ({type(exc).__name__})") from exc
        if status == 429:
            retry_after = parse_retry_after(answer_headers.get("Retry-After"))
            if pace is not None:
                pace.throttled(retry_after, sent_at)
            raise RateLimitedError(
                f"{where}: rate limited", code=_code(text), retry_after=retry_after
            )
        if pace is not None:
            pace.succeeded()
        if status >= 500:
            if safe:
                raise TransientUpstreamError(
                    f"{where}: HTTP {status}", status=status, code=_code(text)
                )
            raise AmbiguousOutcomeError(
                f"{where}: HTTP {status}; the change may have been applied",
                status=status,
                code=_code(text),
            )
        return status, text, answer_headers

    @staticmethod
    def _lost(safe: bool, where: str, what: str) -> Exception:
        if safe:
            return TransientUpstreamError(f"{where}: {what}")
        return AmbiguousOutcomeError(f"{where}: {what}; the change may have been applied")

    async def close(self) -> None:
        await self.session.close()
