"""Validate the emulator's raw JSON answers against Twilio's OpenAPI response schemas."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema

from flex_bridge.emulator.spec import SPEC_FILES, Spec
from tests.support.emulator import spec_path


def _convert(node: Any, *, top_resource: bool = False) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: nullable, $ref into $defs, all fields required."""
    if isinstance(node, list):
        return [_convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("nullable", "x-twilio", "example", "examples", "description", "format"):
            continue
        if key == "$ref":
            out["$ref"] = value.replace("#/components/schemas/", "#/$defs/")
        elif key == "properties":
            out["properties"] = {k: _convert(v) for k, v in value.items()}
        else:
            out[key] = _convert(value)
    if top_resource and "properties" in out:
        # Twilio answers every documented field (null where empty).
        out["required"] = sorted(out["properties"])
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def _document(product: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(spec_path(SPEC_FILES[product]).read_text())
    return doc


@cache
def spec(product: str) -> Spec:
    return Spec(product, _document(product))


def response_schema(product: str, method: str, template: str, status: int) -> dict[str, Any]:
    doc = _document(product)
    operation = doc["paths"][template][method.lower()]
    content = operation["responses"][str(status)]["content"]["application/json"]
    schema = _convert(content["schema"])
    defs = {
        name: _convert(s, top_resource=True) for name, s in doc["components"]["schemas"].items()
    }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "$defs": defs}


@cache
def _validator(
    product: str, method: str, template: str, status: int
) -> jsonschema.Draft202012Validator:
    """What ``jsonschema.validate`` builds, once per operation: checking the schema itself
    (every component of the document is in its ``$defs``) takes far longer than a body."""
    schema = response_schema(product, method, template, status)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_response(product: str, method: str, path: str, status: int, body: Any) -> str:
    """Validate one answer; returns the operation's template. Raises on any violation."""
    op, _, _ = spec(product).match(method, path)
    assert op is not None, f"{method} {path} is not a documented {product} operation"
    validator = _validator(product, method, op.template, status)
    error = jsonschema.exceptions.best_match(validator.iter_errors(body))
    if error is not None:
        raise error
    return op.template
