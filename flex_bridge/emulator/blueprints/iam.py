"""Flex token validation, as ``POST iam.twilio.com/v1/Accounts/{AC}/Tokens/validate`` answers.

Fault rules for product ``iam`` may answer 400, 401 or 403 (a refused request) as well as
429, 500 or 503, before the token is looked at (:mod:`flex_bridge.emulator.faults`).
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from flex_bridge.emulator.api import ApiError
from flex_bridge.emulator.blueprints.guard import authenticated, inject, lose, unauthenticated
from flex_bridge.emulator.blueprints.responses import (
    NotJson,
    error_response,
    json_response,
    strict_json,
)
from flex_bridge.emulator.core import Emulator


def iam_blueprint(emu: Emulator) -> Blueprint:
    blueprint = Blueprint("iam", __name__, url_prefix="/iam")

    @blueprint.post("/v1/Accounts/<account_sid>/Tokens/validate")
    async def validate_token(account_sid: str) -> Response:
        if not authenticated(emu):
            return unauthenticated()
        path = f"/v1/Accounts/{account_sid}/Tokens/validate"
        decision, injected = await inject(emu, "iam", "POST", path)
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
            token_code=answer["code"],
        )
        lost = lose(emu, decision)
        if lost is not None:
            return lost
        return json_response(answer)

    return blueprint
