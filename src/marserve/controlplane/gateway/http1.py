"""HTTP/1.1 framing for the proxy: parse heads, rebuild them, relay bodies without parsing them."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from http import HTTPStatus

from marserve.controlplane.errors import Rejected
from marserve.controlplane.gateway.timeouts import within

CHUNK = 64 * 1024
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")


@dataclass(slots=True)
class Head:
    """A parsed request or response head; ``headers`` keep their order and original case."""

    start: tuple[bytes, bytes, bytes]
    headers: list[tuple[bytes, bytes]]
    content_length: int | None = None
    chunked: bool = False
    connection: set[bytes] = field(default_factory=set)

    def get(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def _framing(head: Head) -> None:
    lengths: set[bytes] = set()
    for key, value in head.headers:
        low = key.lower()
        if low == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
        elif low == b"transfer-encoding":
            if value.strip().lower() != b"chunked" or head.chunked:
                raise Rejected(501, f"Transfer-Encoding {value.decode('latin-1')!r} not supported")
            head.chunked = True
        elif low == b"connection":
            head.connection.update(t.strip().lower() for t in value.split(b","))
    if lengths:
        if head.chunked:
            raise Rejected(400, "both Content-Length and Transfer-Encoding")
        if len(lengths) > 1 or not next(iter(lengths)).isdigit():
            raise Rejected(400, "invalid Content-Length")
        head.content_length = int(next(iter(lengths)))


def parse_head(raw: bytes, *, request: bool) -> Head:
    """Parse ``raw`` (ending in CRLFCRLF) into a Head; Rejected(400) names what is malformed."""
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) != 3:
        raise Rejected(400, "malformed request line" if request else "malformed status line")
    if request:
        method, target, version = parts
        if not _TOKEN.match(method) or not target or b" " in target or version not in _VERSIONS:
            raise Rejected(400, "malformed request line")
    elif parts[0] not in _VERSIONS or not (len(parts[1]) == 3 and parts[1].isdigit()):
        raise Rejected(502, "replica sent a malformed status line")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise Rejected(400 if request else 502, "malformed header line")
        headers.append((name, value.strip(b" \t")))
    head = Head((parts[0], parts[1], parts[2]), headers)
    _framing(head)
    return head


def forwarded_headers(head: Head, *, peer: str, host: str, drop: frozenset[bytes]) -> list[bytes]:
    """End-to-end headers of ``head`` plus X-Forwarded-For / Forwarded naming ``peer``."""
    hop = HOP_BY_HOP | head.connection
    lines: list[bytes] = []
    xff: bytes | None = None
    forwarded: bytes | None = None
    for key, value in head.headers:
        low = key.lower()
        if low in hop or low in drop:
            continue
        if low == b"x-forwarded-for":
            xff = value if xff is None else xff + b", " + value
            continue
        if low == b"forwarded":
            forwarded = value if forwarded is None else forwarded + b", " + value
            continue
        lines.append(key + b": " + value + b"\r\n")
    who = peer.encode()
    node = f'"[{peer}]"'.encode() if ":" in peer else who
    this = b"for=" + node + b";host=" + host.encode("latin-1") + b";proto=http"
    lines.append(b"X-Forwarded-For: " + (xff + b", " + who if xff else who) + b"\r\n")
    lines.append(b"Forwarded: " + (forwarded + b", " + this if forwarded else this) + b"\r\n")
    lines.append(b"X-Forwarded-Proto: http\r\n")
    return lines


def response_head(status: int, headers: list[bytes], *, close: bool) -> bytes:
    """A status line and ``headers`` (already CRLF-terminated lines) for the client."""
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
    out = [f"HTTP/1.1 {status} {reason}\r\n".encode(), *headers]
    if close:
        out.append(b"Connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def error_response(
    status: int, message: str, *, close: bool, extra: tuple[bytes, ...] = ()
) -> bytes:
    """A complete JSON error answer ``{"error": message}``."""
    body = json.dumps({"error": message}).encode()
    headers = [
        b"Content-Type: application/json\r\n",
        b"Content-Length: %d\r\n" % len(body),
        *extra,
    ]
    return response_head(status, headers, close=close) + body


async def copy_exact(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int, timeout_s: float
) -> None:
    """Relay exactly ``n`` body bytes, chunk by chunk, each read bounded by ``timeout_s``."""
    while n > 0:
        data = await within(reader.read(min(n, CHUNK)), timeout_s)
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        n -= len(data)
        writer.write(data)
        await writer.drain()


async def copy_chunked(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    timeout_s: float,
    max_line: int = 4096,
) -> None:
    """Relay a chunked body as it is framed (sizes, extensions, trailers), up to its last chunk."""
    while True:
        line = await within(reader.readuntil(b"\r\n"), timeout_s)
        if len(line) > max_line:
            raise Rejected(400, "chunk size line too long")
        size_text = line[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise Rejected(400, "malformed chunk size") from None
        writer.write(line)
        if size == 0:
            break
        await copy_exact(reader, writer, size + 2, timeout_s)
    while True:  # trailers, then the empty line
        line = await within(reader.readuntil(b"\r\n"), timeout_s)
        writer.write(line)
        if line == b"\r\n":
            break
    await writer.drain()


async def copy_until_eof(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout_s: float
) -> None:
    """Relay a body delimited by the connection's end (an HTTP/1.0-style response)."""
    while data := await within(reader.read(CHUNK), timeout_s):
        writer.write(data)
        await writer.drain()
