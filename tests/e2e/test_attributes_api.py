"""``PATCH /flex/tasks/<TaskSid>/attributes`` end to end: the bridge, the emulator, real sockets.

Every error case checks the task's attributes at the emulator, fetched as a raw string through
the official client before and after, are byte-identical, and that no write to the task was
applied meanwhile (from the emulator's log). The workflow defers every reservation (a policy
with no rules), so each task's reservation stays pending while the tests run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from flex_bridge.app.attributes import TRANSIENT
from flex_bridge.domain.attributes import ATTRIBUTES_LIMIT, MAX_DEPTH
from tests.e2e.conftest import OpenEnv
from tests.e2e.env import Env
from tests.support.bridge import wait_until
from tests.support.emulator import header

DEFER_ALL: dict[str, Any] = {}
MERGE_PATCH = "application/merge-patch+json"
UNKNOWN_TASK = "WT" + "0123456789abcdef" * 2


# ---------------------------------------------------------------------------------- helpers


async def patch(
    env: Env,
    task_sid: str,
    body: Any,
    *,
    token: str | None,
    content_type: str | None = MERGE_PATCH,
    query: str = "",
) -> tuple[int, Any]:
    """PATCH the attributes; ``body`` is sent as is when bytes or str, else as JSON."""
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if content_type is not None:
        headers["Content-Type"] = content_type
    status, answer, _ = await env.request(
        "PATCH", f"/flex/tasks/{task_sid}/attributes{query}", data=data, headers=headers
    )
    return status, answer


async def raw_attributes(env: Env, task_sid: str) -> str:
    """The task's attributes as TaskRouter stores them: the raw string, via the client."""
    task = await env.ws.tasks(task_sid).fetch_async()
    return str(task.attributes)


def task_writes(entries: list[dict[str, Any]], task_sid: str) -> list[dict[str, Any]]:
    """REST updates of one task (``POST .../Tasks/<sid>``), in log order."""
    return [
        e
        for e in entries
        if e.get("kind", "rest") == "rest"
        and e.get("product") == "taskrouter"
        and e.get("method") == "POST"
        and e.get("path", "").endswith(f"/Tasks/{task_sid}")
    ]


def problem(body: Any, status_code: Any) -> dict[str, Any]:
    """``{"error": {"code", "message", ...details}}``, with the code expected."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert {"code", "message"} <= set(err), body
    assert isinstance(err["message"], str) and err["message"], body
    assert err["code"] == status_code, body
    return err


@asynccontextmanager
async def untouched(
    env: Env, task_sid: str, *, refused_writes: bool = False
) -> AsyncIterator[None]:
    """The block changes nothing at the emulator: the stored attributes are byte-identical,
    and no write to the task was applied (none was even sent, unless ``refused_writes``)."""
    before = await raw_attributes(env, task_sid)
    since = await env.last_seq()
    yield
    await env.admin.request("DELETE", "/_emulator/faults")
    assert await raw_attributes(env, task_sid) == before
    writes = task_writes(await env.rest(since), task_sid)
    assert [w for w in writes if w["applied"]] == []
    if not refused_writes:
        assert writes == []


async def setup(
    open_env: OpenEnv, attributes: dict[str, Any] | None = None
) -> tuple[Env, Any, Any, str]:
    """An env, a task (with its pending reservation) and a supervisor's token."""
    env = await open_env(policy=DEFER_ALL)
    task, reservation = await env.create_task(attributes or {"type": "support"})
    supervisor = await env.admin.token(None, ["supervisor"])
    return env, task, reservation, supervisor


# --------------------------------------------------------------------------------- success


async def test_a_patch_is_merged_and_answered_with_attributes_and_etag(
    open_env: OpenEnv,
) -> None:
    original = {"type": "support", "customer": {"name": "Zoë", "tier": "silver"}, "from": "+1"}
    env, task, _, supervisor = await setup(open_env, original)
    since = await env.last_seq()

    status, body = await patch(
        env,
        task.sid,
        {"customer": {"tier": "gold", "tags": ["vip"]}, "from": None, "note": "日本語"},
        token=supervisor,
    )

    assert status == 200, body
    expected = {
        "type": "support",
        "customer": {"name": "Zoë", "tier": "gold", "tags": ["vip"]},
        "note": "日本語",
    }
    assert set(body) == {"attributes", "etag", "changed"}
    assert body["attributes"] == expected
    assert body["changed"] is True
    raw = await raw_attributes(env, task.sid)
    assert json.loads(raw) == expected
    assert raw == json.dumps(expected, ensure_ascii=False, separators=(",", ":"))
    # The etag answered is the task's ETag now.
    status, _, headers = await env.admin.request(
        "GET", f"/taskrouter/v1/Workspaces/{env.state.workspace_sid}/Tasks/{task.sid}"
    )
    assert status == 200
    assert body["etag"] == header(headers, "ETag")
    # One conditional write, applied.
    [write] = task_writes(await env.rest(since), task.sid)
    assert write["if_match"]
    assert write["status"] == 200 and write["applied"]


