"""A codec server: lets the Temporal UI and CLI show encrypted payloads, for holders of a token.

It speaks Temporal's codec protocol: ``POST /encode`` and ``POST /decode`` with a JSON body
``{"payloads": [...]}`` (protobuf JSON of ``temporal.api.common.v1.Payload``), answering the same shape.
Every request must carry ``Authorization: Bearer <token>``: whoever can call ``/decode`` can read
every prompt and answer. CORS lets the UI (a browser page on another origin) call it; preflight
``OPTIONS`` requests carry no credentials by the browser's rules, so they answer without the token
but only for the allowed origins.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from durapipe.security._codec import EncryptionError

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"


def codec_app(
    codec: PayloadCodec, *, token: str, cors_origins: Sequence[str] = ()
) -> web.Application:
    """The aiohttp application of a codec server.

    Args:
        codec: the codec whose encode/decode the server exposes.
        token: the bearer token every ``/encode`` and ``/decode`` request must carry.
        cors_origins: browser origins allowed to call the server (e.g. the UI's
            ``http://localhost:8080``).

    Raises:
        ValueError: the token is empty.
    """
    if not token:
        raise ValueError("a codec server needs a bearer token")
    origins = frozenset(o.rstrip("/") for o in cors_origins)

    @web.middleware
    async def cors_and_auth(request: web.Request, handler: _Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin", "")
        if request.method == "OPTIONS":
            response: web.StreamResponse = web.Response(status=204 if origin in origins else 403)
        elif not _authorized(request, token):
            response = web.json_response({"error": "missing or wrong bearer token"}, status=401)
        else:
            response = await handler(request)
        if origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Vary"] = "Origin"
        return response

    async def encode(request: web.Request) -> web.StreamResponse:
        return await _apply(request, codec.encode)

    async def decode(request: web.Request) -> web.StreamResponse:
        return await _apply(request, codec.decode)

    app = web.Application(middlewares=[cors_and_auth])
    app.router.add_post("/encode", encode)
    app.router.add_post("/decode", decode)
    return app


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest: the time taken must not tell how much of a guessed token was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


async def _apply(
    request: web.Request, transform: Callable[[Sequence[Payload]], Awaitable[list[Payload]]]
) -> web.StreamResponse:
    try:
        payloads = json_format.Parse(await request.text(), Payloads())
    except (json_format.ParseError, json.JSONDecodeError, UnicodeDecodeError) as err:
        return web.json_response({"error": f"body is not a Payloads JSON: {err}"}, status=400)
    try:
        result = await transform(list(payloads.payloads))
    except EncryptionError as err:
        return web.json_response({"error": str(err)}, status=422)
    return web.Response(
        text=json_format.MessageToJson(Payloads(payloads=result)), content_type="application/json"
    )
