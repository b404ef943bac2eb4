"""``ts.metrics.metric_cache_yaml_impl``: the metrics cache handlers get as ``context.metrics``."""

from marserve.handlers.metrics import MetricsCache as MetricsCacheYamlImpl

__all__ = ["MetricsCacheYamlImpl"]
