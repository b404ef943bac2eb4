"""Breaker and hold-queue admission: limits, 503/504 rejections, nothing lost."""

from __future__ import annotations

import asyncio

import pytest

from marserve.controlplane.breaker import Breaker, HoldQueue, Rejected


async def _fill(breaker: Breaker, n: int, gate: asyncio.Event) -> list[asyncio.Task[str]]:
    async def one() -> str:
        async with breaker.admit():
            await gate.wait()
            return "ok"

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    await asyncio.sleep(0.01)
    return tasks


@pytest.mark.parametrize("cc", [1, 2, 3])
def test_breaker_admits_cc_queues_10x_then_503(cc: int) -> None:
    async def main() -> None:
        breaker = Breaker(cc)
        gate = asyncio.Event()
        tasks = await _fill(breaker, cc + 10 * cc, gate)
        assert breaker.in_flight == cc
        assert breaker.waiting == 10 * cc
        with pytest.raises(Rejected) as err:
            async with breaker.admit():
                pass
        assert (err.value.status, err.value.message) == (503, "pending request queue full")
        gate.set()
        assert await asyncio.gather(*tasks) == ["ok"] * (11 * cc)
        assert breaker.in_flight == breaker.waiting == 0

    asyncio.run(main())


def test_breaker_zero_is_unlimited() -> None:
    async def main() -> None:
        breaker = Breaker(0)
        gate = asyncio.Event()
        tasks = await _fill(breaker, 500, gate)
        assert breaker.in_flight == 500
        gate.set()
        assert len(await asyncio.gather(*tasks)) == 500

    asyncio.run(main())


def test_breaker_rejects_negative() -> None:
    with pytest.raises(ValueError, match="containerConcurrency"):
        Breaker(-1)


def test_hold_queue_releases_all_when_ready() -> None:
    async def main() -> None:
        q = HoldQueue(depth=5, timeout_s=5)
        tasks = [asyncio.create_task(q.wait_ready()) for _ in range(5)]
        await asyncio.sleep(0.01)
        assert q.held == 5
        with pytest.raises(Rejected) as err:
            await q.wait_ready()
        assert err.value.status == 503
        q.set_ready(True)
        await asyncio.gather(*tasks)
        assert q.held == 0
        await q.wait_ready()

    asyncio.run(main())


def test_hold_queue_timeout_is_504() -> None:
    async def main() -> None:
        q = HoldQueue(depth=5, timeout_s=0.05)
        with pytest.raises(Rejected) as err:
            await q.wait_ready()
        assert err.value.status == 504
        assert q.held == 0

    asyncio.run(main())
