"""DynamicBatcher: groups queued requests into batches of up to ``max_size`` or ``max_delay``.

It knows nothing of HTTP or processes: ``acquire`` waits for a free slot (room on a worker) and
``run_batch`` runs a batch on it. A batch is formed only once a slot is free, so under load the
batches grow by themselves while a slot is busy. When ``spare`` says some worker is idle, the
batch takes what is queued and goes at once: a partial batch on an idle worker beats a full one
that leaves the other worker waiting (eight clients and two workers then run two batches of four
side by side instead of one of eight). Otherwise the batch waits up to ``max_delay`` to fill up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, NoReturn, TypeVar

from marserve.errors import InternalError, MarserveError, PayloadTooLarge, QueueFull

Item = TypeVar("Item")
Result = TypeVar("Result")
Slot = TypeVar("Slot")


class DynamicBatcher(Generic[Slot, Item, Result]):
    def __init__(
        self,
        acquire: Callable[[], Awaitable[Slot]],
        run_batch: Callable[[Slot, list[Item]], Awaitable[Sequence[Result]]],
        *,
        max_size: int,
        max_delay: float,
        queue_limit: int,
        spare: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._acquire = acquire
        self._run_batch = run_batch
        self.max_size = max_size
        self.max_delay = max(0.0, max_delay)
        self.queue_limit = queue_limit
        self._spare = spare
        self._clock = clock
        self._queue: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._held = 0  # places held for requests waiting to be queued (see :meth:`hold`)
        self._not_empty = asyncio.Event()
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
        self._not_empty.set()
        return future

    def submit_all(self, items: Sequence[Item]) -> list[asyncio.Future[Result]]:
        """Queue every item of one request, or none of them (see :meth:`_refuse`)."""
        if len(self._queue) + self._held + len(items) > self.queue_limit:
            self._refuse(len(items))
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Result]] = [loop.create_future() for _ in items]
        self._queue.extend(zip(items, futures, strict=True))
        self._not_empty.set()
        return futures

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

    async def _next(self, deadline: float | None) -> tuple[Item, asyncio.Future[Result]] | None:
        """The next live entry; waits until ``deadline`` (None: forever)."""
        while True:
            while self._queue:
                entry = self._queue.popleft()
                if not entry[1].done():  # a cancelled caller's entry is dropped here
                    return entry
            self._not_empty.clear()
            if deadline is None:
                await self._not_empty.wait()
                continue
            remaining = deadline - self._clock()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._not_empty.wait(), remaining)

    async def _collect(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        first = await self._next(None)
        assert first is not None
        batch = [first]
        # A worker is idle: whatever is queued now goes (deadline already past).
        deadline = self._clock() + (0.0 if self._spare() else self.max_delay)
        while len(batch) < self.max_size:
            entry = await self._next(deadline)
            if entry is None:
                break
            batch.append(entry)
        return batch

    async def _dispatch_forever(self) -> None:
        while True:
            await self._wait_for_work()
            slot = await self._acquire()
            batch = await self._collect()
            task = asyncio.get_running_loop().create_task(self._run(slot, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _wait_for_work(self) -> None:
        while not self._queue:
            self._not_empty.clear()
            await self._not_empty.wait()

    async def _run(self, slot: Slot, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
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
