"""The Sync channel: one Map per worker, one item per reservation (``sync/README.md``).

``SyncChannelPort`` is the seam; ``TwilioSyncChannel`` writes through the official client.

- The map ``flex-bridge.worker.<WorkerSid>`` is created when a write finds it missing (404),
  then the write goes again (409 on the creation means it exists already). Maps outlive
  processes, so a fresh process (a restart, another instance) writes straight away instead
  of spending a map creation per worker: Sync counts each against the service's write rate
  even when it meets a 409.
- Every write sends ``If-Match`` with the last revision this process knows, and the item TTL
  (TTLs are fixed at write time, so each write extends it).
- A write never moves an item backwards (``domain.intents.may_overwrite``): on 412 or 409 the
  current item is read, and the write goes ahead only if it is not behind.
- A write whose answer was lost is checked by reading the item back, never sent blind: if
  it did not land, ``TransientUpstreamError`` goes to the caller, whose retry policy decides.

Transient failures (429, 5xx on reads, refused connections) propagate: the caller retries
under its policy and deadline.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twilio.rest import Client

from flex_bridge.adapters.twilio_errors import call
from flex_bridge.domain.intents import may_overwrite
from flex_bridge.domain.types import JSON
from flex_bridge.errors import (
    AlreadyExistsError,
    AmbiguousOutcomeError,
    ConflictError,
    NotFoundError,
    PreconditionFailed,
    TransientUpstreamError,
    UpstreamError,
)

T = TypeVar("T")
MAX_WRITE_ROUNDS = 6
DEFAULT_TTL = 86_400
KNOWN_ITEMS = 10_000  # items whose revision is remembered (each a few hundred bytes)


def map_name(worker_sid: str) -> str:
    return f"flex-bridge.worker.{worker_sid}"


class SyncChannelPort(Protocol):
    async def publish(self, worker_sid: str, key: str, data: JSON) -> bool:
        """Write the item unless that would move it backwards; False when skipped."""
        ...

    async def read(self, worker_sid: str, key: str) -> JSON | None: ...

    async def ping(self) -> None: ...


class TwilioSyncChannel:
    def __init__(
        self,
        client: Client,
        service_sid: str,
        *,
        ttl: int = DEFAULT_TTL,
        on_write: Callable[[str], None] | None = None,
        known_limit: int = KNOWN_ITEMS,
    ) -> None:
        self.client = client
        self.service_sid = service_sid
        self.ttl = ttl
        self.on_write = on_write or (lambda outcome: None)
        # The last revision and data this process wrote or read, per item: the If-Match of
        # the next write. Bounded (least recently used out): an item it no longer knows is
        # created, and on 409 read first, so forgetting costs a round trip, never correctness.
        self._known: OrderedDict[tuple[str, str], tuple[str, JSON]] = OrderedDict()
        self.known_limit = known_limit

    @property
    def _service(self) -> Any:
        return self.client.sync.v1.services(self.service_sid)

    async def _create_map(self, name: str) -> None:
        try:
            await call(lambda: self._service.sync_maps.create_async(unique_name=name))
            self.on_write("map_created")
        except AlreadyExistsError:
            pass
        except AmbiguousOutcomeError:
            pass  # created or not: the item write tells (404 -> create again)

    async def read(self, worker_sid: str, key: str) -> JSON | None:
        name = map_name(worker_sid)
        try:
            item = await call(
                lambda: self._service.sync_maps(name).sync_map_items(key).fetch_async()
            )
        except NotFoundError:
            self._known.pop((name, key), None)
            return None
        data: JSON = dict(item.data or {})
        self._remember(name, key, str(item.revision), data)
        return data

    async def publish(self, worker_sid: str, key: str, data: JSON) -> bool:
        name = map_name(worker_sid)
        items = self._service.sync_maps(name).sync_map_items
        for _ in range(MAX_WRITE_ROUNDS):
            known = self._known.get((name, key))
            if known is not None:
                self._known.move_to_end((name, key))
            try:
                if known is None:
                    item = await call(
                        lambda: items.create_async(key=key, data=data, item_ttl=self.ttl)
                    )
                else:
                    revision, current = known
                    if not may_overwrite(current, data):
                        self.on_write("skipped_behind")
                        return False
                    if current == data:
                        return True
                    item = await call(
                        lambda rev=revision: items(key).update_async(  # type: ignore[misc]
                            data=data, if_match=rev, item_ttl=self.ttl
                        )
                    )
            except NotFoundError:
                if known is None:
                    # The map is missing: never created, or expired, or deleted.
                    await self._create_map(name)
                else:
                    self._known.pop((name, key), None)  # the item expired: create it again
                continue
            except (AlreadyExistsError, PreconditionFailed) as exc:
                # 409 (exists) or 412 (someone wrote since): read, then decide again.
                self.on_write(f"conflict_{exc.status}")
                await self.read(worker_sid, key)
                continue
            except AmbiguousOutcomeError as exc:
                found = await self.read(worker_sid, key)
                if found == data:
                    self.on_write("written")
                    return True
                if found is not None and not may_overwrite(found, data):
                    self.on_write("skipped_behind")
                    return False
                # It did not land (or not yet: If-Match guards a late arrival). Sending it
                # again at once would hammer a failing Sync; the caller's policy retries.
                raise TransientUpstreamError(
                    f"Sync item {key} in {name} was not written: no answer "
                    f"(HTTP {exc.status or 'none'}) and the read-back shows other data",
                    status=exc.status,
                    code=exc.code,
                ) from exc
            self._remember(name, key, str(item.revision), dict(data))
            self.on_write("written")
            return True
        raise ConflictError(
            f"Sync item {key} in {name} kept changing; gave up after {MAX_WRITE_ROUNDS} rounds"
        )

    def _remember(self, name: str, key: str, revision: str, data: JSON) -> None:
        self._known[(name, key)] = (revision, data)
        self._known.move_to_end((name, key))
        while len(self._known) > self.known_limit:
            self._known.popitem(last=False)

    async def ping(self) -> None:
        await call(lambda: self._service.fetch_async())


__all__ = ["SyncChannelPort", "TwilioSyncChannel", "UpstreamError", "map_name"]