@pytest.mark.parametrize(
    "content_type",
    [MERGE_PATCH, "application/json", "application/json; charset=utf-8", "Application/JSON"],
)
async def test_merge_patch_and_json_content_types_are_accepted(
    open_env: OpenEnv, content_type: str
) -> None:
    env, task, _, supervisor = await setup(open_env)

    status, body = await patch(
        env, task.sid, {"lang": "fr"}, token=supervisor, content_type=content_type
    )

    assert status == 200, body
    assert body["attributes"] == {"type": "support", "lang": "fr"}
    assert json.loads(await raw_attributes(env, task.sid)) == body["attributes"]


async def test_a_patch_that_changes_nothing_writes_nothing(open_env: OpenEnv) -> None:
    env, task, _, supervisor = await setup(open_env, {"type": "support", "a": {"b": 1}})

    async with untouched(env, task.sid):
        status, body = await patch(
            env, task.sid, {"type": "support", "a": {"b": 1}, "absent": None}, token=supervisor
        )
        assert status == 200, body
        assert body["changed"] is False
        assert body["attributes"] == {"type": "support", "a": {"b": 1}}
        assert body["etag"]


async def test_the_agent_holding_the_reservation_may_patch(open_env: OpenEnv) -> None:
    env, task, reservation, _ = await setup(open_env)
    agent = await env.admin.token(reservation.worker_sid, ["agent"])

    status, body = await patch(env, task.sid, {"wrap_code": "sale"}, token=agent)

    assert status == 200, body
    assert json.loads(await raw_attributes(env, task.sid))["wrap_code"] == "sale"


# ----------------------------------------------------------------------------- who may ask


async def test_no_or_a_bad_token_is_401(open_env: OpenEnv) -> None:
    env, task, _, _ = await setup(open_env)

    async with untouched(env, task.sid):
        status, body = await patch(env, task.sid, {"a": 1}, token=None)
        assert status == 401, body
        problem(body, "missing_token")
        status, body = await patch(env, task.sid, {"a": 1}, token="not-a-token")
        assert status == 401, body
        problem(body, "invalid_token")
        status, body, _ = await env.request(
            "PATCH",
            f"/flex/tasks/{task.sid}/attributes",
            data='{"a": 1}',
            headers={"Authorization": "Basic abc", "Content-Type": MERGE_PATCH},
        )
        assert status == 401, body


async def test_an_agent_without_an_active_reservation_on_the_task_is_403(
    open_env: OpenEnv,
) -> None:
    env, task, reservation, _ = await setup(open_env)
    other = next(sid for sid in env.worker_sids() if sid != reservation.worker_sid)
    stranger = await env.admin.token(other, ["agent"])
    holder = await env.admin.token(reservation.worker_sid, ["agent"])

    async with untouched(env, task.sid):
        status, body = await patch(env, task.sid, {"a": 1}, token=stranger)
        assert status == 403, body
        problem(body, "forbidden")

    # Once the holder has rejected the reservation, it is no longer theirs to patch.
    await (
        env.ws.tasks(task.sid)
        .reservations(reservation.sid)
        .update_async(reservation_status="rejected")
    )
    async with untouched(env, task.sid):
        status, body = await patch(env, task.sid, {"a": 1}, token=holder)
        assert status == 403, body
        problem(body, "forbidden")


