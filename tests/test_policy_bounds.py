"""Issue 13: policy values that would pass start-up and break later are start-up errors, and
the ``[agents]`` section (what plugin actions may ask) parses like every other section."""

from __future__ import annotations

import datetime
import tomllib
from typing import Any

import pytest

from flex_bridge.domain.attributes import BRIDGE_OWNED
from flex_bridge.domain.escalation import escalate, owned_keys
from flex_bridge.domain.policy import (
    MAX_ITEM_TTL,
    AgentParamRefused,
    AgentsPolicy,
    PolicyError,
    check_agent_params,
    parse_policy,
    url_allowed,
)

CA = "CA" + "c" * 32


def refused(data: dict[str, Any], match: str) -> None:
    with pytest.raises(PolicyError, match=match):
        parse_policy(data)


# ------------------------------------------------------------------ item 5: bounds and types
def test_an_item_ttl_above_syncs_maximum_is_a_start_up_error() -> None:
    assert parse_policy({"sync": {"item_ttl": MAX_ITEM_TTL}}).sync.item_ttl == 31_536_000
    refused({"sync": {"item_ttl": MAX_ITEM_TTL + 1}}, r"^sync\.item_ttl must be at most 31536000")


NUMBERS = [
    ("sync", "announce_timeout"),
    ("sync", "item_ttl"),
    ("retry", "max_attempts"),
    ("retry", "base"),
    ("retry", "cap"),
    ("recovery", "interval"),
    ("reconcile", "interval"),
    ("reconcile", "budget"),
    ("reconcile", "window"),
    ("retention", "intents"),
    ("retention", "batch"),
    ("timeout", "escalate_after"),
    ("timeout", "priority_step"),
    ("enrichment", "budget"),
]
WHEN = [
    (datetime.datetime(2024, 1, 1, 12, 0, tzinfo=datetime.UTC), "a TOML datetime"),
    (datetime.date(2024, 1, 1), "a TOML date"),
    (datetime.time(12, 0), "a TOML time"),
    (True, "a boolean"),
    ("5", "a string"),
]


@pytest.mark.parametrize(("table", "key"), NUMBERS)
@pytest.mark.parametrize(("value", "what"), WHEN)
def test_every_number_refuses_dates_times_booleans_and_strings(
    table: str, key: str, value: Any, what: str
) -> None:
    refused({table: {key: value}}, rf"^{table}\.{key} must be a number, not {what}$")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sync": {"announce_timeout": 61}}, r"sync\.announce_timeout must be at most 60"),
        ({"retry": {"max_attempts": 101}}, r"retry\.max_attempts must be at most 100"),
        ({"retry": {"base": 1e9}}, r"retry\.base must be at most 60"),
        ({"retry": {"cap": 1e9}}, r"retry\.cap must be at most 3600"),
        ({"retry": {"base": 2.0, "cap": 1.0}}, r"retry\.cap must be at least retry\.base"),
        ({"recovery": {"interval": 1e12}}, r"recovery\.interval must be at most 86400"),
        ({"reconcile": {"interval": 1e12}}, r"reconcile\.interval must be at most 86400"),
        ({"reconcile": {"budget": 10**12}}, r"reconcile\.budget must be at most 100000"),
        ({"reconcile": {"window": 1e12}}, r"reconcile\.window must be at most"),
        ({"retention": {"intents": 1e15}}, r"retention\.intents must be at most"),
        ({"retention": {"batch": 10**9}}, r"retention\.batch must be at most 100000"),
        ({"timeout": {"escalate_after": 10**6}}, r"timeout\.escalate_after must be at most"),
        ({"timeout": {"priority_step": 2**40}}, r"timeout\.priority_step must be at most"),
        ({"timeout": {"priority_step": -5}}, r"timeout\.priority_step must be at least 0"),
        ({"enrichment": {"budget": 3600}}, r"enrichment\.budget must be at most 60"),
        (
            {"enrichment": {"enrichers": [{"name": "c", "factory": "m:f", "timeout": 3600}]}},
            r"enrichment\.enrichers\[0\]\.timeout must be at most 60",
        ),
    ],
)
def test_numbers_have_upper_bounds(data: dict[str, Any], message: str) -> None:
    refused(data, message)


def test_toml_datetimes_in_escalation_routing_are_refused_at_start_up() -> None:
    """A datetime in ``routing`` used to pass start-up and then break every escalation (it is
    not JSON); it is now refused, with the setting named."""
    text = (
        '[timeout]\naction = "escalate"\n'
        'routing = { route = "supervisor", since = 2024-01-01T00:00:00Z }\n'
    )
    with pytest.raises(
        PolicyError, match=r"^timeout\.routing\.since must be .* not a TOML datetime"
    ):
        parse_policy(tomllib.loads(text))


