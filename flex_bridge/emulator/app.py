"""The emulator's HTTP surface: Twilio's REST paths, the IAM endpoint, the admin API, the feed.

Addresses follow ``http://host:port/<product>/v1/...`` with product ``taskrouter``, ``sync``
or ``iam``; the admin API lives under ``/_emulator/`` (docs/emulator.md describes it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

from quart import Quart, Response, has_request_context, request, websocket
from werkzeug.exceptions import HTTPException

from flex_bridge.emulator.api import ApiError, Call, parse_fields
from flex_bridge.emulator.core import Emulator
from flex_bridge.emulator.faults import Decision, FaultSpecError, parse_rule
from flex_bridge.emulator.log import mask

logger = logging.getLogger("flex_bridge.emulator")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DROP_KEY = "flex_bridge.drop"
FAULT_CODES = {429: 20429, 500: 20500, 503: 20503, 504: 20504}
HTTP_ERROR_CODES = {400: 20001, 401: 20003, 404: 20404, 405: 20004, 500: 20500, 503: 20503}
# The clock moves by at most a century per call: far beyond any timer the emulator sets, and
# far from the end of the representable date range (year 9999), where every date breaks.
MAX_ADVANCE = 100 * 366 * 86_400
FAULT_MESSAGES = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout: the request was applied but its response was lost",
}


class ResponseLost(Exception):
    """Raised to make the server drop a connection whose request was already applied."""


class _QuietLostResponses(logging.Filter):
    """Injected dropped responses are expected; don't report them as server errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ResponseLost))


logging.getLogger("hypercorn.error").addFilter(_QuietLostResponses())


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    if body is None:
        return Response("", status=status, headers=headers or {})
    return Response(
        json.dumps(body, separators=(",", ":")),
        status=status,
        headers=headers or {},
        content_type="application/json",
    )


def error_response(exc: ApiError) -> Response:
    return json_response(exc.body(), exc.status, exc.headers)


