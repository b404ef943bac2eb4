"""WorkerPool waits: a request waits for a worker on its way, never for one that is not coming."""

from __future__ import annotations

import asyncio
import itertools
import time

from marserve.workers.messages import LoadModel
from marserve.workers.pool import PoolConfig, Worker, WorkerPool, WorkerState, _Slot

LOAD = LoadModel("m", "1.0", "/nowhere", {}, "handler", 1, 0, 1)


def _pool() -> WorkerPool:
    return WorkerPool(LOAD, PoolConfig(1, 1, 5.0, 5.0), itertools.count().__next__)


def _slot(pool: WorkerPool, state: WorkerState, restart_in: float | None = None) -> Worker:
    worker = Worker(LOAD, 5.0)
    worker.state = state
    worker.on_free = pool._freed
    slot = _Slot(worker=worker)
    if restart_in is not None:
        slot.restart_at = time.monotonic() + restart_in
    pool._slots.append(slot)
    pool.workers.append(worker)
    return worker


def test_a_loading_worker_is_waited_for() -> None:
    async def scenario() -> None:
        pool = _pool()
        worker = _slot(pool, WorkerState.STARTING)
        asyncio.get_running_loop().call_later(0.1, setattr, worker, "state", WorkerState.READY)
        started = time.monotonic()
        assert await pool.wait_live(5.0) is True
        assert 0.05 < time.monotonic() - started < 2.0

    asyncio.run(scenario())


def test_nothing_to_wait_for_answers_at_once() -> None:
    async def scenario() -> None:
        empty = _pool()  # scaled to zero: no slot
        failed = _pool()
        _slot(failed, WorkerState.DEAD, restart_in=1.0)
        failed.last_error = "the handler cannot be imported"
        later = _pool()
        _slot(later, WorkerState.DEAD, restart_in=30.0)  # backoff longer than the timeout
        draining = _pool()
        _slot(draining, WorkerState.STARTING)
        started = time.monotonic()
        assert await empty.wait_live(5.0) is False
        assert await failed.wait_live(5.0) is False
        assert await later.wait_live(5.0) is False
        assert await draining.wait_live(5.0, lambda: True) is False
        assert time.monotonic() - started < 1.0

    asyncio.run(scenario())


def test_a_crashed_worker_due_to_restart_soon_is_waited_for_up_to_the_timeout() -> None:
    async def scenario() -> None:
        pool = _pool()
        _slot(pool, WorkerState.DEAD, restart_in=0.0)
        started = time.monotonic()
        assert await pool.wait_live(0.3) is False  # its successor never came
        assert time.monotonic() - started >= 0.3

    asyncio.run(scenario())


def test_scale_down_retires_a_starting_worker_before_a_ready_one() -> None:
    pool = _pool()
    ready = _slot(pool, WorkerState.READY)
    _slot(pool, WorkerState.STARTING)
    assert pool._victim().worker is not ready
    pool._slots.reverse()
    assert pool._victim().worker is not ready


def test_a_worker_with_a_batch_in_flight_has_room_but_is_not_idle() -> None:
    async def scenario() -> None:
        pool = _pool()
        first, second = _slot(pool, WorkerState.READY), _slot(pool, WorkerState.READY)
        assert (pool.serving(), pool.idle()) == (2, 2)
        assert await pool.acquire() is first  # the least busy one
        assert pool.idle() == 1  # the second is idle still
        assert await pool.acquire() is second
        assert pool.idle() == 0  # each has a batch: the next one waits to fill
        await asyncio.wait_for(pool.wait_for_room(), 1.0)  # ... in a worker's second place
        assert await pool.acquire() is first
        assert await pool.acquire() is second
        room = asyncio.ensure_future(pool.wait_for_room())
        await asyncio.sleep(0.01)
        assert not room.done()  # two places each, all taken
        freed: list[str] = []
        pool.on_freed(lambda: freed.append("freed"))
        first.reserved -= 1
        first.on_free()  # the worker answered a batch
        await asyncio.wait_for(room, 1.0)
        assert freed == ["freed"] and pool.idle() == 0

    asyncio.run(scenario())
