"""The Sync channel contract: ``sync/schema/*.json`` and what ``channel_item()`` writes."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from flex_bridge.domain.intents import ErrorInfo, Intent, channel_item
from flex_bridge.domain.types import SOURCES
from tests.support.intents import make_intent

SCHEMA_DIR = Path(__file__).parents[1] / "sync/schema"
ITEM_SCHEMA = SCHEMA_DIR / "item.v1.json"
MAP_SCHEMA = SCHEMA_DIR / "map.v1.json"

WT = "WT" + "0123456789abcdef" * 2
WR = "WR" + "fedcba9876543210" * 2
WK = "WK" + "00112233445566778899aabbccddeeff"
T0 = 1_714_566_896.789  # 2024-05-01T12:34:56.789Z


@cache
def load(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def item_validator() -> Draft202012Validator:
    return Draft202012Validator(load(ITEM_SCHEMA))


def map_validator() -> Draft202012Validator:
    item = load(ITEM_SCHEMA)
    registry: Registry[Any] = Registry().with_resource(item["$id"], Resource.from_contents(item))
    return Draft202012Validator(load(MAP_SCHEMA), registry=registry)


def errors(item: Any) -> list[str]:
    return [e.message for e in item_validator().iter_errors(item)]


def intent(**changes: Any) -> Intent:
    return make_intent(
        at=T0, reservation_sid=WR, task_sid=WT, worker_sid=WK, **{"state": "announced", **changes}
    )


PENDING = intent()
APPLIED = intent(state="settled", reservation_status="accepted", updated_at=T0 + 0.25)
FAILED = intent(
    state="settled",
    reservation_status="timeout",
    error=ErrorInfo(20001, "The reservation timed out before it could be accepted"),
    updated_at=T0 + 1,
)


@pytest.mark.parametrize("path", [ITEM_SCHEMA, MAP_SCHEMA], ids=lambda p: p.name)
def test_schema_is_valid_draft_2020_12(path: Path) -> None:
    schema = load(path)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://flex-bridge.dev/sync/schema/{path.name}"


def test_schema_requires_exactly_the_keys_channel_item_writes() -> None:
    schema = load(ITEM_SCHEMA)
    written = list(channel_item(PENDING, T0))
    assert schema["required"] == written
    # The only optional key: the enrichment outcome, written when enrichers ran.
    assert list(schema["properties"]) == [*written, "enrichment"]
    assert schema["additionalProperties"] is False


def test_an_item_with_an_enrichment_outcome_validates() -> None:
    enriched = PENDING.evolve(
        extra={"enrichment": {"status": "partial", "enrichers": {"crm": "timeout"}}}
    )
    item = channel_item(enriched, T0)
    assert item["enrichment"] == {"status": "partial", "enrichers": {"crm": "timeout"}}
    validator = Draft202012Validator(load(ITEM_SCHEMA))
    assert list(validator.iter_errors(item)) == []
    bad = {**item, "enrichment": {"status": "meh", "enrichers": {}}}
    assert list(validator.iter_errors(bad)) != []


@pytest.mark.parametrize(
    ("the_intent", "phase"),
    [(PENDING, "pending"), (APPLIED, "applied"), (FAILED, "failed")],
    ids=["pending", "applied", "failed"],
)
def test_channel_item_validates(the_intent: Intent, phase: str) -> None:
    item = channel_item(the_intent, the_intent.updated_at)
    assert item["phase"] == phase
    assert errors(item) == []
    # The item is what goes over the wire: it must survive a JSON round trip unchanged.
    assert json.loads(json.dumps(item)) == item


def test_channel_item_timestamps() -> None:
    item = channel_item(FAILED, T0 + 1)
    assert item["requested_at"] == "2024-05-01T12:34:56.789Z"
    assert item["updated_at"] == "2024-05-01T12:34:57.789Z"


@pytest.mark.parametrize("state", ["recorded", "announced", "instructed"])
def test_every_unsettled_state_writes_a_valid_pending_item(state: str) -> None:
    item = channel_item(intent(state=state), T0)
    assert item["phase"] == "pending"
    assert errors(item) == []


@pytest.mark.parametrize(
    "the_intent",
    [
        intent(op=op, source=source)
        for op in ("reject", "redirect", "conference", "dequeue", "call", "wrapup", "complete")
        for source in SOURCES
    ],
    ids=lambda i: f"{i.op}-{i.source}",
)
def test_every_op_and_source_validates(the_intent: Intent) -> None:
    assert errors(channel_item(the_intent, T0)) == []


def test_failed_item_with_unknown_code_validates() -> None:
    failed = intent(state="refused", error=ErrorInfo(None, "Deadline passed"))
    assert errors(channel_item(failed, T0)) == []


def good() -> dict[str, Any]:
    return channel_item(FAILED, T0 + 1)


def without(key: str) -> dict[str, Any]:
    item = good()
    del item[key]
    return item


def with_(**changes: Any) -> dict[str, Any]:
    return {**good(), **changes}


BAD_ITEMS: dict[str, Any] = {
    "missing key": without("reservation_status"),
    "missing error": without("error"),
    "extra key": with_(note="hi"),
    "version 2": with_(v=2),
    "bad phase": with_(phase="settled"),
    "bad op": with_(op="supervise"),
    "bad source": with_(source="supervisor"),
    "pending with an error": with_(phase="pending"),
    "applied with an error": with_(phase="applied"),
    "failed without an error": with_(error=None),
    "error with an extra key": with_(error={"code": 20001, "message": "x", "status": 400}),
    "error without a code": with_(error={"message": "x"}),
    "error with a string code": with_(error={"code": "20001", "message": "x"}),
    "error with an empty message": with_(error={"code": 20001, "message": ""}),
    "bad intent_id prefix": with_(intent_id="it_" + "0" * 22),
    "short intent_id": with_(intent_id="in_" + "0" * 21),
    "uppercase intent_id": with_(intent_id="in_" + "A" * 22),
    "task sid as reservation sid": with_(reservation_sid=WT),
    "short worker sid": with_(worker_sid=WK[:-1]),
    "non-hex task sid": with_(task_sid="WT" + "g" * 32),
    "bad reservation status": with_(reservation_status="assigned"),
    "timestamp without millis": with_(updated_at="2024-05-01T12:34:57Z"),
    "timestamp with offset": with_(requested_at="2024-05-01T12:34:56.789+00:00"),
    "epoch timestamp": with_(requested_at=T0),
    "not an object": [],
}


@pytest.mark.parametrize("item", BAD_ITEMS.values(), ids=BAD_ITEMS.keys())
def test_bad_item_is_rejected(item: Any) -> None:
    assert errors(item) != []


def test_map_snapshot_validates() -> None:
    items = {WR: channel_item(APPLIED, T0 + 0.25)}
    snapshot = {"unique_name": f"flex-bridge.worker.{WK}", "items": items}
    assert list(map_validator().iter_errors(snapshot)) == []


@pytest.mark.parametrize(
    "snapshot",
    [
        {"unique_name": f"flex-bridge.worker.{WR}", "items": {}},
        {"unique_name": f"flex-bridge-worker-{WK}", "items": {}},
        {"unique_name": f"flex-bridge.worker.{WK}", "items": {WT: {}}},
        {"unique_name": f"flex-bridge.worker.{WK}", "items": {WR: {"v": 1}}},
    ],
    ids=["worker name is not a WorkerSid", "wrong prefix", "key is not a WR", "bad item"],
)
def test_bad_map_snapshot_is_rejected(snapshot: Any) -> None:
    assert list(map_validator().iter_errors(snapshot)) != []


def test_readme_example_item_validates() -> None:
    readme = (SCHEMA_DIR.parent / "README.md").read_text()
    example = json.loads(readme.split("```json\n", 1)[1].split("```", 1)[0])
    assert errors(example) == []


def test_map_default_ttl_is_one_day() -> None:
    assert load(MAP_SCHEMA)["$defs"]["item_ttl"]["default"] == 86_400
