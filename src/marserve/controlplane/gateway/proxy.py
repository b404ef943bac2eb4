"""The HTTP/1.1 side of the gateway: one client connection's requests, relayed to replicas."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from marserve.controlplane.errors import Rejected
from marserve.controlplane.gateway import http1
from marserve.controlplane.gateway.hosts import normalize_host
from marserve.controlplane.gateway.http1 import CHUNK, Head
from marserve.controlplane.gateway.pool import Pool, Upstream
from marserve.controlplane.gateway.router import Lease, Router
from marserve.controlplane.gateway.timeouts import within

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CLIENT_CLOSED = 499  # counted as nginx does: the client left before its answer
_CONNECTION_ERRORS = (ConnectionError, asyncio.IncompleteReadError, OSError)


@dataclass(frozen=True, slots=True)
class Limits:
    """Timeouts and sizes of the gateway's HTTP/1.1 side."""

    header_timeout_s: float = 30.0
    body_timeout_s: float = 60.0
    response_timeout_s: float = 300.0
    max_header_bytes: int = 32 * 1024


OwnHandler = Callable[[str, bytes, bytes], tuple[int, bytes, bytes] | None]
"""(host, method, target) -> (status, content type, body) for the gateway's own paths, else None."""


class _Stale(Exception):
    """A reused keep-alive connection was closed by the replica before it answered."""


class ClientGone(Exception):
    """The client closed its connection in the middle of its request body."""