async def test_an_unknown_task_is_404(open_env: OpenEnv) -> None:
    env, _, reservation, supervisor = await setup(open_env)
    agent = await env.admin.token(reservation.worker_sid, ["agent"])
    since = await env.last_seq()

    for token in (supervisor, agent):
        status, body = await patch(env, UNKNOWN_TASK, {"a": 1}, token=token)
        assert status == 404, body
        problem(body, 20404)
    status, body = await patch(env, "WTnot-a-sid", {"a": 1}, token=supervisor)
    assert status == 404, body
    problem(body, 20404)
    taskrouter_writes = [
        e for e in await env.rest(since) if e["product"] == "taskrouter" and e["method"] == "POST"
    ]
    assert taskrouter_writes == []


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json-patch+json", None],
)
async def test_other_content_types_are_415(open_env: OpenEnv, content_type: str | None) -> None:
    env, task, _, supervisor = await setup(open_env)

    async with untouched(env, task.sid):
        status, body = await patch(
            env, task.sid, b'{"a": 1}', token=supervisor, content_type=content_type
        )
        assert status == 415, body
        err = problem(body, "unsupported_media_type")
        assert MERGE_PATCH in err["message"]


# -------------------------------------------------------------------------- the bad corpus


def _nested(levels: int) -> bytes:
    return ('{"k": ' * (levels - 1) + "{}" + "}" * (levels - 1)).encode()


BAD_PATCHES: list[tuple[str, bytes, str]] = [
    # (what, body, where)
    ("malformed: empty", b"", "line 1 column 1"),
    ("malformed: unquoted key", b"{a: 1}", "line 1 column 2"),
    ("malformed: single quotes", b"{'a': 1}", "line 1 column 2"),
    ("malformed: trailing comma", b'{"a": 1,}', "line 1 column 9"),
    ("malformed: two documents", b'{"a": 1} {"b": 2}', "line 1 column 10"),
    ("malformed: on line 2", b'{"a": 1,\n "b": }', "line 2 column 7"),
    ("truncated in a string", b'{"customer": {"name": "Zo', "line 1 column 23"),
    ("truncated in an array", b'{"a": [1, 2', "line 1 column 12"),
    ("truncated after a key", b'{"a"', "line 1 column 5"),
    ("wrong type: array", b'[{"a": 1}]', "$"),
    ("wrong type: string", b'"{\\"a\\": 1}"', "$"),
    ("wrong type: number", b"42", "$"),
    ("wrong type: null", b"null", "$"),
    ("wrong type: boolean", b"true", "$"),
    ("duplicate keys", b'{"a": 1, "a": 2}', "$.a"),
    ("duplicate keys, nested", b'{"x": {"y": [{"b": 1, "b": 1}]}}', "$.x.y[0].b"),
    ("NaN", b'{"a": NaN}', "$.a"),
    ("Infinity", b'{"a": {"b": Infinity}}', "$.a.b"),
    ("-Infinity", b'{"a": [0, -Infinity]}', "$.a[1]"),
    ("a number out of range", b'{"a": 1e400}', "$.a"),
    ("a number too long", b'{"a": ' + b"7" * 5000 + b"}", "$.a"),
    ("invalid UTF-8", b'{"a": "\xff"}', "byte 7"),
    ("invalid UTF-8: cut sequence", b'{"a": "caf\xc3"}', "byte 10"),
    ("invalid UTF-8: encoded surrogate", b'{"a": "\xed\xa0\x80"}', "byte 7"),
    ("invalid UTF-8: overlong", b'{"\xc0\xaf": 1}', "byte 2"),
    ("a byte-order mark", b'\xef\xbb\xbf{"a": 1}', "byte 0"),
    ("a lone surrogate escape", b'{"a": "\\ud800"}', "$.a"),
    ("too deep", _nested(MAX_DEPTH + 1), f"line 1 column {MAX_DEPTH * 6 + 1}"),
    ("far too deep", b"[" * 60_000, f"line 1 column {MAX_DEPTH + 1}"),
]


async def test_every_bad_patch_is_400_saying_where_and_changes_nothing(
    open_env: OpenEnv,
) -> None:
    original = {"type": "support", "customer": {"name": "Zoë"}}
    env, task, reservation, supervisor = await setup(open_env, original)
    agent = await env.admin.token(reservation.worker_sid, ["agent"])
    before = await raw_attributes(env, task.sid)

    for what, body, where in BAD_PATCHES:
        for content_type in (MERGE_PATCH, "application/json"):
            async with untouched(env, task.sid):
                status, answer = await patch(
                    env, task.sid, body, token=supervisor, content_type=content_type
                )
                assert status == 400, (what, answer)
                err = problem(answer, "invalid_patch")
                assert err["where"] == where, (what, err)
                assert where in err["message"], (what, err)
    # An agent's bad patch too.
    async with untouched(env, task.sid):
        status, answer = await patch(env, task.sid, b'{"a": NaN}', token=agent)
        assert status == 400, answer
    assert await raw_attributes(env, task.sid) == before
    # And the task still takes a good patch.
    status, answer = await patch(env, task.sid, {"ok": True}, token=supervisor)
    assert status == 200, answer
    assert json.loads(await raw_attributes(env, task.sid)) == {**original, "ok": True}


