"""The OpenAPI 3.1 document of the ``/flex`` API, built from the same schemas that validate it.

One source: ``domain.ops.PARAM_SCHEMAS`` validates plugin bodies and describes them here.
"""

from __future__ import annotations

from functools import cache

from flex_bridge import __version__
from flex_bridge.domain.ops import PARAM_SCHEMAS
from flex_bridge.domain.types import JSON, OPS, SOURCES

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": ["string", "integer", "null"]},
                "message": {"type": "string"},
                "where": {"type": "string", "description": "Where the problem is, if known."},
            },
        }
    },
}

INTENT = {
    "type": "object",
    "required": [
        "intent_id",
        "op",
        "reservation_sid",
        "task_sid",
        "worker_sid",
        "source",
        "via",
        "state",
        "phase",
        "outcome",
        "attempts",
        "reservation_status",
        "error",
        "created_at",
        "updated_at",
    ],
    "properties": {
        "intent_id": {"type": "string", "pattern": "^in_[0-9a-f]{22}$"},
        "op": {"type": "string", "enum": list(OPS)},
        "reservation_sid": {"type": "string"},
        "task_sid": {"type": "string"},
        "worker_sid": {"type": "string"},
        "source": {"type": "string", "enum": list(SOURCES)},
        "via": {"type": "string", "enum": ["rest", "instruction"]},
        "state": {
            "type": "string",
            "enum": ["recorded", "announced", "instructed", "applied", "refused", "settled"],
        },
        "phase": {"type": "string", "enum": ["pending", "applied", "failed"]},
        "outcome": {"type": ["string", "null"], "enum": ["applied", "failed", None]},
        "attempts": {"type": "integer", "minimum": 0},
        "reservation_status": {"type": ["string", "null"]},
        "error": {
            "type": ["object", "null"],
            "properties": {
                "code": {"type": ["integer", "null"]},
                "message": {"type": "string"},
            },
        },
        "created_at": {"type": "string"},
        "updated_at": {"type": "string"},
    },
}


def _response(description: str, schema: str) -> JSON:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _errors(*statuses: int) -> JSON:
    meaning = {
        400: "Invalid parameters or query.",
        401: "No Flex token, or one that is not valid.",
        403: "The reservation, task or intent belongs to another worker (forbidden); a "
        "parameter the policy's [agents] section does not allow (not_allowed_by_policy, the "
        "message starts with the field's name); or an agent's patch that sets or deletes an "
        "attribute the bridge owns, such as escalation (bridge_owned_attributes).",
        404: "Unknown reservation, task or intent.",
        409: "The reservation's status does not allow the change (the message names it), or "
        "another intent is in flight for it; for attributes, existing attributes that are not "
        "JSON, or a task that kept changing.",
        413: "The body is over 256 KiB; for attributes, also a result over 4,096 characters "
        "(error.size, error.limit).",
        415: "The body is not application/merge-patch+json or application/json.",
        422: "TaskRouter refused the change as invalid for this task or reservation (Twilio's "
        "code): a voice instruction on a task with no call, say.",
        502: "TaskRouter refused the change for another reason (Twilio's code).",
        503: "TaskRouter or Sync is unavailable (Twilio's code).",
    }
    return {str(s): _response(meaning[s], "Error") for s in statuses}


@cache
def openapi_document() -> JSON:
    paths: JSON = {}
    reservation_param = {
        "name": "ReservationSid",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^WR[0-9a-fA-F]{32}$"},
    }
    wait_param = {
        "name": "wait",
        "in": "query",
        "required": False,
        "description": "Seconds to wait for the intent to settle (default 5, at most 30).",
        "schema": {"type": "number", "minimum": 0, "maximum": 30},
    }
    for op in OPS:
        paths[f"/flex/reservations/{{ReservationSid}}/{op}"] = {
            "post": {
                "operationId": f"reservation_{op}",
                "summary": f"Ask the bridge to {op} a reservation (Sync-first).",
                "parameters": [reservation_param, wait_param],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": PARAM_SCHEMAS[op]}},
                },
                "responses": {
                    "200": _response("The intent settled: applied.", "IntentAnswer"),
                    "202": _response("The intent is still running.", "IntentAnswer"),
                    **_errors(400, 401, 403, 404, 409, 413, 422, 502, 503),
                },
            }
        }
    paths["/flex/tasks/{TaskSid}/attributes"] = {
        "patch": {
            "operationId": "patch_task_attributes",
            "summary": "Apply a JSON Merge Patch (RFC 7396) to a task's attributes, safely.",
            "parameters": [
                {
                    "name": "TaskSid",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^WT[0-9a-fA-F]{32}$"},
                },
                {
                    "name": "replace_malformed",
                    "in": "query",
                    "required": False,
                    "description": "Replace attributes that are not a JSON object.",
                    "schema": {"type": "boolean"},
                },
            ],
            "requestBody": {
                "required": True,
                "content": {
                    media: {"schema": {"type": "object"}}
                    for media in ("application/merge-patch+json", "application/json")
                },
            },
            "responses": {
                "200": {
                    "description": "The task's attributes after the patch.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["attributes", "etag", "changed"],
                                "properties": {
                                    "attributes": {"type": "object"},
                                    "etag": {"type": ["string", "null"]},
                                    "changed": {"type": "boolean"},
                                },
                            }
                        }
                    },
                },
                **_errors(400, 401, 403, 404, 409, 413, 415, 502, 503),
            },
        }
    }
    paths["/flex/intents/{intent_id}"] = {
        "get": {
            "operationId": "get_intent",
            "summary": "An intent and where it stands.",
            "parameters": [
                {"name": "intent_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": _response("The intent.", "IntentAnswer"),
                **_errors(401, 403, 404),
            },
        }
    }
    paths["/flex/openapi.json"] = {
        "get": {
            "operationId": "get_openapi",
            "summary": "This document.",
            "security": [],
            "responses": {
                "200": {
                    "description": "The OpenAPI 3.1 document of the /flex API.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flex-bridge /flex API",
            "version": __version__,
            "description": "Flex plugin actions on reservations. Every change is announced on "
            "the worker's Sync map before it is made (see sync/README.md).",
        },
        "security": [{"flexToken": []}],
        "components": {
            "securitySchemes": {
                "flexToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The agent's Flex token (manager.user.token).",
                }
            },
            "schemas": {
                "Error": ERROR,
                "Intent": INTENT,
                "IntentAnswer": {
                    "type": "object",
                    "required": ["intent"],
                    "properties": {
                        "intent": {"$ref": "#/components/schemas/Intent"},
                        "intent_id": {"type": "string"},
                        "status_url": {"type": "string"},
                        "error": ERROR["properties"]["error"],  # type: ignore[index]
                    },
                },
            },
        },
        "paths": paths,
    }
