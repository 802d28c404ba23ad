"""Sync's write rate limits: a token bucket per object, on ``time.monotonic``.

At most 20 writes/s per Document, Map, List or Stream, with a 10-second burst allowance
(refill 20/s, capacity 200); item writes count against their Map or List. Stream messages
have their own bucket of 30/s (capacity 300). The buckets live on the records and run on
``monotonic`` time (injectable), not on the emulator clock, so advancing test time does not
refill them. A 429 itself changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from flex_bridge.emulator.api import ApiError
from flex_bridge.emulator.ratelimit import TokenBucket
from flex_bridge.emulator.sync.records import Stream, SyncObject

WRITE_RATE = 20.0
STREAM_MESSAGE_RATE = 30.0
BURST_SECONDS = 10.0


class WriteLimits:
    """The limits, which apply while ``enabled()`` (a setting that changes at runtime)."""

    def __init__(self, enabled: Callable[[], bool], monotonic: Callable[[], float]) -> None:
        self.enabled = enabled
        self.monotonic = monotonic

    def charge(self, obj: SyncObject) -> None:
        """Count one write against the object's bucket; 429 when it is empty."""
        if self.enabled():
            obj.bucket = self._take(obj.bucket, WRITE_RATE, f"{obj.KIND.label} {obj.sid}")

    def charge_message(self, stream: Stream) -> None:
        """Count one message published on the stream; 429 when its bucket is empty."""
        if self.enabled():
            what = f"Stream {stream.sid}"
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
                f"Rate limit exceeded: too many writes to {what}",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return bucket