@pytest.mark.parametrize(
    ("toml", "where"),
    [
        (
            "[timeout]\nrouting = { nested = { day = 2024-01-01 } }",
            r"timeout\.routing\.nested\.day",
        ),
        ("[timeout]\nrouting = { at = [12:00:00] }", r"timeout\.routing\.at\[0\]"),
        (
            '[[assignment.rules]]\nop = "accept"\nmatch = { task_attributes = { d = 2024-01-01 } }',
            r"assignment\.rules\[0\]\.match\.task_attributes\.d",
        ),
        (
            '[[assignment.rules]]\nop = "accept"\nmatch = { worker_attributes = { t = 10:00:00 } }',
            r"assignment\.rules\[0\]\.match\.worker_attributes\.t",
        ),
        (
            f'[[assignment.rules]]\nop = "redirect"\n'
            f'params = {{ call_sid = "{CA}", url = 2024-01-01 }}',
            r"assignment\.rules\[0\]\.params\.url",
        ),
        (
            '[[enrichment.enrichers]]\nname = "crm"\nfactory = "m:f"\n'
            "options = { since = 2024-01-01 }",
            r"enrichment\.enrichers\[0\]\.options\.since",
        ),
        ('[[assignment.rules]]\nname = 2024-01-01\nop = "defer"', r"assignment\.rules\[0\]\.name"),
        (
            '[[assignment.rules]]\nop = "accept"\nmatch = { task_queue_sid = 2024-01-01 }',
            r"assignment\.rules\[0\]\.match\.task_queue_sid",
        ),
    ],
)
def test_dates_and_times_are_refused_wherever_a_string_or_json_is_expected(
    toml: str, where: str
) -> None:
    with pytest.raises(PolicyError, match=rf"^{where} must be a string.* not a TOML (date|time)"):
        parse_policy(tomllib.loads(toml))


def test_a_valid_routing_still_escalates() -> None:
    policy = parse_policy({"timeout": {"action": "escalate", "routing": {"route": "sup", "n": 1}}})
    decided = escalate(policy.timeout, 2, {}, 0)
    assert decided is not None
    assert decided[0] == {
        "route": "sup",
        "n": 1,
        "escalation": {"level": 1, "reason": "reservation_timeout", "timeouts": 2},
    }


# ------------------------------------------------------------ item 1: the bridge-owned keys
def test_the_escalation_is_bridge_owned_and_so_are_routing_keys_when_escalating() -> None:
    assert "escalation" in BRIDGE_OWNED
    requeue = parse_policy({"timeout": {"routing": {"route": "sup"}}}).timeout
    assert owned_keys(requeue) == BRIDGE_OWNED
    escalating = parse_policy({"timeout": {"action": "escalate", "routing": {"route": "sup"}}})
    assert owned_keys(escalating.timeout) == BRIDGE_OWNED | {"route"}
    refused({"timeout": {"routing": {"escalation": 1}}}, r"must not set 'escalation'")


# ------------------------------------------------------------------ item 4: URIs and [agents]
def test_rule_urls_must_be_absolute_http_urls() -> None:
    for url in ("javascript:alert(1)", "/relative/twiml", "ftp://x.example/t", "file:///etc/x"):
        rule = {"op": "redirect", "params": {"call_sid": CA, "url": url}}
        refused({"assignment": {"rules": [rule]}}, r"assignment\.rules\[0\]\.params\.url")
    ok = {"op": "redirect", "params": {"call_sid": CA, "url": "https://h.example/t"}}
    assert parse_policy({"assignment": {"rules": [ok]}}).rules[0].params["url"]


def test_the_agents_section_parses_and_is_checked() -> None:
    assert parse_policy({}).agents == AgentsPolicy()
    policy = parse_policy(
        {
            "agents": {
                "call_urls": ["https://handler.example.com/twiml/"],
                "callback_urls": ["https://handler.example.com/status"],
                "caller_ids": ["+15550100"],
                "dial_to": ["client:", "+1555"],
            }
        }
    )
    assert policy.agents == AgentsPolicy(
        ("https://handler.example.com/twiml/",),
        ("https://handler.example.com/status",),
        ("+15550100",),
        ("client:", "+1555"),
    )
    assert parse_policy({"agents": {"call_urls": []}}).agents.call_urls == ()


