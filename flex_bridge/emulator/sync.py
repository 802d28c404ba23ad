"""The state of the emulated Twilio Sync v1 API: services, documents, maps, lists and streams.

Everything here is plain synchronous code over in-memory records; the REST translation lives
in ``sync_api``. Each operation takes the emulator clock time ``now`` of its request, raises
:class:`~flex_bridge.emulator.api.ApiError` with Twilio's status and code when it refuses, and
publishes one message on the live feed per change (see ``SyncStore`` for the message shape).

Behaviour kept from Twilio:

- Documents, Maps, Lists and Streams are addressed by SID or by unique name. Unique names are
  unique per kind within a service (a Map and a Document may share one).
- Documents carry a ``revision``: "0" when created, one more on every write. Maps and Lists
  have their own revision, bumped on every write to them or their items, and an item takes
  its collection's revision on each write: revisions are opaque strings that only grow, and a
  deleted and re-created item never reuses one that a stale ``If-Match`` could still name.
  ``If-Match`` (the revision, optionally quoted, or ``*``) makes an update or delete
  conditional.
- TTLs are fixed at write time. 0 means "never expires"; an update that sends no TTL keeps the
  existing expiry. ``CollectionTtl`` on an item write sets the parent Map's or List's expiry.
  An expired object is gone from the moment it expires: every access checks the expiry, and a
  scheduler timer removes it and announces the removal even if nobody looks.
- At most 20 writes/s per Document, Map, List or Stream, with a 10-second burst allowance
  (token bucket: refill 20/s, capacity 200). Item writes count against their Map or List.
  Stream messages have their own bucket of 30/s (capacity 300). The buckets run on
  ``time.monotonic`` (injectable), not on the emulator clock, so advancing test time does not
  refill them. ``SyncStore.rate_limit`` switches the limit off and on at runtime. Every write
  request that reaches an existing object takes a token, even one then refused with a 400 or a
  412; a 429 itself changes nothing.

Error codes, from Twilio's error dictionary (https://www.twilio.com/docs/api/errors/<code>):

=====  ======  ===========================================================================
code   status  when
=====  ======  ===========================================================================
54006  413     Data larger than 16 KiB (stream messages: 4 KiB) of serialised JSON. The
               dictionary documents 54006 for documents and items; the emulator uses it for
               stream messages too, and picks 413 as the HTTP status (the code's title is
               "Request entity too large").
54008  400     Data is not valid JSON.
54009  429     Write rate exceeded; the answer carries ``Retry-After`` (whole seconds, >= 1).
54010  400     An update of an object or item that sends no parameter to change.
54011  400     A TTL outside 0..31,536,000 seconds.
54050  404     Service not found.
54100  404     Document not found (by SID or unique name; so are the other "not found"s).
54101  400     Document data is valid JSON but not an object.
54103  412     Document revision mismatch (If-Match).
54150  404     List not found.
54151  404     List item not found.
54155  412     List item revision mismatch.
54156  400     List item data is not a JSON object.
54200  404     Map not found.
54201  404     Map item not found.
54205  412     Map item revision mismatch.
54206  400     Map item data is not a JSON object.
54208  409     Map item with this key already exists.
54209  400     Map item key empty or longer than 320 characters (the dictionary page says 256;
               the OpenAPI document, newer, says 320).
54250  404     Stream not found.
54251  400     Stream message data is not a JSON object.
54301  409     Unique name already used by another object of the same kind in the service.
54302  400     Unique name empty, longer than 320 characters or shaped like a SID.
=====  ======  ===========================================================================

Which code Twilio's REST front end really puts on a Sync 404 (the product codes above or the
generic 20404) is not verified; clients should rely on the HTTP status.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from flex_bridge.emulator.api import ApiError
from flex_bridge.emulator.clock import Clock, Scheduler, Timer, iso
from flex_bridge.emulator.feed import Feed
from flex_bridge.emulator.ratelimit import TokenBucket

JSON = dict[str, Any]

MAX_TTL = 31_536_000
MAX_DATA_BYTES = 16 * 1024
MAX_STREAM_MESSAGE_BYTES = 4 * 1024
MAX_KEY_LENGTH = 320
MAX_UNIQUE_NAME_LENGTH = 320
WRITE_RATE = 20.0
STREAM_MESSAGE_RATE = 30.0
BURST_SECONDS = 10.0

SID_SHAPE = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")
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


def new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Kind:
    """What differs between Documents, Maps, Lists and Streams."""

    name: str
    label: str
    prefix: str
    not_found: int


DOCUMENT = Kind("document", "Document", "ET", 54100)
MAP = Kind("map", "Map", "MP", 54200)
LIST = Kind("list", "List", "ES", 54150)
STREAM = Kind("stream", "Stream", "TO", 54250)


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(slots=True, kw_only=True)
class SyncObject:
    """A Document, Map, List or Stream: the unit of addressing, expiry and rate limiting."""

    KIND: ClassVar[Kind]

    sid: str
    service_sid: str
    unique_name: str | None
    date_created: float
    date_updated: float
    expires: float | None = None
    revision: int = 0
    timer: Timer | None = None
    bucket: TokenBucket | None = None


@dataclass(slots=True, kw_only=True)
class Document(SyncObject):
    KIND: ClassVar[Kind] = DOCUMENT

    data: JSON = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class Item:
    data: JSON
    date_created: float
    date_updated: float
    expires: float | None = None
    revision: int = 0
    timer: Timer | None = None


@dataclass(slots=True, kw_only=True)
class MapItem(Item):
    key: str


@dataclass(slots=True, kw_only=True)
class ListItem(Item):
    index: int


@dataclass(slots=True, kw_only=True)
class SyncMap(SyncObject):
    KIND: ClassVar[Kind] = MAP

    items: dict[str, MapItem] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class SyncList(SyncObject):
    KIND: ClassVar[Kind] = LIST

    items: dict[int, ListItem] = field(default_factory=dict)
    next_index: int = 0


@dataclass(slots=True, kw_only=True)
class Stream(SyncObject):
    KIND: ClassVar[Kind] = STREAM

    message_bucket: TokenBucket | None = None


ObjT = TypeVar("ObjT", bound=SyncObject)
CollT = TypeVar("CollT", SyncMap, SyncList)
ItemT = TypeVar("ItemT", bound=Item)


@dataclass(slots=True)
class Registry(Generic[ObjT]):
    """The objects of one kind in one service, by SID and by unique name."""

    kind: Kind
    by_sid: dict[str, ObjT] = field(default_factory=dict)
    by_name: dict[str, str] = field(default_factory=dict)

    def find(self, ref: str) -> ObjT | None:
        found = self.by_sid.get(ref)
        if found is None:
            sid = self.by_name.get(ref)
            if sid is not None:
                found = self.by_sid.get(sid)
        return found

    def add(self, obj: ObjT) -> None:
        self.by_sid[obj.sid] = obj
        if obj.unique_name is not None:
            self.by_name[obj.unique_name] = obj.sid

    def discard(self, obj: ObjT) -> bool:
        if self.by_sid.get(obj.sid) is not obj:
            return False
        del self.by_sid[obj.sid]
        if obj.unique_name is not None and self.by_name.get(obj.unique_name) == obj.sid:
            del self.by_name[obj.unique_name]
        return True


@dataclass(slots=True, kw_only=True)
class Service:
    sid: str
    friendly_name: str | None
    date_created: float
    date_updated: float
    webhook_url: str | None = None
    webhooks_from_rest_enabled: bool = False
    reachability_webhooks_enabled: bool = False
    acl_enabled: bool = False
    reachability_debouncing_enabled: bool = False
    reachability_debouncing_window: int = 5000
    documents: Registry[Document] = field(default_factory=lambda: Registry(DOCUMENT))
    maps: Registry[SyncMap] = field(default_factory=lambda: Registry(MAP))
    lists: Registry[SyncList] = field(default_factory=lambda: Registry(LIST))
    streams: Registry[Stream] = field(default_factory=lambda: Registry(STREAM))


@dataclass(frozen=True, slots=True)
class StreamMessage:
    sid: str
    data: JSON


# ---------------------------------------------------------------------------------------------
# Validation helpers


def _alive(expires: float | None, now: float) -> bool:
    return expires is None or expires > now


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_data(raw: str, *, not_object: int, what: str, limit: int = MAX_DATA_BYTES) -> JSON:
    """Twilio's ``Data`` parameter: a JSON object of at most ``limit`` serialised bytes."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, 54008, "The specified 'Data' parameter is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, not_object, f"Invalid {what} data: 'Data' must be a JSON object")
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > limit:
        raise ApiError(
            413,
            54006,
            f"The size of the specified 'Data' parameter ({size} bytes) exceeds the "
            f"{limit}-byte limit",
        )
    return value