async def test_a_bad_replace_malformed_flag_is_400(open_env: OpenEnv) -> None:
    env, task, _, supervisor = await setup(open_env)

    async with untouched(env, task.sid):
        status, body = await patch(
            env, task.sid, {"a": 1}, token=supervisor, query="?replace_malformed=maybe"
        )
        assert status == 400, body
        problem(body, "invalid_query")


# ---------------------------------------------------------------------------- too large


async def test_a_result_too_large_is_413_with_the_size_and_the_limit(open_env: OpenEnv) -> None:
    original = {"type": "support", "notes": "n" * 3900}
    env, task, _, supervisor = await setup(open_env, original)
    addition = {"history": ["é" * 50] * 4}
    expected_size = len(
        json.dumps({**original, **addition}, ensure_ascii=False, separators=(",", ":"))
    )
    assert expected_size > ATTRIBUTES_LIMIT

    async with untouched(env, task.sid):
        status, body = await patch(env, task.sid, addition, token=supervisor)
        assert status == 413, body
        err = problem(body, "attributes_too_large")
        assert err["size"] == expected_size
        assert err["limit"] == ATTRIBUTES_LIMIT
        assert str(expected_size) in err["message"] and str(ATTRIBUTES_LIMIT) in err["message"]

    # Characters are counted, not bytes: exactly at the limit in characters is accepted,
    # though it is more bytes than that.
    room = ATTRIBUTES_LIMIT - len(json.dumps({**original, "x": ""}, separators=(",", ":")))
    assert room > 0
    status, body = await patch(env, task.sid, {"x": "é" * room}, token=supervisor)
    assert status == 200, body
    raw = await raw_attributes(env, task.sid)
    assert len(raw) == ATTRIBUTES_LIMIT
    assert len(raw.encode("utf-8")) > ATTRIBUTES_LIMIT


async def test_a_patch_body_too_large_is_413(open_env: OpenEnv) -> None:
    env, task, _, supervisor = await setup(open_env)

    async with untouched(env, task.sid):
        body = json.dumps({"big": "x" * (100 * 1024)})
        status, answer = await patch(env, task.sid, body, token=supervisor)
        assert status == 413, answer
        problem(answer, "patch_too_large")


# ---------------------------------------------------------------- malformed existing ones


@pytest.mark.parametrize("existing", ["{not json", '{"customer": {"name": "Zo', "[1, 2]"])
async def test_malformed_existing_attributes_are_409_unless_replaced_explicitly(
    open_env: OpenEnv, existing: str
) -> None:
    env = await open_env(policy=DEFER_ALL)
    supervisor = await env.admin.token(None, ["supervisor"])
    task = await env.ws.tasks.create_async(attributes=existing)  # stored as sent, unchecked
    assert await raw_attributes(env, task.sid) == existing

    for query in ("", "?replace_malformed=false", "?replace_malformed=0"):
        async with untouched(env, task.sid):
            status, body = await patch(env, task.sid, {"a": 1}, token=supervisor, query=query)
            assert status == 409, body
            err = problem(body, "malformed_attributes")
            assert "replace_malformed" in err["message"]
            assert err["where"] and err["where"] in err["message"]

    status, body = await patch(
        env, task.sid, {"a": 1}, token=supervisor, query="?replace_malformed=true"
    )
    assert status == 200, body
    assert body["attributes"] == {"a": 1}
    assert body["changed"] is True
    assert await raw_attributes(env, task.sid) == '{"a":1}'


# ----------------------------------------------------------------------------- concurrency