class Http1Proxy:
    """Serves HTTP/1.1 requests on a connection, forwarding each to the replica its Host names."""

    def __init__(
        self, router: Router, pool: Pool, limits: Limits, token: str | None, own: OwnHandler
    ) -> None:
        self.router = router
        self.pool = pool
        self.limits = limits
        self.token = token.encode() if token else None
        self.own = own
        self._drop = frozenset({b"expect", b"authorization"} if token else {b"expect"})

    async def read_head(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes | None:
        """The next request head, or None when the client is gone or was answered with an error."""
        try:
            return await within(reader.readuntil(b"\r\n\r\n"), self.limits.header_timeout_s)
        except asyncio.IncompleteReadError as error:
            if error.partial.strip():
                writer.write(http1.error_response(400, "incomplete request head", close=True))
            return None
        except asyncio.LimitOverrunError:
            message = f"request head larger than {self.limits.max_header_bytes} bytes"
            writer.write(http1.error_response(431, message, close=True))
            return None
        except TimeoutError:
            message = f"request head not received within {self.limits.header_timeout_s:g} s"
            writer.write(http1.error_response(408, message, close=True))
            return None

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes, peer: str
    ) -> None:
        """Answer requests until the client or the framing ends the connection."""
        while True:
            keep = await self.exchange(reader, writer, raw, peer)
            await writer.drain()
            if not keep:
                return
            next_raw = await self.read_head(reader, writer)
            if next_raw is None:
                return
            raw = next_raw

    def _authorized(self, head: Head) -> bool:
        if self.token is None:
            return True
        value = head.get(b"authorization") or b""
        scheme, _, credential = value.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self.token)

    async def exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes, peer: str
    ) -> bool:
        """One request and its answer; True when the connection may serve another."""
        try:
            head = http1.parse_head(raw, request=True)
        except Rejected as rejected:
            writer.write(http1.error_response(rejected.status, rejected.message, close=True))
            return False
        method, target, version = head.start
        has_body = head.chunked or bool(head.content_length)
        close = b"close" in head.connection or (
            version == b"HTTP/1.0" and b"keep-alive" not in head.connection
        )
        host_value = head.get(b"host")
        try:
            if host_value is None or not host_value.strip():
                raise Rejected(400, "missing Host header")
            host = host_value.decode("latin-1")
            if not self._authorized(head):
                raise Rejected(401, "missing or invalid bearer token")
            resolved = self.router.resolve(host)
            if resolved is None:
                return self._answer_own(writer, host, method, target, close or has_body)
            if resolved.service.protocol == "grpc":
                raise Rejected(
                    400, f"service {resolved.service.name} speaks gRPC: send HTTP/2 (h2c)"
                )
            async with self.router.admit(resolved) as lease:
                try:
                    return await self.forward(reader, writer, head, lease, peer, host, close)
                except ClientGone:
                    lease.code = CLIENT_CLOSED
                    return False
        except Rejected as rejected:
            extra: tuple[bytes, ...] = ()
            if rejected.status == 401:
                extra = (b"WWW-Authenticate: Bearer\r\n",)
            elif rejected.retry_after is not None:
                extra = (b"Retry-After: %d\r\n" % rejected.retry_after,)
            done = close or has_body or rejected.status >= 500
            writer.write(
                http1.error_response(rejected.status, rejected.message, close=done, extra=extra)
            )
            return not done

    def _answer_own(
        self, writer: asyncio.StreamWriter, host: str, method: bytes, target: bytes, close: bool
    ) -> bool:
        answer = self.own(host, method, target)
        if answer is None:
            name = normalize_host(host)
            raise Rejected(404, f"no InferenceService is served at host {name!r}")
        status, content_type, body = answer
        headers = [
            b"Content-Type: " + content_type + b"\r\n",
            b"Content-Length: %d\r\n" % len(body),
        ]
        writer.write(http1.response_head(status, headers, close=close) + body)
        return not close

    def _request_head(self, head: Head, peer: str, host: str) -> bytes:
        method, target, _ = head.start
        lines = http1.forwarded_headers(head, peer=peer, host=host, drop=self._drop)
        if head.chunked:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        return b"".join((method, b" ", target, b" HTTP/1.1\r\n", *lines, b"\r\n"))

    async def _upload(
        self, reader: asyncio.StreamReader, up: Upstream, request: bytes, head: Head
    ) -> None:
        """Stream a large or chunked request body; the client's faults are told apart."""
        timeout = self.limits.body_timeout_s
        up.writer.write(request)
        try:
            if head.chunked:
                await http1.copy_chunked(reader, up.writer, timeout)
            elif head.content_length:
                await http1.copy_exact(reader, up.writer, head.content_length, timeout)
        except TimeoutError:
            raise Rejected(408, "request body not received in time") from None
        except asyncio.LimitOverrunError:
            raise Rejected(400, "chunk size line too long") from None
        except asyncio.IncompleteReadError:
            raise ClientGone from None

    async def _send(
        self,
        reader: asyncio.StreamReader,
        up: Upstream,
        request: bytes,
        head: Head,
        body: bytes | None,
    ) -> bytes:
        """Send the request and return the replica's response head."""
        try:
            if body is not None:
                up.writer.write(request + body)
            else:
                await self._upload(reader, up, request, head)
            return await within(up.reader.readuntil(b"\r\n\r\n"), self.limits.response_timeout_s)
        except asyncio.IncompleteReadError as error:
            if up.reused and body is not None and not error.partial:
                raise _Stale from None
            raise
        except ConnectionResetError:
            if up.reused and body is not None:
                raise _Stale from None
            raise

    async def _dial_and_send(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        lease: Lease,
        request: bytes,
        head: Head,
    ) -> tuple[Upstream, bytes]:
        endpoint = lease.endpoint
        where = f"{endpoint.host}:{endpoint.port}"
        body: bytes | None = None
        if head.get(b"expect") is not None and (head.chunked or head.content_length):
            writer.write(CONTINUE)
        if not head.chunked and (head.content_length or 0) <= CHUNK:
            length = head.content_length or 0
            try:
                body = await within(reader.readexactly(length), self.limits.body_timeout_s)
            except TimeoutError:
                raise Rejected(408, "request body not received in time") from None
            except asyncio.IncompleteReadError:
                raise ClientGone from None
        for _attempt in range(2):
            try:
                up = await self.pool.get(endpoint)
            except (OSError, TimeoutError) as error:
                raise Rejected(502, f"replica {where} is unreachable: {error}") from None
            try:
                return up, await self._send(reader, up, request, head, body)
            except _Stale:
                up.close()
                continue
            except (Rejected, ClientGone):
                up.close()
                raise
            except TimeoutError:
                up.close()
                raise Rejected(504, f"replica {where} did not answer in time") from None
            except (asyncio.LimitOverrunError, *_CONNECTION_ERRORS):
                up.close()
                raise Rejected(
                    502, f"replica {where} closed the connection before answering"
                ) from None
        raise Rejected(502, f"replica {where} closed the connection before answering")

    async def forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: Head,
        lease: Lease,
        peer: str,
        host: str,
        close: bool,
    ) -> bool:
        """Relay the request to the lease's replica and its answer back; keep-alive both sides."""
        request = self._request_head(head, peer, host)
        up, raw = await self._dial_and_send(reader, writer, lease, request, head)
        try:
            response = http1.parse_head(raw, request=False)
        except Rejected:
            up.close()
            raise
        status = int(response.start[1])
        lease.code = status
        no_body = head.start[0] == b"HEAD" or status in (204, 304) or status < 200
        until_eof = not no_body and not response.chunked and response.content_length is None
        close = close or until_eof
        hop = http1.HOP_BY_HOP | response.connection
        lines = [k + b": " + v + b"\r\n" for k, v in response.headers if k.lower() not in hop]
        if response.chunked and not no_body:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if close:
            lines.append(b"Connection: close\r\n")
        out = b"".join(
            (b"HTTP/1.1 ", response.start[1], b" ", response.start[2], b"\r\n", *lines, b"\r\n")
        )
        reusable = b"close" not in response.connection and not until_eof
        try:
            await self._relay_body(up, writer, out, response, no_body, until_eof)
        except (Rejected, TimeoutError, *_CONNECTION_ERRORS):
            up.close()
            return False
        if reusable:
            self.pool.put(lease.endpoint, up)
        else:
            up.close()
        return not close

    async def _relay_body(
        self,
        up: Upstream,
        writer: asyncio.StreamWriter,
        out: bytes,
        response: Head,
        no_body: bool,
        until_eof: bool,
    ) -> None:
        timeout = self.limits.response_timeout_s
        length = response.content_length
        if no_body or length == 0:
            writer.write(out)
        elif length is not None and length <= CHUNK:
            writer.write(out + await within(up.reader.readexactly(length), timeout))
        else:
            writer.write(out)
            if response.chunked:
                await http1.copy_chunked(up.reader, writer, timeout)
            elif until_eof:
                await http1.copy_until_eof(up.reader, writer, timeout)
            else:
                await http1.copy_exact(up.reader, writer, length or 0, timeout)
