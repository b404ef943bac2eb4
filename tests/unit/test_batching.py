"""DynamicBatcher: batch sizes, delays, queue limits, cancellation and failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest

from marserve.batching import LOAD_WINDOW_S, DynamicBatcher, QueueFull
from marserve.errors import InternalError, PayloadTooLarge, RequestTimeout


class Slots:
    """The batcher's ``Workers``: ``count`` workers with ``depth`` places each, recording every
    batch run on them; ``give_back`` frees a place and tells the batcher, as the pool does."""

    def __init__(self, count: int, delay: float = 0.0, depth: int = 1) -> None:
        self.count = count
        self.depth = depth
        self.free: asyncio.Queue[int] = asyncio.Queue()
        for _ in range(depth):
            for worker in range(count):
                self.free.put_nowait(worker)
        self.delay = delay
        self.batches: list[list[int]] = []
        self.on_free: Callable[[], None] = lambda: None
        self._room = asyncio.Event()

    async def wait_for_room(self) -> None:
        while self.free.empty():
            self._room.clear()
            await self._room.wait()

    async def acquire(self) -> int:
        return await self.free.get()

    def serving(self) -> int:
        return max(1, self.count)

    def idle(self) -> int:
        places = list(self.free._queue)  # type: ignore[attr-defined]
        return sum(1 for worker in set(places) if places.count(worker) == self.depth)

    def give_back(self, slot: int) -> None:
        self.free.put_nowait(slot)
        self._room.set()
        self.on_free()

    async def run(self, slot: int, items: list[int]) -> Sequence[int]:
        self.batches.append(list(items))
        try:
            await asyncio.sleep(self.delay)
            return [item * 10 for item in items]
        finally:
            self.give_back(slot)


def make(
    slots: Slots,
    run: Callable[[int, list[int]], Awaitable[Sequence[int]]] | None = None,
    **kwargs: float,
) -> DynamicBatcher[int, int, int]:
    """A started batcher over ``slots`` (``run`` instead of ``slots.run`` when given)."""
    options = {"max_size": 4, "max_delay": 0.05, "queue_limit": 100} | kwargs
    batcher: DynamicBatcher[int, int, int] = DynamicBatcher(
        slots,
        run or slots.run,
        max_size=int(options["max_size"]),
        max_delay=options["max_delay"],
        queue_limit=int(options["queue_limit"]),
    )
    slots.on_free = batcher.wake
    batcher.start()
    return batcher


def test_every_caller_gets_its_own_result_and_batches_are_bounded() -> None:
    async def scenario() -> None:
        slots = Slots(1, delay=0.01)
        batcher = make(slots, max_size=4)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        assert results == [i * 10 for i in range(10)]
        assert all(1 <= len(batch) <= 4 for batch in slots.batches)
        assert sorted(i for batch in slots.batches for i in batch) == list(range(10))
        assert max(len(batch) for batch in slots.batches) == 4
        await batcher.stop()

    asyncio.run(scenario())


def test_batch_size_one_never_groups() -> None:
    async def scenario() -> None:
        slots = Slots(2)
        batcher = make(slots, max_size=1)
        await asyncio.gather(*(batcher.submit(i) for i in range(6)))
        assert [len(b) for b in slots.batches] == [1] * 6
        await batcher.stop()

    asyncio.run(scenario())


def test_max_delay_sends_a_partial_batch_for_a_busy_worker() -> None:
    async def scenario() -> None:
        slots = Slots(1, delay=0.3, depth=2)
        batcher = make(slots, max_size=8, max_delay=0.05)
        loop = asyncio.get_running_loop()
        first = batcher.submit(0)  # the idle worker takes it at once
        await asyncio.sleep(0.01)
        started = loop.time()
        second = batcher.submit(1)  # the worker is busy: this one waits to fill, then goes
        while len(slots.batches) < 2:
            await asyncio.sleep(0.005)
        elapsed = loop.time() - started
        assert slots.batches == [[0], [1]]
        assert 0.04 <= elapsed < 0.25
        assert await asyncio.gather(first, second) == [0, 10]
        await batcher.stop()

    asyncio.run(scenario())


def test_a_lone_caller_does_not_wait_for_company() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        batcher = make(slots, max_size=8, max_delay=0.5)
        loop = asyncio.get_running_loop()
        for item in range(3):
            started = loop.time()
            assert await batcher.submit(item) == item * 10
            assert loop.time() - started < 0.4  # not held for max_delay
        assert slots.batches == [[0], [1], [2]]
        await batcher.stop()

    asyncio.run(scenario())


def test_eight_callers_and_two_idle_workers_run_two_batches_of_four() -> None:
    async def scenario() -> None:
        slots = Slots(2, delay=0.05)
        batcher = make(slots, max_size=8, max_delay=0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await asyncio.gather(*(batcher.submit(i) for i in range(8))) == [
            i * 10 for i in range(8)
        ]
        assert slots.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]
        assert loop.time() - started < 0.4  # side by side, neither waited to fill
        await batcher.stop()

    asyncio.run(scenario())


def test_rows_queued_behind_a_busy_worker_wait_to_fill_one_batch() -> None:
    async def scenario() -> None:
        slots = Slots(1, delay=0.1)
        batcher = make(slots, max_size=8, max_delay=0.05)
        first = batcher.submit(0)
        await asyncio.sleep(0.01)  # [0] runs; the worker is busy
        rest = [batcher.submit(i) for i in range(1, 4)]
        await asyncio.sleep(0.01)
        later = batcher.submit(4)
        assert await asyncio.gather(first, *rest, later) == [0, 10, 20, 30, 40]
        assert slots.batches == [[0], [1, 2, 3, 4]]
        await batcher.stop()

    asyncio.run(scenario())


def test_a_forming_batch_with_a_fair_share_goes_when_a_worker_is_freed() -> None:
    async def scenario() -> None:
        slots = Slots(2, delay=0.1, depth=2)
        batcher = make(slots, max_size=8, max_delay=2.0)
        loop = asyncio.get_running_loop()
        running = [batcher.submit(0), batcher.submit(1)]  # one each: both workers busy
        await asyncio.sleep(0.02)
        started = loop.time()
        waiting = [batcher.submit(i) for i in range(2, 5)]  # 5 in the server: a share is 3
        assert await asyncio.gather(*running, *waiting) == [0, 10, 20, 30, 40]
        assert slots.batches == [[0], [1], [2, 3, 4]]
        assert loop.time() - started < 1.0  # went when a worker was freed, not at max_delay
        await batcher.stop()

    asyncio.run(scenario())


def test_below_a_fair_share_a_batch_for_an_idle_worker_waits_up_to_max_delay() -> None:
    async def scenario() -> None:
        slots = Slots(1, delay=0.05)
        batcher = make(slots, max_size=8, max_delay=0.2)
        loop = asyncio.get_running_loop()
        assert await asyncio.gather(*(batcher.submit(i) for i in range(4))) == [0, 10, 20, 30]
        started = loop.time()
        assert await batcher.submit(4) == 40  # four were in the server a moment ago
        assert 0.15 <= loop.time() - started < 1.0
        assert slots.batches == [[0, 1, 2, 3], [4]]
        await batcher.stop()

    asyncio.run(scenario())


def test_full_queue_rejects_at_once_with_retry_after() -> None:
    async def scenario() -> None:
        slots = Slots(0)  # no free slot: everything stays queued
        batcher = make(slots, queue_limit=3)
        futures = [batcher.submit(i) for i in range(3)]
        with pytest.raises(QueueFull) as caught:
            batcher.submit(99)
        assert caught.value.http_status == 503
        assert caught.value.headers["Retry-After"] == "1"
        slots.give_back(0)
        assert await asyncio.gather(*futures) == [0, 10, 20]
        await batcher.stop()

    asyncio.run(scenario())


def test_cancelled_callers_are_not_sent_to_the_handler() -> None:
    async def scenario() -> None:
        slots = Slots(0)
        batcher = make(slots, max_size=4, max_delay=0.0)
        gone = batcher.submit(1)
        kept = batcher.submit(2)
        gone.cancel()
        slots.give_back(0)
        assert await kept == 20
        assert slots.batches == [[2]]
        await batcher.stop()

    asyncio.run(scenario())


def test_wrong_number_of_results_fails_the_whole_batch() -> None:
    async def scenario() -> None:
        slots = Slots(1)

        async def run(slot: int, items: list[int]) -> Sequence[int]:
            slots.give_back(slot)
            return [1]

        batcher = make(slots, run, max_size=3, max_delay=0.05, queue_limit=10)
        outcomes = await asyncio.gather(
            *(batcher.submit(i) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(o, InternalError) for o in outcomes)
        assert "3" in str(outcomes[0])
        await batcher.stop()

    asyncio.run(scenario())


def test_a_batch_error_reaches_every_caller_and_the_next_batch_runs() -> None:
    async def scenario() -> None:
        calls = 0
        slots = Slots(1)

        async def run(slot: int, items: list[int]) -> Sequence[int]:
            nonlocal calls
            calls += 1
            slots.give_back(slot)
            if calls == 1:
                raise RequestTimeout("too slow")
            return items

        batcher = make(slots, run, max_size=2, max_delay=0.05, queue_limit=10)
        first = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        assert all(isinstance(o, RequestTimeout) for o in first)
        assert await batcher.submit(3) == 3
        await batcher.stop()

    asyncio.run(scenario())


def test_fail_pending_answers_queued_callers() -> None:
    async def scenario() -> None:
        slots = Slots(0)
        batcher = make(slots)
        futures = [batcher.submit(i) for i in range(2)]
        batcher.fail_pending(RequestTimeout("stopping"))
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(o, RequestTimeout) for o in outcomes)
        await batcher.stop()

    asyncio.run(scenario())


def test_a_request_whose_rows_can_never_fit_is_refused_413_and_queues_nothing() -> None:
    async def scenario() -> None:
        slots = Slots(0)  # no slot: nothing leaves the queue
        batcher = make(slots, queue_limit=10)
        with pytest.raises(PayloadTooLarge) as refused:
            batcher.submit_all(list(range(11)))
        assert refused.value.http_status == 413
        assert "jobQueueSize" in refused.value.message and "11" in refused.value.message
        assert batcher.depth == 0
        await batcher.stop()

    asyncio.run(scenario())


def test_a_request_that_could_fit_later_gets_503_retry_after_and_queues_nothing() -> None:
    async def scenario() -> None:
        slots = Slots(0)
        batcher = make(slots, queue_limit=10)
        first = batcher.submit_all(list(range(6)))
        with pytest.raises(QueueFull) as refused:
            batcher.submit_all(list(range(5)))
        assert refused.value.http_status == 503
        assert refused.value.headers == {"Retry-After": "1"}
        assert batcher.depth == 6
        batcher.withdraw(first)
        assert batcher.depth == 0
        await batcher.stop()

    asyncio.run(scenario())


def test_withdrawn_rows_never_run_and_leave_no_unretrieved_errors() -> None:
    async def scenario() -> None:
        seen: list[dict[str, object]] = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        ran: list[list[int]] = []
        gate = asyncio.Event()

        async def run(slot: int, items: list[int]) -> Sequence[int]:
            ran.append(list(items))
            await gate.wait()
            raise RequestTimeout("the batch failed")

        slots = Slots(1)
        batcher = make(slots, run, max_size=2, max_delay=0.0, queue_limit=100)
        futures = batcher.submit_all(list(range(6)))
        while not ran:
            await asyncio.sleep(0.005)
        gate.set()
        with pytest.raises(RequestTimeout):
            await asyncio.gather(*futures)
        batcher.withdraw(futures)
        assert batcher.depth == 0
        await asyncio.sleep(0.05)
        assert ran == [[0, 1]]  # the rest of the request left the queue with it
        del futures
        import gc

        gc.collect()
        await asyncio.sleep(0)
        assert not [c for c in seen if "never retrieved" in str(c.get("message"))]
        await batcher.stop()

    asyncio.run(scenario())


def test_held_places_count_against_the_queue_until_released() -> None:
    async def scenario() -> None:
        slots = Slots(0)
        batcher = make(slots, queue_limit=10)
        batcher.hold(8)  # a request waiting for a restarting worker
        assert batcher.depth == 8
        with pytest.raises(QueueFull):
            batcher.submit_all(list(range(3)))
        with pytest.raises(PayloadTooLarge):
            batcher.hold(11)
        batcher.release(8)
        futures = batcher.submit_all(list(range(8)))
        assert batcher.depth == 8
        batcher.withdraw(futures)
        await batcher.stop()

    asyncio.run(scenario())


def test_the_fair_share_follows_the_traffic_of_the_last_windows() -> None:
    async def scenario() -> None:
        now = [100.0]
        batcher: DynamicBatcher[int, int, int] = DynamicBatcher(
            Slots(2), Slots(2).run, max_size=8, max_delay=0.05, queue_limit=100,
            clock=lambda: now[0],
        )  # fmt: skip
        assert batcher.fair_share() == 1  # no traffic yet
        futures = batcher.submit_all(list(range(12)))
        assert batcher.fair_share() == 6  # twelve rows over two workers
        batcher.withdraw(futures)
        now[0] += LOAD_WINDOW_S
        assert batcher.fair_share() == 6  # the last window still counts
        now[0] += LOAD_WINDOW_S
        assert batcher.fair_share() == 1  # two quiet windows: a caller goes alone again
        batcher.submit_all(list(range(40)))
        assert batcher.fair_share() == 8  # never above max_size

    asyncio.run(scenario())
