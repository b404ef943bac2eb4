"""``ts.metrics.dimension``: the Dimension class, re-exported from marserve."""

from marserve.handlers.metrics import Dimension

__all__ = ["Dimension"]