@pytest.mark.slow
async def test_fifty_concurrent_patches_all_land_and_412s_were_met(open_env: OpenEnv) -> None:
    env, task, _, supervisor = await setup(open_env, {"type": "support"})
    since = await env.last_seq()

    answers = await asyncio.gather(
        *(patch(env, task.sid, {f"key_{n:02d}": n}, token=supervisor) for n in range(50))
    )

    for status, body in answers:
        assert status == 200, body
        assert body["changed"] is True
    final = json.loads(await raw_attributes(env, task.sid))
    assert final == {"type": "support", **{f"key_{n:02d}": n for n in range(50)}}

    writes = task_writes(await env.rest(since), task.sid)
    conflicts = [w for w in writes if w["status"] == 412]
    applied = [w for w in writes if w["applied"]]
    assert all(w["if_match"] for w in writes)  # never an unconditional write
    assert conflicts, "no 412 was met: the patches did not really race"
    assert all(w["code"] == 20412 and not w["applied"] for w in conflicts)
    assert len(applied) == 50  # one applied write per patch, none lost, none doubled
    assert len(writes) == 50 + len(conflicts)


async def test_concurrent_writers_through_the_client_are_not_lost(open_env: OpenEnv) -> None:
    """A writer that does not go through the bridge (here the official client, with
    If-Match) races the bridge's patches: both kinds of change survive."""
    env, task, _, supervisor = await setup(open_env, {"type": "support"})

    async def outside_writer(n: int) -> None:
        async def attempt() -> bool:
            answer = await env.ws.tasks(task.sid).fetch_with_http_info_async()
            attrs = json.loads(answer.data.attributes)
            attrs[f"outside_{n}"] = n
            try:
                await env.ws.tasks(task.sid).update_async(
                    attributes=json.dumps(attrs), if_match=header(answer.headers, "ETag")
                )
            except Exception as exc:  # the client's 412
                assert getattr(exc, "status", None) == 412, exc
                return False
            return True

        await wait_until(attempt, timeout=30, interval=0)

    results = await asyncio.gather(
        *(patch(env, task.sid, {f"bridge_{n}": n}, token=supervisor) for n in range(10)),
        *(outside_writer(n) for n in range(10)),
    )

    for result in results[:10]:
        assert result is not None and result[0] == 200, result
    final = json.loads(await raw_attributes(env, task.sid))
    assert {f"bridge_{n}" for n in range(10)} <= set(final)
    assert {f"outside_{n}" for n in range(10)} <= set(final)


# -------------------------------------------------------------------------- TaskRouter down


async def test_taskrouter_unavailable_is_503_and_changes_nothing(open_env: OpenEnv) -> None:
    env, task, reservation, supervisor = await setup(open_env)
    agent = await env.admin.token(reservation.worker_sid, ["agent"])
    task_path = f"/Tasks/{task.sid}$"

    # The task cannot be read (for a supervisor; for its agent, nor can its reservations).
    for token in (supervisor, agent):
        async with untouched(env, task.sid):
            await env.admin.faults(
                [{"product": "taskrouter", "method": "GET", "error_rates": {"503": 1}}]
            )
            status, body = await patch(env, task.sid, {"a": 1}, token=token)
            assert status == 503, body
            problem(body, 20503)

    # The write keeps failing: an outage, not a conflict, and after a last look, a 503.
    async with untouched(env, task.sid, refused_writes=True):
        await env.admin.faults(
            [
                {
                    "product": "taskrouter",
                    "method": "POST",
                    "path": task_path,
                    "error_rates": {"503": 1},
                }
            ]
        )
        since = await env.last_seq()
        status, body = await patch(env, task.sid, {"a": 1}, token=supervisor)
        assert status == 503, body
        problem(body, 20503)
        writes = task_writes(await env.rest(since), task.sid)
        assert all(w["status"] == 503 and w["fault"] == "error_503" for w in writes)
        assert len(writes) == TRANSIENT.max_attempts  # bounded, each after a fresh fetch


async def test_a_write_whose_answer_was_lost_is_not_sent_again(open_env: OpenEnv) -> None:
    env, task, _, supervisor = await setup(open_env)
    await env.admin.faults(
        [
            {
                "product": "taskrouter",
                "method": "POST",
                "path": f"/Tasks/{task.sid}$",
                "lose_after_commit": 1,
                "count": 1,
            }
        ]
    )
    since = await env.last_seq()

    status, body = await patch(env, task.sid, {"a": 1}, token=supervisor)

    assert status == 200, body
    assert body["changed"] is True  # it is there, and most likely by this request
    assert body["attributes"] == {"type": "support", "a": 1}
    [write] = task_writes(await env.rest(since), task.sid)  # the re-fetch showed it took
    assert write["applied"] and write["fault"] == "lose_drop"
    assert json.loads(await raw_attributes(env, task.sid)) == {"type": "support", "a": 1}
