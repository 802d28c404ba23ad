"""The enricher plug-in API: what an enricher is given and what an enrichment run reports.

An enricher is an async callable ``enricher(context: TaskContext) -> merge patch``, built once
by a factory ``factory(options) -> enricher`` named in the policy file. ``flex_bridge.app.
enrichment`` runs them; these plain values are all an enricher's author needs to import.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from flex_bridge.domain.types import JSON

EnricherStatus = Literal["ok", "empty", "timeout", "error"]
OutcomeStatus = Literal["ok", "partial", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What an enricher sees: the task's attributes (its own copy) and who it is for."""

    task_sid: str
    attributes: JSON
    reservation_sid: str | None = None
    worker_sid: str | None = None


Enricher = Callable[[TaskContext], Awaitable[JSON]]
EnricherFactory = Callable[[JSON], Enricher]


@dataclass(frozen=True, slots=True)
class EnricherResult:
    name: str
    status: EnricherStatus
    message: str | None = None


@dataclass(frozen=True, slots=True)
class EnrichmentOutcome:
    """``ok``: every enricher answered (possibly with nothing) and the result is written.
    ``partial``: some timed out or failed, the others' data is written.
    ``failed``: nothing was written (every enricher failed, or the task could not be read or
    written, or the budget ran out). ``skipped``: no enrichers are configured.
    """

    status: OutcomeStatus
    results: tuple[EnricherResult, ...] = ()
    patched: bool = False
    message: str | None = None

    def to_json(self) -> JSON:
        return {"status": self.status, "enrichers": {r.name: r.status for r in self.results}}
