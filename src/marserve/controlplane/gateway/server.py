"""The gateway: one loopback listener for HTTP/1.1 and h2c, routing by Host to ready replicas."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import random
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from marserve.controlplane.gateway import http1
from marserve.controlplane.gateway.h2c import PREFACE_HEAD, PREFACE_TAIL, H2Proxy
from marserve.controlplane.gateway.hosts import normalize_host
from marserve.controlplane.gateway.metrics import GatewayMetrics, RevisionStats
from marserve.controlplane.gateway.pool import Pool
from marserve.controlplane.gateway.proxy import Http1Proxy, Limits
from marserve.controlplane.gateway.router import Router
from marserve.controlplane.gateway.timeouts import within
from marserve.controlplane.routing import ServiceRoute

if TYPE_CHECKING:
    from marserve.controlplane.config import ControllerConfig
    from marserve.controlplane.store import Store

log = logging.getLogger(__name__)
METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
OWN_NAMES = frozenset({"localhost"})
LINGER_S = 1.0
LINGER_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """What the gateway enforces; ``token`` set means every request needs ``Bearer <token>``."""

    token: str | None = None
    hold_s: float = 0.0
    """How long a request waits for a revision with no ready replica before its 503 (activator)."""
    limits: Limits = field(default_factory=Limits)
    connect_timeout_s: float = 5.0
    max_connections: int = 4096
    """Client connections open at once; one more is answered 503 and closed."""


def is_own_host(host: str) -> bool:
    """A Host naming the gateway's address itself (an IP literal or localhost), not a service."""
    name = normalize_host(host).strip("[]")
    if name in OWN_NAMES:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


async def lingering_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send FIN, then discard what the client still sends (briefly) before closing.

    Closing a socket with unread input makes the kernel send RST, which can destroy an error
    answer (400, 431, 503) before the client has read it.
    """
    try:
        if not writer.is_closing() and writer.can_write_eof():
            await within(writer.drain(), LINGER_S)
            writer.write_eof()
            left = LINGER_BYTES
            while left > 0 and (data := await within(reader.read(min(left, 65536)), LINGER_S)):
                left -= len(data)
    except (ConnectionError, OSError, TimeoutError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


class Gateway:
    """Knative's ingress and activator in one process: ``update`` routes, ``start`` listens."""

    def __init__(
        self,
        settings: GatewaySettings | None = None,
        *,
        registry: CollectorRegistry | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings or GatewaySettings()
        self.metrics = GatewayMetrics(registry)
        self.router = Router(self.metrics, rand, self.settings.hold_s)
        self.pool = Pool(self.settings.connect_timeout_s)
        limits = self.settings.limits
        self.http1 = Http1Proxy(self.router, self.pool, limits, self.settings.token, self._own)
        self.h2 = H2Proxy(self.router, self.pool, self.settings.token, limits, self._own)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.host = ""
        self.port = 0

    def update(self, services: Sequence[ServiceRoute]) -> None:
        """RouteSink: replace the whole route set (in-flight counts and breakers carry over).

        Call it on the gateway's event loop (the reconciler runs there as an operator).
        """
        self.router.update(services)
        live = {(e.host, e.port) for s in services for r in s.revisions for e in r.endpoints}
        self.pool.retain(live)
        self.h2.retain(
            {
                (e.host, e.grpc_port)
                for s in services
                for r in s.revisions
                for e in r.endpoints
                if e.grpc_port
            }
        )

    @property
    def open_connections(self) -> int:
        """Client connections being served now."""
        return len(self._connections)

    def stats(self) -> dict[tuple[str, str], RevisionStats]:
        """Per ``(namespace, revision)``: requests in flight now and answered so far."""
        return self.metrics.stats()

    def _own(self, host: str, method: bytes, target: bytes) -> tuple[int, bytes, bytes] | None:
        if not is_own_host(host):
            return None
        path = target.split(b"?", 1)[0]
        if path == b"/metrics" and method in (b"GET", b"HEAD"):
            return 200, METRICS_TYPE, self.metrics.exposition()
        if path == b"/healthz" and method in (b"GET", b"HEAD"):
            return 200, b"application/json", b'{"status": "ok"}'
        message = f"the gateway serves /metrics and /healthz on host {normalize_host(host)!r}"
        return 404, b"application/json", json.dumps({"error": message}).encode()

    async def start(self, host: str = "127.0.0.1", port: int = 8080) -> None:
        """Listen on ``host:port`` (``0`` picks a free port, then in ``self.port``)."""
        limit = self.settings.limits.max_header_bytes
        self._server = await asyncio.start_server(self._accept, host, port, limit=limit)
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        log.info("gateway listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening, end open connections and close pooled replica connections."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self.pool.close()
        await self.h2.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.settings.max_connections:
            message = "too many connections to the gateway; retry later"
            extra = (b"Retry-After: 1\r\n",)
            writer.write(http1.error_response(503, message, close=True, extra=extra))
            await lingering_close(reader, writer)
            return
        self._connections.add(task)
        try:
            await self._connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            log.exception("gateway connection failed")
        finally:
            self._connections.discard(task)
            if self._server is not None and self._server.is_serving():
                await lingering_close(reader, writer)
            else:  # stopping: no lingering
                writer.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if peername else "unknown"
        raw = await self.http1.read_head(reader, writer)
        if raw is None:
            await writer.drain()
            return
        if raw == PREFACE_HEAD:
            tail = await within(
                reader.readexactly(len(PREFACE_TAIL)), self.settings.limits.header_timeout_s
            )
            if tail != PREFACE_TAIL:
                writer.write(http1.error_response(400, "malformed HTTP/2 preface", close=True))
                await writer.drain()
                return
            await self.h2.serve(reader, writer, peer)
            return
        await self.http1.serve(reader, writer, raw, peer)


def settings_for(config: ControllerConfig, **overrides: Any) -> GatewaySettings:
    """The gateway's settings for a controller: its token, plus any ``overrides``."""
    return GatewaySettings(**{"token": config.gateway_token, **overrides})


def operator(
    gateway: Gateway,
) -> Callable[[Store, ControllerConfig], Coroutine[Any, Any, None]]:
    """The gateway as a controller ``Operator``: listens on ``config.host:config.gateway_port``.

    The reconciler feeds it routes through ``gateway.update``; the store is not read here.
    """

    async def run(store: Store, config: ControllerConfig) -> None:
        await gateway.start(config.host, config.gateway_port)
        try:
            await asyncio.Event().wait()
        finally:
            await gateway.stop()

    return run
