"""Webhook signatures: a forged or tampered callback gets 403 and has no side effect at all.

The policy accepts only tasks whose attributes say ``auto: true``; the tasks created here do
not, so the bridge defers them. A forgery that flips the attribute would make the bridge
journal an intent and accept the reservation over REST; each one below must be refused with
a JSON 403 while nothing is journaled and nothing is called at the emulator.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

from tests.e2e.conftest import OpenEnv
from tests.e2e.env import Env, assert_error
from tests.support.bridge import settled_item, wait_until

AUTO_ONLY = {
    "assignment": {
        "rules": [{"name": "auto", "match": {"task_attributes": {"auto": True}}, "op": "accept"}]
    }
}
SHA256_SETTINGS = {
    "X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey,algorithm=HMAC_SHA256"
}
SHARED_KEY = "shared-key-secret-0123456789"  # FLEX_BRIDGE_WEBHOOK_SECRET of these tests


def shared_sign(url: str, params: dict[str, str], secret: str = SHARED_KEY) -> str:
    """A signature as Twilio makes it when a Webhook Rule's shared key signs (HMAC-SHA256)."""
    return str(RequestValidator(secret).compute_signature(url, params, "HMAC_SHA256"))


async def _deferred(env: Env) -> tuple[Any, Any, dict[str, Any]]:
    """A pending reservation the bridge deferred, and the assignment callback it got."""
    task, reservation = await env.create_task({"type": "support"})
    [callback] = await wait_until(lambda: env.assignment_callbacks(reservation.sid))
    return task, reservation, callback


def _forged(callback: dict[str, Any]) -> dict[str, str]:
    params = dict(callback["params"])
    attributes = json.loads(params["TaskAttributes"])
    params["TaskAttributes"] = json.dumps({**attributes, "auto": True})
    return params


async def _assert_no_side_effect(env: Env, reservation_sid: str, since: int) -> None:
    env.idle()
    assert env.journal_count() == {}
    assert env.latest_for(reservation_sid) is None
    assert not await env.rest(since), "the bridge called the emulator"


async def test_unsigned_or_tampered_assignment_callbacks_are_refused(open_env: OpenEnv) -> None:
    env = await open_env(policy=AUTO_ONLY, webhook_secrets=(SHARED_KEY,))
    task, reservation, callback = await _deferred(env)
    assert callback["status"] == 200  # the emulator's own, signed callback was accepted
    path = "/taskrouter/assignment"
    url = env.url(path)
    forged = _forged(callback)
    since = await env.last_seq()

    attempts: list[tuple[str, dict[str, str], dict[str, str]]] = [
        ("unsigned", forged, {}),
        (
            "the original signature, one param changed",
            forged,
            {"X-Twilio-Signature": env.sign(callback["url"], callback["params"])},
        ),
        ("garbage", forged, {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}),
        ("empty", forged, {"X-Twilio-Signature": ""}),
        (
            "signed for another host",
            forged,
            {"X-Twilio-Signature": env.sign("https://evil.example" + path, forged)},
        ),
        (
            "signed for another path",
            forged,
            {"X-Twilio-Signature": env.sign(env.url("/taskrouter/events"), forged)},
        ),
        (
            "SHA-256 announced, SHA-1 sent",
            forged,
            {"X-Twilio-Signature": env.sign(url, forged), **SHA256_SETTINGS},
        ),
        (
            "a shared key announced, the auth token used",
            forged,
            {"X-Twilio-Signature": env.sign(url, forged, "HMAC_SHA256"), **SHA256_SETTINGS},
        ),
        (
            "signed with the shared key, not announced",
            forged,
            {"X-Twilio-Signature": shared_sign(url, forged)},
        ),
        (
            "a shared key nobody configured",
            forged,
            {"X-Twilio-Signature": shared_sign(url, forged, "another"), **SHA256_SETTINGS},
        ),
        (
            "SHA-1 announced, SHA-256 sent",
            forged,
            {
                "X-Twilio-Signature": env.sign(url, forged, "HMAC_SHA256"),
                "X-Twilio-Webhooks-Signature-Settings": "algorithm=HMAC_SHA1",
            },
        ),
        (
            "an algorithm nobody knows",
            forged,
            {
                "X-Twilio-Signature": env.sign(url, forged),
                "X-Twilio-Webhooks-Signature-Settings": "algorithm=HMAC_MD5",
            },
        ),
        ("a param added", {**forged, "Extra": "1"}, {"X-Twilio-Signature": env.sign(url, forged)}),
    ]
    for what, params, headers in attempts:
        status, body, _ = await env.request("POST", path, data=params, headers=headers)
        assert status == 403, (what, status, body)
        assert_error(body, "invalid_signature")

    await _assert_no_side_effect(env, reservation.sid, since)
    assert (await env.reservation(task.sid, reservation.sid)).reservation_status == "pending"

    # The control: the same forged params, correctly signed (the shared key, SHA-256
    # announced and used), are acted on. So the refusals above were the signature's doing.
    status, body = await env.post_webhook(
        path, forged, signature=shared_sign(url, forged), headers=SHA256_SETTINGS
    )
    assert (status, body) == (200, {})
    item: Any = await wait_until(lambda: settled_item(env.admin, reservation.sid))
    assert item["phase"] == "applied"
    assert len(await env.accepts(reservation.sid)) == 1


