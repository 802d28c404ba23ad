"""TwilioSyncChannel against the emulator's Sync: maps, items, TTLs, If-Match and lost writes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from flex_bridge.adapters.retry import RetryPolicy, retrying
from flex_bridge.adapters.sync_channel import TwilioSyncChannel, map_name
from flex_bridge.domain.intents import ErrorInfo, Intent, channel_item, new_intent_id
from flex_bridge.errors import (
    NotFoundError,
    RateLimitedError,
    RejectedError,
    TransientUpstreamError,
)
from tests.support.emulator import Admin, RunningEmulator, twilio_client

ITEM_SCHEMA = Path(__file__).resolve().parents[2] / "sync" / "schema" / "item.v1.json"
WT = "WT" + "0123456789abcdef" * 2
WK = "WK" + "00112233445566778899aabbccddeeff"
T0 = 1_714_566_896.789


def wr(n: int) -> str:
    return f"WR{n:032x}"


@cache
def item_validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(ITEM_SCHEMA.read_text()))


@dataclass
class Channel:
    channel: TwilioSyncChannel
    client: Any
    service_sid: str
    writes: list[str] = field(default_factory=list)

    @property
    def service(self) -> Any:
        return self.client.sync.v1.services(self.service_sid)

    def items(self, worker_sid: str = WK) -> Any:
        return self.service.sync_maps(map_name(worker_sid)).sync_map_items

    async def fetch(self, key: str, worker_sid: str = WK) -> Any:
        return await self.items(worker_sid)(key).fetch_async()


@pytest.fixture
async def sync(emulator: RunningEmulator) -> AsyncIterator[Channel]:
    assert emulator.state is not None
    client = twilio_client(emulator)
    made = Channel(
        TwilioSyncChannel(client, emulator.state.sync_service_sid, ttl=3600),
        client,
        emulator.state.sync_service_sid,
    )
    made.channel.on_write = made.writes.append
    yield made
    await client.http_client.close()


def intent(n: int, key: str, **changes: Any) -> Intent:
    """Intent number ``n`` for reservation ``key``: a greater ``n`` is a newer intent."""
    created = T0 + n
    base = Intent(
        intent_id=new_intent_id(created),
        op="accept",
        reservation_sid=key,
        task_sid=WT,
        worker_sid=WK,
        source="plugin",
        params={"task_sid": WT},
        state="announced",
        deadline=created + 120,
        created_at=created,
        updated_at=created,
    )
    return base.evolve(**changes)


def pending(i: Intent) -> dict[str, Any]:
    return channel_item(i, i.created_at + 0.1)


def applied(i: Intent) -> dict[str, Any]:
    return channel_item(
        i.evolve(state="settled", reservation_status="accepted"), i.created_at + 0.5
    )


def failed(i: Intent) -> dict[str, Any]:
    return channel_item(
        i.evolve(state="settled", error=ErrorInfo(20001, "not pending")), i.created_at + 0.5
    )


def sync_writes(log: list[dict[str, Any]], fragment: str = "/Items") -> list[dict[str, Any]]:
    return [
        e
        for e in log
        if e.get("product") == "sync" and e["method"] == "POST" and fragment in e["path"]
    ]


# ------------------------------------------------------------------------------ first write
async def test_first_publish_creates_the_map_and_the_item_with_a_ttl(sync: Channel) -> None:
    key = wr(1)
    data = pending(intent(1, key))
    assert await sync.channel.publish(WK, key, data)

    the_map = await sync.service.sync_maps(map_name(WK)).fetch_async()
    assert the_map.unique_name == f"flex-bridge.worker.{WK}"
    item = await sync.fetch(key)
    assert item.key == key
    assert item.data == data
    assert list(item_validator().iter_errors(item.data)) == []
    assert item.date_expires is not None
    lifetime = (item.date_expires - item.date_updated).total_seconds()
    assert 3599 <= lifetime <= 3601
    assert sync.writes == ["map_created", "written"]


async def test_the_map_is_created_once(sync: Channel, admin: Admin) -> None:
    for n in range(3):
        assert await sync.channel.publish(WK, wr(n), pending(intent(n, wr(n))))
    maps = [e for e in sync_writes(await admin.log("rest"), "/Maps") if e["path"].endswith("Maps")]
    assert len(maps) == 1


async def test_a_map_made_by_another_instance_is_used(
    sync: Channel, emulator: RunningEmulator, admin: Admin
) -> None:
    await sync.service.sync_maps.create_async(unique_name=map_name(WK))
    assert await sync.channel.publish(WK, wr(1), pending(intent(1, wr(1))))
    assert (await sync.fetch(wr(1))).data["phase"] == "pending"
    assert "map_created" not in sync.writes
    # A fresh process spends no map creation (Sync counts each against the service's write
    # rate, even a 409): the write goes straight to the item.
    posts = sync_writes(await admin.log("rest"), "/")
    assert [(e["path"].rsplit("/", 1)[-1], e["status"]) for e in posts] == [
        ("Maps", 201),  # the other instance's, above
        ("Items", 201),
    ]


async def test_each_worker_has_its_own_map(sync: Channel) -> None:
    other = "WK" + "f" * 32
    i = intent(1, wr(1))
    assert await sync.channel.publish(WK, wr(1), pending(i))
    assert await sync.channel.publish(other, wr(2), pending(intent(2, wr(2), worker_sid=other)))
    assert (await sync.fetch(wr(2), other)).data["worker_sid"] == other
    assert await sync.channel.read(other, wr(1)) is None


# ------------------------------------------------------------------------------ ordering
async def test_a_later_phase_overwrites(sync: Channel) -> None:
    key, i = wr(1), intent(1, wr(1))
    assert await sync.channel.publish(WK, key, pending(i))
    first = await sync.fetch(key)
    assert await sync.channel.publish(WK, key, applied(i))
    second = await sync.fetch(key)
    assert second.data == applied(i)
    assert int(second.revision) > int(first.revision)
    assert list(item_validator().iter_errors(second.data)) == []


async def test_a_newer_intent_overwrites_a_settled_one(sync: Channel) -> None:
    key = wr(1)
    assert await sync.channel.publish(WK, key, failed(intent(1, key)))
    newer = pending(intent(2, key, op="reject"))
    assert await sync.channel.publish(WK, key, newer)
    assert (await sync.fetch(key)).data == newer


@pytest.mark.parametrize("behind", ["pending_after_applied", "pending_after_failed", "older"])
async def test_a_write_that_would_move_backwards_is_skipped(sync: Channel, behind: str) -> None:
    key = wr(1)
    old, new = intent(1, key), intent(2, key)
    if behind == "pending_after_applied":
        ahead, late = applied(old), pending(old)
    elif behind == "pending_after_failed":
        ahead, late = failed(old), pending(old)
    else:
        ahead, late = pending(new), applied(old)
    assert await sync.channel.publish(WK, key, ahead)
    revision = (await sync.fetch(key)).revision
    assert await sync.channel.publish(WK, key, late) is False
    item = await sync.fetch(key)
    assert item.data == ahead
    assert item.revision == revision
    assert sync.writes[-1] == "skipped_behind"


async def test_applied_may_correct_failed_but_not_the_reverse(sync: Channel) -> None:
    key = wr(1)
    i = intent(1, key)
    assert await sync.channel.publish(WK, key, failed(i))
    assert await sync.channel.publish(WK, key, applied(i))
    assert await sync.channel.publish(WK, key, failed(i)) is False
    assert (await sync.fetch(key)).data["phase"] == "applied"


async def test_the_same_data_again_is_not_rewritten(sync: Channel, admin: Admin) -> None:
    key, data = wr(1), pending(intent(1, wr(1)))
    assert await sync.channel.publish(WK, key, data)
    before = len(sync_writes(await admin.log("rest")))
    assert await sync.channel.publish(WK, key, data)
    assert len(sync_writes(await admin.log("rest"))) == before


# ------------------------------------------------------------------------------ other writers
async def test_a_concurrent_newer_writer_wins_after_a_412(sync: Channel, admin: Admin) -> None:
    key, mine, theirs = wr(1), intent(1, wr(1)), intent(2, wr(1), op="reject")
    assert await sync.channel.publish(WK, key, pending(mine))
    # Another instance writes a newer intent between our announce and our settle.
    await sync.items()(key).update_async(data=pending(theirs))
    assert await sync.channel.publish(WK, key, applied(mine)) is False
    assert (await sync.fetch(key)).data == pending(theirs)
    assert "conflict_412" in sync.writes
    rejected = [e for e in sync_writes(await admin.log("rest")) if e["status"] == 412]
    assert len(rejected) == 1
    assert rejected[0]["if_match"]


async def test_a_concurrent_writer_that_is_behind_is_overwritten_after_a_412(
    sync: Channel,
) -> None:
    key, mine = wr(1), intent(2, wr(1))
    assert await sync.channel.publish(WK, key, pending(mine))
    # A slow writer puts back an older intent's item.
    await sync.items()(key).update_async(data=applied(intent(1, key)))
    assert await sync.channel.publish(WK, key, applied(mine))
    assert (await sync.fetch(key)).data == applied(mine)
    assert "conflict_412" in sync.writes


async def test_an_item_written_first_by_another_instance_is_read_on_409(
    sync: Channel, emulator: RunningEmulator
) -> None:
    key = wr(1)
    assert await sync.channel.publish(WK, wr(9), pending(intent(9, wr(9))))  # the map exists
    other_client = twilio_client(emulator)
    try:
        assert emulator.state is not None
        other = TwilioSyncChannel(other_client, emulator.state.sync_service_sid)
        assert await other.publish(WK, key, pending(intent(5, key)))
    finally:
        await other_client.http_client.close()
    # This instance has never seen the item: its create is 409, then it decides on the data.
    assert await sync.channel.publish(WK, key, applied(intent(3, key))) is False
    assert "conflict_409" in sync.writes
    newest = pending(intent(6, key))
    assert await sync.channel.publish(WK, key, newest)
    assert (await sync.fetch(key)).data == newest


async def test_concurrent_publishes_in_one_process_converge_forward(sync: Channel) -> None:
    key, i = wr(1), intent(1, wr(1))
    results = await asyncio.gather(
        sync.channel.publish(WK, key, pending(i)), sync.channel.publish(WK, key, applied(i))
    )
    assert results[1] is True
    assert (await sync.fetch(key)).data == applied(i)


# ------------------------------------------------------------------------------ things gone
async def test_an_item_deleted_behind_its_back_is_created_again(sync: Channel) -> None:
    key, i = wr(1), intent(1, wr(1))
    assert await sync.channel.publish(WK, key, pending(i))
    await sync.items()(key).delete_async()
    assert await sync.channel.publish(WK, key, applied(i))
    item = await sync.fetch(key)
    assert item.data == applied(i)
    assert item.date_expires is not None


async def test_an_expired_item_is_created_again(sync: Channel, admin: Admin) -> None:
    key, i = wr(1), intent(1, wr(1))
    assert await sync.channel.publish(WK, key, pending(i))
    await admin.advance(3601)
    assert await sync.channel.read(WK, key) is None
    assert await sync.channel.publish(WK, key, applied(i))
    assert (await sync.fetch(key)).data == applied(i)


async def test_the_map_deleted_behind_its_back_is_created_again(sync: Channel) -> None:
    key, i = wr(1), intent(1, wr(1))
    assert await sync.channel.publish(WK, key, pending(i))
    await sync.service.sync_maps(map_name(WK)).delete_async()
    assert await sync.channel.publish(WK, key, applied(i))
    assert (await sync.fetch(key)).data == applied(i)
    assert sync.writes.count("map_created") == 2


async def test_a_new_key_in_a_deleted_map(sync: Channel) -> None:
    assert await sync.channel.publish(WK, wr(1), pending(intent(1, wr(1))))
    await sync.service.sync_maps(map_name(WK)).delete_async()
    assert await sync.channel.publish(WK, wr(2), pending(intent(2, wr(2))))
    assert (await sync.fetch(wr(2))).data["reservation_sid"] == wr(2)


async def test_each_write_renews_the_ttl(sync: Channel, admin: Admin) -> None:
    key, i = wr(1), intent(1, wr(1))
    assert await sync.channel.publish(WK, key, pending(i))
    first = (await sync.fetch(key)).date_expires
    await admin.advance(1000)
    assert await sync.channel.publish(WK, key, applied(i))
    second = (await sync.fetch(key)).date_expires
    assert 999 <= (second - first).total_seconds() <= 1001


# ------------------------------------------------------------------------------ lost answers
async def test_a_lost_create_is_resolved_by_reading_back(sync: Channel, admin: Admin) -> None:
    key, data = wr(1), pending(intent(1, wr(1)))
    await sync.channel.publish(WK, wr(9), pending(intent(9, wr(9))))  # the map exists
    await admin.faults([{"product": "sync", "method": "POST", "path": "/Items$", "count": 1,
                         "lose_after_commit": 1.0}])  # fmt: skip
    assert await sync.channel.publish(WK, key, data)
    assert (await sync.fetch(key)).data == data
    writes = sync_writes(await admin.log("rest"))
    # 404: the first write found no map (then created it); not a create that was applied.
    creates = [e for e in writes if e["path"].endswith("/Items") and e["status"] != 404]
    assert len(creates) == 2  # wr(9) and wr(1): the lost create was never sent again
    assert [e["fault"] for e in creates][-1] is not None


async def test_a_lost_update_is_resolved_by_reading_back(sync: Channel, admin: Admin) -> None:
    key, i = wr(1), intent(1, wr(1))
    assert await sync.channel.publish(WK, key, pending(i))
    await admin.faults([{"product": "sync", "method": "POST", "path": f"/Items/{key}$",
                         "lose_after_commit": 1.0, "lose_mode": "504"}])  # fmt: skip
    assert await sync.channel.publish(WK, key, applied(i))
    await admin.faults([])
    assert (await sync.fetch(key)).data == applied(i)
    updates = [e for e in sync_writes(await admin.log("rest")) if e["path"].endswith(key)]
    assert len(updates) == 1


async def test_a_lost_map_create_is_tolerated(sync: Channel, admin: Admin) -> None:
    await admin.faults([{"product": "sync", "method": "POST", "path": "/Maps$",
                         "lose_after_commit": 1.0}])  # fmt: skip
    key, data = wr(1), pending(intent(1, wr(1)))
    assert await sync.channel.publish(WK, key, data)
    assert (await sync.fetch(key)).data == data


async def test_a_write_that_did_not_happen_is_retried_by_the_callers_policy(
    sync: Channel, admin: Admin
) -> None:
    """A 503 on a write is ambiguous; the read-back shows it did not happen, so the error is
    transient and the retry policy sends it again."""
    key, i = wr(1), intent(1, wr(1))
    assert await sync.channel.publish(WK, key, pending(i))
    await admin.faults([{"product": "sync", "method": "POST", "path": f"/Items/{key}$",
                         "error_rates": {"503": 1.0}, "count": 1}])  # fmt: skip
    publish = lambda: sync.channel.publish(WK, key, applied(i))  # noqa: E731
    assert await retrying(publish, RetryPolicy(max_attempts=3))
    assert (await sync.fetch(key)).data == applied(i)
    updates = [e for e in sync_writes(await admin.log("rest")) if e["path"].endswith(key)]
    assert [e["status"] for e in updates] == [503, 200]


async def test_a_lost_write_overtaken_by_a_newer_intent_is_skipped(
    sync: Channel, admin: Admin
) -> None:
    key, mine = wr(1), intent(1, wr(1))
    assert await sync.channel.publish(WK, key, pending(mine))
    theirs = pending(intent(2, key))
    await sync.items()(key).update_async(data=theirs)
    await admin.faults([{"product": "sync", "method": "POST", "path": f"/Items/{key}$",
                         "error_rates": {"503": 1.0}, "count": 1}])  # fmt: skip
    assert await sync.channel.publish(WK, key, applied(mine)) is False
    assert (await sync.fetch(key)).data == theirs


# ------------------------------------------------------------------------------ failures
async def test_rate_limits_propagate_to_the_caller(sync: Channel, admin: Admin) -> None:
    await admin.faults([{"product": "sync", "error_rates": {"429": 1.0}, "retry_after": 2}])
    with pytest.raises(RateLimitedError) as caught:
        await sync.channel.publish(WK, wr(1), pending(intent(1, wr(1))))
    assert caught.value.retry_after == 2.0


async def test_a_read_that_fails_is_transient(sync: Channel, admin: Admin) -> None:
    await admin.faults([{"product": "sync", "method": "GET", "error_rates": {"503": 1.0}}])
    with pytest.raises(TransientUpstreamError):
        await sync.channel.read(WK, wr(1))


async def test_read(sync: Channel) -> None:
    assert await sync.channel.read(WK, wr(1)) is None  # no map yet
    data = pending(intent(1, wr(1)))
    await sync.channel.publish(WK, wr(1), data)
    assert await sync.channel.read(WK, wr(1)) == data
    assert await sync.channel.read(WK, wr(2)) is None


async def test_ping_and_a_missing_service(sync: Channel, emulator: RunningEmulator) -> None:
    await sync.channel.ping()
    wrong = TwilioSyncChannel(sync.client, "IS" + "0" * 32)
    with pytest.raises(NotFoundError):
        await wrong.ping()
    with pytest.raises(NotFoundError):
        await wrong.publish(WK, wr(1), pending(intent(1, wr(1))))


def test_map_name() -> None:
    assert map_name(WK) == f"flex-bridge.worker.{WK}"


async def test_a_write_that_keeps_failing_is_a_transient_error(sync: Channel, admin: Admin) -> None:
    """A 5xx on every write: after the read-back shows nothing happened, the caller's retry
    policy (backoff, attempts, deadline) takes over; the channel does not hammer Sync."""
    key, i = wr(1), intent(1, wr(1))
    assert await sync.channel.publish(WK, key, pending(i))
    await admin.faults([{"product": "sync", "method": "POST", "error_rates": {"503": 1.0}}])
    with pytest.raises(TransientUpstreamError) as caught:
        await sync.channel.publish(WK, key, applied(i))
    assert caught.value.status == 503
    updates = [e for e in sync_writes(await admin.log("rest")) if e["path"].endswith(key)]
    assert len(updates) == 1
    await admin.faults([])
    assert (await sync.fetch(key)).data == pending(i)
    assert await sync.channel.publish(WK, key, applied(i))


async def test_an_oversized_item_is_rejected(sync: Channel) -> None:
    data = {**pending(intent(1, wr(1))), "padding": "x" * 17_000}
    with pytest.raises(RejectedError) as caught:
        await sync.channel.publish(WK, wr(1), data)
    assert (caught.value.status, caught.value.code) == (413, 54006)


async def test_remembered_revisions_are_bounded_and_forgetting_costs_only_a_read(
    sync: Channel,
) -> None:
    """The revision cache keeps the most recently used items only; an item it forgot is
    settled all the same (create, 409, read, then the conditional update)."""
    sync.channel.known_limit = 2
    made = {n: intent(n, wr(n)) for n in (1, 2, 3)}
    for n, i in made.items():
        assert await sync.channel.publish(WK, wr(n), pending(i))
    assert len(sync.channel._known) == 2  # wr(1) forgotten
    sync.writes.clear()
    assert await sync.channel.publish(WK, wr(1), applied(made[1]))
    assert (await sync.fetch(wr(1))).data == applied(made[1])
    assert sync.writes == ["conflict_409", "written"]
