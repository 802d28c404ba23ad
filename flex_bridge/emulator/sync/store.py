"""The state of the emulated Sync v1 API and every operation on it.

Each operation takes the emulator clock time ``now`` of its request, raises
:class:`~flex_bridge.emulator.api.ApiError` with Twilio's status and code when it refuses, and
publishes one message on the live feed per change. Operations shared by every kind of object
(fetch, list, delete) and by both kinds of collection (Maps and Lists, and their items) take
the record class (``Document``, ``SyncMap``, ``SyncList``, ``Stream``) as their ``cls``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from flex_bridge.emulator.api import JSON, ApiError
from flex_bridge.emulator.clock import Clock, Scheduler, iso
from flex_bridge.emulator.feed import Feed
from flex_bridge.emulator.sync.limits import SyncLimits
from flex_bridge.emulator.sync.records import (
    DOCUMENT,
    Collection,
    CollT,
    Document,
    Item,
    ObjT,
    Registry,
    Service,
    Stream,
    StreamMessage,
    SyncObject,
    new_sid,
)
from flex_bridge.emulator.sync.rules import (
    MAX_STREAM_MESSAGE_BYTES,
    Ttls,
    after,
    alive,
    check_revision,
    check_ttl,
    check_unique_name,
    expiry,
    nothing_to_update,
    parse_data,
)

SERVICE_SETTINGS = frozenset(
    {
        "friendly_name",
        "webhook_url",
        "webhooks_from_rest_enabled",
        "reachability_webhooks_enabled",
        "acl_enabled",
        "reachability_debouncing_enabled",
        "reachability_debouncing_window",
    }
)


class SyncStore:
    """In-memory Sync v1: every operation of the emulated REST API, and the feed of changes.

    Feed messages are dicts with ``product`` ("sync"), ``type`` (``document.created``,
    ``map_item.updated``, ``list.removed``, ``stream_message.published``, ...),
    ``service_sid``, the object's ``<kind>_sid`` and ``<kind>_unique_name``, and then as
    relevant ``key`` or ``index``, ``revision`` (a string), ``data``, ``date_expires``
    (ISO 8601 or null) and, on removals, ``reason`` ("deleted" or "expired").
    """

    def __init__(
        self,
        account_sid: str,
        clock: Clock,
        scheduler: Scheduler,
        feed: Feed,
        *,
        rate_limit: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.account_sid = account_sid
        self.clock = clock
        self.scheduler = scheduler
        self.feed = feed
        self.rate_limit = rate_limit
        self.limits = SyncLimits(lambda: self.rate_limit, monotonic)
        self.services: dict[str, Service] = {}

    # -- services ------------------------------------------------------------------------

    def create_service(self, friendly_name: str | None, now: float, **settings: Any) -> Service:
        service = Service(
            sid=new_sid("IS"), friendly_name=friendly_name, date_created=now, date_updated=now
        )
        self._apply_settings(service, settings)
        self.services[service.sid] = service
        return service

    def get_service(self, sid: str) -> Service:
        service = self.services.get(sid)
        if service is None:
            raise ApiError(404, 54050, f"Service Instance {sid} not found")
        return service

    def list_services(self) -> list[Service]:
        return list(self.services.values())

    def update_service(self, sid: str, now: float, **settings: Any) -> Service:
        service = self.get_service(sid)
        self._apply_settings(service, settings)
        service.date_updated = now
        return service

    def delete_service(self, sid: str) -> None:
        service = self.get_service(sid)
        for registry in service.registries():
            for obj in list(registry.by_sid.values()):
                self._remove(registry, obj, "deleted")
        del self.services[sid]

    @staticmethod
    def _apply_settings(service: Service, settings: dict[str, Any]) -> None:
        unknown = set(settings) - SERVICE_SETTINGS
        if unknown:
            raise TypeError(f"unknown service setting(s): {', '.join(sorted(unknown))}")
        for name, value in settings.items():
            setattr(service, name, value)

    # -- any object: fetch, list, delete -------------------------------------------------

    def get_object(self, service_sid: str, cls: type[ObjT], ref: str, now: float) -> ObjT:
        """A live object of ``cls`` by SID or unique name, read: this counts against the
        object's read limit (so does reading one of its items, or a page of them)."""
        obj = self._lookup(self.get_service(service_sid).registry(cls), ref, now)
        self.limits.charge_read(obj)
        return obj

    def list_objects(self, service_sid: str, cls: type[ObjT], now: float) -> list[ObjT]:
        registry = self.get_service(service_sid).registry(cls)
        out: list[ObjT] = []
        for obj in list(registry.by_sid.values()):
            if alive(obj.expires, now):
                out.append(obj)
            else:
                self._remove(registry, obj, "expired")
        return out

    def delete_object(
        self,
        service_sid: str,
        cls: type[ObjT],
        ref: str,
        now: float,
        *,
        if_match: str | None = None,
    ) -> None:
        """Delete an object; with ``if_match`` (Documents only), only at that revision."""
        registry = self.get_service(service_sid).registry(cls)
        obj = self._lookup(registry, ref, now)
        self.limits.charge(obj)
        kind = cls.KIND
        check_revision(if_match, obj.revision, kind.revision_mismatch, kind.label)
        self._remove(registry, obj, "deleted")

    # -- shared object machinery ---------------------------------------------------------

    def _lookup(self, registry: Registry[ObjT], ref: str, now: float) -> ObjT:
        obj = registry.find(ref)
        if obj is not None and not alive(obj.expires, now):
            self._remove(registry, obj, "expired")
            obj = None
        if obj is None:
            kind = registry.kind
            raise ApiError(404, kind.not_found, f"{kind.label} {ref} not found")
        return obj

    def _create(
        self,
        service: Service,
        cls: type[ObjT],
        unique_name: str | None,
        expires: float | None,
        now: float,
        **fields: Any,
    ) -> ObjT:
        """A new object of ``cls``, registered under its unique name and announced."""
        self.limits.charge_creation(service)
        obj = cls(
            sid=new_sid(cls.KIND.prefix),
            service_sid=service.sid,
            unique_name=unique_name,
            date_created=now,
            date_updated=now,
            **fields,
        )
        registry = service.registry(cls)
        if obj.unique_name is not None:
            existing = registry.by_name.get(obj.unique_name)
            if existing is not None:
                # An expired holder of the name does not block it.
                with contextlib.suppress(ApiError):
                    self._lookup(registry, existing, now)
                if obj.unique_name in registry.by_name:
                    raise ApiError(
                        409,
                        54301,
                        f"Unique name already exists: a {registry.kind.label} named "
                        f"{obj.unique_name!r} exists in service {obj.service_sid}",
                    )
        registry.add(obj)
        self._set_expiry(registry, obj, expires)
        self.limits.charge(obj)
        self._publish_object("created", obj)
        return obj

    def _remove(self, registry: Registry[ObjT], obj: ObjT, reason: str) -> None:
        if not registry.discard(obj):
            return
        _cancel_timer(obj)
        if isinstance(obj, Collection):
            for item in obj.items.values():
                _cancel_timer(item)
        self._publish_object("removed", obj, reason=reason)

    def _set_expiry(self, registry: Registry[ObjT], obj: ObjT, expires: float | None) -> None:
        obj.expires = expires
        _cancel_timer(obj)
        if expires is not None:
            obj.timer = self.scheduler.call_at(expires, lambda: self._expire_object(registry, obj))

    def _expire_object(self, registry: Registry[ObjT], obj: ObjT) -> None:
        if registry.by_sid.get(obj.sid) is obj and not alive(obj.expires, self.clock.now()):
            self._remove(registry, obj, "expired")

    def _touch(self, obj: SyncObject, now: float) -> None:
        obj.revision += 1
        obj.date_updated = now

    # -- feed ----------------------------------------------------------------------------

    def _object_fields(self, obj: SyncObject) -> JSON:
        name = obj.KIND.name
        return {
            "product": "sync",
            "service_sid": obj.service_sid,
            f"{name}_sid": obj.sid,
            f"{name}_unique_name": obj.unique_name,
        }

    def _publish_object(self, event: str, obj: SyncObject, **extra: Any) -> None:
        message = self._object_fields(obj)
        message["type"] = f"{obj.KIND.name}.{event}"
        if not isinstance(obj, Stream):
            message["revision"] = str(obj.revision)
        if isinstance(obj, Document):
            message["data"] = obj.data
        message["date_expires"] = iso(obj.expires)
        message.update(extra)
        self.feed.publish(message)

    def _publish_item(
        self, event: str, parent: Collection[Any], item: Item[Any], **extra: Any
    ) -> None:
        message = self._object_fields(parent)
        message["type"] = f"{parent.KIND.name}_item.{event}"
        message[parent.ITEMS.field] = item.address
        message["revision"] = str(item.revision)
        message["data"] = item.data
        message["date_expires"] = iso(item.expires)
        message.update(extra)
        self.feed.publish(message)

    # -- documents -----------------------------------------------------------------------

    def create_document(
        self,
        service_sid: str,
        unique_name: str | None,
        data: str | None,
        ttl: int | None,
        now: float,
    ) -> Document:
        service = self.get_service(service_sid)
        check_unique_name(unique_name)
        value = {} if data is None else parse_data(data, not_object=54101, what="Document")
        check_ttl(ttl, "Ttl")
        return self._create(service, Document, unique_name, expiry(ttl or 0, now), now, data=value)

    def update_document(
        self,
        service_sid: str,
        ref: str,
        data: str | None,
        ttl: int | None,
        if_match: str | None,
        now: float,
    ) -> Document:
        registry = self.get_service(service_sid).documents
        doc = self._lookup(registry, ref, now)
        self.limits.charge(doc)
        if data is None and ttl is None:
            raise nothing_to_update("Document")
        value = None if data is None else parse_data(data, not_object=54101, what="Document")
        check_ttl(ttl, "Ttl")
        check_revision(if_match, doc.revision, DOCUMENT.revision_mismatch, DOCUMENT.label)
        if value is not None:
            doc.data = value
        if ttl is not None:
            self._set_expiry(registry, doc, expiry(ttl, now))
        self._touch(doc, now)
        self._publish_object("updated", doc)
        return doc

    # -- collections: maps and lists -----------------------------------------------------

    def create_collection(
        self,
        service_sid: str,
        cls: type[CollT],
        unique_name: str | None,
        ttls: Ttls,
        now: float,
    ) -> CollT:
        service = self.get_service(service_sid)
        check_unique_name(unique_name)
        chosen = ttls.collection()
        return self._create(service, cls, unique_name, expiry(chosen or 0, now), now)

    def update_collection(
        self,
        service_sid: str,
        cls: type[CollT],
        ref: str,
        ttls: Ttls,
        now: float,
    ) -> CollT:
        registry = self.get_service(service_sid).registry(cls)
        collection = self._lookup(registry, ref, now)
        self.limits.charge(collection)
        chosen = ttls.collection()
        if chosen is None:
            raise nothing_to_update(cls.KIND.label)
        self._set_expiry(registry, collection, expiry(chosen, now))
        self._touch(collection, now)
        return collection

    # -- items of maps and lists ---------------------------------------------------------

    def _item(self, collection: Collection[Any], ref: str, now: float) -> Item[Any]:
        address = collection.address(ref)
        item = None if address is None else collection.items.get(address)
        if item is not None and not alive(item.expires, now):
            self._drop_item(collection, item, "expired")
            item = None
        if item is None:
            kind = collection.KIND
            raise ApiError(
                404,
                collection.ITEMS.not_found,
                f"{collection.ITEMS.label} {ref} not found in {kind.label} {collection.sid}",
            )
        return item

    def create_item(
        self,
        service_sid: str,
        cls: type[CollT],
        ref: str,
        key: str | None,
        data: str,
        ttls: Ttls,
        now: float,
    ) -> tuple[CollT, Item[Any]]:
        """Add an item: under ``key`` in a Map, at the next index in a List."""
        registry = self.get_service(service_sid).registry(cls)
        collection = self._lookup(registry, ref, now)
        self.limits.charge(collection)
        rules = collection.ITEMS
        address = collection.new_address(key)
        value = parse_data(data, not_object=rules.not_object, what=rules.label)
        item_ttl, collection_ttl = ttls.item()
        # Only a Map's keys can collide: a List's next index has never been used.
        existing = collection.items.get(address)
        if existing is not None:
            if alive(existing.expires, now):
                raise ApiError(409, 54208, f"{rules.label} with key {address!r} already exists")
            self._drop_item(collection, existing, "expired")
        item = Item(address=address, data=value, date_created=now, date_updated=now)
        collection.add(item)
        self._write_item(registry, collection, item, None, item_ttl, collection_ttl, now)
        self._publish_item("added", collection, item)
        return collection, item

    def get_item(
        self, service_sid: str, cls: type[CollT], ref: str, item_ref: str, now: float
    ) -> tuple[CollT, Item[Any]]:
        collection = self.get_object(service_sid, cls, ref, now)
        return collection, self._item(collection, item_ref, now)

    def list_items(
        self,
        service_sid: str,
        cls: type[CollT],
        ref: str,
        now: float,
        *,
        order: str = "asc",
        start: str | None = None,
        bounds: str = "inclusive",
    ) -> tuple[CollT, list[Item[Any]]]:
        """Items by address; ``start`` and ``bounds`` are the ``From``/``Bounds`` query."""
        collection = self.get_object(service_sid, cls, ref, now)
        live: list[Item[Any]] = []
        for item in list(collection.items.values()):
            if alive(item.expires, now):
                live.append(item)
            else:
                self._drop_item(collection, item, "expired")
        items = sorted(live, key=lambda item: item.address, reverse=order == "desc")
        if start is not None:
            first = collection.start(start)
            items = [i for i in items if after(i.address, first, order, bounds)]
        return collection, items

    def update_item(
        self,
        service_sid: str,
        cls: type[CollT],
        ref: str,
        item_ref: str,
        data: str | None,
        ttls: Ttls,
        if_match: str | None,
        now: float,
    ) -> tuple[CollT, Item[Any]]:
        registry = self.get_service(service_sid).registry(cls)
        collection = self._lookup(registry, ref, now)
        item = self._item(collection, item_ref, now)
        self.limits.charge(collection)
        rules = collection.ITEMS
        if data is None and ttls.ttl is None and ttls.item_ttl is None:
            raise nothing_to_update(rules.label)
        value = (
            None
            if data is None
            else parse_data(data, not_object=rules.not_object, what=rules.label)
        )
        item_ttl, collection_ttl = ttls.item()
        check_revision(if_match, item.revision, rules.revision_mismatch, rules.label)
        self._write_item(registry, collection, item, value, item_ttl, collection_ttl, now)
        self._publish_item("updated", collection, item)
        return collection, item

    def delete_item(
        self,
        service_sid: str,
        cls: type[CollT],
        ref: str,
        item_ref: str,
        if_match: str | None,
        now: float,
    ) -> None:
        collection = self._lookup(self.get_service(service_sid).registry(cls), ref, now)
        item = self._item(collection, item_ref, now)
        self.limits.charge(collection)
        rules = collection.ITEMS
        check_revision(if_match, item.revision, rules.revision_mismatch, rules.label)
        self._touch(collection, now)
        self._drop_item(collection, item, "deleted")

    def _set_item_expiry(
        self, parent: Collection[Any], item: Item[Any], expires: float | None
    ) -> None:
        item.expires = expires
        _cancel_timer(item)
        if expires is not None:
            item.timer = self.scheduler.call_at(expires, lambda: self._expire_item(parent, item))

    def _expire_item(self, parent: Collection[Any], item: Item[Any]) -> None:
        held = parent.items.get(item.address) is item
        if held and not alive(item.expires, self.clock.now()):
            self._drop_item(parent, item, "expired")

    def _drop_item(self, parent: Collection[Any], item: Item[Any], reason: str) -> None:
        del parent.items[item.address]
        _cancel_timer(item)
        self._publish_item("removed", parent, item, reason=reason)

    def _write_item(
        self,
        registry: Registry[CollT],
        parent: CollT,
        item: Item[Any],
        value: JSON | None,
        item_ttl: int | None,
        collection_ttl: int | None,
        now: float,
    ) -> None:
        if value is not None:
            item.data = value
        if item_ttl is not None:
            self._set_item_expiry(parent, item, expiry(item_ttl, now))
        item.date_updated = now
        self._touch(parent, now)
        # Item revisions come from the collection's counter, so a deleted and re-created
        # item never reuses a revision that a stale If-Match could still name.
        item.revision = parent.revision
        if collection_ttl is not None:
            self._set_expiry(registry, parent, expiry(collection_ttl, now))

    # -- streams -------------------------------------------------------------------------

    def create_stream(
        self, service_sid: str, unique_name: str | None, ttl: int | None, now: float
    ) -> Stream:
        service = self.get_service(service_sid)
        check_unique_name(unique_name)
        check_ttl(ttl, "Ttl")
        return self._create(service, Stream, unique_name, expiry(ttl or 0, now), now)

    def update_stream(self, service_sid: str, ref: str, ttl: int | None, now: float) -> Stream:
        registry = self.get_service(service_sid).streams
        stream = self._lookup(registry, ref, now)
        self.limits.charge(stream)
        if ttl is None:
            raise nothing_to_update("Stream")
        check_ttl(ttl, "Ttl")
        self._set_expiry(registry, stream, expiry(ttl, now))
        stream.date_updated = now
        return stream

    def publish_stream_message(
        self, service_sid: str, stream_ref: str, data: str, now: float
    ) -> StreamMessage:
        stream = self._lookup(self.get_service(service_sid).streams, stream_ref, now)
        self.limits.charge_message(stream)
        value = parse_data(
            data, not_object=54251, what="Stream Message", limit=MAX_STREAM_MESSAGE_BYTES
        )
        message = StreamMessage(sid=new_sid("TZ"), data=value)
        event = self._object_fields(stream)
        event.update(type="stream_message.published", message_sid=message.sid, data=value)
        self.feed.publish(event)
        return message

    # -- admin ---------------------------------------------------------------------------

    def dump(self) -> JSON:
        """The whole state as JSON-able data (expired objects not yet swept included)."""
        return {
            "account_sid": self.account_sid,
            "rate_limit": self.rate_limit,
            "services": [_dump_service(service) for service in self.services.values()],
        }


