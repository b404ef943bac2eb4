"""Handler-recorded metrics (``context.metrics``) from every worker, exposed in TorchServe's shape.

Each family is fixed by its first value (kind, unit, dimension names); workers of a model add to
the same counters, set the same gauges and observe into the same histograms. Names and label
names are made valid for Prometheus, ``Hostname`` is added as TorchServe's backend does, and the
number of families and series is capped so that a handler cannot grow the scrape without bound.
Counters keep their exact name (no ``_total``), as TorchServe exposes them: untyped families to
prometheus_client, written as counters in TorchServe's text form (see ``torchserve_text``).
"""

from __future__ import annotations

import bisect
import logging
import math
import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, UnknownMetricFamily
from prometheus_client.metrics_core import Metric

from marserve.workers.messages import MetricRecord

log = logging.getLogger("marserve.metrics")

MAX_FAMILIES = 200
MAX_SERIES_PER_FAMILY = 1000
KINDS = ("counter", "gauge", "histogram")

_MS_BUCKETS = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0)
_S_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_GENERIC_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 10000.0)
_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(raw: str) -> str:
    """A valid Prometheus metric name for ``raw`` (invalid characters become ``_``)."""
    name = _INVALID_NAME.sub("_", raw) or "_"
    return "_" + name if name[0].isdigit() else name


def label_name(raw: str) -> str:
    name = _INVALID_LABEL.sub("_", raw) or "_"
    if name[0].isdigit():
        name = "_" + name
    return "x" + name if name.startswith("__") else name


def buckets_for(unit: str) -> tuple[float, ...]:
    if unit in ("Milliseconds", "ms"):
        return _MS_BUCKETS
    if unit in ("Seconds", "s"):
        return _S_BUCKETS
    return _GENERIC_BUCKETS


@dataclass(slots=True)
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int]
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running, out = 0, []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == math.inf else repr(bound), float(running)))
        return out


@dataclass(slots=True)
class _Family:
    name: str
    kind: str
    unit: str
    dimension_names: tuple[str, ...]  # as the handler named them
    label_names: tuple[str, ...]  # sanitised, with Hostname
    add_host: bool  # Hostname is not one of the handler's dimensions: marserve adds it
    values: dict[tuple[str, ...], float] = field(default_factory=dict)
    histograms: dict[tuple[str, ...], _Histogram] = field(default_factory=dict)

    @property
    def series(self) -> int:
        return len(self.values) + len(self.histograms)


class HandlerMetrics:
    """A Prometheus collector over the values handlers record."""

    def __init__(
        self,
        hostname: str,
        reserved: Collection[str] = (),
        *,
        max_families: int = MAX_FAMILIES,
        max_series: int = MAX_SERIES_PER_FAMILY,
    ) -> None:
        self.hostname = hostname
        self.reserved = frozenset(reserved)
        self.max_families = max_families
        self.max_series = max_series
        self._families: dict[str, _Family] = {}
        self._warned: set[str] = set()

    def apply(self, records: Iterable[MetricRecord]) -> int:
        """Apply a batch's records; returns how many were dropped (each drop is logged once)."""
        dropped = 0
        for record in records:
            if not self._apply_one(record):
                dropped += 1
        return dropped

    def _apply_one(self, record: MetricRecord) -> bool:
        family = self._family(record)
        if family is None:
            return False
        key = tuple(value for _, value in record.dimensions)
        if family.add_host:
            key += (self.hostname,)
        if family.kind == "histogram":
            return self._observe(family, key, record.value)
        if key not in family.values and family.series >= self.max_series:
            return self._refuse(family.name, f"more than {self.max_series} series")
        if family.kind == "counter":
            if record.value < 0:
                return self._refuse(family.name, "a counter cannot decrease")
            family.values[key] = family.values.get(key, 0.0) + record.value
        else:
            family.values[key] = record.value
        return True

    def _observe(self, family: _Family, key: tuple[str, ...], value: float) -> bool:
        histogram = family.histograms.get(key)
        if histogram is None:
            if family.series >= self.max_series:
                return self._refuse(family.name, f"more than {self.max_series} series")
            bounds = buckets_for(family.unit)
            histogram = _Histogram(bounds, [0] * (len(bounds) + 1))
            family.histograms[key] = histogram
        histogram.observe(value)
        return True

    def _family(self, record: MetricRecord) -> _Family | None:
        name = metric_name(record.name)
        dimension_names = tuple(d for d, _ in record.dimensions)
        family = self._families.get(name)
        if family is None:
            if record.kind not in KINDS:
                return self._none(name, f"unknown metric type {record.kind!r}")
            if name in self.reserved:
                return self._none(name, "the name belongs to one of marserve's own metrics")
            if len(self._families) >= self.max_families:
                return self._none(name, f"more than {self.max_families} handler metrics")
            labels = [label_name(d) for d in dimension_names]
            add_host = "Hostname" not in labels
            if add_host:
                labels.append("Hostname")
            if len(set(labels)) != len(labels):
                return self._none(name, "two dimensions have the same name")
            family = _Family(
                name, record.kind, record.unit, dimension_names, tuple(labels), add_host
            )
            self._families[name] = family
            return family
        if family.kind != record.kind or family.dimension_names != dimension_names:
            return self._none(
                name,
                f"first recorded as a {family.kind} with dimensions {list(family.dimension_names)}",
            )
        return family

    def _refuse(self, name: str, why: str) -> bool:
        if name not in self._warned:
            self._warned.add(name)
            log.warning("handler metric %s dropped: %s", name, why)
        return False

    def _none(self, name: str, why: str) -> _Family | None:
        self._refuse(name, why)
        return None

    def names(self) -> list[str]:
        """The families handlers have recorded so far."""
        return list(self._families)

    def collect(self) -> Iterator[Metric]:
        for family in list(self._families.values()):
            doc = f"Torchserve prometheus {family.kind} metric with unit: {family.unit or 'unit'}"
            labels = list(family.label_names)
            if family.kind == "histogram":
                histogram = HistogramMetricFamily(family.name, doc, labels=labels)
                for key, h in family.histograms.items():
                    histogram.add_metric(list(key), h.cumulative(), h.total)
                yield histogram
                continue
            metric: GaugeMetricFamily | UnknownMetricFamily
            if family.kind == "gauge":
                metric = GaugeMetricFamily(family.name, doc, labels=labels)
            else:
                metric = UnknownMetricFamily(family.name, doc, labels=labels)
            for key, value in family.values.items():
                metric.add_metric(list(key), value)
            yield metric
