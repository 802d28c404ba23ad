"""Hypothesis on the webhook endpoints: signatures, parsers and replays.

The bridge runs in-process (``create_app`` with a services factory of in-memory fakes: a
``SqliteJournal(":memory:")``, and from ``tests.support.fakes`` a TaskRouter that takes any SID
as a pending reservation, a Sync channel and no Flex tokens) behind the Quart test client. For
generated webhooks (the TaskRouter fields plus arbitrary extra parameters, repeated names, any
Unicode, and a callback URL that may carry its own query):

- the correctly signed request is accepted (HMAC-SHA1, or HMAC-SHA256 when
  ``X-Twilio-Webhooks-Signature-Settings`` says so);
- ANY single tampering is refused with a JSON 403 and has no side effect at all: nothing
  journaled, no REST call, no Sync write, no event handler run, and no dedupe key used up (the
  genuine request sent afterwards still runs). Tamperings: a parameter's value changed, a
  parameter added or removed, the URL's scheme, host, port, path or query changed, the
  signature made for the other algorithm than the settings header names (or for an unknown
  one), SHA-256 announced with a SHA-1 signature and the reverse, a missing, empty, garbage or
  one-character-off signature, and JSON bodies whose ``bodySHA256`` does not match;
- replays of a signed request are deduplicated: an assignment callback journals one intent
  and makes one REST change however often it comes; an event runs its handlers once, whether
  the retry carries the same ``I-Twilio-Idempotency-Token`` or another one.

Twilio's signature covers the concatenation ``URL + name1 + value1 + ...`` over the sorted set
of names and, per name, the sorted set of values; two parameter lists with the same
concatenation are the same request to it. A tampering that keeps that string (moving a
character between a name and its value, duplicating a pair) is not one the scheme can see, so
the generator skips those (``assume``).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from flex_bridge.adapters.journal import SqliteJournal
from flex_bridge.app.coordinator import Coordinator
from flex_bridge.app.events import HandlerRegistry
from flex_bridge.app.metrics import Metrics
from flex_bridge.app.services import Services
from flex_bridge.domain.policy import parse_policy
from flex_bridge.settings import Settings
from flex_bridge.web import create_app
from tests.support.fakes import FakeChannel, FakeTaskRouter, FakeTokens

T = TypeVar("T")
AUTH_TOKEN = "fuzzing-auth-token"
SHA1, SHA256 = "HMAC_SHA1", "HMAC_SHA256"
SHARED_KEY = "a-webhook-shared-key-secret"
SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
ASSIGNMENT, EVENTS = "/taskrouter/assignment", "/taskrouter/events"
FORM = "application/x-www-form-urlencoded"
MAX_EXAMPLES = 50  # per public-URL configuration: 100 per property in all
ACCEPT_ALL = {"assignment": {"rules": [{"name": "all", "op": "accept"}]}}
ASSIGNMENT_FIELDS = (
    "Timestamp",
    "AccountSid",
    "WorkspaceSid",
    "WorkflowSid",
    "TaskQueueSid",
    "WorkerSid",
    "WorkerAttributes",
    "TaskSid",
    "TaskAttributes",
    "TaskAge",
    "TaskPriority",
    "ReservationSid",
)
EVENT_FIELDS = ("EventType", "AccountSid", "ResourceSid", "Timestamp", "TimestampMs")
EVENT_TYPES = (
    "reservation.accepted",
    "reservation.completed",
    "task.created",
    "task.canceled",
    "worker.activity.update",
    "custom.event",
)
_serial = itertools.count(1)


def sid(prefix: str) -> str:
    """A SID no other example uses (hypothesis may repeat its own draws)."""
    return f"{prefix}{next(_serial):032x}"


@dataclass
class Harness:
    """The bridge app on its own event loop, with its fakes and an event recorder."""

    public_url: str | None
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    taskrouter: FakeTaskRouter = field(default_factory=lambda: FakeTaskRouter(create_unknown=True))
    channel: FakeChannel = field(default_factory=FakeChannel)
    events: list[dict[str, str]] = field(default_factory=list)
    tally: Counter[str] = field(default_factory=Counter)  # what was sent, for the summary

    def __post_init__(self) -> None:
        self.settings = Settings(
            account_sid="AC" + "f" * 32,
            auth_token=AUTH_TOKEN,
            workspace_sid="WS" + "f" * 32,
            sync_service_sid="IS" + "f" * 32,
            public_url=self.public_url,
            journal=":memory:",
            policy=parse_policy(ACCEPT_ALL),
            webhook_secrets=(SHARED_KEY,),
        )
        self.validator = RequestValidator(AUTH_TOKEN)
        self.shared = RequestValidator(SHARED_KEY)

        async def factory(settings: Settings, metrics: Metrics) -> Services:
            journal = SqliteJournal(":memory:")
            await journal.open()
            coordinator = Coordinator(
                journal, self.channel, self.taskrouter, settings.policy, metrics=metrics
            )
            return Services(
                settings=settings,
                metrics=metrics,
                journal=journal,
                taskrouter=self.taskrouter,
                channel=self.channel,
                tokens=FakeTokens(),
                coordinator=coordinator,
                handlers=HandlerRegistry(metrics),
                closers=[journal.close],
            )

        self.app = create_app(self.settings, services=factory)
        self.run(self.app.startup())
        self.svc: Services = self.app.config["services"]

        def record(event: Mapping[str, str]) -> None:
            self.events.append(dict(event))

        self.svc.handlers.register("*", record, "test:record")
        self.client = self.app.test_client()

    def sign(self, url: str, pairs: list[tuple[str, str]], algorithm: str) -> str:
        """Twilio's signature; repeated names need a multi-dict (TWILIO.md). SHA-256 is what a
        Webhook Rule's shared key signs with (announced by the settings header); SHA-1 the
        auth token."""
        signer = self.shared if algorithm == SHA256 else self.validator
        return str(signer.compute_signature(url, MultiDict(pairs), algorithm))

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.app.shutdown())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    # The URL Twilio calls: the public URL when one is configured, else the address the
    # request reached (the test client's, http://localhost).
    def url(self, path_and_query: str) -> str:
        base = self.public_url or "http://localhost"
        return base + path_and_query

    def post(
        self, path_and_query: str, body: bytes, content_type: str, headers: Mapping[str, str]
    ) -> tuple[int, Any]:
        async def send() -> tuple[int, Any]:
            response = await self.client.post(
                path_and_query, data=body, headers={"Content-Type": content_type, **headers}
            )
            text = await response.get_data(as_text=True)
            return response.status_code, json.loads(text) if text else None

        return self.run(send())

    def quiet(self) -> None:
        """Let every background step of the bridge finish (intents, event handlers)."""
        self.run(self.svc.coordinator.idle())
        self.run(self.svc.inbox.idle())

    def snapshot(self) -> tuple[Any, ...]:
        self.quiet()
        return (
            self.run(self.svc.journal.count()),
            self.taskrouter.changes,
            self.taskrouter.reads,
            len(self.channel.publishes),
            len(self.events),
        )


@pytest.fixture(params=[None, "https://flex.example.com"], ids=["direct", "behind-a-proxy"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = Harness(request.param)
    yield h
    h.close()
    if h.tally:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(h.tally.items()))
        print(f"\nwebhook fuzz {request.node.name}: {counts}")


# ------------------------------------------------------------------------------ generation
# Any Unicode but surrogates (which cannot be sent as UTF-8).
SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
TEXT = st.characters(exclude_categories=SURROGATES)
NAMES = st.text(TEXT, min_size=1, max_size=12)
VALUES = st.text(TEXT, max_size=40)
# A query the callback URL may carry as configured: RFC 3986 query characters, unencoded
# where the RFC allows it ("/", "?", ":", "@" and the sub-delims), plus percent-escapes.
QUERY_TOKEN = st.lists(
    st.sampled_from("abcXYZ019-._~!$'()*+,;:@/?") | st.sampled_from(["%20", "%2F", "%C3%A9"]),
    min_size=1,
    max_size=8,
).map("".join)
QUERY = st.lists(st.tuples(QUERY_TOKEN, QUERY_TOKEN), max_size=3).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
)


def material(url: str, pairs: list[tuple[str, str]]) -> str:
    """What Twilio's signature covers (``RequestValidator.compute_signature``)."""
    names = sorted({n for n, _ in pairs})
    out = url
    for name in names:
        for value in sorted({v for n, v in pairs if n == name}):
            out += name + value
    return out


