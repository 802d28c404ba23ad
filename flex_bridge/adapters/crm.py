"""The built-in HTTP CRM enricher: look the customer up by a task attribute, file the answer.

::

    [[enrichment.enrichers]]
    name = "crm"
    factory = "flex_bridge.adapters.crm:http_crm"
    timeout = 2.0
    options = { url = "https://crm.example.com/customers", keys = ["customer_id", "from"] }

Options:

- ``url`` (required): an ``http`` or ``https`` URL;
- ``keys`` (required): attribute names to look up by; the first one the task has (a string
  or a number) is sent;
- ``target`` (default ``"crm"``): the attribute the answer is put under;
- ``method`` (default ``"GET"``): ``GET`` sends ``?<key>=<value>``, ``POST`` sends the JSON
  ``{"<key>": <value>}``;
- ``timeout`` (default 1.0): seconds per request; ``retries`` (default 2): transient retries;
- ``headers`` (optional): a table of extra request headers (an API key, say).

The answer: 200 with a JSON object → ``{target: answer}``; 404 → ``{}`` (an unknown customer
is not an error); 429, 5xx, timeouts and connection failures are retried (honouring a 429's
``Retry-After``), then raised as ``TransientUpstreamError``; any other status, or a body that
is not a JSON object, raises ``UpstreamError``/``RejectedError``. A task that already has
``target`` is not looked up again (``{}``): enriching twice (on ``task.created`` and before an
accept) costs one request.

Nothing here logs or puts in an error message the looked-up value, the URL with its query or
the headers: they are a customer's phone number or an API key. aiohttp's own exceptions, whose
messages carry the URL, are replaced, not chained.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from flex_bridge.adapters.http import parse_retry_after
from flex_bridge.adapters.retry import RetryPolicy, retrying
from flex_bridge.domain.attributes import parse_json_object
from flex_bridge.domain.enrichment import TaskContext
from flex_bridge.domain.types import JSON
from flex_bridge.errors import (
    ConfigError,
    FlexBridgeError,
    RateLimitedError,
    RejectedError,
    TransientUpstreamError,
    UpstreamError,
)

OPTIONS: Final = frozenset({"url", "keys", "target", "method", "timeout", "retries", "headers"})
MAX_BODY: Final = 64 * 1024  # an answer must fit in 4,096 characters of attributes anyway


@dataclass(eq=False, repr=False, kw_only=True)
class HttpCrm:
    """The enricher ``http_crm`` builds. Its session is made on first use, inside the loop."""

    url: str
    keys: tuple[str, ...]
    target: str = "crm"
    method: str = "GET"
    timeout: float = 1.0
    retries: int = 2
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.headers = dict(self.headers)
        self.policy = RetryPolicy(
            max_attempts=self.retries + 1,
            base=0.05,
            cap=0.5,
            max_rate_limited=self.retries + 1,
            attempt_margin=self.timeout,
            until_deadline=False,
        )
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # no headers: they may hold an API key
        parts = urlsplit(self.url)
        return f"HttpCrm({parts.scheme}://{parts.netloc}{parts.path}, target={self.target!r})"

    def lookup(self, attributes: Mapping[str, Any]) -> tuple[str, str | int | float] | None:
        """The first configured key the attributes have, with its value (None: nothing)."""
        for key in self.keys:
            value = attributes.get(key)
            if isinstance(value, str) and value:
                return key, value
            if isinstance(value, int | float) and not isinstance(value, bool):
                return key, value
        return None

    async def __call__(self, context: TaskContext) -> JSON:
        if self.target in context.attributes:
            return {}  # enriched before: no second lookup
        found = self.lookup(context.attributes)
        if found is None:
            return {}
        key, value = found
        # Bounded overall too: a retry whose wait would end past this is not started.
        deadline = time.time() + self.timeout * (self.retries + 1) + self.policy.cap * self.retries
        answer = await retrying(lambda: self._ask(key, value), self.policy, deadline=deadline)
        return {} if answer is None else {self.target: answer}

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers=self.headers,
            )
        return self._session

    async def _ask(self, key: str, value: str | int | float) -> JSON | None:
        session = self._client()
        if self.method == "GET":
            request = session.get(self.url, params={key: str(value)})
        else:
            request = session.post(self.url, json={key: value})
        try:
            async with request as response:
                status = response.status
                if status == 404 or status == 204:
                    return None
                if status == 429:
                    raise RateLimitedError(
                        "the CRM answered 429",
                        retry_after=parse_retry_after(response.headers.get("Retry-After")),
                    )
                if status >= 500:
                    raise TransientUpstreamError(f"the CRM answered {status}", status=status)
                if status != 200:
                    raise RejectedError(f"the CRM answered {status}", status=status)
                body = bytearray()
                async for chunk in response.content.iter_chunked(16 * 1024):
                    body += chunk
                    if len(body) > MAX_BODY:
                        raise UpstreamError(
                            f"the CRM's answer is larger than {MAX_BODY} bytes", status=200
                        )
        except FlexBridgeError:
            raise
        except TimeoutError:
            raise TransientUpstreamError(
                f"the CRM did not answer within {self.timeout:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise TransientUpstreamError(
                f"the CRM could not be reached ({type(exc).__name__})"
            ) from None
        try:
            return parse_json_object(bytes(body), what="the CRM's answer")
        except FlexBridgeError as exc:
            raise UpstreamError(str(exc), status=200) from None


# ------------------------------------------------------------------------------ the factory
def _number(options: Mapping[str, Any], key: str, default: float, minimum: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"http_crm option {key!r} must be a number")
    if value < minimum:
        raise ConfigError(f"http_crm option {key!r} must be at least {minimum:g}")
    return float(value)


def http_crm(options: Mapping[str, Any]) -> HttpCrm:
    """Build the HTTP CRM enricher; ``ConfigError`` names the option that is wrong."""
    if not isinstance(options, Mapping):
        raise ConfigError("http_crm options must be a table")
    unknown = set(options) - OPTIONS
    if unknown:
        raise ConfigError(f"http_crm: unknown option(s) {', '.join(sorted(unknown))}")

    url = options.get("url")
    if not isinstance(url, str) or not url:
        raise ConfigError("http_crm option 'url' is required (an http or https URL)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("http_crm option 'url' must be an http or https URL")

    keys = options.get("keys")
    if (
        not isinstance(keys, list | tuple)
        or not keys
        or not all(isinstance(k, str) and k for k in keys)
    ):
        raise ConfigError("http_crm option 'keys' must be a non-empty list of attribute names")

    target = options.get("target", "crm")
    if not isinstance(target, str) or not target:
        raise ConfigError("http_crm option 'target' must be a non-empty string")

    method = options.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
        raise ConfigError("http_crm option 'method' must be 'GET' or 'POST'")

    retries = options.get("retries", 2)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
        raise ConfigError("http_crm option 'retries' must be an integer from 0 to 10")

    headers = options.get("headers", {})
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigError("http_crm option 'headers' must be a table of strings")

    timeout = _number(options, "timeout", 1.0, 0.001)
    return HttpCrm(
        url=url,
        keys=tuple(keys),
        target=target,
        method=method.upper(),
        timeout=timeout,
        retries=retries,
        headers=headers,
    )


__all__ = ["HttpCrm", "http_crm"]
