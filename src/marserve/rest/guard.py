"""HTTP listeners' connection limits: uvicorn's httptools protocol with timeouts, caps, sizes."""

from __future__ import annotations

import logging
import resource
from asyncio import TimerHandle
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from marserve.settings import ServerSettings

log = logging.getLogger(__name__)

# Paths that are always answered, even above the connection cap (liveness, health, scraping).
RESERVED_PATHS = frozenset({b"/ping", b"/v2/health/live", b"/v2/health/ready", b"/metrics"})
RESERVE = 32  # connections kept, above the cap, for the reserved paths; beyond: refused
CHUNK_LINE = 32  # a chunk's size line and CRLFs, besides its extension
FD_SPARE = 256  # descriptors the process needs besides the listeners' connections


@dataclass(frozen=True)
class ConnectionLimits:
    """What one HTTP listener accepts; built from ServerSettings at the edge."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keep_alive_s: int = 30
    max_connections: int = 1000
    max_request_line: int = 8192
    max_header_bytes: int = 16384
    max_header_count: int = 100
    max_chunks: int = 10000
    max_chunk_extension: int = 1024

    @classmethod
    def of(cls, settings: ServerSettings) -> ConnectionLimits:
        return cls(
            header_timeout_s=settings.header_read_timeout_s,
            body_timeout_s=settings.body_read_timeout_s,
            keep_alive_s=settings.keep_alive_timeout_s,
            max_connections=settings.max_connections,
            max_request_line=settings.max_request_line_size,
            max_header_bytes=settings.max_header_size,
            max_header_count=settings.max_header_count,
            max_chunks=settings.max_chunk_count,
            max_chunk_extension=settings.max_chunk_extension_size,
        )


class Rejected(Exception):
    """A request broke a limit: answered with status and reason, then the connection closes."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def answer(status: HTTPStatus, reason: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection (pure; table-tested)."""
    body = f'{{"code": {status.value}, "type": "{status.phrase}", "message": "{reason}"}}'.encode()
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def head_violation(
    limits: ConnectionLimits, url: int, headers: int, head_bytes: int
) -> Rejected | None:
    """The limit a request head breaks, if any (pure)."""
    if url > limits.max_request_line:
        return Rejected(
            HTTPStatus.REQUEST_URI_TOO_LONG, f"request line over {limits.max_request_line} bytes"
        )
    if headers > limits.max_header_count:
        return Rejected(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            f"more than {limits.max_header_count} headers",
        )
    if head_bytes > limits.max_request_line + limits.max_header_bytes:
        return Rejected(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            f"headers over {limits.max_header_bytes} bytes",
        )
    return None


def framing_allowed(limits: ConnectionLimits, chunks: int) -> int:
    """Bytes of chunk framing (size line, extensions, CRLFs) a body of ``chunks`` chunks may use."""
    return (chunks + 1) * (limits.max_chunk_extension + CHUNK_LINE)


def fd_shortfall(soft_limit: int, listeners: int, limits: ConnectionLimits) -> int:
    """How many descriptors the soft limit lacks for every listener at its cap (pure; 0: enough)."""
    if soft_limit == resource.RLIM_INFINITY:
        return 0
    needed = listeners * (limits.max_connections + RESERVE) + FD_SPARE
    return max(0, needed - soft_limit)