@dataclass
class Webhook:
    path: str
    query: str
    pairs: list[tuple[str, str]]
    algorithm: str

    @property
    def path_and_query(self) -> str:
        return self.path + (f"?{self.query}" if self.query else "")

    def body(self, pairs: list[tuple[str, str]] | None = None) -> bytes:
        return urlencode(self.pairs if pairs is None else pairs).encode()


def headers_for(signature: str | None, algorithm: str | None) -> dict[str, str]:
    headers = {}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    if algorithm is not None:
        headers[SETTINGS_HEADER] = f"key=webhooks_sharedkey,algorithm={algorithm}"
    return headers


def signed_headers(h: Harness, hook: Webhook) -> dict[str, str]:
    signature = h.sign(h.url(hook.path_and_query), hook.pairs, hook.algorithm)
    return headers_for(signature, SHA256 if hook.algorithm == SHA256 else None)


@st.composite
def webhooks(draw: st.DrawFn, path: str) -> Webhook:
    if path == ASSIGNMENT:
        base = {
            "Timestamp": str(draw(st.integers(0, 2**31))),
            "AccountSid": "AC" + "f" * 32,
            "WorkspaceSid": "WS" + "f" * 32,
            "WorkflowSid": sid("WW"),
            "TaskQueueSid": sid("WQ"),
            "WorkerSid": sid("WK"),
            "WorkerAttributes": json.dumps({"skills": draw(st.lists(VALUES, max_size=2))}),
            "TaskSid": sid("WT"),
            "TaskAttributes": json.dumps(draw(st.dictionaries(NAMES, VALUES, max_size=3))),
            "TaskAge": str(draw(st.integers(0, 10**6))),
            "TaskPriority": str(draw(st.integers(0, 100))),
            "ReservationSid": sid("WR"),
        }
        fixed: tuple[str, ...] = ASSIGNMENT_FIELDS
    else:
        base = {
            "EventType": draw(st.sampled_from(EVENT_TYPES)),
            "AccountSid": "AC" + "f" * 32,
            "ResourceSid": sid("WR"),
            "Timestamp": str(draw(st.integers(0, 2**31))),
            "TimestampMs": str(next(_serial)),
        }
        fixed = EVENT_FIELDS
    extra = draw(st.lists(st.tuples(NAMES.filter(lambda n: n not in fixed), VALUES), max_size=4))
    pairs = list(base.items()) + extra
    pairs = draw(st.permutations(pairs))
    return Webhook(path, draw(QUERY), list(pairs), draw(st.sampled_from([SHA1, SHA256])))


