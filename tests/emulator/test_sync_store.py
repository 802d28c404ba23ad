"""The emulated Sync v1 API, driven through its REST handlers without an HTTP server."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest

from flex_bridge.emulator import api
from flex_bridge.emulator.api import ApiError, Call, Reply, Router
from flex_bridge.emulator.clock import Clock, Scheduler, iso
from flex_bridge.emulator.feed import Feed
from flex_bridge.emulator.spec import Operation, Spec, load_spec
from flex_bridge.emulator.sync import MAX_TTL, SyncStore
from flex_bridge.emulator.sync.routes import register_sync_routes

ACCOUNT_SID = "AC" + "a" * 32
EPOCH = 1_700_000_000.0
HOST = "https://sync.twilio.com"


# ---------------------------------------------------------------------------------------------
# Harness


class FrozenClock(Clock):
    """The emulator clock, stopped at EPOCH until advanced."""

    def now(self) -> float:
        return EPOCH + self.offset


class Monotonic:
    """A hand-driven stand-in for time.monotonic (the rate-limit buckets' clock)."""

    def __init__(self) -> None:
        self.value = 5_000.0

    def __call__(self) -> float:
        return self.value


def to_json_schema(doc: Mapping[str, Any], node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: ``$ref`` inlined, ``nullable`` as a type union."""
    if isinstance(node, list):
        return [to_json_schema(doc, item) for item in node]
    if not isinstance(node, dict):
        return node
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    out = {k: to_json_schema(doc, v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


_VALIDATORS: dict[tuple[str, str], jsonschema.Draft7Validator] = {}


def validator(spec: Spec, op: Operation) -> jsonschema.Draft7Validator:
    """The JSON Schema validator of an operation's success response, built once."""
    found = _VALIDATORS.get((op.method, op.template))
    if found is None:
        raw = spec.doc["paths"][op.template][op.method.lower()]["responses"]
        content = raw[str(op.response_status)]["content"]["application/json"]["schema"]
        schema = to_json_schema(spec.doc, content)
        jsonschema.Draft7Validator.check_schema(schema)
        found = _VALIDATORS[(op.method, op.template)] = jsonschema.Draft7Validator(schema)
    return found


def check_body(spec: Spec, op: Operation, reply: Reply) -> None:
    """Every rendered body matches the spec's response schema, with every documented field."""
    assert reply.status == op.response_status
    if reply.status == 204:
        assert reply.body is None
        return
    assert reply.body is not None
    validator(spec, op).validate(reply.body)
    assert op.response_schema is not None
    documented = set(op.response_schema["properties"])
    rows = reply.body[op.list_key] if op.list_key else [reply.body]
    for row in rows:
        assert set(row) == documented


def form_value(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Emulator:
    def __init__(self, *, rate_limit: bool = True) -> None:
        self.clock = FrozenClock()
        self.scheduler = Scheduler(self.clock)
        self.feed = Feed()
        self.monotonic = Monotonic()
        self.store = SyncStore(
            ACCOUNT_SID,
            self.clock,
            self.scheduler,
            self.feed,
            rate_limit=rate_limit,
            monotonic=self.monotonic,
        )
        self.spec = load_spec("sync")
        self.router = Router(self.spec)
        register_sync_routes(self.router, self.store)
        self.queue = self.feed.subscribe()

    def request(
        self,
        method: str,
        path: str,
        form: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        op, params, handler = self.router.resolve(method, path)
        items = [(name, form_value(value)) for name, value in (form or {}).items()]
        parsed_form = api.parse_fields(op.form_fields, items, where="form", required=op.required)
        query_items = [(name, form_value(value)) for name, value in (query or {}).items()]
        parsed_query = api.parse_fields(op.query_params, query_items, where="query")
        call = Call(
            op=op,
            path=params,
            form=parsed_form,
            query=parsed_query,
            headers={name.lower(): value for name, value in (headers or {}).items()},
            now=self.clock.now(),
            url_path=path,
        )
        reply = handler(call)
        check_body(self.spec, op, reply)
        return reply

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        body = self.request("GET", path, query=query).body
        assert body is not None
        return body

    def post(self, path: str, form: Mapping[str, Any] | None = None, **kw: Any) -> Reply:
        return self.request("POST", path, form, **kw)

    def fails(
        self,
        method: str,
        path: str,
        form: Mapping[str, Any] | None = None,
        *,
        status: int,
        code: int,
        **kw: Any,
    ) -> ApiError:
        with pytest.raises(ApiError) as info:
            self.request(method, path, form, **kw)
        error = info.value
        assert (error.status, error.code) == (status, code), error.message
        return error

    def events(self) -> list[dict[str, Any]]:
        out = []
        while not self.queue.empty():
            message = self.queue.get_nowait()
            assert message is not None
            out.append(message)
        return out

    def service(self) -> str:
        reply = self.post("/v1/Services", {"FriendlyName": "test"})
        assert reply.body is not None
        sid = reply.body["sid"]
        assert isinstance(sid, str)
        return sid


@pytest.fixture
def emu() -> Emulator:
    return Emulator()


@pytest.fixture
def svc(emu: Emulator) -> str:
    return emu.service()


def body_of(reply: Reply) -> dict[str, Any]:
    assert reply.body is not None
    return reply.body


def big(size: int) -> dict[str, str]:
    """A JSON object whose compact serialisation is exactly ``size`` bytes."""
    return {"x": "a" * (size - len('{"x":""}'))}


def test_schema_check_is_not_vacuous(emu: Emulator) -> None:
    op = emu.spec.operation("GET", "/v1/Services/{ServiceSid}/Maps/{MapSid}/Items/{Key}")
    good = emu.spec.render(op, {"key": "k", "revision": "0", "data": {}})
    validator(emu.spec, op).validate(good)  # nulls allowed where the spec says nullable
    with pytest.raises(jsonschema.ValidationError):
        validator(emu.spec, op).validate({**good, "revision": 0})
    with pytest.raises(jsonschema.ValidationError):
        validator(emu.spec, op).validate({**good, "map_sid": "MP123"})


# ---------------------------------------------------------------------------------------------
# Services


def test_service_crud(emu: Emulator) -> None:
    created = emu.post("/v1/Services", {"FriendlyName": "ops", "AclEnabled": True})
    assert created.status == 201
    body = body_of(created)
    sid = body["sid"]
    assert sid.startswith("IS") and len(sid) == 34
    assert body["account_sid"] == ACCOUNT_SID
    assert body["friendly_name"] == "ops"
    assert body["acl_enabled"] is True
    assert body["url"] == f"{HOST}/v1/Services/{sid}"
    assert body["links"]["maps"] == f"{HOST}/v1/Services/{sid}/Maps"
    assert body["date_created"] == iso(EPOCH)

    assert emu.get(f"/v1/Services/{sid}")["friendly_name"] == "ops"
    listed = emu.get("/v1/Services")
    assert [s["sid"] for s in listed["services"]] == [sid]
    assert listed["meta"]["key"] == "services"

    emu.clock.advance(5)
    updated = body_of(emu.post(f"/v1/Services/{sid}", {"FriendlyName": "renamed"}))
    assert updated["friendly_name"] == "renamed"
    assert updated["acl_enabled"] is True
    assert updated["date_updated"] == iso(EPOCH + 5)

    assert emu.request("DELETE", f"/v1/Services/{sid}").status == 204
    emu.fails("GET", f"/v1/Services/{sid}", status=404, code=54050)
    emu.fails("GET", f"/v1/Services/{sid}/Maps", status=404, code=54050)


def test_create_service_for_seeding(emu: Emulator) -> None:
    service = emu.store.create_service("seeded", EPOCH)
    assert service.sid.startswith("IS")
    assert emu.get(f"/v1/Services/{service.sid}")["friendly_name"] == "seeded"


def test_deleting_a_service_removes_its_objects(emu: Emulator, svc: str) -> None:
    emu.post(f"/v1/Services/{svc}/Maps", {"UniqueName": "m"})
    emu.post(f"/v1/Services/{svc}/Documents", {"UniqueName": "d"})
    emu.events()
    emu.request("DELETE", f"/v1/Services/{svc}")
    removed = {(e["type"], e["reason"]) for e in emu.events()}
    assert removed == {("map.removed", "deleted"), ("document.removed", "deleted")}
    assert emu.store.dump()["services"] == []


# ---------------------------------------------------------------------------------------------
# Documents


def test_document_crud_by_sid_and_unique_name(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}/Documents"
    created = emu.post(base, {"UniqueName": "settings", "Data": {"a": 1}})
    assert created.status == 201
    assert created.headers == {"ETag": "0"}
    doc = body_of(created)
    sid = doc["sid"]
    assert sid.startswith("ET") and len(sid) == 34
    assert doc["revision"] == "0"
    assert doc["data"] == {"a": 1}
    assert doc["unique_name"] == "settings"
    assert doc["date_expires"] is None
    assert doc["url"] == f"{HOST}{base}/{sid}"
    assert doc["links"] == {"permissions": f"{HOST}{base}/{sid}/Permissions"}

    by_name = emu.request("GET", f"{base}/settings")
    assert body_of(by_name)["sid"] == sid
    assert by_name.headers["ETag"] == "0"

    updated = emu.post(f"{base}/settings", {"Data": {"a": 2}})
    assert updated.headers["ETag"] == "1"
    assert body_of(updated)["revision"] == "1"
    assert emu.get(f"{base}/{sid}")["data"] == {"a": 2}

    assert [d["sid"] for d in emu.get(base)["documents"]] == [sid]

    assert emu.request("DELETE", f"{base}/{sid}").status == 204
    emu.fails("GET", f"{base}/{sid}", status=404, code=54100)
    emu.fails("GET", f"{base}/settings", status=404, code=54100)
    assert emu.get(base)["documents"] == []


def test_document_without_data_is_empty_object(emu: Emulator, svc: str) -> None:
    doc = body_of(emu.post(f"/v1/Services/{svc}/Documents"))
    assert doc["data"] == {}
    assert doc["unique_name"] is None


def test_document_if_match(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}/Documents"
    emu.post(base, {"UniqueName": "d", "Data": {}})
    emu.post(f"{base}/d", {"Data": {"v": 1}}, headers={"If-Match": "0"})
    error = emu.fails(
        "POST", f"{base}/d", {"Data": {"v": 2}}, headers={"If-Match": "0"}, status=412, code=54103
    )
    assert "revision" in error.message
    assert emu.get(f"{base}/d")["data"] == {"v": 1}
    # A quoted ETag, as HTTP writes it, and the wildcard both match.
    emu.post(f"{base}/d", {"Data": {"v": 2}}, headers={"If-Match": '"1"'})
    emu.post(f"{base}/d", {"Data": {"v": 3}}, headers={"If-Match": "*"})
    emu.fails("DELETE", f"{base}/d", headers={"If-Match": "1"}, status=412, code=54103)
    assert emu.request("DELETE", f"{base}/d", headers={"If-Match": "3"}).status == 204


def test_update_without_parameters_is_refused(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}"
    emu.post(f"{base}/Documents", {"UniqueName": "d"})
    emu.post(f"{base}/Maps", {"UniqueName": "m"})
    emu.post(f"{base}/Maps/m/Items", {"Key": "k", "Data": {}})
    emu.post(f"{base}/Lists", {"UniqueName": "l"})
    emu.post(f"{base}/Lists/l/Items", {"Data": {}})
    emu.post(f"{base}/Streams", {"UniqueName": "s"})
    for path in (
        "Documents/d",
        "Maps/m",
        "Maps/m/Items/k",
        "Lists/l",
        "Lists/l/Items/0",
        "Streams/s",
    ):
        emu.fails("POST", f"{base}/{path}", status=400, code=54010)


# ---------------------------------------------------------------------------------------------
# Unique names


@pytest.mark.parametrize("kind", ["Documents", "Maps", "Lists", "Streams"])
def test_unique_name_taken_is_409(emu: Emulator, svc: str, kind: str) -> None:
    base = f"/v1/Services/{svc}/{kind}"
    emu.post(base, {"UniqueName": "shared"})
    emu.fails("POST", base, {"UniqueName": "shared"}, status=409, code=54301)
    # Objects without a unique name never clash.
    emu.post(base)
    emu.post(base)
    assert len(emu.get(base)[kind.lower()]) == 3


def test_unique_names_are_per_kind(emu: Emulator, svc: str) -> None:
    for kind in ("Documents", "Maps", "Lists", "Streams"):
        assert emu.post(f"/v1/Services/{svc}/{kind}", {"UniqueName": "same"}).status == 201


@pytest.mark.parametrize("name", ["MP" + "0" * 32, "x" * 321, ""])
def test_invalid_unique_name(emu: Emulator, svc: str, name: str) -> None:
    emu.fails("POST", f"/v1/Services/{svc}/Maps", {"UniqueName": name}, status=400, code=54302)


def test_unknown_object_is_404_per_kind(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}"
    emu.fails("GET", f"{base}/Documents/nope", status=404, code=54100)
    emu.fails("GET", f"{base}/Maps/nope", status=404, code=54200)
    emu.fails("GET", f"{base}/Maps/nope/Items/k", status=404, code=54200)
    emu.fails("GET", f"{base}/Lists/nope", status=404, code=54150)
    emu.fails("GET", f"{base}/Lists/nope/Items", status=404, code=54150)
    emu.fails("GET", f"{base}/Streams/nope", status=404, code=54250)
    emu.fails("POST", f"{base}/Streams/nope/Messages", {"Data": {}}, status=404, code=54250)


def test_permissions_are_not_emulated(emu: Emulator, svc: str) -> None:
    with pytest.raises(ApiError) as info:
        emu.router.resolve("GET", f"/v1/Services/{svc}/Maps/m/Permissions")
    assert (info.value.status, info.value.code) == (404, 20404)
    assert "not emulated" in info.value.message


# ---------------------------------------------------------------------------------------------
# Data validation and size limits


def test_data_must_be_valid_json(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}"
    emu.fails("POST", f"{base}/Documents", {"Data": "{nope"}, status=400, code=54008)
    emu.fails("POST", f"{base}/Documents", {"Data": "NaN"}, status=400, code=54008)
    emu.fails("POST", f"{base}/Documents", {"Data": ""}, status=400, code=54008)


def test_data_must_be_an_object(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}"
    emu.post(f"{base}/Maps", {"UniqueName": "m"})
    emu.post(f"{base}/Lists", {"UniqueName": "l"})
    emu.post(f"{base}/Streams", {"UniqueName": "s"})
    emu.fails("POST", f"{base}/Documents", {"Data": [1]}, status=400, code=54101)
    emu.fails("POST", f"{base}/Maps/m/Items", {"Key": "k", "Data": "3"}, status=400, code=54206)
    emu.fails("POST", f"{base}/Lists/l/Items", {"Data": "null"}, status=400, code=54156)
    emu.fails("POST", f"{base}/Streams/s/Messages", {"Data": '"x"'}, status=400, code=54251)
    assert emu.get(f"{base}/Maps/m/Items")["items"] == []


def test_size_limits(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}"
    emu.post(f"{base}/Maps", {"UniqueName": "m"})
    emu.post(f"{base}/Lists", {"UniqueName": "l"})
    emu.post(f"{base}/Streams", {"UniqueName": "s"})
    limit = 16 * 1024

    emu.post(f"{base}/Documents", {"UniqueName": "d", "Data": big(limit)})
    emu.fails("POST", f"{base}/Documents/d", {"Data": big(limit + 1)}, status=413, code=54006)
    emu.post(f"{base}/Maps/m/Items", {"Key": "k", "Data": big(limit)})
    emu.fails("POST", f"{base}/Maps/m/Items/k", {"Data": big(limit + 1)}, status=413, code=54006)
    emu.fails(
        "POST", f"{base}/Maps/m/Items", {"Key": "j", "Data": big(limit + 1)}, status=413, code=54006
    )
    emu.post(f"{base}/Lists/l/Items", {"Data": big(limit)})
    emu.fails("POST", f"{base}/Lists/l/Items", {"Data": big(limit + 1)}, status=413, code=54006)
    emu.post(f"{base}/Streams/s/Messages", {"Data": big(4096)})
    emu.fails("POST", f"{base}/Streams/s/Messages", {"Data": big(4097)}, status=413, code=54006)
    # Size is measured on UTF-8 bytes, not characters.
    emu.fails(
        "POST", f"{base}/Streams/s/Messages", {"Data": {"x": "é" * 2100}}, status=413, code=54006
    )


def test_map_key_length(emu: Emulator, svc: str) -> None:
    items = f"/v1/Services/{svc}/Maps/m/Items"
    emu.post(f"/v1/Services/{svc}/Maps", {"UniqueName": "m"})
    assert emu.post(items, {"Key": "k" * 320, "Data": {}}).status == 201
    emu.fails("POST", items, {"Key": "k" * 321, "Data": {}}, status=400, code=54209)
    emu.fails("POST", items, {"Key": "", "Data": {}}, status=400, code=54209)


def test_required_fields_are_checked_by_the_framework(emu: Emulator, svc: str) -> None:
    emu.post(f"/v1/Services/{svc}/Maps", {"UniqueName": "m"})
    emu.fails("POST", f"/v1/Services/{svc}/Maps/m/Items", {"Key": "k"}, status=400, code=20001)


# ---------------------------------------------------------------------------------------------
# Maps and map items


def test_map_crud(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}/Maps"
    created = body_of(emu.post(base, {"UniqueName": "worker.WK1"}))
    sid = created["sid"]
    assert sid.startswith("MP")
    assert created["revision"] == "0"
    assert created["links"]["items"] == f"{HOST}{base}/{sid}/Items"
    assert emu.get(f"{base}/worker.WK1")["sid"] == sid
    assert [m["sid"] for m in emu.get(base)["maps"]] == [sid]

    updated = body_of(emu.post(f"{base}/{sid}", {"CollectionTtl": 100}))
    assert updated["date_expires"] == iso(EPOCH + 100)
    assert updated["revision"] == "1"

    assert emu.request("DELETE", f"{base}/worker.WK1").status == 204
    emu.fails("GET", f"{base}/{sid}", status=404, code=54200)


def test_map_item_crud_and_revisions(emu: Emulator, svc: str) -> None:
    emu.post(f"/v1/Services/{svc}/Maps", {"UniqueName": "m"})
    map_sid = emu.get(f"/v1/Services/{svc}/Maps/m")["sid"]
    items = f"/v1/Services/{svc}/Maps/m/Items"

    created = emu.post(items, {"Key": "WR1", "Data": {"phase": "pending"}})
    assert created.status == 201
    first = created.headers["ETag"]
    item = body_of(created)
    assert item["key"] == "WR1"
    assert item["map_sid"] == map_sid
    assert item["revision"] == first
    assert item["url"] == f"{HOST}/v1/Services/{svc}/Maps/{map_sid}/Items/WR1"

    emu.fails("POST", items, {"Key": "WR1", "Data": {}}, status=409, code=54208)

    fetched = emu.request("GET", f"/v1/Services/{svc}/Maps/{map_sid}/Items/WR1")
    assert body_of(fetched)["data"] == {"phase": "pending"}
    assert fetched.headers["ETag"] == first

    updated = emu.post(f"{items}/WR1", {"Data": {"phase": "applied"}}, headers={"If-Match": first})
    second = updated.headers["ETag"]
    assert int(second) > int(first)
    assert body_of(updated)["data"] == {"phase": "applied"}

    emu.fails(
        "POST",
        f"{items}/WR1",
        {"Data": {"phase": "failed"}},
        headers={"If-Match": first},
        status=412,
        code=54205,
    )
    emu.fails("DELETE", f"{items}/WR1", headers={"If-Match": first}, status=412, code=54205)
    assert emu.get(f"{items}/WR1")["data"] == {"phase": "applied"}

    # Each item write also moves the map's own revision.
    assert emu.get(f"/v1/Services/{svc}/Maps/m")["revision"] == second

    assert emu.request("DELETE", f"{items}/WR1", headers={"If-Match": second}).status == 204
    emu.fails("GET", f"{items}/WR1", status=404, code=54201)
    emu.fails("POST", f"{items}/WR1", {"Data": {}}, status=404, code=54201)
    # The key is free again; the new item never reuses a revision of the old one, so a
    # stale If-Match from before the delete cannot match it.
    again = emu.post(items, {"Key": "WR1", "Data": {}}).headers["ETag"]
    assert again not in (first, second)
    emu.fails(
        "POST", f"{items}/WR1", {"Data": {}}, headers={"If-Match": second}, status=412, code=54205
    )


def test_deleting_a_map_deletes_its_items(emu: Emulator, svc: str) -> None:
    emu.post(f"/v1/Services/{svc}/Maps", {"UniqueName": "m"})
    emu.post(f"/v1/Services/{svc}/Maps/m/Items", {"Key": "k", "Data": {}, "ItemTtl": 10})
    emu.request("DELETE", f"/v1/Services/{svc}/Maps/m")
    emu.post(f"/v1/Services/{svc}/Maps", {"UniqueName": "m"})
    assert emu.get(f"/v1/Services/{svc}/Maps/m/Items")["items"] == []
    emu.events()
    emu.scheduler.advance(20)  # the old item's timer was cancelled with its map
    assert emu.events() == []


@pytest.fixture
def letters(emu: Emulator, svc: str) -> str:
    emu.post(f"/v1/Services/{svc}/Maps", {"UniqueName": "letters"})
    items = f"/v1/Services/{svc}/Maps/letters/Items"
    for key in ("c", "a", "e", "b", "d"):
        emu.post(items, {"Key": key, "Data": {"k": key}})
    return items


def keys(body: dict[str, Any]) -> list[str]:
    return [item["key"] for item in body["items"]]


def test_map_items_order_from_and_bounds(emu: Emulator, letters: str) -> None:
    assert keys(emu.get(letters)) == ["a", "b", "c", "d", "e"]
    assert keys(emu.get(letters, Order="desc")) == ["e", "d", "c", "b", "a"]
    assert keys(emu.get(letters, From="c")) == ["c", "d", "e"]
    assert keys(emu.get(letters, From="c", Bounds="inclusive")) == ["c", "d", "e"]
    assert keys(emu.get(letters, From="c", Bounds="exclusive")) == ["d", "e"]
    assert keys(emu.get(letters, From="c", Order="desc")) == ["c", "b", "a"]
    assert keys(emu.get(letters, From="c", Order="desc", Bounds="exclusive")) == ["b", "a"]
    # From need not be an existing key.
    assert keys(emu.get(letters, From="bb")) == ["c", "d", "e"]
    with pytest.raises(ApiError) as info:
        emu.get(letters, Order="sideways")
    assert info.value.status == 400


def test_map_items_paging(emu: Emulator, letters: str) -> None:
    first = emu.get(letters, PageSize=2, Order="desc")
    assert keys(first) == ["e", "d"]
    meta = first["meta"]
    assert meta["key"] == "items"
    assert meta["page"] == 0 and meta["page_size"] == 2
    assert meta["previous_page_url"] is None
    next_url = urlsplit(meta["next_page_url"])
    assert f"{next_url.scheme}://{next_url.netloc}" == HOST
    assert next_url.path == letters
    query = {k: v[0] for k, v in parse_qs(next_url.query).items()}
    assert query["Order"] == "desc" and query["Page"] == "1" and query["PageSize"] == "2"

    second = emu.get(letters, PageSize=2, Order="desc", Page=1)
    assert keys(second) == ["c", "b"]
    assert second["meta"]["previous_page_url"] is not None
    last = emu.get(letters, PageSize=2, Order="desc", Page=2)
    assert keys(last) == ["a"]
    assert last["meta"]["next_page_url"] is None


# ---------------------------------------------------------------------------------------------
# Lists and list items


def test_list_crud(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}/Lists"
    created = body_of(emu.post(base, {"UniqueName": "log", "Ttl": 50}))
    sid = created["sid"]
    assert sid.startswith("ES")
    assert created["date_expires"] == iso(EPOCH + 50)
    assert emu.get(f"{base}/log")["sid"] == sid
    assert [x["sid"] for x in emu.get(base)["lists"]] == [sid]
    # CollectionTtl wins over its alias Ttl.
    updated = body_of(emu.post(f"{base}/log", {"Ttl": 10, "CollectionTtl": 0}))
    assert updated["date_expires"] is None
    assert emu.request("DELETE", f"{base}/{sid}").status == 204
    emu.fails("GET", f"{base}/log", status=404, code=54150)


def test_list_items(emu: Emulator, svc: str) -> None:
    emu.post(f"/v1/Services/{svc}/Lists", {"UniqueName": "log"})
    list_sid = emu.get(f"/v1/Services/{svc}/Lists/log")["sid"]
    items = f"/v1/Services/{svc}/Lists/log/Items"
    revisions = []
    for n in range(3):
        reply = emu.post(items, {"Data": {"n": n}})
        assert body_of(reply)["index"] == n
        revisions.append(reply.headers["ETag"])
    assert len(set(revisions)) == 3
    assert body_of(emu.post(items, {"Data": {"n": 3}}))["list_sid"] == list_sid

    fetched = emu.request("GET", f"{items}/1")
    assert body_of(fetched)["data"] == {"n": 1}
    assert body_of(fetched)["url"] == f"{HOST}/v1/Services/{svc}/Lists/{list_sid}/Items/1"

    updated = emu.post(f"{items}/1", {"Data": {"n": 10}}, headers={"If-Match": revisions[1]})
    assert int(updated.headers["ETag"]) > int(revisions[2])
    emu.fails(
        "POST",
        f"{items}/1",
        {"Data": {"n": 11}},
        headers={"If-Match": revisions[1]},
        status=412,
        code=54155,
    )
    emu.fails("DELETE", f"{items}/1", headers={"If-Match": "7"}, status=412, code=54155)
    assert emu.request("DELETE", f"{items}/1").status == 204
    emu.fails("GET", f"{items}/1", status=404, code=54151)
    emu.fails("GET", f"{items}/x", status=404, code=54151)

    # Indexes are never reused.
    assert body_of(emu.post(items, {"Data": {}}))["index"] == 4

    def indexes(**query: Any) -> list[int]:
        return [item["index"] for item in emu.get(items, **query)["items"]]

    assert indexes() == [0, 2, 3, 4]
    assert indexes(Order="desc") == [4, 3, 2, 0]
    assert indexes(From=2) == [2, 3, 4]
    assert indexes(From=2, Bounds="exclusive") == [3, 4]
    assert indexes(From=3, Order="desc", Bounds="exclusive") == [2, 0]
    emu.fails("GET", items, query={"From": "abc"}, status=400, code=20001)


# ---------------------------------------------------------------------------------------------
# Streams


def test_streams(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}/Streams"
    created = body_of(emu.post(base, {"UniqueName": "alerts"}))
    sid = created["sid"]
    assert sid.startswith("TO")
    assert created["links"] == {"messages": f"{HOST}{base}/{sid}/Messages"}
    assert emu.get(f"{base}/alerts")["sid"] == sid
    assert [s["sid"] for s in emu.get(base)["streams"]] == [sid]
    assert body_of(emu.post(f"{base}/alerts", {"Ttl": 30}))["date_expires"] == iso(EPOCH + 30)
    emu.events()

    message = emu.post(f"{base}/alerts/Messages", {"Data": {"hello": "world"}})
    assert message.status == 201
    assert message.headers == {}
    body = body_of(message)
    assert body["sid"].startswith("TZ") and len(body["sid"]) == 34
    assert body["data"] == {"hello": "world"}
    [event] = emu.events()
    assert event["type"] == "stream_message.published"
    assert event["stream_sid"] == sid and event["stream_unique_name"] == "alerts"
    assert event["message_sid"] == body["sid"]
    assert event["data"] == {"hello": "world"}

    assert emu.request("DELETE", f"{base}/{sid}").status == 204
    emu.fails("GET", f"{base}/alerts", status=404, code=54250)


# ---------------------------------------------------------------------------------------------
# TTLs and expiry


@pytest.mark.parametrize("ttl", [-1, MAX_TTL + 1])
def test_ttl_out_of_range(emu: Emulator, svc: str, ttl: int) -> None:
    base = f"/v1/Services/{svc}"
    emu.fails("POST", f"{base}/Documents", {"Ttl": ttl}, status=400, code=54011)
    emu.fails("POST", f"{base}/Maps", {"CollectionTtl": ttl}, status=400, code=54011)
    emu.fails("POST", f"{base}/Streams", {"Ttl": ttl}, status=400, code=54011)
    emu.post(f"{base}/Maps", {"UniqueName": "m"})
    for field in ("Ttl", "ItemTtl", "CollectionTtl"):
        emu.fails(
            "POST",
            f"{base}/Maps/m/Items",
            {"Key": "k", "Data": {}, field: ttl},
            status=400,
            code=54011,
        )


def test_max_ttl_is_accepted(emu: Emulator, svc: str) -> None:
    doc = body_of(emu.post(f"/v1/Services/{svc}/Documents", {"Ttl": MAX_TTL}))
    assert doc["date_expires"] == iso(EPOCH + MAX_TTL)


def test_document_expires_on_timer(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}/Documents"
    doc = body_of(emu.post(base, {"UniqueName": "d", "Data": {"x": 1}, "Ttl": 60}))
    assert doc["date_expires"] == iso(EPOCH + 60)
    emu.events()

    emu.scheduler.advance(59)
    assert emu.get(f"{base}/d")["sid"] == doc["sid"]
    assert emu.events() == []

    assert emu.scheduler.advance(1) == 1
    [event] = emu.events()
    assert event["type"] == "document.removed"
    assert event["reason"] == "expired"
    assert event["document_sid"] == doc["sid"]
    assert event["document_unique_name"] == "d"
    emu.fails("GET", f"{base}/d", status=404, code=54100)
    assert emu.get(base)["documents"] == []
    # The name is free again.
    assert emu.post(base, {"UniqueName": "d"}).status == 201


def test_expiry_is_checked_on_access_before_the_timer_fires(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}"
    emu.post(f"{base}/Maps", {"UniqueName": "m"})
    emu.post(f"{base}/Maps/m/Items", {"Key": "k", "Data": {}, "ItemTtl": 5})
    emu.post(f"{base}/Documents", {"UniqueName": "d", "Ttl": 5})
    emu.events()

    emu.clock.advance(5)  # time moves, timers have not run
    emu.fails("GET", f"{base}/Maps/m/Items/k", status=404, code=54201)
    emu.fails("POST", f"{base}/Documents/d", {"Data": {}}, status=404, code=54100)
    assert emu.get(f"{base}/Maps/m/Items")["items"] == []
    types = sorted(e["type"] for e in emu.events())
    assert types == ["document.removed", "map_item.removed"]

    # The timers find nothing left to remove and announce nothing twice.
    emu.scheduler.run_due()
    assert emu.events() == []


def test_expired_unique_name_and_key_can_be_reused(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}"
    emu.post(f"{base}/Maps", {"UniqueName": "m", "Ttl": 600})
    emu.post(f"{base}/Maps/m/Items", {"Key": "k", "Data": {}, "Ttl": 5})
    emu.clock.advance(5)
    assert emu.post(f"{base}/Maps/m/Items", {"Key": "k", "Data": {}}).status == 201
    emu.clock.advance(600)
    assert emu.post(f"{base}/Maps", {"UniqueName": "m"}).status == 201


def test_ttl_is_kept_by_updates_without_ttl(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}/Documents"
    emu.post(base, {"UniqueName": "d", "Ttl": 100})
    emu.clock.advance(50)
    assert body_of(emu.post(f"{base}/d", {"Data": {"v": 1}}))["date_expires"] == iso(EPOCH + 100)
    extended = body_of(emu.post(f"{base}/d", {"Ttl": 100}))
    assert extended["date_expires"] == iso(EPOCH + 150)
    assert extended["revision"] == "2"
    emu.scheduler.advance(60)  # past the first deadline: the old timer was replaced
    assert emu.get(f"{base}/d")["data"] == {"v": 1}
    cleared = body_of(emu.post(f"{base}/d", {"Ttl": 0}))
    assert cleared["date_expires"] is None
    emu.scheduler.advance(MAX_TTL)
    assert emu.get(f"{base}/d")["sid"] == cleared["sid"]


def test_item_ttl_wins_over_ttl_and_collection_ttl_sets_parent(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}"
    emu.post(f"{base}/Maps", {"UniqueName": "m"})
    item = body_of(
        emu.post(
            f"{base}/Maps/m/Items",
            {"Key": "k", "Data": {}, "Ttl": 10, "ItemTtl": 20, "CollectionTtl": 30},
        )
    )
    assert item["date_expires"] == iso(EPOCH + 20)
    assert emu.get(f"{base}/Maps/m")["date_expires"] == iso(EPOCH + 30)

    emu.clock.advance(10)
    updated = body_of(emu.post(f"{base}/Maps/m/Items/k", {"Data": {"v": 1}, "CollectionTtl": 100}))
    assert updated["date_expires"] == iso(EPOCH + 20)  # unchanged: no item TTL sent
    assert emu.get(f"{base}/Maps/m")["date_expires"] == iso(EPOCH + 110)


def test_collection_expiry_takes_the_items_with_it(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}"
    emu.post(f"{base}/Lists", {"UniqueName": "l"})
    emu.post(f"{base}/Lists/l/Items", {"Data": {}, "ItemTtl": 100, "CollectionTtl": 10})
    emu.events()
    emu.scheduler.advance(10)
    [event] = emu.events()
    assert (event["type"], event["reason"]) == ("list.removed", "expired")
    emu.fails("GET", f"{base}/Lists/l/Items/0", status=404, code=54150)
    emu.scheduler.advance(100)
    assert emu.events() == []


def test_list_item_expiry(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}/Lists"
    emu.post(base, {"UniqueName": "l"})
    emu.post(f"{base}/l/Items", {"Data": {"n": 0}, "Ttl": 3})
    emu.post(f"{base}/l/Items", {"Data": {"n": 1}})
    emu.events()
    emu.scheduler.advance(3)
    [event] = emu.events()
    assert (event["type"], event["index"], event["reason"]) == ("list_item.removed", 0, "expired")
    assert [i["index"] for i in emu.get(f"{base}/l/Items")["items"]] == [1]


def test_stream_expiry(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}/Streams"
    emu.post(base, {"UniqueName": "s", "Ttl": 1})
    emu.events()
    emu.scheduler.advance(1)
    assert [e["type"] for e in emu.events()] == ["stream.removed"]
    emu.fails("POST", f"{base}/s/Messages", {"Data": {}}, status=404, code=54250)


# ---------------------------------------------------------------------------------------------
# Rate limit


def test_write_rate_limit_per_object(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}"
    emu.post(f"{base}/Maps", {"UniqueName": "busy"})  # creating the map is write 1
    emu.post(f"{base}/Maps", {"UniqueName": "quiet"})
    items = f"{base}/Maps/busy/Items"
    emu.post(items, {"Key": "k", "Data": {"n": 0}})
    for n in range(197):
        emu.post(f"{items}/k", {"Data": {"n": n}})
    emu.request("DELETE", f"{items}/k")  # write 200: item writes all count against the map

    error = emu.fails("POST", items, {"Key": "j", "Data": {}}, status=429, code=54009)
    assert error.headers == {"Retry-After": "1"}
    emu.fails("POST", f"{base}/Maps/busy", {"Ttl": 5}, status=429, code=54009)
    emu.fails("DELETE", f"{base}/Maps/busy", status=429, code=54009)

    # Reads are not limited, and other objects have their own allowance.
    for _ in range(50):
        emu.get(f"{base}/Maps/busy")
    emu.post(f"{base}/Maps/quiet/Items", {"Key": "k", "Data": {}})

    # Advancing the emulator clock does not refill the bucket; real (monotonic) time does.
    emu.scheduler.advance(3600)
    emu.fails("POST", items, {"Key": "j", "Data": {}}, status=429, code=54009)
    emu.monotonic.value += 1.0
    for n in range(20):
        emu.post(items, {"Key": f"j{n}", "Data": {}})
    emu.fails("POST", items, {"Key": "x", "Data": {}}, status=429, code=54009)
    assert len(emu.get(items)["items"]) == 20


def test_refused_write_changes_nothing(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}/Documents"
    emu.post(base, {"UniqueName": "d"})
    for n in range(199):
        emu.post(f"{base}/d", {"Data": {"n": n}})
    emu.events()
    emu.fails("POST", f"{base}/d", {"Data": {"n": -1}}, status=429, code=54009)
    assert emu.events() == []
    doc = emu.get(f"{base}/d")
    assert doc["data"] == {"n": 198}
    assert doc["revision"] == "199"


def test_rate_limit_can_be_switched_off(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}/Documents"
    emu.post(base, {"UniqueName": "d"})
    emu.store.rate_limit = False
    for n in range(300):
        emu.post(f"{base}/d", {"Data": {"n": n}})
    emu.store.rate_limit = True
    for n in range(199):
        emu.post(f"{base}/d", {"Data": {"n": n}})
    emu.fails("POST", f"{base}/d", {"Data": {}}, status=429, code=54009)


def test_rate_limit_off_from_the_start() -> None:
    emu = Emulator(rate_limit=False)
    svc = emu.service()
    emu.post(f"/v1/Services/{svc}/Maps", {"UniqueName": "m"})
    for n in range(500):
        emu.post(f"/v1/Services/{svc}/Maps/m/Items", {"Key": f"k{n}", "Data": {}})
    assert emu.store.dump()["rate_limit"] is False


def test_stream_message_rate_limit(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}/Streams"
    emu.post(base, {"UniqueName": "s"})
    for _ in range(300):
        emu.post(f"{base}/s/Messages", {"Data": {}})
    error = emu.fails("POST", f"{base}/s/Messages", {"Data": {}}, status=429, code=54009)
    assert error.headers["Retry-After"] == "1"
    emu.monotonic.value += 0.5
    for _ in range(15):
        emu.post(f"{base}/s/Messages", {"Data": {}})
    emu.fails("POST", f"{base}/s/Messages", {"Data": {}}, status=429, code=54009)


# ---------------------------------------------------------------------------------------------
# Feed


def test_feed_messages_for_map_items(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}"
    emu.events()
    map_sid = body_of(emu.post(f"{base}/Maps", {"UniqueName": "m"}))["sid"]
    emu.post(f"{base}/Maps/m/Items", {"Key": "WR1", "Data": {"p": 1}, "ItemTtl": 60})
    emu.post(f"{base}/Maps/{map_sid}/Items/WR1", {"Data": {"p": 2}})
    emu.request("DELETE", f"{base}/Maps/m/Items/WR1")
    emu.request("DELETE", f"{base}/Maps/m")
    events = emu.events()
    assert [e["type"] for e in events] == [
        "map.created",
        "map_item.added",
        "map_item.updated",
        "map_item.removed",
        "map.removed",
    ]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    common = {"product": "sync", "service_sid": svc, "map_sid": map_sid, "map_unique_name": "m"}
    for event in events:
        assert common.items() <= event.items()
    added, updated, removed = events[1:4]
    assert added["key"] == "WR1"
    assert added["data"] == {"p": 1}
    assert added["date_expires"] == iso(EPOCH + 60)
    assert int(updated["revision"]) > int(added["revision"])
    assert updated["data"] == {"p": 2}
    assert updated["date_expires"] == iso(EPOCH + 60)
    assert removed["reason"] == "deleted"
    assert events[4]["reason"] == "deleted"
    json.dumps(events)  # what the WebSocket sends


def test_feed_messages_for_documents_lists_and_streams(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}"
    emu.events()
    doc_sid = body_of(emu.post(f"{base}/Documents", {"UniqueName": "d", "Data": {"a": 1}}))["sid"]
    emu.post(f"{base}/Documents/d", {"Data": {"a": 2}})
    emu.request("DELETE", f"{base}/Documents/d")
    emu.post(f"{base}/Lists", {"UniqueName": "l"})
    emu.post(f"{base}/Lists/l/Items", {"Data": {"n": 0}})
    emu.post(f"{base}/Lists/l/Items/0", {"Data": {"n": 1}})
    emu.request("DELETE", f"{base}/Lists/l/Items/0")
    emu.request("DELETE", f"{base}/Lists/l")
    emu.post(f"{base}/Streams", {"UniqueName": "s"})
    emu.request("DELETE", f"{base}/Streams/s")
    events = emu.events()
    assert [e["type"] for e in events] == [
        "document.created",
        "document.updated",
        "document.removed",
        "list.created",
        "list_item.added",
        "list_item.updated",
        "list_item.removed",
        "list.removed",
        "stream.created",
        "stream.removed",
    ]
    created, updated = events[0], events[1]
    assert created["document_sid"] == doc_sid
    assert (created["revision"], created["data"]) == ("0", {"a": 1})
    assert (updated["revision"], updated["data"]) == ("1", {"a": 2})
    assert events[5]["index"] == 0
    assert events[5]["list_unique_name"] == "l"
    assert events[5]["data"] == {"n": 1}


# ---------------------------------------------------------------------------------------------
# Admin dump


def test_dump_is_json(emu: Emulator, svc: str) -> None:
    base = f"/v1/Services/{svc}"
    emu.post(f"{base}/Maps", {"UniqueName": "m"})
    emu.post(f"{base}/Maps/m/Items", {"Key": "k", "Data": {"x": 1}, "ItemTtl": 9})
    emu.post(f"{base}/Lists", {"UniqueName": "l"})
    emu.post(f"{base}/Lists/l/Items", {"Data": {}})
    emu.post(f"{base}/Documents", {"UniqueName": "d"})
    emu.post(f"{base}/Streams")
    dump = json.loads(json.dumps(emu.store.dump()))
    assert dump["account_sid"] == ACCOUNT_SID
    assert dump["rate_limit"] is True
    [service] = dump["services"]
    assert service["sid"] == svc
    [sync_map] = service["maps"]
    assert sync_map["unique_name"] == "m"
    assert sync_map["items"] == [
        {
            "key": "k",
            "revision": "1",
            "data": {"x": 1},
            "date_created": iso(EPOCH),
            "date_updated": iso(EPOCH),
            "date_expires": iso(EPOCH + 9),
        }
    ]
    assert service["lists"][0]["items"][0]["index"] == 0
    assert service["documents"][0]["unique_name"] == "d"
    assert len(service["streams"]) == 1
