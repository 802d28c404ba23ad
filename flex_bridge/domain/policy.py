"""The policy file (TOML) as values, and the assignment-rule decision.

```toml
[sync]
mode = "degrade"            # or "strict"
announce_timeout = 2.0      # seconds the announce may take before degrade goes ahead
item_ttl = 86400

[retry]
max_attempts = 5
base = 0.2                  # seconds; exponential backoff with full jitter
cap = 5.0

[recovery]
interval = 30.0             # seconds between recovery sweeps

[[assignment.rules]]
name = "vip"
match = { task_queue_sid = "WQ...", task_attributes = { tier = "gold" } }
op = "accept"               # accept, reject, conference, dequeue, call, redirect or defer
via = "rest"                # or "instruction"
params = {}

[events.handlers]
"task.canceled" = ["mypackage.hooks:on_task_canceled"]

[agents]                    # what plugin actions may ask (absent: anything valid)
call_urls = ["https://handler.example.com/twiml/"]   # call/redirect ``url`` prefixes
callback_urls = ["https://handler.example.com/status/"]  # status callback URL prefixes
caller_ids = ["+15550100"]  # allowed ``from`` numbers
dial_to = ["client:", "+1555"]  # prefixes of the ``to`` an action may dial (the agent's leg)
```

Every number has bounds (given where it is read: ``_number``'s ``minimum`` and ``maximum``)
and must be a number (not a boolean, not a string, not a TOML date or time); tables whose
values travel as JSON (match attributes, params, routing, enricher options) hold only strings,
numbers, booleans, arrays and tables.

Rules are tried in order; a rule without ``match`` matches every reservation; when none
matches, the reservation is deferred. ``task_attributes`` and ``worker_attributes`` match
when every key given has the same value, of the same JSON type, in the reservation's
attributes (nested tables match nested objects the same way; an array matches only an equal
array, element types included).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast
from urllib.parse import unquote, urlsplit

import jsonschema

from flex_bridge.domain.attributes import BRIDGE_OWNED, MAX_DEPTH
from flex_bridge.domain.ops import (
    CALLBACK_URL_PARAMS,
    CALLER_ID_PARAMS,
    DIAL_TO_PARAMS,
    PARAM_SCHEMAS,
    TARGET_URL_PARAMS,
)
from flex_bridge.domain.types import JSON, Op, SyncMode, Via
from flex_bridge.errors import ForbiddenError
from flex_bridge.errors import PolicyError as PolicyError  # re-exported: callers catch it here

RuleOp = Op | Literal["defer"]

RULE_OPS: Final = ("accept", "reject", "conference", "dequeue", "call", "redirect", "defer")
INSTRUCTION_OPS: Final = ("accept", "reject", "conference", "dequeue", "call", "redirect")


@dataclass(frozen=True, slots=True)
class Match:
    task_queue_sid: str | None = None
    workflow_sid: str | None = None
    task_attributes: JSON = field(default_factory=dict)
    worker_attributes: JSON = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AssignmentRule:
    name: str
    op: RuleOp
    via: Via = "rest"
    params: JSON = field(default_factory=dict)
    match: Match | None = None
    before_accept: bool = False  # enrich the task (within enrichment.budget) before the op


@dataclass(frozen=True, slots=True)
class TimeoutPolicy:
    """What a ``reservation.timeout`` does (``[timeout]``)."""

    action: str = "requeue"  # or "escalate"
    escalate_after: int = 2  # timeouts of the same task before the first escalation
    priority_step: int = 0  # added to the task's priority at each new escalation level
    routing: JSON = field(default_factory=dict)  # merged into the attributes on escalation


@dataclass(frozen=True, slots=True)
class EnricherSpec:
    name: str
    factory: str  # dotted path to ``factory(options) -> enricher``
    timeout: float = 2.0
    options: JSON = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EnrichmentPolicy:
    enrichers: tuple[EnricherSpec, ...] = ()
    on_task_created: bool = False
    budget: float = 2.0  # seconds an accept with before_accept waits for enrichment


@dataclass(frozen=True, slots=True)
class SyncPolicy:
    mode: SyncMode = "degrade"
    announce_timeout: float = 2.0
    item_ttl: int = 86_400


@dataclass(frozen=True, slots=True)
class RetrySettings:
    max_attempts: int = 5
    base: float = 0.2
    cap: float = 5.0


@dataclass(frozen=True, slots=True)
class ReconcilePolicy:
    """The anti-entropy sweep (``[reconcile]``): every ``interval`` seconds one instance
    compares the items of recently active reservations with TaskRouter, at most ``budget``
    fetches a sweep, and adopts pending offers the journal has never seen."""

    interval: float = 60.0
    budget: int = 200  # TaskRouter fetches per sweep, at most
    window: float = 86_400.0  # seconds since an intent's last step that make it "recent"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """``[retention]``: settled intents and webhook dedupe keys older than ``intents``
    seconds are pruned, ``batch`` rows at a time."""

    intents: float = 7 * 86_400.0
    batch: int = 1000


@dataclass(frozen=True, slots=True)
class AgentsPolicy:
    """``[agents]``: what a plugin action may ask. ``None``: any valid value; a tuple: only
    URLs under one of these prefixes (same scheme and host, the path under the prefix's) or
    one of these caller IDs. The policy's own rules are not restricted."""

    call_urls: tuple[str, ...] | None = None  # call and redirect ``url``
    callback_urls: tuple[str, ...] | None = None  # status callback URLs
    caller_ids: tuple[str, ...] | None = None  # ``from`` of conference, dequeue, call
    dial_to: tuple[str, ...] | None = None  # prefixes of the ``to`` they dial


class AgentParamRefused(ForbiddenError):
    """A plugin action's parameter the ``[agents]`` policy does not allow; ``field`` names it
    (and so does the message, which starts with it: plugin errors carry code and message
    only)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[AssignmentRule, ...] = ()
    sync: SyncPolicy = field(default_factory=SyncPolicy)
    retry: RetrySettings = field(default_factory=RetrySettings)
    recovery_interval: float = 30.0
    event_handlers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    timeout: TimeoutPolicy = field(default_factory=TimeoutPolicy)
    enrichment: EnrichmentPolicy = field(default_factory=EnrichmentPolicy)
    reconcile: ReconcilePolicy = field(default_factory=ReconcilePolicy)
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    agents: AgentsPolicy = field(default_factory=AgentsPolicy)


def _url_parts(url: str) -> tuple[str, str, str] | None:
    """(scheme, host[:port], path) of an absolute http(s) URL, lower-cased where URLs are
    case-insensitive; None when it is not one, or its path has ``.``/``..`` segments (which
    would climb out of a prefix)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return None
    path = parts.path or "/"
    segments = unquote(path).split("/")
    if any(segment in (".", "..") for segment in segments) or "\\" in unquote(path):
        return None
    return scheme, parts.netloc.lower(), path


def url_allowed(url: str, prefixes: tuple[str, ...]) -> bool:
    """``url`` is under one of ``prefixes``: the same scheme and host (and port), and a path
    starting with the prefix's path (``https://h.example`` allows every path of that host;
    ``https://h.example/twiml`` allows ``/twiml`` and ``/twiml/…``, not ``/twiml-evil``)."""
    parts = _url_parts(url)
    if parts is None:
        return False
    for prefix in prefixes:
        allowed = _url_parts(prefix)
        if allowed is None or allowed[:2] != parts[:2]:
            continue
        base = allowed[2]
        if parts[2] == base or parts[2].startswith(base if base.endswith("/") else base + "/"):
            return True
    return False


def check_agent_params(agents: AgentsPolicy, op: str, params: Mapping[str, Any]) -> None:
    """``AgentParamRefused`` naming the first parameter of a plugin action that ``agents``
    does not allow."""
    checks = (
        (TARGET_URL_PARAMS, agents.call_urls, "agents.call_urls"),
        (CALLBACK_URL_PARAMS, agents.callback_urls, "agents.callback_urls"),
    )
    for names, prefixes, setting in checks:
        if prefixes is None:
            continue
        for name in names.get(op, ()):
            value = params.get(name)
            if isinstance(value, str) and not url_allowed(value, prefixes):
                raise AgentParamRefused(
                    name, f"{name}: this URL is not allowed for plugin actions ({setting})"
                )
    if agents.caller_ids is not None:
        for name in CALLER_ID_PARAMS.get(op, ()):
            value = params.get(name)
            if isinstance(value, str) and value not in agents.caller_ids:
                raise AgentParamRefused(
                    name,
                    f"{name}: this caller ID is not allowed for plugin actions (agents.caller_ids)",
                )
    if agents.dial_to is not None:
        for name in DIAL_TO_PARAMS.get(op, ()):
            value = params.get(name)
            if isinstance(value, str) and not value.startswith(agents.dial_to):
                raise AgentParamRefused(
                    name, f"{name}: plugin actions may not dial this address (agents.dial_to)"
                )


def _same(want: Any, have: Any) -> bool:
    """Equal and of the same JSON type: 1 does not match true, "1" does not match 1.

    Arrays (and objects inside them) are whole values, compared element by element with the
    same strictness: ``[1]`` does not match ``[true]`` (Python's ``==`` would say it does).
    """
    numbers = (int, float)
    if isinstance(want, bool) or isinstance(have, bool):
        return type(want) is type(have) and want == have
    if isinstance(want, numbers) and isinstance(have, numbers):
        return want == have
    if isinstance(want, list | tuple) and isinstance(have, list | tuple):
        return len(want) == len(have) and all(_same(w, h) for w, h in zip(want, have, strict=True))
    if isinstance(want, Mapping) and isinstance(have, Mapping):
        return set(want) == set(have) and all(_same(want[k], have[k]) for k in want)
    return type(want) is type(have) and want == have


def subset_match(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    for key, want in expected.items():
        if key not in actual:
            return False
        have = actual[key]
        if isinstance(want, Mapping):
            if not isinstance(have, Mapping) or not subset_match(want, have):
                return False
        elif not _same(want, have):
            return False
    return True


def choose_rule(
    policy: Policy,
    *,
    task_queue_sid: str | None,
    workflow_sid: str | None,
    task_attributes: Mapping[str, Any],
    worker_attributes: Mapping[str, Any],
) -> AssignmentRule | None:
    for rule in policy.rules:
        m = rule.match
        if m is None:
            return rule
        if m.task_queue_sid is not None and m.task_queue_sid != task_queue_sid:
            continue
        if m.workflow_sid is not None and m.workflow_sid != workflow_sid:
            continue
        if not subset_match(m.task_attributes, task_attributes):
            continue
        if not subset_match(m.worker_attributes, worker_attributes):
            continue
        return rule
    return None


# ------------------------------------------------------------------------------ parsing
def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise PolicyError(f"{where}{key} must be a table")
    return value


def _known(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")


# Sync keeps an item at most a year: a longer TTL fails every write (Twilio error 54208).
MAX_ITEM_TTL: Final = 31_536_000
DAY: Final = 86_400.0
YEAR: Final = 365 * DAY
_DATES = (datetime.date, datetime.time)  # datetime.datetime is a date


def _what(value: Any) -> str:
    if isinstance(value, datetime.datetime):
        return "a TOML datetime"
    if isinstance(value, datetime.date):
        return "a TOML date"
    if isinstance(value, datetime.time):
        return "a TOML time"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


def _number(
    table: Mapping[str, Any],
    key: str,
    default: float,
    where: str,
    *,
    minimum: float = 0.0,
    maximum: float = math.inf,
    integer: bool = False,
) -> Any:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(f"{where}.{key} must be a number, not {_what(value)}")
    if not math.isfinite(value):
        raise PolicyError(f"{where}.{key} must be finite")
    if integer and not isinstance(value, int):
        raise PolicyError(f"{where}.{key} must be an integer")
    if value < minimum:
        raise PolicyError(f"{where}.{key} must be at least {minimum}")
    if value > maximum:
        shown = int(maximum) if float(maximum).is_integer() else maximum
        raise PolicyError(f"{where}.{key} must be at most {shown}")
    return value


def _string(table: Mapping[str, Any], key: str, default: str | None, where: str) -> Any:
    value = table.get(key, default)
    if value is not None and not isinstance(value, str):
        raise PolicyError(f"{where}.{key} must be a string, not {_what(value)}")
    return value


def _json_value(value: Any, where: str, depth: int = 0) -> None:
    """Refuse what cannot travel as JSON: TOML dates and times (anywhere), and nesting deeper
    than attributes may be."""
    if depth > MAX_DEPTH:
        raise PolicyError(f"{where} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, _DATES):
        raise PolicyError(
            f"{where} must be a string, number, boolean, array or table, not {_what(value)} "
            "(quote it to make it a string)"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise PolicyError(f"{where} must be finite")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _json_value(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for n, item in enumerate(value):
            _json_value(item, f"{where}[{n}]", depth + 1)


def _json_table(table: Mapping[str, Any], key: str, where: str, what: str = "") -> JSON:
    value = table.get(key, {})
    if not isinstance(value, Mapping):
        raise PolicyError(f"{where}.{key} must be a table{what}")
    _json_value(value, f"{where}.{key}")
    return dict(value)


def _match(raw: Any, where: str) -> Match:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}.match must be a table")
    _known(
        raw,
        {"task_queue_sid", "workflow_sid", "task_attributes", "worker_attributes"},
        f"{where}.match",
    )
    for key in ("task_queue_sid", "workflow_sid"):
        if key in raw and not isinstance(raw[key], str):
            raise PolicyError(f"{where}.match.{key} must be a string, not {_what(raw[key])}")
    return Match(
        task_queue_sid=raw.get("task_queue_sid"),
        workflow_sid=raw.get("workflow_sid"),
        task_attributes=_json_table(raw, "task_attributes", f"{where}.match"),
        worker_attributes=_json_table(raw, "worker_attributes", f"{where}.match"),
    )


def _rule(raw: Any, n: int) -> AssignmentRule:
    where = f"assignment.rules[{n}]"
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where} must be a table")
    _known(raw, {"name", "match", "op", "via", "params", "before_accept"}, where)
    before_accept = raw.get("before_accept", False)
    if not isinstance(before_accept, bool):
        raise PolicyError(f"{where}.before_accept must be true or false")
    op = raw.get("op")
    if op not in RULE_OPS:
        raise PolicyError(f"{where}.op must be one of {', '.join(RULE_OPS)}")
    via = raw.get("via", "rest")
    if via not in ("rest", "instruction"):
        raise PolicyError(f"{where}.via must be 'rest' or 'instruction'")
    params = _json_table(raw, "params", where)
    name = _string(raw, "name", f"rule {n}", where)
    if op == "defer":
        if params:
            raise PolicyError(f"{where}: defer takes no params")
    else:
        if via == "instruction" and op not in INSTRUCTION_OPS:
            raise PolicyError(f"{where}: {op} cannot be sent as an instruction")
        schema = dict(PARAM_SCHEMAS[op])
        schema["required"] = [r for r in schema["required"] if r != "task_sid"]
        try:
            # The format checker too: a rule's URLs are absolute http(s) URLs, like a plugin's.
            jsonschema.validate(
                dict(params), schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
            )
        except jsonschema.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path)
            raise PolicyError(
                f"{where}.params{'.' + path if path else ''}: {exc.message}"
            ) from None
    return AssignmentRule(
        name=name,
        op=cast(RuleOp, op),
        via=cast(Via, via),
        params=dict(params),
        match=_match(raw["match"], where) if "match" in raw else None,
        before_accept=before_accept,
    )


def _timeout(data: Mapping[str, Any]) -> TimeoutPolicy:
    table = _table(data, "timeout", "")
    _known(table, {"action", "escalate_after", "priority_step", "routing"}, "timeout")
    action = table.get("action", "requeue")
    if action not in ("requeue", "escalate"):
        raise PolicyError("timeout.action must be 'requeue' or 'escalate'")
    routing = _json_table(table, "routing", "timeout", " (merged into the task's attributes)")
    owned = sorted(BRIDGE_OWNED & set(routing))
    if owned:
        raise PolicyError(f"timeout.routing must not set {owned[0]!r}: the bridge writes it")
    return TimeoutPolicy(
        action=action,
        escalate_after=int(
            _number(table, "escalate_after", 2, "timeout", minimum=1, maximum=1000, integer=True)
        ),
        priority_step=int(
            _number(table, "priority_step", 0, "timeout", maximum=1_000_000, integer=True)
        ),
        routing=routing,
    )


def _enrichment(data: Mapping[str, Any]) -> EnrichmentPolicy:
    table = _table(data, "enrichment", "")
    _known(table, {"enrichers", "on_task_created", "budget"}, "enrichment")
    on_created = table.get("on_task_created", False)
    if not isinstance(on_created, bool):
        raise PolicyError("enrichment.on_task_created must be true or false")
    raw = table.get("enrichers", [])
    if not isinstance(raw, list):
        raise PolicyError("enrichment.enrichers must be an array of tables")
    specs = []
    names: set[str] = set()
    for n, item in enumerate(raw):
        where = f"enrichment.enrichers[{n}]"
        if not isinstance(item, Mapping):
            raise PolicyError(f"{where} must be a table")
        _known(item, {"name", "factory", "timeout", "options"}, where)
        name, factory = item.get("name"), item.get("factory")
        if not isinstance(name, str) or not name:
            raise PolicyError(f"{where}.name must be a non-empty string, not {_what(name)}")
        if name in names:
            raise PolicyError(f"{where}.name {name!r} is used twice")
        names.add(name)
        if not isinstance(factory, str) or not factory:
            raise PolicyError(
                f"{where}.factory must be a dotted path (package.module:factory), "
                f"not {_what(factory)}"
            )
        options = _json_table(item, "options", where)
        timeout = float(_number(item, "timeout", 2.0, where, minimum=0.001, maximum=60.0))
        specs.append(EnricherSpec(name, factory, timeout, options))
    return EnrichmentPolicy(
        enrichers=tuple(specs),
        on_task_created=on_created,
        budget=float(_number(table, "budget", 2.0, "enrichment", minimum=0.0, maximum=60.0)),
    )


def parse_policy(data: Mapping[str, Any]) -> Policy:
    """Build a ``Policy`` from the parsed TOML document; ``PolicyError`` names what is wrong."""
    _known(
        data,
        {
            "sync",
            "retry",
            "recovery",
            "assignment",
            "events",
            "timeout",
            "enrichment",
            "reconcile",
            "retention",
            "agents",
        },
        "policy",
    )
    sync = _table(data, "sync", "")
    _known(sync, {"mode", "announce_timeout", "item_ttl"}, "sync")
    mode = sync.get("mode", "degrade")
    if mode not in ("strict", "degrade"):
        raise PolicyError("sync.mode must be 'strict' or 'degrade'")
    sync_policy = SyncPolicy(
        mode=cast(SyncMode, mode),
        announce_timeout=float(_number(sync, "announce_timeout", 2.0, "sync", maximum=60.0)),
        item_ttl=int(
            _number(sync, "item_ttl", 86_400, "sync", minimum=1, maximum=MAX_ITEM_TTL, integer=True)
        ),
    )
    retry = _table(data, "retry", "")
    _known(retry, {"max_attempts", "base", "cap"}, "retry")
    retry_settings = RetrySettings(
        max_attempts=int(
            _number(retry, "max_attempts", 5, "retry", minimum=1, maximum=100, integer=True)
        ),
        base=float(_number(retry, "base", 0.2, "retry", maximum=60.0)),
        cap=float(_number(retry, "cap", 5.0, "retry", maximum=3600.0)),
    )
    if retry_settings.cap < retry_settings.base:
        raise PolicyError("retry.cap must be at least retry.base")
    recovery = _table(data, "recovery", "")
    _known(recovery, {"interval"}, "recovery")
    interval = float(_number(recovery, "interval", 30.0, "recovery", minimum=0.1, maximum=DAY))
    assignment = _table(data, "assignment", "")
    _known(assignment, {"rules"}, "assignment")
    raw_rules = assignment.get("rules", [])
    if not isinstance(raw_rules, list):
        raise PolicyError("assignment.rules must be an array of tables")
    rules = tuple(_rule(raw, n) for n, raw in enumerate(raw_rules))
    events = _table(data, "events", "")
    _known(events, {"handlers"}, "events")
    handlers_raw = _table(events, "handlers", "events.")
    handlers: dict[str, tuple[str, ...]] = {}
    for event_type, paths in handlers_raw.items():
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise PolicyError(f"events.handlers.{event_type} must be a dotted path or a list")
        handlers[event_type] = tuple(paths)
    return Policy(
        rules=rules,
        sync=sync_policy,
        retry=retry_settings,
        recovery_interval=interval,
        event_handlers=handlers,
        timeout=_timeout(data),
        enrichment=_enrichment(data),
        reconcile=_reconcile(data),
        retention=_retention(data),
        agents=_agents(data),
    )


def _agents(data: Mapping[str, Any]) -> AgentsPolicy:
    table = _table(data, "agents", "")
    _known(table, {"call_urls", "callback_urls", "caller_ids", "dial_to"}, "agents")

    def strings(key: str) -> tuple[str, ...] | None:
        if key not in table:
            return None
        value = table[key]
        if not isinstance(value, list):
            raise PolicyError(f"agents.{key} must be an array of strings, not {_what(value)}")
        for n, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise PolicyError(f"agents.{key}[{n}] must be a non-empty string")
        return tuple(value)

    def prefixes(key: str) -> tuple[str, ...] | None:
        found = strings(key)
        for n, prefix in enumerate(found or ()):
            parts = urlsplit(prefix)
            if _url_parts(prefix) is None or parts.query or parts.fragment:
                raise PolicyError(
                    f"agents.{key}[{n}] must be an http:// or https:// URL prefix with a host "
                    f"(no query, no '..'); got {prefix!r}"
                )
        return found

    return AgentsPolicy(
        call_urls=prefixes("call_urls"),
        callback_urls=prefixes("callback_urls"),
        caller_ids=strings("caller_ids"),
        dial_to=strings("dial_to"),
    )


def _reconcile(data: Mapping[str, Any]) -> ReconcilePolicy:
    table = _table(data, "reconcile", "")
    _known(table, {"interval", "budget", "window"}, "reconcile")
    return ReconcilePolicy(
        interval=float(_number(table, "interval", 60.0, "reconcile", minimum=1.0, maximum=DAY)),
        budget=int(
            _number(table, "budget", 200, "reconcile", minimum=1, maximum=100_000, integer=True)
        ),
        window=float(_number(table, "window", 86_400.0, "reconcile", minimum=60.0, maximum=YEAR)),
    )


def _retention(data: Mapping[str, Any]) -> RetentionPolicy:
    table = _table(data, "retention", "")
    _known(table, {"intents", "batch"}, "retention")
    return RetentionPolicy(
        intents=float(
            _number(table, "intents", 7 * DAY, "retention", minimum=3600.0, maximum=10 * YEAR)
        ),
        batch=int(
            _number(table, "batch", 1000, "retention", minimum=1, maximum=100_000, integer=True)
        ),
    )