class NotJson(ValueError):
    """A body that is not strict JSON; the message says why."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotJson(f"the number {text} is out of range")
    return value


def _no_constant(name: str) -> Any:
    # Python's json module accepts NaN, Infinity and -Infinity; JSON does not.
    raise NotJson(f"{name} is not a JSON value")


def strict_json(raw: str | bytes) -> Any:
    """Parse a request body as strict JSON: finite numbers only. Raises ``NotJson``."""
    try:
        return json.loads(raw, parse_float=_finite_float, parse_constant=_no_constant)
    except NotJson:
        raise
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise NotJson(str(exc)) from None


def with_dropped_responses(app: Any) -> ASGIApp:
    """Let a handler lose its own response after the change was applied.

    The handler sets ``scope[DROP_KEY]``; the response it produced is then replaced by a
    status line promising a body that never comes, and the connection is closed. The client
    sees a dropped connection after its request was committed: the ambiguous case.
    """

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        flag: dict[str, bool] = {}
        scope[DROP_KEY] = flag

        async def guarded(message: Message) -> None:
            if not flag.get("drop"):
                await send(message)

        await app(scope, receive, guarded)
        if flag.get("drop"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"1024"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b"{", "more_body": True})
            raise ResponseLost("response dropped after commit (fault injection)")

    return asgi


def create_emulator_app(emu: Emulator) -> Quart:
    app = Quart("flex_bridge.emulator")
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024

    @app.before_serving
    async def startup() -> None:
        await emu.start()

    @app.after_serving
    async def shutdown() -> None:
        await emu.close()

    def authenticated() -> bool:
        auth = request.authorization
        if auth is None or auth.type != "basic":
            return False
        return emu.credentials_ok(auth.username or "", auth.password or "")

    def unauthenticated() -> Response:
        return error_response(
            ApiError(
                401,
                20003,
                "Authentication Error - invalid username or password",
                {"WWW-Authenticate": 'Basic realm="Twilio API"'},
            )
        )

    async def inject(
        product: str, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[Decision, Response | None]:
        decision = emu.faults.decide(product, method, path)
        if decision.latency:
            await asyncio.sleep(decision.latency)
        if decision.error_status is None:
            return decision, None
        status = decision.error_status
        headers: dict[str, str] = {}
        if decision.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(decision.retry_after + 0.499)))
        err = ApiError(status, FAULT_CODES[status], FAULT_MESSAGES[status], headers)
        emu.log.append(
            "rest",
            product=product,
            method=method,
            path=path,
            status=status,
            code=FAULT_CODES[status],
            form=mask(form or {}),
            if_match=request.headers.get("If-Match"),
            fault=f"error_{status}",
            applied=False,
        )
        return decision, error_response(err)

    def lose(decision: Decision) -> Response | None:
        if decision.lose_mode is not None:
            emu.faults.count(f"lose_{decision.lose_mode}")
        if decision.lose_mode == "504":
            return error_response(ApiError(504, 20504, FAULT_MESSAGES[504]))
        if decision.lose_mode == "drop":
            cast(dict[str, Any], request.scope)[DROP_KEY]["drop"] = True
        return None

    @app.route("/<product>/v1/<path:rest>", methods=["GET", "POST", "DELETE"])
    async def rest_api(product: str, rest: str) -> Response:
        router = emu.routers.get(product)
        if router is None:
            return error_response(ApiError(404, 20404, f"Unknown product {product!r}"))
        if not authenticated():
            return unauthenticated()
        method = request.method
        path = "/v1/" + rest
        form_items: list[tuple[str, str]] = []
        if method == "POST":
            form_items = list((await request.form).items(multi=True))
        decision, injected = await inject(product, method, path, dict(form_items))
        if injected is not None:
            return injected
        entry: dict[str, Any] = {"product": product, "method": method, "path": path}
        try:
            op, params, handler = router.resolve(method, path)
            form = parse_fields(op.form_fields, form_items, where="form", required=op.required)
            query = parse_fields(
                op.query_params, list(request.args.items(multi=True)), where="query"
            )
            headers = {k.lower(): v for k, v in request.headers.items()}
            call = Call(op, params, form, query, headers, emu.clock.now(), path)
            entry["template"] = op.template
            entry["form"] = mask(form)
            entry["if_match"] = call.if_match()
            reply = handler(call)
        except ApiError as exc:
            emu.log.append("rest", **entry, status=exc.status, code=exc.code, applied=False)
            return error_response(exc)
        emu.log.append(
            "rest",
            **entry,
            status=reply.status,
            applied=True,
            fault=f"lose_{decision.lose_mode}" if decision.lose_mode else None,
        )
        lost = lose(decision)
        if lost is not None:
            return lost
        return json_response(reply.body, reply.status, reply.headers)

    @app.route("/iam/v1/Accounts/<account_sid>/Tokens/validate", methods=["POST"])
    async def validate_token(account_sid: str) -> Response:
        if not authenticated():
            return unauthenticated()
        path = f"/v1/Accounts/{account_sid}/Tokens/validate"
        decision, injected = await inject("iam", "POST", path)
        if injected is not None:
            return injected
        if account_sid != emu.config.account_sid:
            return error_response(ApiError(404, 20404, f"Account {account_sid} was not found"))
        try:
            body = strict_json(await request.get_data(as_text=False))
        except NotJson:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("token"), str):
            return error_response(
                ApiError(400, 20001, 'The body must be a JSON object {"token": "..."}')
            )
        answer = emu.tokens.validate(body["token"])
        emu.log.append(
            "rest",
            product="iam",
            method="POST",
            path=path,
            status=200,
            applied=True,
            valid=answer["valid"],
        )
        lost = lose(decision)
        if lost is not None:
            return lost
        return json_response(answer)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        # Unknown paths, wrong methods, oversized bodies and unexpected failures (which Quart
        # has already logged) answer in Twilio's error shape too, not with an HTML page. This
        # runs for WebSocket handshakes as well, where there is no ``request``.
        status = exc.code or 500
        code = HTTP_ERROR_CODES.get(status, 20500 if status >= 500 else 20001)
        message = exc.description or exc.name
        if status == 404:
            path = request.path if has_request_context() else websocket.path
            message = f"The requested resource {path} was not found"
        return error_response(ApiError(status, code, message))

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        return error_response(exc)

    # -------------------------------------------------------------------------- admin API
    def bad_request(message: str) -> Response:
        return error_response(ApiError(400, 20001, message))

    async def json_body() -> Any:
        """The request's JSON body; a body that is not strict JSON is answered with 400."""
        raw = await request.get_data(as_text=False)
        try:
            return strict_json(raw)
        except NotJson as exc:
            raise ApiError(400, 20001, f"The body is not valid JSON: {exc}") from None

    @app.get("/_emulator/health")
    async def health() -> Response:
        return json_response({"ok": True, "account_sid": emu.config.account_sid})

    @app.get("/_emulator/state")
    async def state() -> Response:
        return json_response(emu.dump())

    @app.get("/_emulator/clock")
    async def clock() -> Response:
        return json_response({"now": emu.clock.now(), "offset": emu.clock.offset})

    @app.post("/_emulator/clock/advance")
    async def advance() -> Response:
        body = await json_body()
        seconds = body.get("seconds") if isinstance(body, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            return bad_request('The body must be {"seconds": <a non-negative number>}')
        if seconds > MAX_ADVANCE:
            return bad_request(f"seconds must be at most {MAX_ADVANCE} (a century) per call")
        fired = emu.scheduler.advance(float(seconds))
        return json_response({"now": emu.clock.now(), "offset": emu.clock.offset, "fired": fired})

    @app.get("/_emulator/faults")
    async def get_faults() -> Response:
        return json_response(emu.faults.describe())

    @app.post("/_emulator/faults")
    async def set_faults() -> Response:
        body = await json_body()
        if not isinstance(body, dict) or not isinstance(body.get("rules"), list):
            return bad_request('The body must be {"rules": [...], "seed": <int, optional>}')
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            return bad_request("seed must be an integer")
        try:
            rules = [parse_rule(raw) for raw in body["rules"]]
        except FaultSpecError as exc:
            return bad_request(str(exc))
        emu.faults.configure(rules, seed)
        return json_response(emu.faults.describe())

    @app.delete("/_emulator/faults")
    async def clear_faults() -> Response:
        emu.faults.clear()
        return json_response(emu.faults.describe())

    @app.get("/_emulator/log")
    async def get_log() -> Response:
        try:
            since = int(request.args.get("since", "0"))
        except ValueError:
            return bad_request("since must be an integer sequence number")
        kind = request.args.get("kind")
        return json_response({"entries": emu.log.entries(since, kind)})

    @app.delete("/_emulator/log")
    async def clear_log() -> Response:
        emu.log.clear()
        return json_response(None, 204)

    @app.post("/_emulator/tokens")
    async def issue_token() -> Response:
        body = await json_body()
        if not isinstance(body, dict):
            return bad_request("The body must be a JSON object")
        roles = body.get("roles", ["agent"])
        worker_sid = body.get("worker_sid")
        identity = body.get("identity") or worker_sid or "flex-user"
        ttl = body.get("ttl", 3600)
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            return bad_request("roles must be a list of strings")
        if worker_sid is not None and not isinstance(worker_sid, str):
            return bad_request("worker_sid must be a string")
        if isinstance(ttl, bool) or not isinstance(ttl, int | float):
            return bad_request("ttl must be a number of seconds")
        try:
            issued = emu.tokens.issue(
                identity=str(identity), worker_sid=worker_sid, roles=roles, ttl=float(ttl)
            )
        except ValueError as exc:
            return bad_request(str(exc))
        return json_response(issued.describe(), 201)

    @app.get("/_emulator/settings")
    async def get_settings() -> Response:
        return json_response(settings_view())

    def settings_view() -> dict[str, Any]:
        return {
            "sync_rate_limit": emu.sync.rate_limit,
            "assignment_timeout": emu.taskrouter.assignment_timeout,
        }

    @app.post("/_emulator/settings")
    async def set_settings() -> Response:
        body = await json_body()
        if not isinstance(body, dict):
            return bad_request("The body must be a JSON object")
        unknown = set(body) - {"sync_rate_limit", "assignment_timeout"}
        if unknown:
            return bad_request(f"unknown setting(s): {', '.join(sorted(unknown))}")
        if "sync_rate_limit" in body and not isinstance(body["sync_rate_limit"], bool):
            return bad_request("sync_rate_limit must be true or false")
        if "assignment_timeout" in body:
            value = body["assignment_timeout"]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                return bad_request("assignment_timeout must be a positive number of seconds")
        if "sync_rate_limit" in body:
            emu.sync.rate_limit = body["sync_rate_limit"]
        if "assignment_timeout" in body:
            emu.taskrouter.assignment_timeout = float(body["assignment_timeout"])
        return json_response(settings_view())

    @app.websocket("/_emulator/ws")
    async def feed() -> None:
        queue = emu.feed.subscribe()
        try:
            await websocket.accept()
            await websocket.send(json.dumps({"type": "hello", "product": "emulator"}))
            while True:
                message = await queue.get()
                if message is None:
                    await websocket.close(1008, "subscriber fell behind")
                    return
                await websocket.send(json.dumps(message))
        finally:
            emu.feed.unsubscribe(queue)

    app.asgi_app = with_dropped_responses(app.asgi_app)  # type: ignore[method-assign, assignment]
    return app