def check_fd_headroom(listeners: int, limits: ConnectionLimits) -> int:
    """Warn at start when RLIMIT_NOFILE's soft limit cannot hold the connection caps."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    short = fd_shortfall(soft, listeners, limits)
    if short:
        log.warning(
            "open-file soft limit %d is %d short of %d listeners x (max_connections %d + %d) + %d;"
            " raise it (ulimit -n) or lower max_connections",
            soft, short, listeners, limits.max_connections, RESERVE, FD_SPARE,
        )  # fmt: skip
    return short


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that enforces ConnectionLimits; one per connection."""

    LIMITS = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: TimerHandle | None = None
        self._in_head = True
        self._seen = 0
        self._head_bytes = 0
        self._header_count = 0
        self._header_bytes = 0  # parsed headers' size (a feed can hold body bytes too)
        self._chunks = 0
        self._chunked = False
        self._framing = 0  # chunked body: bytes fed minus body bytes (sizes, CRLFs, extensions)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.LIMITS.max_connections + RESERVE:
            log.warning("connection refused: %d open", len(self.connections) - 1)
            transport.abort()
            return
        self._arm(self.LIMITS.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._seen += len(data)
        if self._in_head:
            self._head_bytes += len(data)
        elif self._chunked:
            self._framing += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:  # a callback raised: Rejected is ours
            cause = error.__context__
            if isinstance(cause, Rejected):
                self._reject(cause)
            else:
                self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            self.send_400_response("Invalid HTTP request received.")
            return
        if self.transport.is_closing():
            return
        if self._in_head:
            violation = head_violation(
                self.LIMITS, len(getattr(self, "url", b"")), self._header_count, self._head_bytes
            )
            if violation is not None:
                self._reject(violation)
        elif self._chunked and self._framing > framing_allowed(self.LIMITS, self._chunks):
            reason = f"chunk extension over {self.LIMITS.max_chunk_extension} bytes"
            self._reject(Rejected(HTTPStatus.BAD_REQUEST, reason))

    # Parser callbacks (called inside feed_data; a Rejected raised here ends the feed).
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True  # _head_bytes already counts this feed: reset when the head ends
        self._header_count = 0
        self._header_bytes = 0
        self._chunks = 0
        if self._timer is None:
            self._arm(self.LIMITS.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.LIMITS.max_request_line:
            raise Rejected(
                HTTPStatus.REQUEST_URI_TOO_LONG,
                f"request line over {self.LIMITS.max_request_line} bytes",
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4
        violation = head_violation(self.LIMITS, 0, self._header_count, self._header_bytes)
        if violation is not None:
            raise violation
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        # this feed's bytes past the head: "METHOD URL HTTP/1.1\r\n", "name: value\r\n"s, "\r\n"
        head = len(self.parser.get_method()) + len(self.url) + 12 + self._header_bytes + 2
        past_head, self._head_bytes = max(0, self._head_bytes - head), 0
        self._disarm()
        if len(self.connections) > self.LIMITS.max_connections and (
            httptools.parse_url(self.url).path not in RESERVED_PATHS
        ):
            raise Rejected(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections; retry later")
        super().on_headers_complete()
        self._chunked = any(n == b"transfer-encoding" for n, _ in self.headers)
        self._framing = past_head  # on_body takes the body bytes back out
        self._arm(self.LIMITS.body_timeout_s)

    def on_chunk_header(self) -> None:
        self._chunks += 1
        if self._chunks > self.LIMITS.max_chunks:
            raise Rejected(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"more than {self.LIMITS.max_chunks} chunks"
            )

    def on_body(self, body: bytes) -> None:
        self._framing -= len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._chunked = False
        self._disarm()
        super().on_message_complete()

    # Timers
    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        started = (
            self.cycle is not None
            and not self.cycle.response_complete
            and self.cycle.response_started
        )
        if self._seen == 0 or started:
            self.transport.close()  # nothing to answer, or an answer already under way
            return
        phase = "headers" if self._in_head else "body"
        self._reject(Rejected(HTTPStatus.REQUEST_TIMEOUT, f"request {phase} not received in time"))

    def _reject(self, rejected: Rejected) -> None:
        self._disarm()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app sees http.disconnect, its answer is dropped
            self.cycle.message_event.set()
        if not self.transport.is_closing():
            self.transport.write(answer(rejected.status, rejected.reason))
            self.transport.close()


def protocol_for(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """A protocol class bound to one listener's limits (uvicorn instantiates it per connection)."""
    return type("ListenerProtocol", (GuardedProtocol,), {"LIMITS": limits})


__all__ = [
    "ConnectionLimits",
    "GuardedProtocol",
    "Rejected",
    "answer",
    "check_fd_headroom",
    "protocol_for",
]