def _cancel_timer(holder: SyncObject | Item[Any]) -> None:
    if holder.timer is not None:
        holder.timer.cancel()
        holder.timer = None


def _dump_dates(obj: SyncObject | Item[Any]) -> JSON:
    return {
        "date_created": iso(obj.date_created),
        "date_updated": iso(obj.date_updated),
        "date_expires": iso(obj.expires),
    }


def _dump_object(obj: SyncObject) -> JSON:
    return {"sid": obj.sid, "unique_name": obj.unique_name, **_dump_dates(obj)}


def _dump_collection(collection: Collection[Any]) -> JSON:
    field = collection.ITEMS.field
    return {
        **_dump_object(collection),
        "revision": str(collection.revision),
        "items": [
            {field: i.address, "revision": str(i.revision), "data": i.data, **_dump_dates(i)}
            for i in collection.items.values()
        ],
    }


def _dump_service(service: Service) -> JSON:
    return {
        "sid": service.sid,
        "friendly_name": service.friendly_name,
        "date_created": iso(service.date_created),
        "documents": [
            {**_dump_object(d), "revision": str(d.revision), "data": d.data}
            for d in service.documents.by_sid.values()
        ],
        "maps": [_dump_collection(m) for m in service.maps.by_sid.values()],
        "lists": [_dump_collection(lst) for lst in service.lists.by_sid.values()],
        "streams": [_dump_object(s) for s in service.streams.by_sid.values()],
    }
