"""DynamicBatcher: groups queued requests into batches of up to ``max_size`` or ``max_delay``.

It knows nothing of HTTP or processes: ``workers`` says how many workers serve and how many are
idle, and ``run_batch`` runs a batch on a slot (room on a worker) taken from it. A batch forms
only once some worker has room, so under load the batches grow by themselves while the workers
are busy, and a batch that will wait behind a busy worker fills for up to ``max_delay``.

A batch for an idle worker goes as soon as it holds a fair share of the traffic: the requests
recently in the server (queued or running) divided by the workers. Eight clients and two
workers then run two batches of four side by side, instead of one of eight while the other
worker waits; one client never waits for company; and a batch is not cut into fragments each
time a worker finishes, because a fragment is below the fair share. ``max_delay`` still bounds
every wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, NoReturn, Protocol, TypeVar

from marserve.errors import InternalError, MarserveError, PayloadTooLarge, QueueFull

Item = TypeVar("Item")
Result = TypeVar("Result")
Slot = TypeVar("Slot")
Slot_co = TypeVar("Slot_co", covariant=True)

# The traffic estimate is the peak of requests in the server over the last one to two windows.
LOAD_WINDOW_S = 0.25


class Workers(Protocol[Slot_co]):
    """What the batcher needs of a worker pool."""

    async def wait_for_room(self) -> None:
        """Return once some worker can take another batch."""

    async def acquire(self) -> Slot_co:
        """Reserve room on the least busy worker (waiting if there is none)."""

    def serving(self) -> int:
        """Workers that take batches now."""

    def idle(self) -> int:
        """Workers with nothing to run."""


class DynamicBatcher(Generic[Slot, Item, Result]):
    def __init__(
        self,
        workers: Workers[Slot],
        run_batch: Callable[[Slot, list[Item]], Awaitable[Sequence[Result]]],
        *,
        max_size: int,
        max_delay: float,
        queue_limit: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._workers = workers
        self._run_batch = run_batch
        self.max_size = max_size
        self.max_delay = max(0.0, max_delay)
        self.queue_limit = queue_limit
        self._clock = clock
        self._queue: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._held = 0  # places held for requests waiting to be queued (see :meth:`hold`)
        self._forming = 0  # rows taken from the queue into the batch being formed
        self._running_rows = 0  # rows of the batches sent and not answered yet
        self._peak = 0  # most rows in the server at once in this window ...
        self._last_peak = 0  # ... and in the one before
        self._window_start = clock()
        self._changed = asyncio.Event()  # a row was queued or a worker was freed
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    @property
    def depth(self) -> int:
        """Requests waiting for a slot (and places held for requests about to be queued)."""
        return len(self._queue) + self._held

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch running."""
        return not self._queue and not self._running

    def start(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch_forever())

    def submit(self, item: Item) -> asyncio.Future[Result]:
        """Queue an item; the future resolves to its result. Raises QueueFull at once."""
        if len(self._queue) + self._held >= self.queue_limit:
            self._refuse(1)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._queued()
        return future

    def submit_all(self, items: Sequence[Item]) -> list[asyncio.Future[Result]]:
        """Queue every item of one request, or none of them (see :meth:`_refuse`)."""
        if len(self._queue) + self._held + len(items) > self.queue_limit:
            self._refuse(len(items))
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Result]] = [loop.create_future() for _ in items]
        self._queue.extend(zip(items, futures, strict=True))
        self._queued()
        return futures

    def _queued(self) -> None:
        self._note_load()
        self._changed.set()

    def wake(self) -> None:
        """A worker was freed: a batch being formed for a busy worker may go now."""
        self._changed.set()

    def _note_load(self) -> None:
        now = self._clock()
        if now - self._window_start >= LOAD_WINDOW_S:
            recent = now - self._window_start < 2 * LOAD_WINDOW_S
            self._last_peak = self._peak if recent else 0
            self._peak = 0
            self._window_start = now
        load = len(self._queue) + self._held + self._forming + self._running_rows
        self._peak = max(self._peak, load)

    def fair_share(self) -> int:
        """Rows a batch for an idle worker waits for: recent traffic over the workers."""
        self._note_load()
        traffic = max(self._peak, self._last_peak)
        return max(1, min(self.max_size, math.ceil(traffic / max(1, self._workers.serving()))))

    def hold(self, count: int) -> None:
        """Hold ``count`` places for a request that waits before it is queued (refused as
        :meth:`submit_all` would be); :meth:`release` them right before queueing it."""
        if len(self._queue) + self._held + count > self.queue_limit:
            self._refuse(count)
        self._held += count

    def release(self, count: int) -> None:
        self._held = max(0, self._held - count)

    def _refuse(self, count: int) -> NoReturn:
        """413 when ``count`` rows can never fit in the queue; 503 with Retry-After when they
        could once it drains."""
        if count > self.queue_limit:
            raise PayloadTooLarge(
                f"The request has {count} rows but the model's job queue holds "
                f"{self.queue_limit} (jobQueueSize): send at most {self.queue_limit} per request"
            )
        raise QueueFull("Model queue is full, retry later", headers={"Retry-After": "1"})

    def withdraw(self, futures: Sequence[asyncio.Future[Result]]) -> None:
        """A request failed or its caller went away: its rows leave the queue (their futures
        are cancelled), and errors its other rows already got count as seen."""
        queued = False
        for future in futures:
            if not future.done():
                future.cancel()
            if future.cancelled():
                queued = True
            else:
                future.exception()
        if queued:
            self._queue = deque(entry for entry in self._queue if not entry[1].done())

    def _pop(self) -> tuple[Item, asyncio.Future[Result]] | None:
        """The next live queued entry, or None; a cancelled caller's entry is dropped here."""
        while self._queue:
            entry = self._queue.popleft()
            if not entry[1].done():
                return entry
        return None

    async def _collect(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        """One batch: it goes when full, when it holds a fair share and a worker is idle, or
        ``max_delay`` after its first row."""
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        deadline: float | None = None
        try:
            while len(batch) < self.max_size:
                if batch and len(batch) >= self.fair_share() and self._workers.idle():
                    break
                entry = self._pop()
                if entry is not None:
                    batch.append(entry)
                    self._forming += 1
                    if deadline is None:
                        deadline = self._clock() + self.max_delay
                    continue
                self._changed.clear()
                if deadline is None:
                    await self._changed.wait()
                    continue
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
        finally:
            self._forming = 0
        return batch

    async def _dispatch_forever(self) -> None:
        while True:
            await self._wait_for_work()
            await self._workers.wait_for_room()
            batch = await self._collect()  # never empty: it waits for a first row
            self._running_rows += len(batch)
            slot = await self._workers.acquire()
            task = asyncio.get_running_loop().create_task(self._run(slot, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _wait_for_work(self) -> None:
        while not self._queue:
            self._changed.clear()
            await self._changed.wait()

    async def _run(self, slot: Slot, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            await self._answer(slot, batch)
        finally:
            self._running_rows -= len(batch)

    async def _answer(self, slot: Slot, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._run_batch(slot, [item for item, _ in batch])
            if len(results) != len(batch):
                raise InternalError(
                    f"Invalid handler output: {len(results)} results for a batch of {len(batch)}"
                )
        except MarserveError as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception as exc:  # never leave a caller hanging
            error = InternalError(f"Batch failed: {type(exc).__name__}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def fail_pending(self, error: MarserveError) -> None:
        """Fail every queued request (used when the model is unloaded or the server stops)."""
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(error)

    async def stop(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
