"""Keep-alive connections to replicas, pooled per endpoint and dropped before the replica would."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from marserve.controlplane.gateway.timeouts import within
from marserve.controlplane.routing import Endpoint

IDLE_S = 20.0  # below the replicas' keep-alive (30 s), so the gateway closes first
MAX_IDLE_PER_ENDPOINT = 256
STREAM_LIMIT = 256 * 1024


@dataclass(slots=True)
class Upstream:
    """One open connection to a replica."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reused: bool = False
    idle_since: float = 0.0

    def usable(self, now: float) -> bool:
        return (
            not self.writer.is_closing()
            and not self.reader.at_eof()
            and now - self.idle_since < IDLE_S
        )

    def close(self) -> None:
        self.writer.close()


class Pool:
    """Idle connections per endpoint; ``get`` reuses one or dials, ``put`` returns one."""

    def __init__(self, connect_timeout_s: float = 5.0) -> None:
        self.connect_timeout_s = connect_timeout_s
        self._idle: dict[tuple[str, int], list[Upstream]] = {}
        self._live: set[tuple[str, int]] | None = None  # None until the first route set

    async def get(self, endpoint: Endpoint, port: int | None = None) -> Upstream:
        key = (endpoint.host, port or endpoint.port)
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable(now):
                conn.reused = True
                return conn
            conn.close()
        reader, writer = await within(
            asyncio.open_connection(key[0], key[1], limit=STREAM_LIMIT), self.connect_timeout_s
        )
        return Upstream(reader, writer)

    def put(self, endpoint: Endpoint, conn: Upstream) -> None:
        key = (endpoint.host, endpoint.port)
        if self._live is not None and key not in self._live:
            conn.close()  # the replica left the routes while this request ran
            return
        idle = self._idle.setdefault(key, [])
        if len(idle) >= MAX_IDLE_PER_ENDPOINT or conn.writer.is_closing():
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def retain(self, endpoints: set[tuple[str, int]]) -> None:
        """Close idle connections to endpoints no longer routed to (and keep none later)."""
        self._live = set(endpoints)
        for key in [k for k in self._idle if k not in endpoints]:
            for conn in self._idle.pop(key):
                conn.close()

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
