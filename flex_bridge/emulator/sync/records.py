"""Sync's objects as the emulator keeps them: Documents, Maps, Lists, Streams and services.

Maps and Lists are one kind of record, a :class:`Collection` of items; they differ only in how
an item is addressed (a Map by its ``key``, a List by the ``index`` it was given) and in the
codes and names of their errors, which their :class:`ItemKind` holds.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from flex_bridge.emulator.api import JSON, ApiError
from flex_bridge.emulator.clock import Timer
from flex_bridge.emulator.ratelimit import TokenBucket

MAX_KEY_LENGTH = 320


def new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Kind:
    """What differs between Documents, Maps, Lists and Streams."""

    name: str
    label: str
    prefix: str
    not_found: int
    revision_mismatch: int = 0  # the 412 of a conditional write; 0: the kind takes no If-Match

    @property
    def plural(self) -> str:
        """The URL segment of the kind (``Maps``), and in lower case its registry's name."""
        return f"{self.label}s"


@dataclass(frozen=True, slots=True)
class ItemKind:
    """What differs between Map items and List items, apart from their addresses."""

    label: str
    field: str
    not_found: int
    revision_mismatch: int
    not_object: int


DOCUMENT = Kind("document", "Document", "ET", 54100, revision_mismatch=54103)
MAP = Kind("map", "Map", "MP", 54200)
LIST = Kind("list", "List", "ES", 54150)
STREAM = Kind("stream", "Stream", "TO", 54250)
MAP_ITEM = ItemKind("Map Item", "key", 54201, 54205, 54206)
LIST_ITEM = ItemKind("List Item", "index", 54151, 54155, 54156)

KeyT = TypeVar("KeyT", str, int)


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
    bucket: TokenBucket | None = None  # writes
    read_bucket: TokenBucket | None = None


@dataclass(slots=True, kw_only=True)
class Document(SyncObject):
    KIND: ClassVar[Kind] = DOCUMENT

    data: JSON = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class Item(Generic[KeyT]):
    """A Map item (``address`` is its key) or a List item (``address`` is its index)."""

    address: KeyT
    data: JSON
    date_created: float
    date_updated: float
    expires: float | None = None
    revision: int = 0
    timer: Timer | None = None


@dataclass(slots=True, kw_only=True)
class Collection(SyncObject, Generic[KeyT]):
    """A Map or a List: items by address, each with its own data, revision and expiry."""

    ITEMS: ClassVar[ItemKind]

    items: dict[KeyT, Item[KeyT]] = field(default_factory=dict)

    def new_address(self, key: str | None) -> KeyT:
        """The address of an item about to be added (``key`` is the request's ``Key``)."""
        raise NotImplementedError

    def address(self, ref: str) -> KeyT | None:
        """The address a URL's item reference names, or None if it cannot name one."""
        raise NotImplementedError

    def start(self, ref: str) -> KeyT:
        """The address a listing's ``From`` names."""
        raise NotImplementedError

    def add(self, item: Item[KeyT]) -> None:
        self.items[item.address] = item


CollT = TypeVar("CollT", bound=Collection[Any])


@dataclass(slots=True, kw_only=True)
class SyncMap(Collection[str]):
    KIND: ClassVar[Kind] = MAP
    ITEMS: ClassVar[ItemKind] = MAP_ITEM

    def new_address(self, key: str | None) -> str:
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ApiError(
                400, 54209, f"Invalid Map Item key: it must have 1-{MAX_KEY_LENGTH} characters"
            )
        return key

    def address(self, ref: str) -> str:
        return ref

    def start(self, ref: str) -> str:
        return ref


@dataclass(slots=True, kw_only=True)
class SyncList(Collection[int]):
    KIND: ClassVar[Kind] = LIST
    ITEMS: ClassVar[ItemKind] = LIST_ITEM

    next_index: int = 0

    def new_address(self, key: str | None) -> int:
        return self.next_index

    def address(self, ref: str) -> int | None:
        try:
            return int(ref)
        except ValueError:
            return None

    def start(self, ref: str) -> int:
        try:
            return int(ref)
        except ValueError:
            raise ApiError(400, 20001, f"From must be a List Item index; got {ref!r}") from None

    def add(self, item: Item[int]) -> None:
        self.items[item.address] = item
        self.next_index = item.address + 1


@dataclass(slots=True, kw_only=True)
class Stream(SyncObject):
    KIND: ClassVar[Kind] = STREAM

    message_bucket: TokenBucket | None = None


ObjT = TypeVar("ObjT", bound=SyncObject)


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
    creation_bucket: TokenBucket | None = None  # new Documents, Maps, Lists and Streams

    def registry(self, cls: type[ObjT]) -> Registry[ObjT]:
        """The registry of ``cls``'s objects: ``registry(SyncMap)`` is ``maps``."""
        found: Registry[ObjT] = getattr(self, cls.KIND.plural.lower())
        return found

    def registries(self) -> tuple[Registry[Any], ...]:
        return (self.documents, self.maps, self.lists, self.streams)


@dataclass(frozen=True, slots=True)
class StreamMessage:
    sid: str
    data: JSON
