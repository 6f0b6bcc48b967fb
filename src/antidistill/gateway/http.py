"""HTTP edge helpers: JSON responses, the OpenAI error envelope, body reading with a size cap."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from antidistill.errors import (
    AntidistillError,
    ClientDisconnectedError,
    InvalidRequestError,
    RequestTooLargeError,
)

log = logging.getLogger("antidistill.gateway")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(err: AntidistillError, request_id: str | None = None) -> JSONResponse:
    headers = dict(err.headers)
    if request_id:
        headers["x-request-id"] = request_id
    if err.status == 403 or err.status == 401:
        headers.setdefault("x-should-retry", "false")
    return JSONResponse(err.envelope(), status_code=err.status, headers=headers)


async def read_json(request: Request, max_bytes: int) -> Any:
    """Read and parse the body, refusing more than ``max_bytes`` without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise RequestTooLargeError(f"request body is larger than the limit of {max_bytes} bytes")
        except ValueError:
            raise InvalidRequestError("invalid Content-Length header", code="invalid_body") from None
    buf = bytearray()
    try:
        async for piece in request.stream():
            buf += piece
            if len(buf) > max_bytes:
                raise RequestTooLargeError(f"request body is larger than the limit of {max_bytes} bytes")
    except ClientDisconnect:  # an expected event (a client timed out), not a server error
        raise ClientDisconnectedError("the client closed the connection before sending its body") from None
    if not buf:
        raise InvalidRequestError("request body is empty; send a JSON object", code="invalid_body")
    try:
        return orjson.loads(bytes(buf))
    except orjson.JSONDecodeError as e:
        raise InvalidRequestError(
            f"could not parse the JSON body of your request ({e.msg} at position {e.pos})",
            code="invalid_json",
        ) from None


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def bearer_token(request: Request) -> str | None:
    raw = request.headers.get("authorization")
    if raw is None:
        return None
    scheme, _, token = raw.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
