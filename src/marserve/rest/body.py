"""Reading a request body within ``max_request_size``, refusing pickles and odd encodings."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from marserve.errors import ClientClosed, InvalidInput, PayloadTooLarge, UnsupportedMediaType

_PICKLE_TYPES = ("application/x-python-pickle", "application/python-pickle", "application/pickle")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body exceeds max_request_size ({limit} bytes)")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed ``limit`` (before reading it)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() in _PICKLE_TYPES:
        raise UnsupportedMediaType(f"Unsupported content type: {content_type[:100]}")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(f"Unsupported content encoding: {encoding[:50]}")
    declared = request.headers.get("content-length")
    try:
        if declared is not None:
            if not declared.isdigit():
                raise InvalidInput("Invalid Content-Length header")
            if int(declared) > limit:
                raise _too_large(limit)
            return await request.body()
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientClosed("The client disconnected before the end of the request body") from None
    return b"".join(chunks)
