"""Twilio's OpenAPI documents as data: paths, form fields and response shapes.

The emulator routes every REST request through these documents, so a path, a field name or an
enum value that Twilio does not have cannot be served by accident, and every response carries
every documented field (null where empty), as Twilio's do. The JSON files under ``specs/`` are
verbatim copies of ``spec/json/twilio_taskrouter_v1.json`` and ``twilio_sync_v1.json`` from
twilio/twilio-oai.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

SPEC_FILES = {
    "taskrouter": "twilio_taskrouter_v1.json",
    "sync": "twilio_sync_v1.json",
}
HOSTS = {
    "taskrouter": "https://taskrouter.twilio.com",
    "sync": "https://sync.twilio.com",
    "iam": "https://iam.twilio.com",
}

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path template of a product's API."""

    product: str
    method: str
    template: str
    regex: re.Pattern[str]
    path_params: dict[str, re.Pattern[str] | None]
    form_fields: dict[str, JSON]
    required: frozenset[str]
    query_params: dict[str, JSON]
    response_status: int
    response_schema: JSON | None
    list_key: str | None
    literal_segments: int = field(default=0)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.product, self.method, self.template)


def _resolve(doc: JSON, schema: JSON) -> JSON:
    """Follow ``$ref`` chains into ``components``; other keys are left alone."""
    seen = 0
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"external $ref not supported: {ref}")
        node: Any = doc
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
        seen += 1
        if seen > 20:
            raise ValueError(f"$ref cycle at {ref}")
    return schema


def _template_regex(template: str) -> tuple[re.Pattern[str], int]:
    parts = []
    literals = 0
    for segment in template.strip("/").split("/"):
        if segment.startswith("{") and segment.endswith("}"):
            parts.append(f"(?P<{segment[1:-1]}>[^/]+)")
        else:
            parts.append(re.escape(segment))
            literals += 1
    return re.compile("^/" + "/".join(parts) + "$"), literals


class Spec:
    """The operations of one product, indexed for request matching."""

    def __init__(self, product: str, doc: JSON) -> None:
        self.product = product
        self.doc = doc
        self.operations: list[Operation] = []
        for template, item in doc["paths"].items():
            regex, literals = _template_regex(template)
            for method in ("get", "post", "delete"):
                if method in item:
                    self.operations.append(
                        self._operation(template, regex, literals, method, item[method])
                    )
        # Literal segments win over parameters: /Workers/Statistics before /Workers/{Sid}.
        self.operations.sort(key=lambda op: -op.literal_segments)
        self._by_key = {op.key: op for op in self.operations}

    def _operation(
        self, template: str, regex: re.Pattern[str], literals: int, method: str, raw: JSON
    ) -> Operation:
        path_params: dict[str, re.Pattern[str] | None] = {}
        query_params: dict[str, JSON] = {}
        for param in raw.get("parameters", []):
            schema = _resolve(self.doc, param.get("schema", {}))
            if param["in"] == "path":
                pattern = schema.get("pattern")
                path_params[param["name"]] = re.compile(pattern) if pattern else None
            elif param["in"] == "query":
                query_params[param["name"]] = schema
        form_fields: dict[str, JSON] = {}
        required: frozenset[str] = frozenset()
        body = raw.get("requestBody", {}).get("content", {})
        form = body.get("application/x-www-form-urlencoded")
        if form:
            schema = _resolve(self.doc, form["schema"])
            form_fields = {
                name: _resolve(self.doc, prop) for name, prop in schema["properties"].items()
            }
            required = frozenset(schema.get("required", []))
        status = min(int(code) for code in raw["responses"])
        response_schema: JSON | None = None
        list_key: str | None = None
        content = raw["responses"][str(status)].get("content", {}).get("application/json")
        if content:
            schema = _resolve(self.doc, content["schema"])
            props = schema.get("properties", {})
            if "meta" in props:
                list_key = next(k for k in props if k != "meta")
                response_schema = _resolve(self.doc, props[list_key]["items"])
            else:
                response_schema = schema
        return Operation(
            product=self.product,
            method=method.upper(),
            template=template,
            regex=regex,
            path_params=path_params,
            form_fields=form_fields,
            required=required,
            query_params=query_params,
            response_status=status,
            response_schema=response_schema,
            list_key=list_key,
            literal_segments=literals,
        )

    def operation(self, method: str, template: str) -> Operation:
        return self._by_key[(self.product, method, template)]

    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], bool]:
        """Find the operation for a request.

        Returns ``(operation, path_params, path_exists)``; the operation is None when the
        path is unknown or the method is not allowed on it (``path_exists`` tells which).
        """
        path_exists = False
        for op in self.operations:
            found = op.regex.match(path)
            if found is None:
                continue
            path_exists = True
            if op.method == method:
                return op, found.groupdict(), True
        return None, {}, path_exists

    def render(self, op: Operation, values: JSON) -> JSON:
        """Every documented field of the operation's resource, null where ``values`` has none."""
        if op.response_schema is None:
            return dict(values)
        return render_schema(op.response_schema, values)


def render_schema(schema: JSON, values: JSON) -> JSON:
    props = schema.get("properties", {})
    return {name: values.get(name) for name in props}


@cache
def load_spec(product: str) -> Spec:
    name = SPEC_FILES[product]
    text = (
        resources.files("flex_bridge.emulator").joinpath("specs").joinpath(name).read_text("utf-8")
    )
    return Spec(product, json.loads(text))
