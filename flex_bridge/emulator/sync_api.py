"""REST handlers of the emulated Sync v1 API: typed form fields in, Twilio-shaped JSON out.

The state and its rules live in :mod:`flex_bridge.emulator.sync`; this module only reads the
request (path parameters, form fields, query, ``If-Match``), calls the store and renders what
it returns with the spec. Documents, Map items and List items answer with an ``ETag`` header
equal to their revision. Permissions endpoints are documented by Twilio but not emulated.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flex_bridge.emulator.api import Call, Reply, Router, page, resource_url
from flex_bridge.emulator.clock import iso
from flex_bridge.emulator.spec import Spec
from flex_bridge.emulator.sync import (
    Document,
    ListItem,
    MapItem,
    Service,
    Stream,
    SyncList,
    SyncMap,
    SyncObject,
    SyncStore,
)

JSON = dict[str, Any]

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


def _text(call: Call, name: str) -> str | None:
    value = call.form.get(name)
    return None if value is None else str(value)


def _int(call: Call, name: str) -> int | None:
    value = call.form.get(name)
    return value if isinstance(value, int) else None


def _url(path: str) -> str:
    return resource_url("sync", path)


def _service_path(service_sid: str) -> str:
    return f"/v1/Services/{service_sid}"


class SyncApi:
    """One handler per emulated operation, bound to a store."""

    def __init__(self, spec: Spec, store: SyncStore) -> None:
        self.spec = spec
        self.store = store

    # -- rendering -----------------------------------------------------------------------

    def _one(self, call: Call, values: JSON, etag: int | None = None) -> Reply:
        headers = {} if etag is None else {"ETag": str(etag)}
        return Reply(call.op.response_status, self.spec.render(call.op, values), headers)

    def _object_values(self, obj: SyncObject, path: str) -> JSON:
        return {
            "sid": obj.sid,
            "unique_name": obj.unique_name,
            "account_sid": self.store.account_sid,
            "service_sid": obj.service_sid,
            "url": _url(path),
            "date_expires": iso(obj.expires),
            "date_created": iso(obj.date_created),
            "date_updated": iso(obj.date_updated),
            "created_by": "system",
        }

    def service_values(self, service: Service) -> JSON:
        path = _service_path(service.sid)
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
        path = f"{_service_path(doc.service_sid)}/Documents/{doc.sid}"
        return {
            **self._object_values(doc, path),
            "revision": str(doc.revision),
            "data": doc.data,
            "links": {"permissions": _url(f"{path}/Permissions")},
        }

    def map_values(self, sync_map: SyncMap) -> JSON:
        path = f"{_service_path(sync_map.service_sid)}/Maps/{sync_map.sid}"
        return {
            **self._object_values(sync_map, path),
            "revision": str(sync_map.revision),
            "links": {
                "items": _url(f"{path}/Items"),
                "permissions": _url(f"{path}/Permissions"),
            },
        }

    def list_values(self, sync_list: SyncList) -> JSON:
        path = f"{_service_path(sync_list.service_sid)}/Lists/{sync_list.sid}"
        return {
            **self._object_values(sync_list, path),
            "revision": str(sync_list.revision),
            "links": {
                "items": _url(f"{path}/Items"),
                "permissions": _url(f"{path}/Permissions"),
            },
        }

    def stream_values(self, stream: Stream) -> JSON:
        path = f"{_service_path(stream.service_sid)}/Streams/{stream.sid}"
        return {
            **self._object_values(stream, path),
            "links": {"messages": _url(f"{path}/Messages")},
        }

    def map_item_values(self, sync_map: SyncMap, item: MapItem) -> JSON:
        path = (
            f"{_service_path(sync_map.service_sid)}/Maps/{sync_map.sid}/Items/"
            f"{quote(item.key, safe='')}"
        )
        return {
            "key": item.key,
            "account_sid": self.store.account_sid,
            "service_sid": sync_map.service_sid,
            "map_sid": sync_map.sid,
            "url": _url(path),
            "revision": str(item.revision),
            "data": item.data,
            "date_expires": iso(item.expires),
            "date_created": iso(item.date_created),
            "date_updated": iso(item.date_updated),
            "created_by": "system",
        }

    def list_item_values(self, sync_list: SyncList, item: ListItem) -> JSON:
        path = f"{_service_path(sync_list.service_sid)}/Lists/{sync_list.sid}/Items/{item.index}"
        return {
            "index": item.index,
            "account_sid": self.store.account_sid,
            "service_sid": sync_list.service_sid,
            "list_sid": sync_list.sid,
            "url": _url(path),
            "revision": str(item.revision),
            "data": item.data,
            "date_expires": iso(item.expires),
            "date_created": iso(item.date_created),
            "date_updated": iso(item.date_updated),
            "created_by": "system",
        }

    # -- services ------------------------------------------------------------------------

    @staticmethod
    def _service_settings(call: Call) -> dict[str, Any]:
        return {attr: call.form[name] for name, attr in SERVICE_FORM.items() if name in call.form}

    def create_service(self, call: Call) -> Reply:
        settings = self._service_settings(call)
        friendly_name = settings.pop("friendly_name", None)
        service = self.store.create_service(friendly_name, call.now, **settings)
        return self._one(call, self.service_values(service))

    def fetch_service(self, call: Call) -> Reply:
        return self._one(call, self.service_values(self.store.get_service(call.path["Sid"])))

    def list_services(self, call: Call) -> Reply:
        rows = [self.service_values(s) for s in self.store.list_services()]
        return page(self.spec, call, rows)

    def update_service(self, call: Call) -> Reply:
        service = self.store.update_service(
            call.path["Sid"], call.now, **self._service_settings(call)
        )
        return self._one(call, self.service_values(service))

    def delete_service(self, call: Call) -> Reply:
        self.store.delete_service(call.path["Sid"])
        return Reply(204, None)

    # -- documents -----------------------------------------------------------------------

    def create_document(self, call: Call) -> Reply:
        doc = self.store.create_document(
            call.path["ServiceSid"],
            _text(call, "UniqueName"),
            _text(call, "Data"),
            _int(call, "Ttl"),
            call.now,
        )
        return self._one(call, self.document_values(doc), doc.revision)

    def fetch_document(self, call: Call) -> Reply:
        doc = self.store.get_document(call.path["ServiceSid"], call.path["Sid"], call.now)
        return self._one(call, self.document_values(doc), doc.revision)

    def list_documents(self, call: Call) -> Reply:
        docs = self.store.list_documents(call.path["ServiceSid"], call.now)
        return page(self.spec, call, [self.document_values(d) for d in docs])

    def update_document(self, call: Call) -> Reply:
        doc = self.store.update_document(
            call.path["ServiceSid"],
            call.path["Sid"],
            _text(call, "Data"),
            _int(call, "Ttl"),
            call.if_match(),
            call.now,
        )
        return self._one(call, self.document_values(doc), doc.revision)

    def delete_document(self, call: Call) -> Reply:
        self.store.delete_document(
            call.path["ServiceSid"], call.path["Sid"], call.if_match(), call.now
        )
        return Reply(204, None)

    # -- maps ----------------------------------------------------------------------------

    def create_map(self, call: Call) -> Reply:
        sync_map = self.store.create_map(
            call.path["ServiceSid"],
            _text(call, "UniqueName"),
            _int(call, "Ttl"),
            _int(call, "CollectionTtl"),
            call.now,
        )
        return self._one(call, self.map_values(sync_map))

    def fetch_map(self, call: Call) -> Reply:
        sync_map = self.store.get_map(call.path["ServiceSid"], call.path["Sid"], call.now)
        return self._one(call, self.map_values(sync_map))

    def list_maps(self, call: Call) -> Reply:
        maps = self.store.list_maps(call.path["ServiceSid"], call.now)
        return page(self.spec, call, [self.map_values(m) for m in maps])

    def update_map(self, call: Call) -> Reply:
        sync_map = self.store.update_map(
            call.path["ServiceSid"],
            call.path["Sid"],
            _int(call, "Ttl"),
            _int(call, "CollectionTtl"),
            call.now,
        )
        return self._one(call, self.map_values(sync_map))

    def delete_map(self, call: Call) -> Reply:
        self.store.delete_map(call.path["ServiceSid"], call.path["Sid"], call.now)
        return Reply(204, None)

    # -- map items -----------------------------------------------------------------------

    def create_map_item(self, call: Call) -> Reply:
        sync_map, item = self.store.create_map_item(
            call.path["ServiceSid"],
            call.path["MapSid"],
            str(call.form["Key"]),
            str(call.form["Data"]),
            _int(call, "Ttl"),
            _int(call, "ItemTtl"),
            _int(call, "CollectionTtl"),
            call.now,
        )
        return self._one(call, self.map_item_values(sync_map, item), item.revision)

    def fetch_map_item(self, call: Call) -> Reply:
        sync_map, item = self.store.get_map_item(
            call.path["ServiceSid"], call.path["MapSid"], call.path["Key"], call.now
        )
        return self._one(call, self.map_item_values(sync_map, item), item.revision)

    def list_map_items(self, call: Call) -> Reply:
        sync_map, items = self.store.list_map_items(
            call.path["ServiceSid"],
            call.path["MapSid"],
            call.now,
            order=call.query.get("Order", "asc"),
            start=call.query.get("From"),
            bounds=call.query.get("Bounds", "inclusive"),
        )
        rows = [self.map_item_values(sync_map, item) for item in items]
        return page(self.spec, call, rows, extra_query=self._listing_query(call))

    def update_map_item(self, call: Call) -> Reply:
        sync_map, item = self.store.update_map_item(
            call.path["ServiceSid"],
            call.path["MapSid"],
            call.path["Key"],
            _text(call, "Data"),
            _int(call, "Ttl"),
            _int(call, "ItemTtl"),
            _int(call, "CollectionTtl"),
            call.if_match(),
            call.now,
        )
        return self._one(call, self.map_item_values(sync_map, item), item.revision)

    def delete_map_item(self, call: Call) -> Reply:
        self.store.delete_map_item(
            call.path["ServiceSid"],
            call.path["MapSid"],
            call.path["Key"],
            call.if_match(),
            call.now,
        )
        return Reply(204, None)

    @staticmethod
    def _listing_query(call: Call) -> dict[str, str]:
        return {name: str(call.query[name]) for name in LISTING_QUERY if name in call.query}

    # -- lists ---------------------------------------------------------------------------

    def create_list(self, call: Call) -> Reply:
        sync_list = self.store.create_list(
            call.path["ServiceSid"],
            _text(call, "UniqueName"),
            _int(call, "Ttl"),
            _int(call, "CollectionTtl"),
            call.now,
        )
        return self._one(call, self.list_values(sync_list))

    def fetch_list(self, call: Call) -> Reply:
        sync_list = self.store.get_list(call.path["ServiceSid"], call.path["Sid"], call.now)
        return self._one(call, self.list_values(sync_list))

    def list_lists(self, call: Call) -> Reply:
        lists = self.store.list_lists(call.path["ServiceSid"], call.now)
        return page(self.spec, call, [self.list_values(lst) for lst in lists])

    def update_list(self, call: Call) -> Reply:
        sync_list = self.store.update_list(
            call.path["ServiceSid"],
            call.path["Sid"],
            _int(call, "Ttl"),
            _int(call, "CollectionTtl"),
            call.now,
        )
        return self._one(call, self.list_values(sync_list))

    def delete_list(self, call: Call) -> Reply:
        self.store.delete_list(call.path["ServiceSid"], call.path["Sid"], call.now)
        return Reply(204, None)

    # -- list items ----------------------------------------------------------------------

    def create_list_item(self, call: Call) -> Reply:
        sync_list, item = self.store.create_list_item(
            call.path["ServiceSid"],
            call.path["ListSid"],
            str(call.form["Data"]),
            _int(call, "Ttl"),
            _int(call, "ItemTtl"),
            _int(call, "CollectionTtl"),
            call.now,
        )
        return self._one(call, self.list_item_values(sync_list, item), item.revision)

    def fetch_list_item(self, call: Call) -> Reply:
        sync_list, item = self.store.get_list_item(
            call.path["ServiceSid"], call.path["ListSid"], call.path["Index"], call.now
        )
        return self._one(call, self.list_item_values(sync_list, item), item.revision)

    def list_list_items(self, call: Call) -> Reply:
        sync_list, items = self.store.list_list_items(
            call.path["ServiceSid"],
            call.path["ListSid"],
            call.now,
            order=call.query.get("Order", "asc"),
            start=call.query.get("From"),
            bounds=call.query.get("Bounds", "inclusive"),
        )
        rows = [self.list_item_values(sync_list, item) for item in items]
        return page(self.spec, call, rows, extra_query=self._listing_query(call))

    def update_list_item(self, call: Call) -> Reply:
        sync_list, item = self.store.update_list_item(
            call.path["ServiceSid"],
            call.path["ListSid"],
            call.path["Index"],
            _text(call, "Data"),
            _int(call, "Ttl"),
            _int(call, "ItemTtl"),
            _int(call, "CollectionTtl"),
            call.if_match(),
            call.now,
        )
        return self._one(call, self.list_item_values(sync_list, item), item.revision)

    def delete_list_item(self, call: Call) -> Reply:
        self.store.delete_list_item(
            call.path["ServiceSid"],
            call.path["ListSid"],
            call.path["Index"],
            call.if_match(),
            call.now,
        )
        return Reply(204, None)

    # -- streams -------------------------------------------------------------------------

    def create_stream(self, call: Call) -> Reply:
        stream = self.store.create_stream(
            call.path["ServiceSid"], _text(call, "UniqueName"), _int(call, "Ttl"), call.now
        )
        return self._one(call, self.stream_values(stream))

    def fetch_stream(self, call: Call) -> Reply:
        stream = self.store.get_stream(call.path["ServiceSid"], call.path["Sid"], call.now)
        return self._one(call, self.stream_values(stream))

    def list_streams(self, call: Call) -> Reply:
        streams = self.store.list_streams(call.path["ServiceSid"], call.now)
        return page(self.spec, call, [self.stream_values(s) for s in streams])

    def update_stream(self, call: Call) -> Reply:
        stream = self.store.update_stream(
            call.path["ServiceSid"], call.path["Sid"], _int(call, "Ttl"), call.now
        )
        return self._one(call, self.stream_values(stream))

    def delete_stream(self, call: Call) -> Reply:
        self.store.delete_stream(call.path["ServiceSid"], call.path["Sid"], call.now)
        return Reply(204, None)

    def create_stream_message(self, call: Call) -> Reply:
        message = self.store.publish_stream_message(
            call.path["ServiceSid"], call.path["StreamSid"], str(call.form["Data"]), call.now
        )
        return self._one(call, {"sid": message.sid, "data": message.data})


def register_sync_routes(router: Router, store: SyncStore) -> None:
    """Register a handler for every emulated Sync v1 operation on ``router``."""
    api = SyncApi(router.spec, store)
    routes = [
        ("GET", "/v1/Services", api.list_services),
        ("POST", "/v1/Services", api.create_service),
        ("GET", "/v1/Services/{Sid}", api.fetch_service),
        ("POST", "/v1/Services/{Sid}", api.update_service),
        ("DELETE", "/v1/Services/{Sid}", api.delete_service),
        ("GET", "/v1/Services/{ServiceSid}/Documents", api.list_documents),
        ("POST", "/v1/Services/{ServiceSid}/Documents", api.create_document),
        ("GET", "/v1/Services/{ServiceSid}/Documents/{Sid}", api.fetch_document),
        ("POST", "/v1/Services/{ServiceSid}/Documents/{Sid}", api.update_document),
        ("DELETE", "/v1/Services/{ServiceSid}/Documents/{Sid}", api.delete_document),
        ("GET", "/v1/Services/{ServiceSid}/Maps", api.list_maps),
        ("POST", "/v1/Services/{ServiceSid}/Maps", api.create_map),
        ("GET", "/v1/Services/{ServiceSid}/Maps/{Sid}", api.fetch_map),
        ("POST", "/v1/Services/{ServiceSid}/Maps/{Sid}", api.update_map),
        ("DELETE", "/v1/Services/{ServiceSid}/Maps/{Sid}", api.delete_map),
        ("GET", "/v1/Services/{ServiceSid}/Maps/{MapSid}/Items", api.list_map_items),
        ("POST", "/v1/Services/{ServiceSid}/Maps/{MapSid}/Items", api.create_map_item),
        ("GET", "/v1/Services/{ServiceSid}/Maps/{MapSid}/Items/{Key}", api.fetch_map_item),
        ("POST", "/v1/Services/{ServiceSid}/Maps/{MapSid}/Items/{Key}", api.update_map_item),
        ("DELETE", "/v1/Services/{ServiceSid}/Maps/{MapSid}/Items/{Key}", api.delete_map_item),
        ("GET", "/v1/Services/{ServiceSid}/Lists", api.list_lists),
        ("POST", "/v1/Services/{ServiceSid}/Lists", api.create_list),
        ("GET", "/v1/Services/{ServiceSid}/Lists/{Sid}", api.fetch_list),
        ("POST", "/v1/Services/{ServiceSid}/Lists/{Sid}", api.update_list),
        ("DELETE", "/v1/Services/{ServiceSid}/Lists/{Sid}", api.delete_list),
        ("GET", "/v1/Services/{ServiceSid}/Lists/{ListSid}/Items", api.list_list_items),
        ("POST", "/v1/Services/{ServiceSid}/Lists/{ListSid}/Items", api.create_list_item),
        ("GET", "/v1/Services/{ServiceSid}/Lists/{ListSid}/Items/{Index}", api.fetch_list_item),
        ("POST", "/v1/Services/{ServiceSid}/Lists/{ListSid}/Items/{Index}", api.update_list_item),
        ("DELETE", "/v1/Services/{ServiceSid}/Lists/{ListSid}/Items/{Index}", api.delete_list_item),
        ("GET", "/v1/Services/{ServiceSid}/Streams", api.list_streams),
        ("POST", "/v1/Services/{ServiceSid}/Streams", api.create_stream),
        ("GET", "/v1/Services/{ServiceSid}/Streams/{Sid}", api.fetch_stream),
        ("POST", "/v1/Services/{ServiceSid}/Streams/{Sid}", api.update_stream),
        ("DELETE", "/v1/Services/{ServiceSid}/Streams/{Sid}", api.delete_stream),
        (
            "POST",
            "/v1/Services/{ServiceSid}/Streams/{StreamSid}/Messages",
            api.create_stream_message,
        ),
    ]
    for method, template, handler in routes:
        router.add(method, template, handler)