def check_ttl(value: int | None, name: str) -> int | None:
    if value is not None and not 0 <= value <= MAX_TTL:
        raise ApiError(
            400, 54011, f"Invalid {name}: must be between 0 and {MAX_TTL} seconds; got {value}"
        )
    return value


def _expiry(ttl: int, now: float) -> float | None:
    return None if ttl == 0 else now + ttl


def _check_unique_name(name: str) -> None:
    if not name or len(name) > MAX_UNIQUE_NAME_LENGTH or SID_SHAPE.fullmatch(name):
        raise ApiError(
            400,
            54302,
            f"Invalid unique name {name!r}: it must have 1-{MAX_UNIQUE_NAME_LENGTH} "
            "characters and must not look like a SID",
        )


def _check_revision(if_match: str | None, revision: int, code: int, what: str) -> None:
    if if_match is None:
        return
    tag = if_match.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    tag = tag.strip('"')
    if tag in ("*", str(revision)):
        return
    raise ApiError(
        412,
        code,
        f"The revision of the {what} ({revision}) does not match the expected revision "
        f"({if_match})",
    )


def _nothing_to_update(what: str) -> ApiError:
    return ApiError(400, 54010, f"No parameters specified: nothing to update on the {what}")


# ---------------------------------------------------------------------------------------------
# The store


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
        self._monotonic = monotonic
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
        self._clear(service.documents)
        self._clear(service.maps)
        self._clear(service.lists)
        self._clear(service.streams)
        del self.services[sid]

    def _clear(self, registry: Registry[ObjT]) -> None:
        for obj in list(registry.by_sid.values()):
            self._remove(registry, obj, "deleted")

    @staticmethod
    def _apply_settings(service: Service, settings: dict[str, Any]) -> None:
        unknown = set(settings) - SERVICE_SETTINGS
        if unknown:
            raise TypeError(f"unknown service setting(s): {', '.join(sorted(unknown))}")
        for name, value in settings.items():
            setattr(service, name, value)

    # -- shared object machinery ---------------------------------------------------------

    def _lookup(self, registry: Registry[ObjT], ref: str, now: float) -> ObjT:
        obj = registry.find(ref)
        if obj is not None and not _alive(obj.expires, now):
            self._remove(registry, obj, "expired")
            obj = None
        if obj is None:
            kind = registry.kind
            raise ApiError(404, kind.not_found, f"{kind.label} {ref} not found")
        return obj

    def _live(self, registry: Registry[ObjT], now: float) -> list[ObjT]:
        out: list[ObjT] = []
        for obj in list(registry.by_sid.values()):
            if _alive(obj.expires, now):
                out.append(obj)
            else:
                self._remove(registry, obj, "expired")
        return out

    def _register(
        self, registry: Registry[ObjT], obj: ObjT, expires: float | None, now: float
    ) -> None:
        if obj.unique_name is not None:
            existing = registry.by_name.get(obj.unique_name)
            if existing is not None:
                # An expired holder of the name does not block it.
                self._lookup_quiet(registry, existing, now)
                if obj.unique_name in registry.by_name:
                    raise ApiError(
                        409,
                        54301,
                        f"Unique name already exists: a {registry.kind.label} named "
                        f"{obj.unique_name!r} exists in service {obj.service_sid}",
                    )
        registry.add(obj)
        self._set_expiry(registry, obj, expires)
        self._charge(obj)

    def _lookup_quiet(self, registry: Registry[ObjT], ref: str, now: float) -> ObjT | None:
        try:
            return self._lookup(registry, ref, now)
        except ApiError:
            return None

    def _remove(self, registry: Registry[ObjT], obj: ObjT, reason: str) -> None:
        if not registry.discard(obj):
            return
        if obj.timer is not None:
            obj.timer.cancel()
            obj.timer = None
        if isinstance(obj, SyncMap | SyncList):
            for item in obj.items.values():
                if item.timer is not None:
                    item.timer.cancel()
                    item.timer = None
        self._publish_object("removed", obj, reason=reason)

    def _set_expiry(self, registry: Registry[ObjT], obj: ObjT, expires: float | None) -> None:
        obj.expires = expires
        if obj.timer is not None:
            obj.timer.cancel()
            obj.timer = None
        if expires is not None:
            obj.timer = self.scheduler.call_at(expires, lambda: self._expire_object(registry, obj))

    def _expire_object(self, registry: Registry[ObjT], obj: ObjT) -> None:
        if registry.by_sid.get(obj.sid) is obj and not _alive(obj.expires, self.clock.now()):
            self._remove(registry, obj, "expired")

    def _charge(self, obj: SyncObject) -> None:
        """Count one write against the object's bucket; 429 when it is empty."""
        if not self.rate_limit:
            return
        now = self._monotonic()
        if obj.bucket is None:
            obj.bucket = TokenBucket.full(WRITE_RATE, WRITE_RATE * BURST_SECONDS, now)
        self._take(obj.bucket, now, f"{obj.KIND.label} {obj.sid}")

    @staticmethod
    def _take(bucket: TokenBucket, now: float, what: str) -> None:
        wait = bucket.take(now)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise ApiError(
                429,
                54009,
                f"Rate limit exceeded: too many writes to {what}",
                headers={"Retry-After": str(retry_after)},
            )

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
        self, event: str, parent: SyncMap | SyncList, item: Item, **extra: Any
    ) -> None:
        message = self._object_fields(parent)
        message["type"] = f"{parent.KIND.name}_item.{event}"
        if isinstance(item, MapItem):
            message["key"] = item.key
        elif isinstance(item, ListItem):
            message["index"] = item.index
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
        if unique_name is not None:
            _check_unique_name(unique_name)
        value = {} if data is None else parse_data(data, not_object=54101, what="Document")
        check_ttl(ttl, "Ttl")
        doc = Document(
            sid=new_sid(DOCUMENT.prefix),
            service_sid=service.sid,
            unique_name=unique_name,
            date_created=now,
            date_updated=now,
            data=value,
        )
        self._register(service.documents, doc, _expiry(ttl or 0, now), now)
        self._publish_object("created", doc)
        return doc

    def get_document(self, service_sid: str, ref: str, now: float) -> Document:
        return self._lookup(self.get_service(service_sid).documents, ref, now)

    def list_documents(self, service_sid: str, now: float) -> list[Document]:
        return self._live(self.get_service(service_sid).documents, now)

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
        self._charge(doc)
        if data is None and ttl is None:
            raise _nothing_to_update("Document")
        value = None if data is None else parse_data(data, not_object=54101, what="Document")
        check_ttl(ttl, "Ttl")
        _check_revision(if_match, doc.revision, 54103, "Document")
        if value is not None:
            doc.data = value
        if ttl is not None:
            self._set_expiry(registry, doc, _expiry(ttl, now))
        self._touch(doc, now)
        self._publish_object("updated", doc)
        return doc

    def delete_document(self, service_sid: str, ref: str, if_match: str | None, now: float) -> None:
        registry = self.get_service(service_sid).documents
        doc = self._lookup(registry, ref, now)
        self._charge(doc)
        _check_revision(if_match, doc.revision, 54103, "Document")
        self._remove(registry, doc, "deleted")

    # -- maps and lists (the collections) ------------------------------------------------

    def create_map(
        self,
        service_sid: str,
        unique_name: str | None,
        ttl: int | None,
        collection_ttl: int | None,
        now: float,
    ) -> SyncMap:
        service = self.get_service(service_sid)
        expires = self._new_collection_expiry(unique_name, ttl, collection_ttl, now)
        sync_map = SyncMap(
            sid=new_sid(MAP.prefix),
            service_sid=service.sid,
            unique_name=unique_name,
            date_created=now,
            date_updated=now,
        )
        self._register(service.maps, sync_map, expires, now)
        self._publish_object("created", sync_map)
        return sync_map

    def create_list(
        self,
        service_sid: str,
        unique_name: str | None,
        ttl: int | None,
        collection_ttl: int | None,
        now: float,
    ) -> SyncList:
        service = self.get_service(service_sid)
        expires = self._new_collection_expiry(unique_name, ttl, collection_ttl, now)
        sync_list = SyncList(
            sid=new_sid(LIST.prefix),
            service_sid=service.sid,
            unique_name=unique_name,
            date_created=now,
            date_updated=now,
        )
        self._register(service.lists, sync_list, expires, now)
        self._publish_object("created", sync_list)
        return sync_list

    @staticmethod
    def _new_collection_expiry(
        unique_name: str | None, ttl: int | None, collection_ttl: int | None, now: float
    ) -> float | None:
        if unique_name is not None:
            _check_unique_name(unique_name)
        check_ttl(ttl, "Ttl")
        check_ttl(collection_ttl, "CollectionTtl")
        chosen = collection_ttl if collection_ttl is not None else ttl
        return _expiry(chosen or 0, now)

    def get_map(self, service_sid: str, ref: str, now: float) -> SyncMap:
        return self._lookup(self.get_service(service_sid).maps, ref, now)

    def get_list(self, service_sid: str, ref: str, now: float) -> SyncList:
        return self._lookup(self.get_service(service_sid).lists, ref, now)

    def list_maps(self, service_sid: str, now: float) -> list[SyncMap]:
        return self._live(self.get_service(service_sid).maps, now)

    def list_lists(self, service_sid: str, now: float) -> list[SyncList]:
        return self._live(self.get_service(service_sid).lists, now)

    def update_map(
        self,
        service_sid: str,
        ref: str,
        ttl: int | None,
        collection_ttl: int | None,
        now: float,
    ) -> SyncMap:
        registry = self.get_service(service_sid).maps
        return self._update_collection(registry, ref, ttl, collection_ttl, now)

    def update_list(
        self,
        service_sid: str,
        ref: str,
        ttl: int | None,
        collection_ttl: int | None,
        now: float,
    ) -> SyncList:
        registry = self.get_service(service_sid).lists
        return self._update_collection(registry, ref, ttl, collection_ttl, now)

    def _update_collection(
        self,
        registry: Registry[ObjT],
        ref: str,
        ttl: int | None,
        collection_ttl: int | None,
        now: float,
    ) -> ObjT:
        obj = self._lookup(registry, ref, now)
        self._charge(obj)
        check_ttl(ttl, "Ttl")
        check_ttl(collection_ttl, "CollectionTtl")
        chosen = collection_ttl if collection_ttl is not None else ttl
        if chosen is None:
            raise _nothing_to_update(registry.kind.label)
        self._set_expiry(registry, obj, _expiry(chosen, now))
        self._touch(obj, now)
        return obj

    def delete_map(self, service_sid: str, ref: str, now: float) -> None:
        registry = self.get_service(service_sid).maps
        sync_map = self._lookup(registry, ref, now)
        self._charge(sync_map)
        self._remove(registry, sync_map, "deleted")

    def delete_list(self, service_sid: str, ref: str, now: float) -> None:
        registry = self.get_service(service_sid).lists
        sync_list = self._lookup(registry, ref, now)
        self._charge(sync_list)
        self._remove(registry, sync_list, "deleted")

    # -- item machinery shared by maps and lists -----------------------------------------

    @staticmethod
    def _item_ttls(
        ttl: int | None, item_ttl: int | None, collection_ttl: int | None
    ) -> tuple[int | None, int | None]:
        check_ttl(ttl, "Ttl")
        check_ttl(item_ttl, "ItemTtl")
        check_ttl(collection_ttl, "CollectionTtl")
        return (item_ttl if item_ttl is not None else ttl), collection_ttl

    def _set_item_expiry(
        self, parent: SyncMap | SyncList, item: Item, expires: float | None
    ) -> None:
        item.expires = expires
        if item.timer is not None:
            item.timer.cancel()
            item.timer = None
        if expires is not None:
            item.timer = self.scheduler.call_at(expires, lambda: self._expire_item(parent, item))

    def _expire_item(self, parent: SyncMap | SyncList, item: Item) -> None:
        if self._holds(parent, item) and not _alive(item.expires, self.clock.now()):
            self._drop_item(parent, item, "expired")

    @staticmethod
    def _holds(parent: SyncMap | SyncList, item: Item) -> bool:
        if isinstance(parent, SyncMap) and isinstance(item, MapItem):
            return parent.items.get(item.key) is item
        if isinstance(parent, SyncList) and isinstance(item, ListItem):
            return parent.items.get(item.index) is item
        return False

    def _drop_item(self, parent: SyncMap | SyncList, item: Item, reason: str) -> None:
        if isinstance(parent, SyncMap) and isinstance(item, MapItem):
            del parent.items[item.key]
        elif isinstance(parent, SyncList) and isinstance(item, ListItem):
            del parent.items[item.index]
        if item.timer is not None:
            item.timer.cancel()
            item.timer = None
        self._publish_item("removed", parent, item, reason=reason)

    def _write_item(
        self,
        registry: Registry[CollT],
        parent: CollT,
        item: Item,
        value: JSON | None,
        item_ttl: int | None,
        collection_ttl: int | None,
        now: float,
    ) -> None:
        if value is not None:
            item.data = value
        if item_ttl is not None:
            self._set_item_expiry(parent, item, _expiry(item_ttl, now))
        item.date_updated = now
        self._touch(parent, now)
        # Item revisions come from the collection's counter, so a deleted and re-created
        # item never reuses a revision that a stale If-Match could still name.
        item.revision = parent.revision
        if collection_ttl is not None:
            self._set_expiry(registry, parent, _expiry(collection_ttl, now))

    # -- map items -----------------------------------------------------------------------

    def _map_item(self, sync_map: SyncMap, key: str, now: float) -> MapItem:
        item = sync_map.items.get(key)
        if item is not None and not _alive(item.expires, now):
            self._drop_item(sync_map, item, "expired")
            item = None
        if item is None:
            raise ApiError(404, 54201, f"Map Item {key} not found in Map {sync_map.sid}")
        return item

    def create_map_item(
        self,
        service_sid: str,
        map_ref: str,
        key: str,
        data: str,
        ttl: int | None,
        item_ttl: int | None,
        collection_ttl: int | None,
        now: float,
    ) -> tuple[SyncMap, MapItem]:
        registry = self.get_service(service_sid).maps
        sync_map = self._lookup(registry, map_ref, now)
        self._charge(sync_map)
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ApiError(
                400, 54209, f"Invalid Map Item key: it must have 1-{MAX_KEY_LENGTH} characters"
            )
        value = parse_data(data, not_object=54206, what="Map Item")
        chosen_ttl, collection_ttl = self._item_ttls(ttl, item_ttl, collection_ttl)
        existing = sync_map.items.get(key)
        if existing is not None:
            if _alive(existing.expires, now):
                raise ApiError(409, 54208, f"Map Item with key {key!r} already exists")
            self._drop_item(sync_map, existing, "expired")
        item = MapItem(key=key, data=value, date_created=now, date_updated=now)
        sync_map.items[key] = item
        self._write_item(registry, sync_map, item, None, chosen_ttl, collection_ttl, now)
        self._publish_item("added", sync_map, item)
        return sync_map, item

    def get_map_item(
        self, service_sid: str, map_ref: str, key: str, now: float
    ) -> tuple[SyncMap, MapItem]:
        sync_map = self.get_map(service_sid, map_ref, now)
        return sync_map, self._map_item(sync_map, key, now)

    def list_map_items(
        self,
        service_sid: str,
        map_ref: str,
        now: float,
        *,
        order: str = "asc",
        start: str | None = None,
        bounds: str = "inclusive",
    ) -> tuple[SyncMap, list[MapItem]]:
        """Items ordered by key; ``start`` and ``bounds`` are the ``From``/``Bounds`` query."""
        sync_map = self.get_map(service_sid, map_ref, now)
        live = self._live_items(sync_map, sync_map.items.values(), now)
        items = sorted(live, key=lambda item: item.key, reverse=order == "desc")
        if start is not None:
            items = [i for i in items if _after(i.key, start, order, bounds)]
        return sync_map, items

    def update_map_item(
        self,
        service_sid: str,
        map_ref: str,
        key: str,
        data: str | None,
        ttl: int | None,
        item_ttl: int | None,
        collection_ttl: int | None,
        if_match: str | None,
        now: float,
    ) -> tuple[SyncMap, MapItem]:
        registry = self.get_service(service_sid).maps
        sync_map = self._lookup(registry, map_ref, now)
        item = self._map_item(sync_map, key, now)
        self._charge(sync_map)
        if data is None and ttl is None and item_ttl is None:
            raise _nothing_to_update("Map Item")
        value = None if data is None else parse_data(data, not_object=54206, what="Map Item")
        chosen_ttl, collection_ttl = self._item_ttls(ttl, item_ttl, collection_ttl)
        _check_revision(if_match, item.revision, 54205, "Map Item")
        self._write_item(registry, sync_map, item, value, chosen_ttl, collection_ttl, now)
        self._publish_item("updated", sync_map, item)
        return sync_map, item

    def delete_map_item(
        self, service_sid: str, map_ref: str, key: str, if_match: str | None, now: float
    ) -> None:
        sync_map = self.get_map(service_sid, map_ref, now)
        item = self._map_item(sync_map, key, now)
        self._charge(sync_map)
        _check_revision(if_match, item.revision, 54205, "Map Item")
        self._touch(sync_map, now)
        self._drop_item(sync_map, item, "deleted")

    # -- list items ----------------------------------------------------------------------

    def _list_item(self, sync_list: SyncList, index: str | int, now: float) -> ListItem:
        item: ListItem | None = None
        try:
            item = sync_list.items.get(int(index))
        except ValueError:
            item = None
        if item is not None and not _alive(item.expires, now):
            self._drop_item(sync_list, item, "expired")
            item = None
        if item is None:
            raise ApiError(404, 54151, f"List Item {index} not found in List {sync_list.sid}")
        return item

    def create_list_item(
        self,
        service_sid: str,
        list_ref: str,
        data: str,
        ttl: int | None,
        item_ttl: int | None,
        collection_ttl: int | None,
        now: float,
    ) -> tuple[SyncList, ListItem]:
        registry = self.get_service(service_sid).lists
        sync_list = self._lookup(registry, list_ref, now)
        self._charge(sync_list)
        value = parse_data(data, not_object=54156, what="List Item")
        chosen_ttl, collection_ttl = self._item_ttls(ttl, item_ttl, collection_ttl)
        item = ListItem(index=sync_list.next_index, data=value, date_created=now, date_updated=now)
        sync_list.next_index += 1
        sync_list.items[item.index] = item
        self._write_item(registry, sync_list, item, None, chosen_ttl, collection_ttl, now)
        self._publish_item("added", sync_list, item)
        return sync_list, item

    def get_list_item(
        self, service_sid: str, list_ref: str, index: str | int, now: float
    ) -> tuple[SyncList, ListItem]:
        sync_list = self.get_list(service_sid, list_ref, now)
        return sync_list, self._list_item(sync_list, index, now)

    def list_list_items(
        self,
        service_sid: str,
        list_ref: str,
        now: float,
        *,
        order: str = "asc",
        start: str | None = None,
        bounds: str = "inclusive",
    ) -> tuple[SyncList, list[ListItem]]:
        """Items ordered by index; ``start`` is the ``From`` query (an index)."""
        sync_list = self.get_list(service_sid, list_ref, now)
        live = self._live_items(sync_list, sync_list.items.values(), now)
        items = sorted(live, key=lambda item: item.index, reverse=order == "desc")
        if start is not None:
            try:
                first = int(start)
            except ValueError:
                raise ApiError(
                    400, 20001, f"From must be a List Item index; got {start!r}"
                ) from None
            items = [i for i in items if _after(i.index, first, order, bounds)]
        return sync_list, items

    def update_list_item(
        self,
        service_sid: str,
        list_ref: str,
        index: str | int,
        data: str | None,
        ttl: int | None,
        item_ttl: int | None,
        collection_ttl: int | None,
        if_match: str | None,
        now: float,
    ) -> tuple[SyncList, ListItem]:
        registry = self.get_service(service_sid).lists
        sync_list = self._lookup(registry, list_ref, now)
        item = self._list_item(sync_list, index, now)
        self._charge(sync_list)
        if data is None and ttl is None and item_ttl is None:
            raise _nothing_to_update("List Item")
        value = None if data is None else parse_data(data, not_object=54156, what="List Item")
        chosen_ttl, collection_ttl = self._item_ttls(ttl, item_ttl, collection_ttl)
        _check_revision(if_match, item.revision, 54155, "List Item")
        self._write_item(registry, sync_list, item, value, chosen_ttl, collection_ttl, now)
        self._publish_item("updated", sync_list, item)
        return sync_list, item

    def delete_list_item(
        self,
        service_sid: str,
        list_ref: str,
        index: str | int,
        if_match: str | None,
        now: float,
    ) -> None:
        sync_list = self.get_list(service_sid, list_ref, now)
        item = self._list_item(sync_list, index, now)
        self._charge(sync_list)
        _check_revision(if_match, item.revision, 54155, "List Item")
        self._touch(sync_list, now)
        self._drop_item(sync_list, item, "deleted")

    def _live_items(
        self, parent: SyncMap | SyncList, items: Iterable[ItemT], now: float
    ) -> list[ItemT]:
        out: list[ItemT] = []
        for item in list(items):
            if _alive(item.expires, now):
                out.append(item)
            else:
                self._drop_item(parent, item, "expired")
        return out

    # -- streams -------------------------------------------------------------------------

    def create_stream(
        self, service_sid: str, unique_name: str | None, ttl: int | None, now: float
    ) -> Stream:
        service = self.get_service(service_sid)
        if unique_name is not None:
            _check_unique_name(unique_name)
        check_ttl(ttl, "Ttl")
        stream = Stream(
            sid=new_sid(STREAM.prefix),
            service_sid=service.sid,
            unique_name=unique_name,
            date_created=now,
            date_updated=now,
        )
        self._register(service.streams, stream, _expiry(ttl or 0, now), now)
        self._publish_object("created", stream)
        return stream

    def get_stream(self, service_sid: str, ref: str, now: float) -> Stream:
        return self._lookup(self.get_service(service_sid).streams, ref, now)

    def list_streams(self, service_sid: str, now: float) -> list[Stream]:
        return self._live(self.get_service(service_sid).streams, now)

    def update_stream(self, service_sid: str, ref: str, ttl: int | None, now: float) -> Stream:
        registry = self.get_service(service_sid).streams
        stream = self._lookup(registry, ref, now)
        self._charge(stream)
        if ttl is None:
            raise _nothing_to_update("Stream")
        check_ttl(ttl, "Ttl")
        self._set_expiry(registry, stream, _expiry(ttl, now))
        stream.date_updated = now
        return stream

    def delete_stream(self, service_sid: str, ref: str, now: float) -> None:
        registry = self.get_service(service_sid).streams
        stream = self._lookup(registry, ref, now)
        self._charge(stream)
        self._remove(registry, stream, "deleted")

    def publish_stream_message(
        self, service_sid: str, stream_ref: str, data: str, now: float
    ) -> StreamMessage:
        stream = self.get_stream(service_sid, stream_ref, now)
        if self.rate_limit:
            mono = self._monotonic()
            if stream.message_bucket is None:
                stream.message_bucket = TokenBucket.full(
                    STREAM_MESSAGE_RATE, STREAM_MESSAGE_RATE * BURST_SECONDS, mono
                )
            self._take(stream.message_bucket, mono, f"Stream {stream.sid}")
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

        def common(obj: SyncObject) -> JSON:
            return {
                "sid": obj.sid,
                "unique_name": obj.unique_name,
                "date_created": iso(obj.date_created),
                "date_updated": iso(obj.date_updated),
                "date_expires": iso(obj.expires),
            }

        def item(it: Item) -> JSON:
            return {
                "revision": str(it.revision),
                "data": it.data,
                "date_created": iso(it.date_created),
                "date_updated": iso(it.date_updated),
                "date_expires": iso(it.expires),
            }

        services = []
        for service in self.services.values():
            services.append(
                {
                    "sid": service.sid,
                    "friendly_name": service.friendly_name,
                    "date_created": iso(service.date_created),
                    "documents": [
                        {**common(d), "revision": str(d.revision), "data": d.data}
                        for d in service.documents.by_sid.values()
                    ],
                    "maps": [
                        {
                            **common(m),
                            "revision": str(m.revision),
                            "items": [{"key": i.key, **item(i)} for i in m.items.values()],
                        }
                        for m in service.maps.by_sid.values()
                    ],
                    "lists": [
                        {
                            **common(lst),
                            "revision": str(lst.revision),
                            "items": [{"index": i.index, **item(i)} for i in lst.items.values()],
                        }
                        for lst in service.lists.by_sid.values()
                    ],
                    "streams": [common(s) for s in service.streams.by_sid.values()],
                }
            )
        return {
            "account_sid": self.account_sid,
            "rate_limit": self.rate_limit,
            "services": services,
        }


def _after(value: Any, start: Any, order: str, bounds: str) -> bool:
    """Whether an item at ``value`` is at or past ``start`` in the listing order."""
    if value == start:
        return bounds != "exclusive"
    return bool(value > start) if order != "desc" else bool(value < start)
