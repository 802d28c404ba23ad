"""Fault injection: latency, error answers, rate limits and responses lost after commit.

Rules are matched in order against each REST request (product, method and a regular
expression on the path below ``/v1``). Every matching rule contributes: latencies add up, and
the first rule that draws an error decides the answer. Draws come from one ``random.Random``
seeded by the caller, so a run with the same seed and the same request order injects the same
faults.

Injected errors are 429, 500 and 503 on any product (Twilio unavailable or busy), and on IAM
token validation also 400, 401 and 403 (the request or the credentials refused), each in
Twilio's error shape with its code (:func:`fault_error`).
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

from flex_bridge.emulator.api import ApiError
from flex_bridge.emulator.ratelimit import TokenBucket

ERROR_STATUSES = (429, 500, 503)
# Refusals that only IAM token validation can be made to answer: a bad request, bad
# credentials (20003, https://www.twilio.com/docs/errors/20003) and a forbidden account
# (20403, https://www.twilio.com/docs/api/errors/20403).
IAM_REFUSALS = (400, 401, 403)
LOSE_MODES = ("drop", "504")
FAULT_ERRORS: dict[int, tuple[int, str]] = {
    400: (20001, "Bad Request: the token validation request was refused"),
    401: (20003, "Authentication Error - invalid username or password"),
    403: (20403, "403 Forbidden: the account may not access this resource"),
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    503: (20503, "Service Unavailable"),
    504: (20504, "Gateway Timeout: the request was applied but its response was lost"),
}


def fault_error(status: int, retry_after: float | None = None) -> ApiError:
    """The answer of an injected error: Twilio's code and message for the status, with
    ``Retry-After`` (whole seconds, rounded up, at least 1) when given, and the
    ``WWW-Authenticate`` challenge on a 401 as Twilio sends it."""
    code, message = FAULT_ERRORS[status]
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after + 0.499)))
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
    return ApiError(status, code, message, headers)


class FaultSpecError(ValueError):
    """A fault rule that does not make sense; the message names the field."""


@dataclass(slots=True)
class FaultRule:
    product: str | None = None
    method: str | None = None
    path: re.Pattern[str] | None = None
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rates: dict[int, float] = field(default_factory=dict)
    retry_after: float = 1.0
    rate_limit_rps: float | None = None
    lose_after_commit: float = 0.0
    lose_mode: str = "drop"
    remaining: int | None = None
    bucket: TokenBucket | None = None
    hits: int = 0

    def matches(self, product: str, method: str, path: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.product is not None and self.product != product:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path is None or self.path.search(path) is not None

    def describe(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "method": self.method,
            "path": self.path.pattern if self.path else None,
            "latency_ms": self.latency_ms,
            "jitter_ms": self.jitter_ms,
            "error_rates": {str(k): v for k, v in self.error_rates.items()},
            "retry_after": self.retry_after,
            "rate_limit_rps": self.rate_limit_rps,
            "lose_after_commit": self.lose_after_commit,
            "lose_mode": self.lose_mode,
            "remaining": self.remaining,
            "hits": self.hits,
        }


def _probability(raw: Any, name: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw <= 1:
        raise FaultSpecError(f"{name} must be a probability between 0 and 1")
    return float(raw)


def _non_negative(raw: Any, name: str, limit: float = 3600.0) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw <= limit:
        raise FaultSpecError(f"{name} must be a number between 0 and {limit:g}")
    return float(raw)


KNOWN_KEYS = {
    "product",
    "method",
    "path",
    "latency_ms",
    "jitter_ms",
    "error_rates",
    "retry_after",
    "rate_limit_rps",
    "lose_after_commit",
    "lose_mode",
    "count",
}


def parse_rule(raw: Any) -> FaultRule:
    """Build a rule from its JSON form (see docs/emulator.md)."""
    if not isinstance(raw, dict):
        raise FaultSpecError("each rule must be a JSON object")
    unknown = set(raw) - KNOWN_KEYS
    if unknown:
        raise FaultSpecError(f"unknown rule field(s): {', '.join(sorted(unknown))}")
    rule = FaultRule()
    product = raw.get("product")
    if product is not None and product not in ("taskrouter", "sync", "iam"):
        raise FaultSpecError("product must be taskrouter, sync or iam")
    rule.product = product
    method = raw.get("method")
    if method is not None:
        if not isinstance(method, str) or method.upper() not in ("GET", "POST", "DELETE"):
            raise FaultSpecError("method must be GET, POST or DELETE")
        rule.method = method.upper()
    path = raw.get("path")
    if path is not None:
        if not isinstance(path, str):
            raise FaultSpecError("path must be a regular expression string")
        try:
            rule.path = re.compile(path)
        except re.error as exc:
            raise FaultSpecError(f"path is not a valid regular expression: {exc}") from exc
    rule.latency_ms = _non_negative(raw.get("latency_ms", 0), "latency_ms", 600_000)
    rule.jitter_ms = _non_negative(raw.get("jitter_ms", 0), "jitter_ms", 600_000)
    rates = raw.get("error_rates", {})
    if not isinstance(rates, dict):
        raise FaultSpecError("error_rates must map a status (429, 500, 503) to a probability")
    allowed = ERROR_STATUSES if product != "iam" else IAM_REFUSALS + ERROR_STATUSES
    for status, p in rates.items():
        if str(status) not in {str(s) for s in allowed}:
            names = ", ".join(map(str, allowed))
            hint = "" if product == "iam" else " (400, 401 and 403 need product iam)"
            raise FaultSpecError(f"error_rates: status {status} is not one of {names}{hint}")
        rule.error_rates[int(status)] = _probability(p, f"error_rates[{status}]")
    if sum(rule.error_rates.values()) > 1:
        raise FaultSpecError("error_rates must add up to at most 1")
    rule.retry_after = _non_negative(raw.get("retry_after", 1), "retry_after")
    rps = raw.get("rate_limit_rps")
    if rps is not None:
        rule.rate_limit_rps = _non_negative(rps, "rate_limit_rps", 1_000_000)
        if rule.rate_limit_rps <= 0:
            raise FaultSpecError("rate_limit_rps must be positive")
        rule.bucket = TokenBucket.full(
            rule.rate_limit_rps, max(1.0, rule.rate_limit_rps), time.monotonic()
        )
    rule.lose_after_commit = _probability(raw.get("lose_after_commit", 0), "lose_after_commit")
    mode = raw.get("lose_mode", "drop")
    if mode not in LOSE_MODES:
        raise FaultSpecError("lose_mode must be 'drop' or '504'")
    rule.lose_mode = mode
    count = raw.get("count")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise FaultSpecError("count must be a positive integer")
        rule.remaining = count
    return rule


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do to one request."""

    latency: float = 0.0
    error_status: int | None = None
    retry_after: float | None = None
    lose_mode: str | None = None
    rate_limited: bool = False

    @property
    def injects(self) -> bool:
        return self.error_status is not None or self.lose_mode is not None


