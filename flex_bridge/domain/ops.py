"""The reservation operations flex-bridge performs, as pure data.

For each op: the JSON schema of its parameters (the ``/flex`` API validates plugin bodies
against it and publishes it in the OpenAPI document), how it becomes TaskRouter form fields,
which reservation status it needs, and which status it leads to. The coordinator uses the
last two to reconcile an ambiguous outcome from a fetched reservation, never by resending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from flex_bridge.domain.types import JSON


def _sid_schema(prefix: str) -> JSON:
    # The length bound matters: Python's ``re`` (which jsonschema uses) lets ``$`` match
    # before a trailing newline, so the pattern alone would accept ``"WT…\n"``.
    return {
        "type": "string",
        "pattern": f"^{prefix}[0-9a-fA-F]{{32}}$",
        "minLength": 34,
        "maxLength": 34,
    }


_SID = _sid_schema("WA")
# An absolute http(s) URL: ``format: uri`` (RFC 3986, enforced by jsonschema's checker with
# rfc3986-validator) refuses relative references, the pattern every scheme but http and https
# (``javascript:``, ``file:``, ``data:``): TaskRouter fetches these, or posts call data to them.
URL_PATTERN: Final = "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\\s]+"
_URL = {
    "type": "string",
    "format": "uri",
    "pattern": URL_PATTERN,
    "minLength": 1,
    "maxLength": 2048,
}
_PHONE = {"type": "string", "minLength": 1, "maxLength": 256}
# Call progress events (the StatusCallbackEvent of the voice instructions) and conference
# events (ConferenceStatusCallbackEvent), as Twilio's OpenAPI document enumerates them.
_CALL_EVENTS = {
    "type": "array",
    "items": {"enum": ["initiated", "ringing", "answered", "completed"]},
    "maxItems": 4,
}
_CONFERENCE_EVENTS = {
    "type": "array",
    "items": {"enum": ["start", "end", "join", "leave", "mute", "hold", "speaker"]},
    "maxItems": 7,
}


def _schema(properties: JSON, required: tuple[str, ...] = ()) -> JSON:
    return {
        "type": "object",
        "properties": {
            "task_sid": _sid_schema("WT"),
            **properties,
        },
        "required": ["task_sid", *required],
        "additionalProperties": False,
    }


PARAM_SCHEMAS: Final[dict[str, JSON]] = {
    "accept": _schema({}),
    "reject": _schema({"activity_sid": _SID}),
    "wrapup": _schema({}),
    "complete": _schema({}),
    "conference": _schema(
        {
            "from": _PHONE,
            "to": _PHONE,
            "timeout": {"type": "integer", "minimum": 1, "maximum": 600},
            "record": {"type": "boolean"},
            "post_work_activity_sid": _SID,
            "status_callback": _URL,
            "status_callback_event": _CALL_EVENTS,
            "conference_status_callback": _URL,
            "conference_status_callback_event": _CONFERENCE_EVENTS,
            "end_conference_on_exit": {"type": "boolean"},
            "early_media": {"type": "boolean"},
        }
    ),
    "dequeue": _schema(
        {
            "from": _PHONE,
            "to": _PHONE,
            "post_work_activity_sid": _SID,
            "record": {"type": "string", "maxLength": 64},
            "timeout": {"type": "integer", "minimum": 1, "maximum": 600},
            "status_callback_url": _URL,
            "status_callback_event": _CALL_EVENTS,
        },
        ("from",),
    ),
    "call": _schema(
        {
            "from": _PHONE,
            "to": _PHONE,
            "url": _URL,
            "accept": {"type": "boolean"},
            # CallRecord is a string in Twilio's API: whether, or which leg, to record.
            "record": {"type": "string", "maxLength": 64},
            "timeout": {"type": "integer", "minimum": 1, "maximum": 600},
            "status_callback_url": _URL,
        },
        ("from", "url"),
    ),
    "redirect": _schema(
        {
            "call_sid": _sid_schema("CA"),
            "url": _URL,
            "accept": {"type": "boolean"},
        },
        ("call_sid", "url"),
    ),
}

# Plugin-body names -> TaskRouter reservation-update form fields, per instruction.
_FIELDS: Final[dict[str, dict[str, str]]] = {
    "reject": {"activity_sid": "WorkerActivitySid"},
    "conference": {
        "from": "From",
        "to": "To",
        "timeout": "Timeout",
        "record": "Record",
        "post_work_activity_sid": "PostWorkActivitySid",
        "status_callback": "StatusCallback",
        "status_callback_event": "StatusCallbackEvent",
        "conference_status_callback": "ConferenceStatusCallback",
        "conference_status_callback_event": "ConferenceStatusCallbackEvent",
        "end_conference_on_exit": "EndConferenceOnExit",
        "early_media": "EarlyMedia",
    },
    "dequeue": {
        "from": "DequeueFrom",
        "to": "DequeueTo",
        "post_work_activity_sid": "DequeuePostWorkActivitySid",
        "record": "DequeueRecord",
        "timeout": "DequeueTimeout",
        "status_callback_url": "DequeueStatusCallbackUrl",
        "status_callback_event": "DequeueStatusCallbackEvent",
    },
    "call": {
        "from": "CallFrom",
        "to": "CallTo",
        "url": "CallUrl",
        "accept": "CallAccept",
        "record": "CallRecord",
        "timeout": "CallTimeout",
        "status_callback_url": "CallStatusCallbackUrl",
    },
    "redirect": {"call_sid": "RedirectCallSid", "url": "RedirectUrl", "accept": "RedirectAccept"},
}

# Assignment-callback instruction replies use the plugin-body names (TaskRouter's snake_case),
# but for these.
_REPLY_RENAMES: Final[dict[str, dict[str, str]]] = {
    "dequeue": {"status_callback_event": "status_callback_events"},
}


@dataclass(frozen=True, slots=True)
class OpRule:
    """What an op needs and what it leads to."""

    op: str
    requires: frozenset[str]
    leads_to: str

    def leads_to_for(self, params: JSON) -> str:
        if self.op in ("call", "redirect") and not params.get("accept", False):
            return "pending"
        return self.leads_to


RULES: Final[dict[str, OpRule]] = {
    "accept": OpRule("accept", frozenset({"pending"}), "accepted"),
    "reject": OpRule("reject", frozenset({"pending"}), "rejected"),
    "conference": OpRule("conference", frozenset({"pending"}), "accepted"),
    "dequeue": OpRule("dequeue", frozenset({"pending"}), "accepted"),
    "call": OpRule("call", frozenset({"pending"}), "accepted"),
    "redirect": OpRule("redirect", frozenset({"pending"}), "accepted"),
    "wrapup": OpRule("wrapup", frozenset({"accepted"}), "wrapping"),
    "complete": OpRule("complete", frozenset({"accepted", "wrapping"}), "completed"),
}

INSTRUCTIONS: Final = frozenset({"conference", "dequeue", "call", "redirect"})
# Instructions that ring the agent's leg: TaskRouter takes them, and the reservation stays
# pending until the agent answers (accepted), or the ring times out or is canceled.
VOICE: Final = frozenset({"conference", "dequeue", "call"})

# The parameters of each op that name a URL TaskRouter (or Twilio's voice platform) fetches
# for TwiML, that receive status callbacks, and that set the caller ID: what ``[agents]`` of
# the policy restricts for plugin actions.
TARGET_URL_PARAMS: Final[dict[str, tuple[str, ...]]] = {"call": ("url",), "redirect": ("url",)}
CALLBACK_URL_PARAMS: Final[dict[str, tuple[str, ...]]] = {
    "conference": ("status_callback", "conference_status_callback"),
    "dequeue": ("status_callback_url",),
    "call": ("status_callback_url",),
}
CALLER_ID_PARAMS: Final[dict[str, tuple[str, ...]]] = {
    "conference": ("from",),
    "dequeue": ("from",),
    "call": ("from",),
}
# Where an op dials: the agent's leg (a number, ``client:…`` or ``sip:…``); Twilio bills it.
DIAL_TO_PARAMS: Final[dict[str, tuple[str, ...]]] = {
    "conference": ("to",),
    "dequeue": ("to",),
    "call": ("to",),
}


def _form_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def rest_params(op: str, params: JSON) -> dict[str, Any]:
    """TaskRouter reservation-update form fields (official client kwarg names not used)."""
    fields = _FIELDS.get(op, {})
    form: dict[str, Any] = {
        fields[name]: _form_value(value) for name, value in params.items() if name in fields
    }
    if op == "accept":
        form["ReservationStatus"] = "accepted"
    elif op == "reject":
        form["ReservationStatus"] = "rejected"
    elif op == "wrapup":
        form["ReservationStatus"] = "wrapping"
    elif op == "complete":
        form["ReservationStatus"] = "completed"
    else:
        form["Instruction"] = op
    return form


def instruction_reply(op: str, params: JSON) -> JSON:
    """The assignment-callback reply that asks TaskRouter itself to do ``op``."""
    if op not in ("accept", "reject", *INSTRUCTIONS):
        raise ValueError(f"{op} cannot be given as an assignment instruction")
    taken, renames = _FIELDS.get(op, {}), _REPLY_RENAMES.get(op, {})
    reply: JSON = {"instruction": op}
    reply.update({renames.get(k, k): _reply_value(v) for k, v in params.items() if k in taken})
    return reply


def _reply_value(value: Any) -> Any:
    """A reply carries event lists as Twilio documents them: one comma-separated string."""
    return ",".join(map(str, value)) if isinstance(value, list) else value


def outcome_of(op: str, params: JSON, status: str) -> str:
    """Classify a fetched reservation status against an op.

    ``applied``: the reservation is where the op leads. ``retry``: it is still where the op
    can start, so the change did not happen and may be sent again. ``refused``: neither; the
    op can no longer happen (the reservation timed out, was canceled, or moved on).
    ``unknown``: the op leaves no trace in the status (a call or redirect that does not
    accept), so whether it happened cannot be told; it must not be sent again.
    """
    rule = RULES[op]
    target = rule.leads_to_for(params)
    if status == target:
        return "unknown" if status in rule.requires else "applied"
    if status in rule.requires:
        return "retry"
    if op in ("accept", *INSTRUCTIONS) and status in ("accepted", "wrapping", "completed"):
        # Accepted (and maybe moved on since): the accept, or the instruction that a call's
        # TwiML or the agent then accepted, happened. Only a call or redirect that does not
        # accept itself gets here with "accepted"; it has left pending, so it was taken.
        return "applied"
    return "refused"
