"""``ts.metrics.metric_type_enum``: the MetricTypes enum, re-exported from marserve."""

from marserve.handlers.metrics import MetricTypes

__all__ = ["MetricTypes"]
