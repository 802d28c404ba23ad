"""Twilio webhook signature checks, against the URL Twilio called.

Behind a proxy the service sees another URL than Twilio signed, so ``FLEX_BRIDGE_PUBLIC_URL``
(when set) replaces scheme, host and port; the path and query are the request's own.
Form bodies are signed over their sorted parameters; JSON bodies carry ``bodySHA256`` in the
query and only the URL is signed. ``twilio.request_validator`` does the cryptography.

Which secret: without ``X-Twilio-Webhooks-Signature-Settings`` Twilio signed with the auth
token (HMAC-SHA1). With it, a Webhook Rule matched the URL and Twilio signed with that
Setting's shared key (``FLEX_BRIDGE_WEBHOOK_SECRET``; several, comma-separated, while a key is
rotated) and the header's algorithm (HMAC-SHA256): only those secrets are tried then, never
the auth token. (Twilio docs: "Sign webhooks with shared keys".)

A request that cannot be checked is not valid: an empty or malformed ``bodySHA256``, a JSON
body that is not UTF-8, anything the validator chokes on. ``verify`` answers None for each
(a 403 at the webhook), never an exception. A JSON body that is signed but nested deeper than
attributes may be (``MAX_DEPTH``) is ``TooDeep``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from quart import Request
from twilio.request_validator import RequestValidator, get_signature_algorithm
from werkzeug.datastructures import MultiDict

from flex_bridge.domain.attributes import MAX_DEPTH, read_attributes

BODY_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def signed_url(request: Request, public_url: str | None) -> str:
    """The URL as Twilio signed it: the query exactly as it arrived. (``request.url`` is an
    IRI: werkzeug decodes percent-escapes such as ``%C3%A9`` or ``%2F`` in it, and a callback
    URL configured with them would fail every check.)"""
    query = request.query_string.decode("latin-1")
    if public_url:
        base = public_url.rstrip("/")
    else:
        base = f"{request.scheme}://{request.host}{request.root_path}"
    return base + request.path + (f"?{query}" if query else "")


SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"


@dataclass(frozen=True, slots=True)
class Signers:
    """The secrets a webhook may be signed with: the auth token, and any shared keys."""

    auth_token: RequestValidator
    shared_keys: tuple[RequestValidator, ...] = ()

    @classmethod
    def of(cls, auth_token: str, shared_secrets: tuple[str, ...]) -> Signers:
        return cls(RequestValidator(auth_token), tuple(map(RequestValidator, shared_secrets)))

    def for_request(self, settings: str | None) -> tuple[RequestValidator, ...]:
        return self.shared_keys if settings else (self.auth_token,)


async def verify(
    request: Request, signers: Signers, public_url: str | None
) -> MultiDict[str, str] | None:
    """The form parameters when the signature is valid, else None."""
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        return None
    settings = request.headers.get(SETTINGS_HEADER)
    algorithm = get_signature_algorithm(settings)
    validators = signers.for_request(settings)

    def valid(signed: Any) -> bool:
        try:
            return any(v.validate(url, signed, signature, algorithm) for v in validators)
        except (ValueError, TypeError, KeyError, IndexError):  # what it cannot parse is invalid
            return False

    url = signed_url(request, public_url)
    if "bodySHA256" in request.args:
        digests = request.args.getlist("bodySHA256")
        if len(digests) != 1 or not BODY_SHA256.fullmatch(digests[0]):
            return None  # empty, repeated or not a SHA-256 in hex: nothing to check against
        raw = await request.get_data(as_text=False)
        try:
            body = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            return None  # Twilio signs UTF-8 JSON; these bytes are not what it sent
        if not valid(body):
            return None
        # The body itself plus the attributes inside it: one level more than attributes.
        parsed = read_attributes(body, "the body", MAX_DEPTH + 1)
        return MultiDict({k: v if isinstance(v, str) else json.dumps(v) for k, v in parsed.items()})
    form = await request.form
    if not valid(form):
        return None
    return MultiDict(form)