@pytest.mark.parametrize(
    ("agents", "message"),
    [
        ({"urls": []}, r"^agents: unknown key\(s\) urls$"),
        ({"call_urls": "https://h.example/"}, r"^agents\.call_urls must be an array of strings"),
        ({"call_urls": [1]}, r"^agents\.call_urls\[0\] must be a non-empty string"),
        ({"call_urls": ["javascript:alert(1)"]}, r"^agents\.call_urls\[0\] must be an http"),
        ({"callback_urls": ["/status"]}, r"^agents\.callback_urls\[0\] must be an http"),
        ({"call_urls": ["https://h.example/a?x=1"]}, r"^agents\.call_urls\[0\]"),
        ({"caller_ids": [""]}, r"^agents\.caller_ids\[0\] must be a non-empty string"),
        ({"caller_ids": [datetime.date(2024, 1, 1)]}, r"^agents\.caller_ids\[0\]"),
        ({"dial_to": "+1"}, r"^agents\.dial_to must be an array of strings"),
        ({"dial_to": [""]}, r"^agents\.dial_to\[0\] must be a non-empty string"),
        ([], r"^agents must be a table"),
    ],
)
def test_a_bad_agents_section_is_refused(agents: Any, message: str) -> None:
    refused({"agents": agents}, message)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://handler.example.com/twiml/a", True),
        ("HTTPS://Handler.Example.com/twiml/a", True),
        ("https://handler.example.com/twiml", True),
        ("https://handler.example.com/twiml-evil", False),
        ("https://handler.example.com/other", False),
        ("https://handler.example.com.evil.example/twiml/a", False),
        ("https://handler.example.com@evil.example/twiml/a", False),
        ("https://handler.example.com:8443/twiml/a", False),
        ("http://handler.example.com/twiml/a", False),
        ("https://handler.example.com/twiml/../admin", False),
        ("https://handler.example.com/twiml/%2e%2e/admin", False),
        ("javascript:alert(1)", False),
    ],
)
def test_url_prefixes_compare_scheme_host_and_path(url: str, allowed: bool) -> None:
    assert url_allowed(url, ("https://handler.example.com/twiml",)) is allowed


def test_a_prefix_without_a_path_allows_the_whole_host() -> None:
    assert url_allowed("https://h.example/any/where", ("https://h.example",))
    assert not url_allowed("https://h.example.evil/", ("https://h.example",))


def test_agent_params_are_checked_against_the_policy() -> None:
    agents = AgentsPolicy(
        call_urls=("https://handler.example.com/",),
        callback_urls=("https://status.example.com/",),
        caller_ids=("+15550100",),
        dial_to=("client:", "+1555"),
    )
    good = {"from": "+15550100", "url": "https://handler.example.com/t"}
    check_agent_params(agents, "call", {**good, "to": "client:alice"})
    check_agent_params(agents, "conference", {"from": "+15550100", "to": "+15550111"})
    check_agent_params(agents, "call", good)
    check_agent_params(AgentsPolicy(), "call", {**good, "from": "+19005550199"})
    cases = [
        ("call", {**good, "url": "https://evil.example/t"}, "url"),
        ("redirect", {"call_sid": CA, "url": "https://evil.example/t"}, "url"),
        ("call", {**good, "from": "+19005550199"}, "from"),
        ("conference", {"from": "+19005550199"}, "from"),
        ("dequeue", {"from": "+19005550199"}, "from"),
        ("call", {**good, "to": "+19005550199"}, "to"),
        ("conference", {"from": "+15550100", "to": "sip:x@evil.example"}, "to"),
        ("dequeue", {"from": "+15550100", "to": "+4477"}, "to"),
        ("call", {**good, "status_callback_url": "https://evil.example/s"}, "status_callback_url"),
        ("conference", {"status_callback": "https://evil.example/s"}, "status_callback"),
        (
            "conference",
            {"conference_status_callback": "https://evil.example/s"},
            "conference_status_callback",
        ),
        (
            "dequeue",
            {"from": "+15550100", "status_callback_url": "https://e.x/"},
            "status_callback_url",
        ),
    ]
    for op, params, field in cases:
        with pytest.raises(AgentParamRefused) as caught:
            check_agent_params(agents, op, params)
        assert caught.value.field == field
        assert str(caught.value).startswith(f"{field}: ")
        assert "evil" not in str(caught.value) and "+1900" not in str(caught.value)
    with pytest.raises(AgentParamRefused):
        check_agent_params(AgentsPolicy(call_urls=()), "call", good)