# ------------------------------------------------------------------------------ tampering
def tampered_bodies(
    data: st.DataObject, hook: Webhook
) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(what, pairs) with one parameter changed, added or removed."""
    pairs = hook.pairs
    i = data.draw(st.integers(0, len(pairs) - 1), label="tampered index")
    name, value = pairs[i]
    new_value = data.draw(VALUES.filter(lambda v: v != value), label="new value")
    yield f"value of {name!r} changed", [*pairs[:i], (name, new_value), *pairs[i + 1 :]]
    added = data.draw(st.tuples(NAMES, VALUES), label="added param")
    yield f"param {added[0]!r} added", [*pairs, added]
    yield f"param {name!r} removed", [*pairs[:i], *pairs[i + 1 :]]


def tampered_urls(data: st.DataObject, url: str) -> Iterator[tuple[str, str]]:
    """(what, url) with one part of the URL Twilio signed changed."""
    parts = urlsplit(url)
    other = "http" if parts.scheme == "https" else "https"
    yield "scheme", urlunsplit(parts._replace(scheme=other))
    host = data.draw(st.sampled_from(["evil.example", "localhost.evil", "127.0.0.1"]))
    assume(host != parts.hostname)
    yield "host", urlunsplit(parts._replace(netloc=host))
    port = data.draw(st.integers(1024, 65535), label="port")
    yield "port", urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))
    path = data.draw(st.sampled_from([EVENTS, ASSIGNMENT, "/taskrouter", "/"]))
    yield "path", urlunsplit(parts._replace(path=path if path != parts.path else path + "x"))
    pair = data.draw(st.tuples(QUERY_TOKEN, QUERY_TOKEN), label="query pair")
    added = "=".join(pair)
    yield (
        "query (a pair added)",
        urlunsplit(parts._replace(query=f"{parts.query}&{added}" if parts.query else added)),
    )
    if parts.query:
        yield "query (dropped)", urlunsplit(parts._replace(query=""))


def bad_signatures(
    data: st.DataObject, h: Harness, hook: Webhook, url: str
) -> Iterator[tuple[str, dict[str, str]]]:
    """(what, headers) whose signature must not pass, the body and URL being genuine."""
    sha1 = h.sign(url, hook.pairs, SHA1)
    sha256 = h.sign(url, hook.pairs, SHA256)
    yield "missing signature", headers_for(None, None)
    yield "empty signature", headers_for("", None)
    garbage = data.draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60))
    assume(garbage not in (sha1, sha256))
    yield "garbage signature", headers_for(garbage, None)
    where = data.draw(st.integers(0, len(sha1) - 2), label="flipped char")  # not the "="
    flipped = sha1[:where] + ("A" if sha1[where] != "A" else "B") + sha1[where + 1 :]
    yield "one character off", headers_for(flipped, None)
    yield "SHA-256 announced, SHA-1 sent", headers_for(sha1, SHA256)
    yield "SHA-1 (default), SHA-256 sent", headers_for(sha256, None)
    yield "SHA-1 announced, SHA-256 sent", headers_for(sha256, SHA1)
    yield "an unknown algorithm announced", headers_for(sha1, "HMAC_MD5")


def assert_refused(h: Harness, before: tuple[Any, ...], status: int, body: Any, what: str) -> None:
    assert status == 403, f"{what}: {status} {body}"
    assert body == {
        "error": {"code": "invalid_signature", "message": "missing or invalid X-Twilio-Signature"}
    }, what
    assert h.snapshot() == before, f"{what}: the refused request had a side effect"
    h.tally["forged, refused"] += 1


def refuse_every_tampering(data: st.DataObject, h: Harness, hook: Webhook) -> None:
    url = h.url(hook.path_and_query)
    before = h.snapshot()
    signed = signed_headers(h, hook)
    for what, pairs in tampered_bodies(data, hook):
        assume(material(url, pairs) != material(url, hook.pairs))
        status, body = h.post(hook.path_and_query, hook.body(pairs), FORM, signed)
        assert_refused(h, before, status, body, what)
    for what, other_url in tampered_urls(data, url):
        signature = h.sign(other_url, hook.pairs, hook.algorithm)
        headers = headers_for(signature, SHA256 if hook.algorithm == SHA256 else None)
        status, body = h.post(hook.path_and_query, hook.body(), FORM, headers)
        assert_refused(h, before, status, body, f"signed for another {what}: {other_url}")
    for what, headers in bad_signatures(data, h, hook, url):
        status, body = h.post(hook.path_and_query, hook.body(), FORM, headers)
        assert_refused(h, before, status, body, what)


FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ---------------------------------------------------------------------------------- tests
@FUZZ
@given(hook=webhooks(ASSIGNMENT), data=st.data())
def test_assignment_callbacks_signed_tampered_and_replayed(
    harness: Harness, hook: Webhook, data: st.DataObject
) -> None:
    h = harness
    reservation = dict(hook.pairs)["ReservationSid"]
    refuse_every_tampering(data, h, hook)
    assert h.run(h.svc.journal.latest_for_reservation(reservation)) is None

    # The genuine callback: answered, journaled, changed once over REST.
    status, body = h.post(hook.path_and_query, hook.body(), FORM, signed_headers(h, hook))
    assert (status, body) == (200, {}), body
    h.tally["genuine, accepted"] += 1
    h.quiet()
    intent = h.run(h.svc.journal.latest_for_reservation(reservation))
    assert intent is not None and intent.settled and intent.outcome == "applied", intent
    sent = h.taskrouter.reservations.updates
    changes = [u.form for u in sent if u.reservation_sid == reservation]
    assert changes == [{"ReservationStatus": "accepted"}]

    # Replays (a webhook retry, a second delivery): the same intent, no second change.
    before = h.snapshot()
    for _ in range(2):
        status, body = h.post(hook.path_and_query, hook.body(), FORM, signed_headers(h, hook))
        assert (status, body) == (200, {}), body
        h.tally["replays, deduplicated"] += 1
    assert h.snapshot() == before
    assert h.run(h.svc.journal.latest_for_reservation(reservation)) == intent


@FUZZ
@given(hook=webhooks(EVENTS), data=st.data(), with_token=st.booleans())
def test_event_callbacks_signed_tampered_and_replayed(
    harness: Harness, hook: Webhook, data: st.DataObject, with_token: bool
) -> None:
    h = harness
    # Each delivery has its own token (hypothesis may draw the same value twice).
    token = f"idem-{next(_serial)}" if with_token else None
    refuse_every_tampering(data, h, hook)
    resource = dict(hook.pairs)["ResourceSid"]
    assert not [e for e in h.events if e.get("ResourceSid") == resource]

    idempotency = {"I-Twilio-Idempotency-Token": token} if token else {}
    status, body = h.post(
        hook.path_and_query, hook.body(), FORM, {**signed_headers(h, hook), **idempotency}
    )
    assert (status, body) == (204, None)
    h.tally["genuine, accepted"] += 1
    h.quiet()
    assert [e for e in h.events if e.get("ResourceSid") == resource] == [
        {k: v for k, v in reversed(hook.pairs)}  # the first value of a repeated name
    ]

    # Retries: with the same idempotency token, with another, with none: handlers run once.
    before = h.snapshot()
    for retry_token in (token, "other-" + str(next(_serial)), None):
        headers = {**signed_headers(h, hook)}
        if retry_token:
            headers["I-Twilio-Idempotency-Token"] = retry_token
        status, _ = h.post(hook.path_and_query, hook.body(), FORM, headers)
        assert status == 204
        h.tally["replays, deduplicated"] += 1
    assert h.snapshot() == before


@FUZZ
@given(
    event=st.fixed_dictionaries(
        {
            "EventType": st.sampled_from(EVENT_TYPES),
            "Note": VALUES,
            "Count": st.integers(-(2**40), 2**40),
            "Nested": st.dictionaries(NAMES, VALUES, max_size=2),
        }
    ),
    query=QUERY,
    algorithm=st.sampled_from([SHA1, SHA256]),
    data=st.data(),
)
def test_json_bodies_are_bound_to_their_body_sha256(
    harness: Harness, event: dict[str, Any], query: str, algorithm: str, data: st.DataObject
) -> None:
    h = harness
    event = {**event, "ResourceSid": sid("WR"), "TimestampMs": str(next(_serial))}
    body = json.dumps(event).encode()

    def path_for(raw: bytes) -> str:
        digest = hashlib.sha256(raw).hexdigest()
        return f"{EVENTS}?{query + '&' if query else ''}bodySHA256={digest}"

    def signed(path: str) -> dict[str, str]:
        signature = h.sign(h.url(path), [], algorithm)
        return headers_for(signature, SHA256 if algorithm == SHA256 else None)

    path = path_for(body)
    other = json.loads(body)
    other["Note"] = data.draw(VALUES.filter(lambda v: v != event["Note"]), label="other note")
    tampered = json.dumps(other).encode()
    before = h.snapshot()
    attempts = [
        ("body changed after signing", path, tampered, signed(path)),
        ("bodySHA256 of the new body, old signature", path_for(tampered), tampered, signed(path)),
        ("bodySHA256 not a hash", path.rsplit("=", 1)[0] + "=deadbeef", body, signed(path)),
        ("bodySHA256 dropped", EVENTS + (f"?{query}" if query else ""), body, signed(path)),
        (
            "signed for the other algorithm",
            path,
            body,
            headers_for(
                h.sign(h.url(path), [], SHA1 if algorithm == SHA256 else SHA256),
                SHA256 if algorithm == SHA256 else None,
            ),
        ),
    ]
    for what, sent_path, sent_body, headers in attempts:
        status, answer = h.post(sent_path, sent_body, "application/json", headers)
        assert_refused(h, before, status, answer, what)

    status, answer = h.post(path, body, "application/json", signed(path))
    assert (status, answer) == (204, None)
    h.tally["genuine, accepted"] += 1
    h.quiet()
    [seen] = [e for e in h.events if e.get("ResourceSid") == event["ResourceSid"]]
    assert seen["Note"] == event["Note"]
    assert json.loads(seen["Nested"]) == event["Nested"]
    before = h.snapshot()
    status, _ = h.post(path, body, "application/json", signed(path))  # a replay
    assert status == 204
    h.tally["replays, deduplicated"] += 1
    assert h.snapshot() == before


@pytest.mark.parametrize(
    "query", ["team=%C3%A9quipe", "next=https%3A%2F%2Fx.example%2Fa", "a=%7E&b=%41"]
)
def test_a_callback_url_with_percent_escapes_is_checked_as_twilio_signed_it(
    harness: Harness, query: str
) -> None:
    """Twilio signs the URL as configured; the bridge must not decode the escapes first
    (werkzeug's ``request.url`` does: ``%C3%A9`` became ``é``, and every callback was 403)."""
    pairs = [("EventType", "custom.event"), ("ResourceSid", sid("WR")), ("TimestampMs", "1")]
    hook = Webhook(EVENTS, query, pairs, SHA1)
    status, _ = harness.post(hook.path_and_query, hook.body(), FORM, signed_headers(harness, hook))
    assert status == 204
