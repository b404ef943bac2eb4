"""HTTP/2 requests for REST services, relayed to the replica's HTTP/1.1 port (as Istio does)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from marserve.controlplane.errors import Rejected
from marserve.controlplane.gateway import http1
from marserve.controlplane.gateway.http1 import CHUNK, HOP_BY_HOP, Head
from marserve.controlplane.gateway.pool import Upstream
from marserve.controlplane.gateway.timeouts import within
from marserve.controlplane.routing import Endpoint

if TYPE_CHECKING:
    from marserve.controlplane.gateway.h2c import Pipe

_SKIP = HOP_BY_HOP | {b"host", b"expect"}


def request_head(fields: list[tuple[bytes, bytes]], peer: str, drop: frozenset[bytes]) -> bytes:
    """The HTTP/1.1 request for an h2 request's headers (pseudo-headers become the start line)."""
    pseudo = {k: v for k, v in fields if k.startswith(b":")}
    authority = pseudo.get(b":authority") or dict(fields).get(b"host", b"")
    method, path = pseudo.get(b":method", b"GET"), pseudo.get(b":path", b"/")
    lines = [method + b" " + path + b" HTTP/1.1\r\n", b"Host: " + authority + b"\r\n"]
    prior = []
    for key, value in fields:
        if key.startswith(b":") or key in _SKIP or key in drop:
            continue
        if key == b"x-forwarded-for":
            prior.append(value)
            continue
        lines.append(key + b": " + value + b"\r\n")
    lines.append(b"x-forwarded-for: " + b", ".join([*prior, peer.encode()]) + b"\r\n")
    lines.append(b"x-forwarded-proto: http\r\n")
    if not any(k == b"content-length" for k, _ in fields):
        lines.append(b"Transfer-Encoding: chunked\r\n")
    return b"".join((*lines, b"\r\n"))


async def read_chunks(up: Upstream, timeout_s: float) -> AsyncIterator[bytes]:
    """The data of a chunked HTTP/1.1 body, unframed (HTTP/2 frames it again)."""
    while True:
        line = await within(up.reader.readuntil(b"\r\n"), timeout_s)
        try:
            size = int(line[:-2].split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise Rejected(502, "replica sent a malformed chunk") from None
        if size == 0:
            while await within(up.reader.readuntil(b"\r\n"), timeout_s) != b"\r\n":
                pass
            return
        yield await within(up.reader.readexactly(size), timeout_s)
        await within(up.reader.readexactly(2), timeout_s)


async def _upload(pipe: Pipe, up: Upstream, chunked: bool) -> None:
    while True:
        kind, value, length = await pipe.up.get()
        if kind == "data":
            assert isinstance(value, bytes)
            if value:
                up.writer.write(b"%x\r\n%s\r\n" % (len(value), value) if chunked else value)
                await up.writer.drain()
            pipe.client.ack(pipe.stream_id, length)
        elif kind == "end":
            if chunked:
                up.writer.write(b"0\r\n\r\n")
            return
        else:
            raise Rejected(499, "client reset the stream")


async def _download(
    pipe: Pipe, up: Upstream, response: Head, method: bytes, timeout: float
) -> None:
    status = int(response.start[1])
    hop = HOP_BY_HOP | response.connection
    headers = [(b":status", response.start[1])]
    headers += [(k.lower(), v) for k, v in response.headers if k.lower() not in hop]
    no_body = method == b"HEAD" or status in (204, 304)
    pipe.client.send_headers(pipe.stream_id, headers, end=no_body)
    pipe.answered = True
    if no_body:
        return
    if response.chunked:
        async for data in read_chunks(up, timeout):
            await pipe.client.send_data(pipe.stream_id, data)
    elif response.content_length is not None:
        left = response.content_length
        while left:
            data = await within(up.reader.read(min(left, CHUNK)), timeout)
            if not data:
                raise ConnectionError("replica closed the connection mid-body")
            left -= len(data)
            await pipe.client.send_data(pipe.stream_id, data)
    else:
        while data := await within(up.reader.read(CHUNK), timeout):
            await pipe.client.send_data(pipe.stream_id, data)
    pipe.client.end_stream(pipe.stream_id)


async def relay(pipe: Pipe, endpoint: Endpoint, fields: list[tuple[bytes, bytes]]) -> int:
    """Relay one h2 stream to ``endpoint`` over a pooled HTTP/1.1 connection; the status."""
    proxy = pipe.proxy
    where = f"{endpoint.host}:{endpoint.port}"
    try:
        up = await proxy.pool.get(endpoint)
    except (OSError, TimeoutError) as error:
        raise Rejected(502, f"replica {where} is unreachable: {error}") from None
    drop = frozenset({b"authorization"}) if proxy.token else frozenset()
    head = request_head(fields, pipe.peer, drop)
    method = dict(fields).get(b":method", b"GET")
    try:
        up.writer.write(head)
        await _upload(pipe, up, b"Transfer-Encoding: chunked" in head)
        raw = await within(up.reader.readuntil(b"\r\n\r\n"), proxy.limits.response_timeout_s)
        response = http1.parse_head(raw, request=False)
        await _download(pipe, up, response, method, proxy.limits.response_timeout_s)
    except TimeoutError:
        up.close()
        raise Rejected(504, f"replica {where} did not answer in time") from None
    except (ConnectionError, OSError, EOFError) as error:  # IncompleteReadError is an EOFError
        up.close()
        raise Rejected(502, f"replica {where} closed the connection before answering") from error
    except BaseException:
        up.close()
        raise
    if b"close" in response.connection or (
        not response.chunked and response.content_length is None
    ):
        up.close()
    else:
        proxy.pool.put(endpoint, up)
    return int(response.start[1])
