"""Twilio webhook signature checks, against the URL Twilio called.

Behind a proxy the service sees another URL than Twilio signed, so ``FLEX_BRIDGE_PUBLIC_URL``
(when set) replaces scheme, host and port; the path and query are the request's own.
Form bodies are signed over their sorted parameters; JSON bodies carry ``bodySHA256`` in the
query and only the URL is signed; ``X-Twilio-Webhooks-Signature-Settings`` may switch the
algorithm to HMAC-SHA256. ``twilio.request_validator`` does the cryptography.
"""

from __future__ import annotations

import json

from quart import Request
from twilio.request_validator import RequestValidator, get_signature_algorithm
from werkzeug.datastructures import MultiDict


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


async def verify(
    request: Request, validator: RequestValidator, public_url: str | None
) -> MultiDict[str, str] | None:
    """The form parameters when the signature is valid, else None."""
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        return None
    algorithm = get_signature_algorithm(request.headers.get("X-Twilio-Webhooks-Signature-Settings"))
    url = signed_url(request, public_url)
    if "bodySHA256" in request.args:
        body = (await request.get_data(as_text=True)) or ""
        if not validator.validate(url, body, signature, algorithm):
            return None
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            return MultiDict()
        return MultiDict({k: v if isinstance(v, str) else json.dumps(v) for k, v in parsed.items()})
    form = await request.form
    if not validator.validate(url, form, signature, algorithm):
        return None
    return MultiDict(form)
