"""The ``timed`` decorator handlers put on their steps (TorchServe's ``ts.handler_utils.timer``)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def timed(func: F) -> F:
    """Time a handler method; the duration goes to ``self.context.metrics`` when it has one.

    The metric is ``ts_handler_<method name>`` in milliseconds. Without a metrics object (or a
    context) the method simply runs.
    """

    @functools.wraps(func)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = func(self, *args, **kwargs)
        context = getattr(self, "context", None)
        add_time = getattr(getattr(context, "metrics", None), "add_time", None)
        if callable(add_time):
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            add_time(f"ts_handler_{func.__name__}", round(elapsed_ms, 2), None, "ms")
        return result

    return wrapper  # type: ignore[return-value]
