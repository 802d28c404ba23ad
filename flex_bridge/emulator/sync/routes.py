"""REST handlers of the emulated Sync v1 API: typed form fields in, Twilio-shaped JSON out.

The state and its rules live in :mod:`flex_bridge.emulator.sync.store`; this module only reads
the request (path parameters, form fields, query, ``If-Match``), calls the store and renders
what it returns with the spec. Documents, Map items and List items answer with an ``ETag``
header equal to their revision. Maps and Lists, and their items, share one set of handlers.
Permissions endpoints are documented by Twilio but not emulated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from flex_bridge.emulator.api import (
    JSON,
    Call,
    Handler,
    Reply,
    Route,
    Router,
    crud,
    page,
    resource_url,
)
from flex_bridge.emulator.clock import iso
from flex_bridge.emulator.spec import Spec
from flex_bridge.emulator.sync.records import (
    Collection,
    CollT,
    Document,
    Item,
    ObjT,
    Service,
    Stream,
    SyncList,
    SyncMap,
    SyncObject,
)
from flex_bridge.emulator.sync.rules import Ttls
from flex_bridge.emulator.sync.store import SyncStore

SERVICES = "/v1/Services"
IN_SERVICE = "/v1/Services/{ServiceSid}"
SERVICE_FORM = {
    "FriendlyName": "friendly_name",
    "WebhookUrl": "webhook_url",
    "WebhooksFromRestEnabled": "webhooks_from_rest_enabled",
    "ReachabilityWebhooksEnabled": "reachability_webhooks_enabled",
    "AclEnabled": "acl_enabled",
    "ReachabilityDebouncingEnabled": "reachability_debouncing_enabled",
    "ReachabilityDebouncingWindow": "reachability_debouncing_window",
}
LISTING_QUERY = ("From", "Bounds", "Order")
# Maps and Lists: the record class, and the path parameters naming the collection and an item.
COLLECTIONS: tuple[tuple[type[Collection[Any]], str, str], ...] = (
    (SyncMap, "MapSid", "Key"),
    (SyncList, "ListSid", "Index"),
)


def _text(call: Call, name: str) -> str | None:
    value = call.form.get(name)
    return None if value is None else str(value)


def _int(call: Call, name: str) -> int | None:
    value = call.form.get(name)
    return value if isinstance(value, int) else None


def _ttls(call: Call) -> Ttls:
    return Ttls(_int(call, "Ttl"), _int(call, "ItemTtl"), _int(call, "CollectionTtl"))


def _url(path: str) -> str:
    return resource_url("sync", path)


def _path(obj: SyncObject) -> str:
    return f"{SERVICES}/{obj.service_sid}/{obj.KIND.plural}/{obj.sid}"


def _listing_query(call: Call) -> dict[str, str]:
    return {name: str(call.query[name]) for name in LISTING_QUERY if name in call.query}


class SyncApi:
    """The handlers of every emulated operation, bound to a store."""

    def __init__(self, spec: Spec, store: SyncStore) -> None:
        self.spec = spec
        self.store = store

    def _one(self, call: Call, values: JSON, etag: int | None = None) -> Reply:
        headers = {} if etag is None else {"ETag": str(etag)}
        return Reply(call.op.response_status, self.spec.render(call.op, values), headers)

    # -- rendering -----------------------------------------------------------------------

    def _object_values(self, obj: SyncObject) -> JSON:
        return {
            "sid": obj.sid,
            "unique_name": obj.unique_name,
            "account_sid": self.store.account_sid,
            "service_sid": obj.service_sid,
            "url": _url(_path(obj)),
            "date_expires": iso(obj.expires),
            "date_created": iso(obj.date_created),
            "date_updated": iso(obj.date_updated),
            "created_by": "system",
        }

    def service_values(self, service: Service) -> JSON:
        path = f"{SERVICES}/{service.sid}"
        return {
            "sid": service.sid,
            "unique_name": None,
            "account_sid": self.store.account_sid,
            "friendly_name": service.friendly_name,
            "date_created": iso(service.date_created),
            "date_updated": iso(service.date_updated),
            "url": _url(path),
            "webhook_url": service.webhook_url,
            "webhooks_from_rest_enabled": service.webhooks_from_rest_enabled,
            "reachability_webhooks_enabled": service.reachability_webhooks_enabled,
            "acl_enabled": service.acl_enabled,
            "reachability_debouncing_enabled": service.reachability_debouncing_enabled,
            "reachability_debouncing_window": service.reachability_debouncing_window,
            "links": {
                name: _url(f"{path}/{title}")
                for name, title in (
                    ("documents", "Documents"),
                    ("lists", "Lists"),
                    ("maps", "Maps"),
                    ("streams", "Streams"),
                )
            },
        }

    def document_values(self, doc: Document) -> JSON:
        return {
            **self._object_values(doc),
            "revision": str(doc.revision),
            "data": doc.data,
            "links": {"permissions": _url(f"{_path(doc)}/Permissions")},
        }

    def collection_values(self, collection: Collection[Any]) -> JSON:
        path = _path(collection)
        return {
            **self._object_values(collection),
            "revision": str(collection.revision),
            "links": {
                "items": _url(f"{path}/Items"),
                "permissions": _url(f"{path}/Permissions"),
            },
        }

    def stream_values(self, stream: Stream) -> JSON:
        return {
            **self._object_values(stream),
            "links": {"messages": _url(f"{_path(stream)}/Messages")},
        }

    def item_values(self, collection: Collection[Any], item: Item[Any]) -> JSON:
        path = f"{_path(collection)}/Items/{quote(str(item.address), safe='')}"
        return {
            collection.ITEMS.field: item.address,
            "account_sid": self.store.account_sid,
            "service_sid": collection.service_sid,
            f"{collection.KIND.name}_sid": collection.sid,
            "url": _url(path),
            "revision": str(item.revision),
            "data": item.data,
            "date_expires": iso(item.expires),
            "date_created": iso(item.date_created),
            "date_updated": iso(item.date_updated),
            "created_by": "system",
        }

    # -- the routes of every kind of object ----------------------------------------------

    def object_routes(
        self,
        cls: type[ObjT],
        render: Callable[[ObjT], JSON],
        create: Handler,
        update: Handler,
        *,
        versioned: bool = False,
    ) -> list[Route]:
        """List, create, fetch, update and delete; ``versioned`` objects have ETags and take
        ``If-Match`` on delete. Fetch, list and delete are the same for every kind."""

        def fetch(call: Call) -> Reply:
            obj = self.store.get_object(call.path["ServiceSid"], cls, call.path["Sid"], call.now)
            return self._one(call, render(obj), obj.revision if versioned else None)

        def listing(call: Call) -> Reply:
            objects = self.store.list_objects(call.path["ServiceSid"], cls, call.now)
            return page(self.spec, call, [render(obj) for obj in objects])

        def delete(call: Call) -> Reply:
            self.store.delete_object(
                call.path["ServiceSid"],
                cls,
                call.path["Sid"],
                call.now,
                if_match=call.if_match() if versioned else None,
            )
            return Reply(204, None)

        path = f"{IN_SERVICE}/{cls.KIND.plural}"
        return crud(path, listing, create, fetch, update, delete)

    # -- services ------------------------------------------------------------------------

    def service_routes(self) -> list[Route]:
        def settings(call: Call) -> dict[str, Any]:
            form = call.form
            return {attr: form[name] for name, attr in SERVICE_FORM.items() if name in form}

        def create(call: Call) -> Reply:
            fields = settings(call)
            friendly_name = fields.pop("friendly_name", None)
            service = self.store.create_service(friendly_name, call.now, **fields)
            return self._one(call, self.service_values(service))

        def fetch(call: Call) -> Reply:
            return self._one(call, self.service_values(self.store.get_service(call.path["Sid"])))

        def listing(call: Call) -> Reply:
            rows = [self.service_values(s) for s in self.store.list_services()]
            return page(self.spec, call, rows)

        def update(call: Call) -> Reply:
            service = self.store.update_service(call.path["Sid"], call.now, **settings(call))
            return self._one(call, self.service_values(service))

        def delete(call: Call) -> Reply:
            self.store.delete_service(call.path["Sid"])
            return Reply(204, None)

        return crud(SERVICES, listing, create, fetch, update, delete)

    # -- documents -----------------------------------------------------------------------

    def document_routes(self) -> list[Route]:
        def create(call: Call) -> Reply:
            doc = self.store.create_document(
                call.path["ServiceSid"],
                _text(call, "UniqueName"),
                _text(call, "Data"),
                _int(call, "Ttl"),
                call.now,
            )
            return self._one(call, self.document_values(doc), doc.revision)

        def update(call: Call) -> Reply:
            doc = self.store.update_document(
                call.path["ServiceSid"],
                call.path["Sid"],
                _text(call, "Data"),
                _int(call, "Ttl"),
                call.if_match(),
                call.now,
            )
            return self._one(call, self.document_values(doc), doc.revision)

        return self.object_routes(Document, self.document_values, create, update, versioned=True)

    # -- maps and lists ------------------------------------------------------------------

    def collection_routes(self, cls: type[CollT]) -> list[Route]:
        def create(call: Call) -> Reply:
            collection = self.store.create_collection(
                call.path["ServiceSid"],
                cls,
                _text(call, "UniqueName"),
                _ttls(call),
                call.now,
            )
            return self._one(call, self.collection_values(collection))

        def update(call: Call) -> Reply:
            collection = self.store.update_collection(
                call.path["ServiceSid"],
                cls,
                call.path["Sid"],
                _ttls(call),
                call.now,
            )
            return self._one(call, self.collection_values(collection))

        return self.object_routes(cls, self.collection_values, create, update)

    def item_routes(self, cls: type[CollT], parent: str, member: str) -> list[Route]:
        """A Map's or List's items: ``parent`` and ``member`` name the path parameters."""

        def answer(call: Call, collection: CollT, item: Item[Any]) -> Reply:
            return self._one(call, self.item_values(collection, item), item.revision)

        def create(call: Call) -> Reply:
            collection, item = self.store.create_item(
                call.path["ServiceSid"],
                cls,
                call.path[parent],
                _text(call, "Key"),
                str(call.form["Data"]),
                _ttls(call),
                call.now,
            )
            return answer(call, collection, item)

        def fetch(call: Call) -> Reply:
            collection, item = self.store.get_item(
                call.path["ServiceSid"], cls, call.path[parent], call.path[member], call.now
            )
            return answer(call, collection, item)

        def listing(call: Call) -> Reply:
            collection, items = self.store.list_items(
                call.path["ServiceSid"],
                cls,
                call.path[parent],
                call.now,
                order=call.query.get("Order", "asc"),
                start=call.query.get("From"),
                bounds=call.query.get("Bounds", "inclusive"),
            )
            rows = [self.item_values(collection, item) for item in items]
            return page(self.spec, call, rows, extra_query=_listing_query(call))

        def update(call: Call) -> Reply:
            collection, item = self.store.update_item(
                call.path["ServiceSid"],
                cls,
                call.path[parent],
                call.path[member],
                _text(call, "Data"),
                _ttls(call),
                call.if_match(),
                call.now,
            )
            return answer(call, collection, item)

        def delete(call: Call) -> Reply:
            self.store.delete_item(
                call.path["ServiceSid"],
                cls,
                call.path[parent],
                call.path[member],
                call.if_match(),
                call.now,
            )
            return Reply(204, None)

        path = f"{IN_SERVICE}/{cls.KIND.plural}/{{{parent}}}/Items"
        return crud(path, listing, create, fetch, update, delete, member=f"{{{member}}}")

    # -- streams -------------------------------------------------------------------------

    def stream_routes(self) -> list[Route]:
        def create(call: Call) -> Reply:
            stream = self.store.create_stream(
                call.path["ServiceSid"], _text(call, "UniqueName"), _int(call, "Ttl"), call.now
            )
            return self._one(call, self.stream_values(stream))

        def update(call: Call) -> Reply:
            stream = self.store.update_stream(
                call.path["ServiceSid"], call.path["Sid"], _int(call, "Ttl"), call.now
            )
            return self._one(call, self.stream_values(stream))

        def publish(call: Call) -> Reply:
            message = self.store.publish_stream_message(
                call.path["ServiceSid"], call.path["StreamSid"], str(call.form["Data"]), call.now
            )
            return self._one(call, {"sid": message.sid, "data": message.data})

        messages = crud(f"{IN_SERVICE}/Streams/{{StreamSid}}/Messages", create=publish)
        return self.object_routes(Stream, self.stream_values, create, update) + messages


def register_sync_routes(router: Router, store: SyncStore) -> None:
    """Register a handler for every emulated Sync v1 operation on ``router``."""
    api = SyncApi(router.spec, store)
    router.add_all(api.service_routes())
    router.add_all(api.document_routes())
    for cls, parent, member in COLLECTIONS:
        router.add_all(api.collection_routes(cls))
        router.add_all(api.item_routes(cls, parent, member))
    router.add_all(api.stream_routes())
