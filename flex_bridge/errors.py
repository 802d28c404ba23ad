"""The one exception hierarchy of flex-bridge.

Third-party errors (twilio, aiohttp) are translated into these at the adapter boundary;
nothing above the adapters catches a library's exception type.

::

    FlexBridgeError
    ├── ConfigError                 a missing or invalid setting (start-up stops)
    │   └── PolicyError             the policy file is invalid (also a ValueError)
    ├── ValidationError             bad input from a caller (HTTP 400)
    ├── AuthenticationError         no or invalid Flex token / webhook signature (401)
    ├── ForbiddenError              valid token, not allowed: another agent's reservation (403)
    ├── UnknownIntentError          an intent id the journal does not hold (404)
    ├── BusyError                   another op's intent holds the reservation (409)
    ├── JournalError                the journal could not be read or written (adapters.journal)
    └── UpstreamError               Twilio (or the emulator) answered badly or not at all
        ├── TransientUpstreamError  429, 5xx, refused/reset connection: safe to retry
        │   ├── RateLimitedError    429, carries retry_after
        │   └── NotSentError        never sent: its deadline would pass before its turn
        ├── AmbiguousOutcomeError   sent, but the outcome is unknown (timeout, dropped reply)
        └── RejectedError           4xx: Twilio refused; carries Twilio's code
            ├── NotFoundError       404 / 20404
            ├── AlreadyExistsError  409: created already (a Sync map or item)
            ├── ConflictError       the state does not allow it (protocol.CONFLICT_CODES)
            └── PreconditionFailed  412 (If-Match mismatch: 20412, 54103, 54205, 54155)
"""

from __future__ import annotations


class FlexBridgeError(Exception):
    """Base of every error flex-bridge raises on purpose."""


class ConfigError(FlexBridgeError):
    """A setting is missing or invalid. The message names it."""


class PolicyError(ConfigError, ValueError):
    """The policy file is invalid; the message names the key."""


class ValidationError(FlexBridgeError):
    """A caller's input is invalid. The message says where."""


class UpstreamError(FlexBridgeError):
    """An upstream call failed.

    ``status`` is the HTTP status (None when no response arrived), ``code`` Twilio's error
    code when it gave one.
    """

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class TransientUpstreamError(UpstreamError):
    """A failure that did not change anything upstream, or may be retried safely."""


class RateLimitedError(TransientUpstreamError):
    """HTTP 429. ``retry_after`` is the server's hint in seconds, if it gave one."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 429,
        code: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class NotSentError(TransientUpstreamError):
    """The request was never sent: pacing would have held it past its deadline."""


class AmbiguousOutcomeError(UpstreamError):
    """The request may or may not have been applied. Resolve by fetching, never by resending."""


class RejectedError(UpstreamError):
    """Twilio refused the request (a 4xx other than 429)."""


class NotFoundError(RejectedError):
    """The resource does not exist."""


class AlreadyExistsError(RejectedError):
    """HTTP 409: what was to be created exists already."""


class ConflictError(RejectedError):
    """The resource's state does not allow the change."""


class PreconditionFailed(RejectedError):
    """The If-Match revision or ETag did not match."""


class AuthenticationError(FlexBridgeError):
    """No credentials, or credentials that are not valid (HTTP 401)."""


class ForbiddenError(FlexBridgeError):
    """Valid credentials that do not allow this action (HTTP 403)."""


class UnknownIntentError(FlexBridgeError):
    """No intent with that id is in the journal."""


class BusyError(FlexBridgeError):
    """An intent for another op holds the reservation (rule 2: one intent in flight)."""


class JournalError(FlexBridgeError):
    """The journal could not be read or written."""
