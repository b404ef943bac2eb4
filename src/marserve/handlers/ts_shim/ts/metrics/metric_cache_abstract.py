"""``ts.metrics.metric_cache_abstract``: marserve has one metrics cache, so this names it too."""

from marserve.handlers.metrics import MetricsCache as MetricCacheAbstract

__all__ = ["MetricCacheAbstract"]