async def test_unsigned_or_tampered_event_callbacks_are_refused(open_env: OpenEnv) -> None:
    env = await open_env(policy=AUTO_ONLY)
    task, reservation, _ = await _deferred(env)
    # The emulator's own events were signed and accepted.
    created = await wait_until(lambda: env.events_sent("reservation.created", reservation.sid))
    assert created[0]["status"] == 204
    path = "/taskrouter/events"
    url = env.url(path)
    # A forged "reservation.accepted": were it believed, rule 6 would journal an observation
    # and write the worker's Sync item.
    event = {
        "EventType": "reservation.accepted",
        "AccountSid": env.state.account_sid,
        "WorkspaceSid": env.state.workspace_sid,
        "ResourceType": "reservation",
        "ResourceSid": reservation.sid,
        "ReservationSid": reservation.sid,
        "TaskSid": task.sid,
        "WorkerSid": reservation.worker_sid,
        "Timestamp": "1700000000",
    }
    tampered = {**event, "EventType": "reservation.canceled"}
    token = {"I-Twilio-Idempotency-Token": "forged-token-1"}
    since = await env.last_seq()

    attempts: list[tuple[str, dict[str, str], dict[str, str]]] = [
        ("unsigned", event, token),
        ("one param changed", tampered, {**token, "X-Twilio-Signature": env.sign(url, event)}),
        (
            "signed for another URL",
            event,
            {**token, "X-Twilio-Signature": env.sign(env.url("/taskrouter/assignment"), event)},
        ),
        (
            "SHA-256 announced, SHA-1 sent",
            event,
            {**token, "X-Twilio-Signature": env.sign(url, event), **SHA256_SETTINGS},
        ),
    ]
    for what, params, headers in attempts:
        status, body, _ = await env.request("POST", path, data=params, headers=headers)
        assert status == 403, (what, status, body)
        assert_error(body, "invalid_signature")

    await _assert_no_side_effect(env, reservation.sid, since)

    # Refused deliveries left no dedupe key behind: the genuine delivery with the same
    # idempotency token is processed.
    status, _ = await env.post_webhook(path, event, headers=token)
    assert status == 204
    item: Any = await wait_until(lambda: settled_item(env.admin, reservation.sid))
    assert item["reservation_status"] == "accepted"


