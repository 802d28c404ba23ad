"""The emulated Twilio Sync v1 API: services, documents, maps, lists and streams.

- ``records``: the in-memory objects. Maps and Lists are one generic :class:`Collection`.
- ``rules``: checks of what a request sends (data, TTLs, unique names, ``If-Match``).
- ``limits``: the read, write and creation rate limits.
- ``store``: :class:`SyncStore`, every operation, plain synchronous code over the records.
  Each takes the emulator clock time ``now`` of its request, raises
  :class:`~flex_bridge.emulator.api.ApiError` with Twilio's status and code when it refuses,
  and publishes one message on the live feed per change (see ``SyncStore`` for its shape).
- ``routes``: the REST handlers, request in, Twilio-shaped JSON out.

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
- At most 20 writes/s and 20 reads/s per Document, Map, List or Stream, each with a 10-second
  burst allowance (token bucket: refill 20/s, capacity 200). Item reads and writes count
  against their Map or List; a fetch, an item fetch and a page of items are one read each.
  Stream messages have their own bucket of 30/s (capacity 300). New Documents, Maps, Lists and
  Streams are limited to 20/s per service (burst 200; Twilio gives the rate, not its scope).
  The buckets run on ``time.monotonic`` (injectable), not on the emulator clock, so advancing
  test time does not refill them. ``SyncStore.rate_limit`` switches every limit off and on at
  runtime. Every request that reaches an existing object takes a token, even one then refused
  with a 400 or a 412, and every create request that reaches its service takes a creation
  token, even one then refused with a 409; a 429 itself changes nothing.

Error codes, from Twilio's error dictionary (https://www.twilio.com/docs/api/errors/<code>):

=====  ======  ===========================================================================
code   status  when
=====  ======  ===========================================================================
54006  413     Data larger than 16 KiB (stream messages: 4 KiB) of serialised JSON. The
               dictionary documents 54006 for documents and items; the emulator uses it for
               stream messages too, and picks 413 as the HTTP status (the code's title is
               "Request entity too large").
54008  400     Data is not valid JSON.
54009  429     Read, write or creation rate exceeded; the answer carries ``Retry-After``
               (whole seconds, >= 1).
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

from flex_bridge.emulator.sync.routes import register_sync_routes
from flex_bridge.emulator.sync.rules import MAX_TTL
from flex_bridge.emulator.sync.store import SyncStore

__all__ = ["MAX_TTL", "SyncStore", "register_sync_routes"]