NO_FAULT = Decision()


class Faults:
    def __init__(self, seed: int = 0) -> None:
        self.rules: list[FaultRule] = []
        self.seed = seed
        self.rng = random.Random(seed)
        self.injected: dict[str, int] = {}

    def configure(self, rules: list[FaultRule], seed: int | None = None) -> None:
        self.rules = rules
        if seed is not None:
            self.seed = seed
        self.rng = random.Random(self.seed)
        self.injected = {}

    def clear(self) -> None:
        """Remove every rule. The counts of injected faults stay readable until the next
        ``configure``, which starts them again from zero."""
        self.rules = []

    def count(self, key: str) -> None:
        self.injected[key] = self.injected.get(key, 0) + 1

    def decide(self, product: str, method: str, path: str) -> Decision:
        if not self.rules:
            return NO_FAULT
        latency = 0.0
        error_status: int | None = None
        retry_after: float | None = None
        lose_mode: str | None = None
        rate_limited = False
        for rule in self.rules:
            if not rule.matches(product, method, path):
                continue
            rule.hits += 1
            if rule.remaining is not None:
                rule.remaining -= 1
            latency += rule.latency_ms / 1000
            if rule.jitter_ms:
                latency += self.rng.uniform(0, rule.jitter_ms) / 1000
            if error_status is None and rule.bucket is not None:
                wait = rule.bucket.take(time.monotonic())
                if wait > 0:
                    error_status, retry_after, rate_limited = 429, wait, True
            if error_status is None and rule.error_rates:
                draw = self.rng.random()
                for status, p in sorted(rule.error_rates.items()):
                    if draw < p:
                        error_status = status
                        retry_after = rule.retry_after if status == 429 else None
                        break
                    draw -= p
            if (
                error_status is None
                and lose_mode is None
                and rule.lose_after_commit
                and self.rng.random() < rule.lose_after_commit
            ):
                lose_mode = rule.lose_mode
        decision = Decision(latency, error_status, retry_after, lose_mode, rate_limited)
        if error_status is not None:
            self.count("rate_limit" if rate_limited else str(error_status))
        # A lost response is counted when it is lost: only a request that was applied is.
        return decision

    def describe(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rules": [r.describe() for r in self.rules],
            "injected": dict(self.injected),
        }
