"""Operations endpoints over real sockets: /healthz, /readyz, /metrics, the OpenAPI document."""

from __future__ import annotations

import re
from typing import Any

from flex_bridge.domain.ops import PARAM_SCHEMAS
from flex_bridge.domain.types import OPS
from tests.e2e.conftest import OpenEnv
from tests.e2e.env import Env
from tests.support.bridge import ACCEPT_ALL, settled_item, wait_until


async def test_healthz(open_env: OpenEnv) -> None:
    env = await open_env(policy={})
    # Liveness does not depend on upstream: it answers even when Twilio does not.
    await env.admin.faults([{"error_rates": {"503": 1}}])
    status, body, headers = await env.request("GET", "/healthz")
    assert status == 200
    assert body == {"status": "ok"}
    assert headers["Content-Type"].startswith("application/json")


async def _ready(env: Env) -> tuple[int, Any]:
    status, body, _ = await env.request("GET", "/readyz")
    return status, body


async def test_readyz_names_the_failing_check(open_env: OpenEnv) -> None:
    env = await open_env(policy={})
    env.bridge.app.config["readiness"].ttl = 0  # no caching: each call checks again
    status, body = await _ready(env)
    assert status == 200, body
    assert body["status"] == "ready"
    assert body["checks"] == {"journal": "ok", "taskrouter": "ok", "sync": "ok"}

    await env.admin.faults([{"product": "taskrouter", "error_rates": {"503": 1}}])
    status, body = await _ready(env)
    assert status == 503, body
    assert body["status"] == "not_ready"
    assert body["checks"]["taskrouter"].startswith("failing")
    assert body["checks"]["journal"] == "ok"
    assert body["checks"]["sync"] == "ok"

    await env.admin.faults([{"product": "sync", "error_rates": {"503": 1}}])
    status, body = await _ready(env)
    assert status == 503, body
    assert body["checks"]["sync"].startswith("failing")
    assert body["checks"]["taskrouter"] == "ok"

    await env.admin.faults([])
    status, body = await _ready(env)
    assert status == 200, body


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def test_metrics_after_an_accept(open_env: OpenEnv) -> None:
    env = await open_env(policy=ACCEPT_ALL)
    _, reservation = await env.create_task()
    await wait_until(lambda: settled_item(env.admin, reservation.sid))
    env.idle()

    status, text, headers = await env.request("GET", "/metrics")

    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    samples = _samples(text)
    assert samples['flex_bridge_intents_total{op="accept",outcome="applied",source="policy"}'] == 1
    for state in ("recorded", "announced", "applied", "settled"):
        assert samples[f'flex_bridge_intent_transitions_total{{op="accept",state="{state}"}}'] == 1
    assert (
        samples[
            'flex_bridge_upstream_calls_total{operation="accept",result="ok",system="taskrouter"}'
        ]
        == 1
    )
    assert samples['flex_bridge_webhooks_total{endpoint="assignment",result="ok"}'] == 1
    assert samples['flex_bridge_webhook_seconds_count{endpoint="assignment"}'] == 1
    assert samples['flex_bridge_sync_writes_total{outcome="announced"}'] == 1
    assert samples['flex_bridge_sync_writes_total{outcome="settled"}'] == 1
    assert samples["flex_bridge_intents_in_flight"] == 0
    for family in (
        "flex_bridge_upstream_retries_total",
        "flex_bridge_upstream_429_total",
        "flex_bridge_event_handler_failures_total",
    ):
        assert f"# TYPE {family} counter" in text


def _normal(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


async def test_openapi_document_describes_the_flex_api(open_env: OpenEnv) -> None:
    env = await open_env(policy={})

    status, doc, headers = await env.request("GET", "/flex/openapi.json")

    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    paths: dict[str, Any] = doc["paths"]

    # Every /flex route the app serves is documented, with its methods.
    served: dict[str, set[str]] = {}
    for rule in env.bridge.app.url_map.iter_rules():
        if not rule.rule.startswith("/flex"):
            continue
        templates = (
            [rule.rule.replace("<op>", op) for op in OPS] if "<op>" in rule.rule else [rule.rule]
        )
        for template in templates:
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", template)
            methods = {m.lower() for m in rule.methods or ()} - {"head", "options"}
            served.setdefault(_normal(path), set()).update(methods)
    documented = {_normal(p): set(item) - {"parameters"} for p, item in paths.items()}
    assert served == documented

    operation_ids = []
    for path, item in paths.items():
        for method, operation in item.items():
            operation_ids.append(operation["operationId"])
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{([^}]+)\}", path)), (path, method)
            for p in operation.get("parameters", []):
                if p["in"] == "path":
                    assert p["required"] is True
            assert "200" in operation["responses"]
    assert len(operation_ids) == len(set(operation_ids))

    # Each op's request body is the very schema the bridge validates plugin bodies with.
    for op in OPS:
        operation = paths[f"/flex/reservations/{{ReservationSid}}/{op}"]["post"]
        body = operation["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == PARAM_SCHEMAS[op]
        for code in ("200", "202", "400", "401", "403", "404", "409", "422", "502", "503"):
            assert code in operation["responses"], (op, code)
        wait = [p for p in operation["parameters"] if p["name"] == "wait"]
        assert wait and wait[0]["in"] == "query"

    # Every $ref resolves inside the document.
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    all_refs = refs(doc)
    assert all_refs
    for ref in all_refs:
        assert ref.startswith("#/")
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part]
        assert isinstance(target, dict)
    assert doc["components"]["securitySchemes"]["flexToken"]["scheme"] == "bearer"
