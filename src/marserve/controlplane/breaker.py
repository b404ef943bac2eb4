"""Queue-proxy breaker and activator hold queue as asyncio admission components."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from marserve.controlplane.errors import Rejected

ACTIVATOR_QUEUE_DEPTH = 10_000
QUEUE_DEPTH_FACTOR = 10

__all__ = ["ACTIVATOR_QUEUE_DEPTH", "QUEUE_DEPTH_FACTOR", "Breaker", "HoldQueue", "Rejected"]


class Breaker:
    """containerConcurrency requests in flight, 10x CC queued, then 503; CC 0 is unlimited."""

    def __init__(self, container_concurrency: int) -> None:
        if container_concurrency < 0:
            raise ValueError(f"containerConcurrency must be >= 0, got {container_concurrency}")
        self.capacity = container_concurrency
        self.queue_depth = QUEUE_DEPTH_FACTOR * container_concurrency
        self._sem = asyncio.Semaphore(container_concurrency) if container_concurrency else None
        self.in_flight = 0
        self.waiting = 0

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold one slot for the body of the block, or raise Rejected(503) when full."""
        if self._sem is None:
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1
            return
        if self._sem.locked() and self.waiting >= self.queue_depth:
            raise Rejected(503, "pending request queue full")
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._sem.release()


class HoldQueue:
    """Activator's bounded per-revision queue: requests wait until the revision is ready."""

    def __init__(self, depth: int = ACTIVATOR_QUEUE_DEPTH, timeout_s: float = 600.0) -> None:
        self.depth = depth
        self.timeout_s = timeout_s
        self._ready = asyncio.Event()
        self.held = 0

    def set_ready(self, ready: bool) -> None:
        """Open (ready) or close (scaled to zero) the gate; opening releases every held request."""
        if ready:
            self._ready.set()
        else:
            self._ready.clear()

    async def wait_ready(self) -> None:
        """Return once the revision is ready; 503 if the queue is full, 504 on timeout."""
        if self._ready.is_set():
            return
        if self.held >= self.depth:
            raise Rejected(503, "activator queue full")
        self.held += 1
        try:
            await asyncio.wait_for(self._ready.wait(), self.timeout_s)
        except TimeoutError:
            raise Rejected(504, "timed out waiting for revision to become ready") from None
        finally:
            self.held -= 1
