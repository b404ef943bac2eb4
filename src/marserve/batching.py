"""DynamicBatcher: groups queued requests into batches of up to ``max_size`` or ``max_delay``.

It knows nothing of HTTP or processes: ``acquire`` waits for a free slot (an idle worker) and
``run_batch`` runs a batch on it. A batch is formed only once a slot is free, so under load the
batches grow by themselves while a slot is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from marserve.errors import InternalError, MarserveError, QueueFull

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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._acquire = acquire
        self._run_batch = run_batch
        self.max_size = max_size
        self.max_delay = max(0.0, max_delay)
        self.queue_limit = queue_limit
        self._clock = clock
        self._queue: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._not_empty = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    @property
    def depth(self) -> int:
        """Requests waiting for a slot."""
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch running."""
        return not self._queue and not self._running

    def start(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch_forever())

    def submit(self, item: Item) -> asyncio.Future[Result]:
        """Queue an item; the future resolves to its result. Raises QueueFull at once."""
        if len(self._queue) >= self.queue_limit:
            raise QueueFull("Model queue is full, retry later", headers={"Retry-After": "1"})
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._not_empty.set()
        return future

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
        deadline = self._clock() + self.max_delay
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
