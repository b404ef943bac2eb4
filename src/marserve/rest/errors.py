"""The one place where exceptions become HTTP error responses (KServe or TorchServe bodies)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from marserve.errors import ClientClosed, MarserveError
from marserve.protocol.torchserve import encode_ts_error
from marserve.protocol.v2_json import encode_error
from marserve.status import code_for_http, status_of

log = logging.getLogger("marserve.rest")

_KSERVE_PREFIXES = ("/v1/", "/v2")
# Where the error behind a response is left in the ASGI scope, for the metrics observer.
ERROR_KEY = "marserve.error"
REQUEST_ID_KEY = "marserve.request_id"  # one id per HTTP request: access log and handler

_HTTP_MESSAGES = {
    404: "Requested resource is not found, please refer to API document.",
    405: "Requested method is not allowed, please refer to API document.",
}


def error_response(
    path: str, status: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    """KServe paths answer ``{"error"}``; TorchServe paths ``{"code", "type", "message"}``."""
    if path.startswith(_KSERVE_PREFIXES):
        body = encode_error(message)
    else:
        body = encode_ts_error(status, status_of(code_for_http(status)).ts_type, message)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def on_marserve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MarserveError)
    request.scope[ERROR_KEY] = exc
    return error_response(request.url.path, exc.http_status, exc.message, exc.headers)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = _HTTP_MESSAGES.get(exc.status_code, str(exc.detail))
    return error_response(request.url.path, exc.status_code, message, dict(exc.headers or {}))


async def on_client_disconnect(request: Request, exc: Exception) -> Response:
    """A body read the client abandoned (any endpoint): 499, no traceback, never a 5xx."""
    return await on_marserve_error(request, ClientClosed("The client disconnected"))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(request.url.path, 500, "Internal server error")


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]

EXCEPTION_HANDLERS: dict[type[Exception], ExceptionHandler] = {
    MarserveError: on_marserve_error,
    HTTPException: on_http_exception,
    ClientDisconnect: on_client_disconnect,
    Exception: on_unexpected,
}