async def test_signatures_are_checked_against_the_public_url(open_env: OpenEnv) -> None:
    public = "https://bridge.example.com"
    env = await open_env(
        policy={"assignment": {"rules": [{"name": "all", "op": "accept"}]}}, public_url=public
    )
    task, reservation = await env.create_task()
    # The emulator signs for the address it posts to, which is not the public one.
    [callback] = await wait_until(lambda: env.assignment_callbacks(reservation.sid))
    assert callback["status"] == 403
    since = await env.last_seq()
    path = "/taskrouter/assignment"
    params = callback["params"]

    status, body = await env.post_webhook(path, params, sign_url=env.url(path))
    assert status == 403, body
    assert_error(body, "invalid_signature")
    await _assert_no_side_effect(env, reservation.sid, since)

    status, body = await env.post_webhook(path, params, sign_url=public + path)
    assert (status, body) == (200, {})
    item: Any = await wait_until(lambda: settled_item(env.admin, reservation.sid))
    assert item["phase"] == "applied"
    assert len(await env.accepts(reservation.sid)) == 1
    assert (await env.reservation(task.sid, reservation.sid)).reservation_status == "accepted"

    # Events too, and the query string is part of what is signed.
    event = {
        "EventType": "task.updated",
        "ResourceType": "task",
        "ResourceSid": task.sid,
        "TaskSid": task.sid,
        "Timestamp": "1700000001",
    }
    query = "?" + urlencode({"rc": "3"})
    status, _ = await env.post_webhook(
        "/taskrouter/events" + query, event, sign_url=env.url("/taskrouter/events" + query)
    )
    assert status == 403
    status, _ = await env.post_webhook(
        "/taskrouter/events" + query, event, sign_url=public + "/taskrouter/events"
    )
    assert status == 403
    status, _ = await env.post_webhook(
        "/taskrouter/events" + query, event, sign_url=public + "/taskrouter/events" + query
    )
    assert status == 204


async def test_json_bodies_are_checked_with_body_sha256(open_env: OpenEnv) -> None:
    env = await open_env(policy=AUTO_ONLY)
    task, reservation, callback = await _deferred(env)
    forged = _forged(callback)
    body = json.dumps(forged)
    digest = hashlib.sha256(body.encode()).hexdigest()
    path = f"/taskrouter/assignment?bodySHA256={digest}"
    json_type = {"Content-Type": "application/json"}
    since = await env.last_seq()

    # The body was changed after signing: its hash no longer matches the signed URL's.
    changed = json.dumps({**forged, "TaskPriority": "99"})
    for what, sent, signature in (
        ("body changed", changed, env.sign(env.url(path), {})),
        ("unsigned", body, None),
        ("signed over the params instead of the URL", body, env.sign(env.url(path), forged)),
        (
            "hash of another body",
            body,
            env.sign(env.url("/taskrouter/assignment?bodySHA256=" + "0" * 64), {}),
        ),
    ):
        headers = {**json_type, **({"X-Twilio-Signature": signature} if signature else {})}
        status, answer, _ = await env.request("POST", path, data=sent, headers=headers)
        assert status == 403, (what, answer)
        assert_error(answer, "invalid_signature")
    await _assert_no_side_effect(env, reservation.sid, since)

    status, answer, _ = await env.request(
        "POST",
        path,
        data=body,
        headers={**json_type, "X-Twilio-Signature": env.sign(env.url(path), {})},
    )
    assert (status, answer) == (200, {})
    item: Any = await wait_until(lambda: settled_item(env.admin, reservation.sid))
    assert item["phase"] == "applied"
    assert item["task_sid"] == task.sid
    assert len(await env.accepts(reservation.sid)) == 1


async def test_a_rotated_shared_key_and_the_auth_token_both_still_verify(
    open_env: OpenEnv,
) -> None:
    """While a shared key is rotated both secrets are configured; requests no Webhook Rule
    matches are still signed with the auth token (no settings header)."""
    env = await open_env(policy=AUTO_ONLY, webhook_secrets=("the-new-key", SHARED_KEY))
    _, reservation, callback = await _deferred(env)
    path = "/taskrouter/assignment"
    url = env.url(path)
    params = dict(callback["params"])
    for signature, headers in [
        (shared_sign(url, params), SHA256_SETTINGS),
        (shared_sign(url, params, "the-new-key"), SHA256_SETTINGS),
        (env.sign(url, params), {}),
    ]:
        status, body = await env.post_webhook(path, params, signature=signature, headers=headers)
        assert (status, body) == (200, {}), (status, body)
    assert env.latest_for(reservation.sid) is None  # deferred each time: nothing to do
