"""The usual approach, as Twilio's tutorials would write it: a Flask handler that does the
whole job inline with the synchronous ``twilio`` client, on a threaded WSGI server.

It is the bench's fair peer (docs/performance.md): it checks the signature, announces the
change on the same Sync item the bridge writes, accepts over REST, settles the item with
``If-Match``, and only then replies ``{}``. It has no journal, no retries and no pacing: the
``twilio`` package's default behaviour, which is what most deployments run.

Run it as ``python -m bench.baseline --port P`` with the bridge's environment variables
(``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``, ``FLEX_BRIDGE_WORKSPACE_SID``,
``FLEX_BRIDGE_SYNC_SERVICE_SID``, ``FLEX_BRIDGE_TWILIO_BASE_URL``, ``FLEX_BRIDGE_PUBLIC_URL``).
"""

from bench.baseline.app import BaselineConfig, LocalTwilioHttpClient, create_app

__all__ = ["BaselineConfig", "LocalTwilioHttpClient", "create_app"]
