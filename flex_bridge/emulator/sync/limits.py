"""Sync's rate limits: token buckets per object and per service, on ``time.monotonic``.

Twilio documents (https://www.twilio.com/docs/sync/limits) 20 writes/s and 20 reads/s per
Document, Map or List, each with a 10-second burst window, and 30 messages/s per Stream; item
reads and writes count against their Map or List. Its error page for 54009
(https://www.twilio.com/docs/api/errors/54009) adds that new objects must be created at a
sustained rate below 20/s, with the same burst window, without saying over what scope: the
emulator counts the creations of Documents, Maps, Lists and Streams per service.

So every bucket refills at its rate and holds ``rate * BURST_SECONDS`` tokens (20/s: 200).
Reads, writes and creations have separate buckets. The buckets live on the records and run on
``monotonic`` time (injectable), not on the emulator clock, so advancing test time does not
refill them. A 429 itself changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from flex_bridge.emulator.api import ApiError
from flex_bridge.emulator.ratelimit import TokenBucket
from flex_bridge.emulator.sync.records import Service, Stream, SyncObject

WRITE_RATE = 20.0
READ_RATE = 20.0
CREATE_RATE = 20.0
STREAM_MESSAGE_RATE = 30.0
BURST_SECONDS = 10.0


class SyncLimits:
    """The limits, which apply while ``enabled()`` (a setting that changes at runtime)."""

    def __init__(self, enabled: Callable[[], bool], monotonic: Callable[[], float]) -> None:
        self.enabled = enabled
        self.monotonic = monotonic

    def charge(self, obj: SyncObject) -> None:
        """Count one write against the object's bucket; 429 when it is empty."""
        if self.enabled():
            what = f"too many writes to {obj.KIND.label} {obj.sid}"
            obj.bucket = self._take(obj.bucket, WRITE_RATE, what)

    def charge_read(self, obj: SyncObject) -> None:
        """Count one read (a fetch, an item fetch, a page of items) against the object."""
        if self.enabled():
            what = f"too many reads of {obj.KIND.label} {obj.sid}"
            obj.read_bucket = self._take(obj.read_bucket, READ_RATE, what)

    def charge_creation(self, service: Service) -> None:
        """Count one new Document, Map, List or Stream against its service."""
        if self.enabled():
            what = f"too many objects created in Service {service.sid}"
            service.creation_bucket = self._take(service.creation_bucket, CREATE_RATE, what)

    def charge_message(self, stream: Stream) -> None:
        """Count one message published on the stream; 429 when its bucket is empty."""
        if self.enabled():
            what = f"too many messages published on Stream {stream.sid}"
            stream.message_bucket = self._take(stream.message_bucket, STREAM_MESSAGE_RATE, what)

    def _take(self, bucket: TokenBucket | None, rate: float, what: str) -> TokenBucket:
        now = self.monotonic()
        if bucket is None:
            bucket = TokenBucket.full(rate, rate * BURST_SECONDS, now)
        wait = bucket.take(now)
        if wait > 0:
            raise ApiError(
                429,
                54009,
                f"Rate limit exceeded: {what}",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return bucket
