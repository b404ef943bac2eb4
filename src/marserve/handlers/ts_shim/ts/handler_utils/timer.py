"""``ts.handler_utils.timer``: the ``timed`` decorator, re-exported from marserve."""

from marserve.handlers.timing import timed

__all__ = ["timed"]
