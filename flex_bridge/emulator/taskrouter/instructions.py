"""What TaskRouter checks before it takes an instruction on a reservation.

An instruction comes over REST (``Instruction=conference`` with the update's own form fields,
``From``, ``DequeueTimeout``, ``CallRecord``, ...) or in an assignment callback reply (JSON, with
the snake_case names of Twilio's assignment-instruction docs: ``from``, ``timeout``,
``status_callback_events``, ...). :class:`Instruction` reads either through one table of names.

Refusals carry Twilio's TaskRouter error codes (https://www.twilio.com/docs/api/errors/<code>):

- not pending: 40136 conference, 40135 dequeue, 40114 call, 40123 redirect; a conference on a
  reservation whose task was canceled: 40144;
- a task that has no call to connect (not on the ``voice`` channel, or no ``call_sid`` /
  ``outbound_to`` in its attributes): 40142 conference, 40140 dequeue; a call instruction on a
  task that is not on the ``voice`` channel: 40151 (Twilio documents no code; the emulator's
  choice);
- a missing caller ID: 40141 conference, 40132 dequeue; a missing ``to`` when the worker has no
  ``contact_uri``: 40131 dequeue; a call without ``url``: 40112;
- dequeue status callback events that are not a comma-separated string of call progress events
  (in a reply) or not call progress events (over REST): 40134;
- any other malformed value of a voice instruction: 40145 conference, 40133 dequeue, 40113 call
  (Twilio's "Call API Error" of each instruction).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flex_bridge.emulator.api import ApiError
from flex_bridge.emulator.taskrouter.models import (
    Reservation,
    Task,
    Worker,
    Workspace,
    parse_attributes,
    truthy,
)

VOICE = frozenset({"conference", "dequeue", "call"})
INSTRUCTIONS = frozenset({*VOICE, "redirect"})
NOT_PENDING = {"conference": 40136, "dequeue": 40135, "call": 40114, "redirect": 40123}
TASK_CANCELED = 40144  # conference instruction on a task that was canceled (caller hung up)
NO_CALL = {"conference": 40142, "dequeue": 40140, "call": 40151}
NO_FROM = {"conference": 40141, "dequeue": 40132, "call": 40113}
NO_TO = {"conference": 40145, "dequeue": 40131, "call": 40113}
NO_URL = 40112
BAD_EVENTS = 40134
CALL_API = {"conference": 40145, "dequeue": 40133, "call": 40113}
CALL_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})
CONFERENCE_EVENTS = frozenset({"start", "end", "join", "leave", "mute", "hold", "speaker"})
# How long the worker's phone may ring before TaskRouter gives up, when the instruction does
# not say: 60 s (twilio-taskrouter.js documents timeout=60 for conference, dequeue and call).
DEFAULT_RING_TIMEOUT = 60
MAX_RING_TIMEOUT = 999

# Each field: its REST form name and its assignment-reply name, per instruction.
FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    "conference": {
        "from": ("From", "from"),
        "to": ("To", "to"),
        "timeout": ("Timeout", "timeout"),
        "record": ("Record", "record"),
        "events": ("StatusCallbackEvent", "status_callback_event"),
        "conference_events": ("ConferenceStatusCallbackEvent", "conference_status_callback_event"),
        "post_work_activity_sid": ("PostWorkActivitySid", "post_work_activity_sid"),
    },
    "dequeue": {
        "from": ("DequeueFrom", "from"),
        "to": ("DequeueTo", "to"),
        "timeout": ("DequeueTimeout", "timeout"),
        "record": ("DequeueRecord", "record"),
        "events": ("DequeueStatusCallbackEvent", "status_callback_events"),
        "post_work_activity_sid": ("DequeuePostWorkActivitySid", "post_work_activity_sid"),
    },
    "call": {
        "from": ("CallFrom", "from"),
        "to": ("CallTo", "to"),
        "url": ("CallUrl", "url"),
        "accept": ("CallAccept", "accept"),
        "record": ("CallRecord", "record"),
        "timeout": ("CallTimeout", "timeout"),
    },
    "redirect": {
        "accept": ("RedirectAccept", "accept"),
    },
}
# The JSON types an assignment reply may give, as Twilio documents the fields (and as the REST
# form fields are typed in the OpenAPI document): record of a call or dequeue is a string
# (``CallRecord``/``DequeueRecord``: "record-from-answer", "do-not-record", ...), dequeue
# status_callback_events a comma-separated string, a timeout an integer.
REPLY_TYPES: dict[str, tuple[type, ...]] = {
    "from": (str,),
    "to": (str,),
    "url": (str,),
    "timeout": (int,),
    "events": (str,),
    "conference_events": (str,),
    "post_work_activity_sid": (str,),
    "accept": (bool, str),
}
RECORD_TYPES = {"conference": (bool, str), "dequeue": (str,), "call": (str,)}


def refuse(code: int, message: str) -> ApiError:
    return ApiError(400, code, message)


@dataclass(frozen=True, slots=True)
class Instruction:
    """One instruction with its fields, as sent over REST or in an assignment reply."""

    name: str
    params: Mapping[str, Any]
    reply: bool  # True: from an assignment callback reply (snake_case JSON)

    def get(self, field: str) -> Any:
        names = FIELDS.get(self.name, {}).get(field)
        if names is None:
            return None
        return self.params.get(names[1] if self.reply else names[0])

    def field_name(self, field: str) -> str:
        rest, reply = FIELDS[self.name][field]
        return reply if self.reply else rest

    @property
    def accepts(self) -> bool:
        """Whether a call or redirect accepts the reservation first (``CallAccept``...)."""
        return truthy(self.get("accept") or False)

    @property
    def timeout(self) -> int:
        value = self.get("timeout")
        return DEFAULT_RING_TIMEOUT if value is None else int(value)

    def recorded(self) -> dict[str, Any]:
        """The instruction as the emulator keeps it (``/_emulator/state``): as sent."""
        return {"instruction": self.name, **self.params}


def check_state(res: Reservation, task: Task, name: str) -> None:
    """An instruction needs a pending reservation that took no voice instruction yet."""
    if res.status == "pending" and res.voice is None:
        return
    if name == "conference" and task.assignment_status == "canceled":
        raise refuse(
            TASK_CANCELED,
            f"Reservation {res.sid} is no longer pending: task {task.sid} was canceled",
        )
    state = res.status
    if res.status == "pending":
        ringing = " (its worker's phone is ringing)" if res.ringing else ""
        state = f"pending but took the {res.voice} instruction already{ringing}"
    raise refuse(
        NOT_PENDING[name],
        f"Reservation {res.sid} is not in expected state: it is {state}, "
        f"so it cannot be given the {name} instruction",
    )


def check_task(ws: Workspace, task: Task, name: str) -> None:
    """Voice instructions need a voice task; conference and dequeue need its call."""
    if name not in VOICE:
        return
    channel = ws.task_channels.get(task.task_channel_sid or "")
    unique_name = channel.unique_name if channel else None
    if unique_name != "voice":
        raise refuse(
            NO_CALL[name],
            f"The {name} instruction needs a voice task; task {task.sid} is on the "
            f"{unique_name!r} task channel",
        )
    attributes = parse_attributes(task.attributes)
    needed = {"conference": ("call_sid", "outbound_to"), "dequeue": ("call_sid",)}.get(name, ())
    if needed and not any(attributes.get(key) for key in needed):
        raise refuse(
            NO_CALL[name],
            f"Failed to issue the {name} instruction: task {task.sid} has no "
            f"{' or '.join(repr(k) for k in needed)} in its attributes",
        )


def check_fields(ws: Workspace, worker: Worker, ins: Instruction) -> None:
    """The instruction's own fields: present where required, of the documented types."""
    if ins.name not in VOICE:
        return
    if ins.reply:
        _check_reply_types(ins)
    if not ins.get("from"):
        raise refuse(NO_FROM[ins.name], f"The {ins.name} instruction needs a caller ID (from)")
    if not ins.get("to") and not worker.parsed.get("contact_uri"):
        raise refuse(
            NO_TO[ins.name],
            f"The {ins.name} instruction has no 'to' and worker {worker.sid} has no "
            "contact_uri attribute",
        )
    if ins.name == "call" and not ins.get("url"):
        raise refuse(NO_URL, "The call instruction needs a TwiML url")
    timeout = ins.get("timeout")
    if timeout is not None and not 1 <= int(timeout) <= MAX_RING_TIMEOUT:
        raise refuse(CALL_API[ins.name], f"{ins.field_name('timeout')} must be 1 to 999 seconds")
    _check_events(ins)
    activity = ins.get("post_work_activity_sid")
    if activity is not None:
        ws.activity(str(activity))


