"""A deadline on one await without a new Task (``asyncio.wait_for`` makes one on Python 3.11)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """Await ``awaitable`` in the current task; TimeoutError once ``seconds`` have passed."""
    if seconds is None:
        return await awaitable
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    handle = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if expired:
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+: clear our cancel
            if uncancel is not None:
                uncancel()
            raise TimeoutError from None
        raise
    finally:
        handle.cancel()
