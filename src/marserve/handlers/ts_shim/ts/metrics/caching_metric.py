"""``ts.metrics.caching_metric``: one declared metric, re-exported from marserve."""

from marserve.handlers.metrics import CachingMetric

__all__ = ["CachingMetric"]
