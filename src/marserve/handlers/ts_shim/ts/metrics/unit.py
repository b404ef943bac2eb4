"""``ts.metrics.unit``: TorchServe's unit names, re-exported from marserve."""

from marserve.handlers.metrics import Units

__all__ = ["Units"]
