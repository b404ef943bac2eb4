"""DynamicBatcher: batch sizes, delays, queue limits, cancellation and failures."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from marserve.batching import DynamicBatcher, QueueFull
from marserve.errors import InternalError, PayloadTooLarge, RequestTimeout


class Slots:
    """``count`` interchangeable slots, recording every batch run on them."""

    def __init__(self, count: int, delay: float = 0.0) -> None:
        self.free: asyncio.Queue[int] = asyncio.Queue()
        for index in range(count):
            self.free.put_nowait(index)
        self.delay = delay
        self.batches: list[list[int]] = []

    async def acquire(self) -> int:
        return await self.free.get()

    async def run(self, slot: int, items: list[int]) -> Sequence[int]:
        self.batches.append(list(items))
        try:
            await asyncio.sleep(self.delay)
            return [item * 10 for item in items]
        finally:
            self.free.put_nowait(slot)


def make(slots: Slots, spare: bool = False, **kwargs: float) -> DynamicBatcher[int, int, int]:
    """A batcher over ``slots``; with ``spare`` it is told when another slot is free."""
    options = {"max_size": 4, "max_delay": 0.05, "queue_limit": 100} | kwargs
    batcher: DynamicBatcher[int, int, int] = DynamicBatcher(
        slots.acquire,
        slots.run,
        max_size=int(options["max_size"]),
        max_delay=options["max_delay"],
        queue_limit=int(options["queue_limit"]),
        spare=(lambda: not slots.free.empty()) if spare else (lambda: False),
    )
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


def test_max_delay_sends_a_partial_batch() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        batcher = make(slots, max_size=8, max_delay=0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await batcher.submit(7) == 70
        elapsed = loop.time() - started
        assert slots.batches == [[7]]
        assert 0.04 <= elapsed < 1.0
        await batcher.stop()

    asyncio.run(scenario())


def test_a_partial_batch_goes_at_once_while_another_slot_is_free() -> None:
    async def scenario() -> None:
        slots = Slots(2, delay=0.2)
        batcher = make(slots, spare=True, max_size=8, max_delay=0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = batcher.submit(1)
        await asyncio.sleep(0.02)  # the first slot took [1] without waiting to fill
        rest = [batcher.submit(i) for i in range(2, 6)]
        assert await first == 10
        assert loop.time() - started < 0.45  # not held for max_delay
        assert await asyncio.gather(*rest) == [20, 30, 40, 50]
        # The last free slot waited to fill: the four later rows ran as one batch.
        assert slots.batches == [[1], [2, 3, 4, 5]]
        await batcher.stop()

    asyncio.run(scenario())


def test_the_last_free_slot_waits_max_delay_to_fill() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        batcher = make(slots, spare=True, max_size=8, max_delay=0.05)
        first = batcher.submit(1)
        await asyncio.sleep(0.01)
        second = batcher.submit(2)
        assert await asyncio.gather(first, second) == [10, 20]
        assert slots.batches == [[1, 2]]
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
        slots.free.put_nowait(0)
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
        slots.free.put_nowait(0)
        assert await kept == 20
        assert slots.batches == [[2]]
        await batcher.stop()

    asyncio.run(scenario())


def test_wrong_number_of_results_fails_the_whole_batch() -> None:
    async def scenario() -> None:
        async def acquire() -> int:
            return 0

        async def run(slot: int, items: list[int]) -> Sequence[int]:
            return [1]

        batcher: DynamicBatcher[int, int, int] = DynamicBatcher(
            acquire, run, max_size=3, max_delay=0.05, queue_limit=10
        )
        batcher.start()
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

        async def acquire() -> int:
            return 0

        async def run(slot: int, items: list[int]) -> Sequence[int]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RequestTimeout("too slow")
            return items

        batcher: DynamicBatcher[int, int, int] = DynamicBatcher(
            acquire, run, max_size=2, max_delay=0.05, queue_limit=10
        )
        batcher.start()
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
        batcher: DynamicBatcher[int, int, int] = DynamicBatcher(
            slots.acquire, run, max_size=2, max_delay=0.0, queue_limit=100
        )
        batcher.start()
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