def _check_reply_types(ins: Instruction) -> None:
    for field in FIELDS[ins.name]:
        value = ins.get(field)
        allowed = RECORD_TYPES[ins.name] if field == "record" else REPLY_TYPES.get(field)
        if value is None or allowed is None:
            continue
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            code = BAD_EVENTS if (ins.name, field) == ("dequeue", "events") else None
            kinds = " or ".join(_json_type(t) for t in allowed)
            raise refuse(
                code or CALL_API[ins.name],
                f"{ins.field_name(field)} of the {ins.name} instruction must be {kinds}; "
                f"got {json.dumps(value)}",
            )


def _check_events(ins: Instruction) -> None:
    for field, allowed in (("events", CALL_EVENTS), ("conference_events", CONFERENCE_EVENTS)):
        if field not in FIELDS[ins.name]:
            continue
        events = split_events(ins.get(field))
        unknown = [e for e in events if e not in allowed]
        if unknown:
            code = BAD_EVENTS if ins.name == "dequeue" else 20001
            raise refuse(
                code,
                f"{ins.field_name(field)} has events {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(sorted(allowed))}",
            )


def split_events(value: Any) -> list[str]:
    """Events given as a comma-separated string, or (over REST) repeated fields of them."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def _json_type(kind: type) -> str:
    names: dict[type, str] = {bool: "a boolean", str: "a string", int: "an integer"}
    return names.get(kind, kind.__name__)
