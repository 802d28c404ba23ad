"""Prometheus metrics, one registry per app (so several apps can live in one process)."""

from __future__ import annotations

import platform
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from flex_bridge import version
from flex_bridge.domain.intents import Intent
from flex_bridge.errors import RateLimitedError


def _counter(registry: CollectorRegistry, name: str, doc: str, *labels: str) -> Counter:
    return Counter(f"flex_bridge_{name}", doc, labels, registry=registry)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.intents = _counter(
            r,
            "intents_total",
            "Intents by op, source and how they settled.",
            "op",
            "source",
            "outcome",
        )
        self.phases = _counter(
            r, "intent_transitions_total", "Journal state transitions of intents.", "op", "state"
        )
        self.upstream = _counter(
            r,
            "upstream_calls_total",
            "Calls to Twilio by system, operation and result.",
            "system",
            "operation",
            "result",
        )
        self.retries = _counter(
            r,
            "upstream_retries_total",
            "Retries of transient upstream failures.",
            "system",
            "reason",
        )
        self.rate_limited = _counter(
            r, "upstream_429_total", "HTTP 429 answers met, by system.", "system"
        )
        self.sync_writes = _counter(
            r, "sync_writes_total", "Sync channel writes by outcome.", "outcome"
        )
        self.webhook_latency = Histogram(
            "flex_bridge_webhook_seconds",
            "Time to answer a webhook or plugin action.",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.webhooks = _counter(
            r, "webhooks_total", "Webhooks received by endpoint and result.", "endpoint", "result"
        )
        self.handler_failures = _counter(
            r,
            "event_handler_failures_total",
            "Event handlers that raised, by event type.",
            "event_type",
        )
        self.escalations = _counter(
            r, "escalations_total", "Tasks escalated after reservation timeouts, by level.", "level"
        )
        self.enrichments = _counter(
            r,
            "enrichments_total",
            "Task enrichments by outcome (ok, partial, failed, skipped).",
            "status",
        )
        self.enricher_results = _counter(
            r,
            "enricher_results_total",
            "Enricher runs by enricher and result (ok, empty, timeout, error).",
            "enricher",
            "status",
        )
        self.in_flight = Gauge(
            "flex_bridge_intents_in_flight", "Intents being driven by this process.", registry=r
        )
        self.ready = Gauge(
            "flex_bridge_ready",
            "1 if the last readiness check of this component passed, else 0 (set by each"
            " /readyz run and by the start-up check).",
            ["check"],
            registry=r,
        )
        self.ready_checked = Gauge(
            "flex_bridge_ready_checked_timestamp_seconds",
            "Unix time at which the readiness checks last ran (0: not yet).",
            registry=r,
        )
        self.build_info = Gauge(
            "flex_bridge_build_info",
            "Always 1: the running flex-bridge's version and Python's.",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(version(), platform.python_version()).set(1)

    def count_step(self, intent: Intent) -> None:
        """A coordinator observer: one more intent reached its journal state."""
        self.phases.labels(intent.op, intent.state).inc()

    def on_retry(self, system: str) -> Callable[[BaseException, float], None]:
        """A retry hook (``adapters.retry.retrying``) that counts retries of ``system``."""

        def record(exc: BaseException, wait: float) -> None:
            limited = isinstance(exc, RateLimitedError)
            self.retries.labels(system, "429" if limited else type(exc).__name__).inc()
            if limited:
                self.rate_limited.labels(system).inc()

        return record

    def render(self) -> bytes:
        return generate_latest(self.registry)
