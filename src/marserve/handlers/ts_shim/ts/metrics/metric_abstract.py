"""``ts.metrics.metric_abstract``: marserve has one metric class, so this names it too."""

from marserve.handlers.metrics import CachingMetric as MetricAbstract

__all__ = ["MetricAbstract"]
