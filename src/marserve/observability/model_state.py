"""Model state as the metrics see it: snapshots handed over at scrape time, never the registry."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from marserve.workers.messages import BatchResult


@dataclass(frozen=True, slots=True)
class ModelSnapshot:
    """One model version's state at one moment: what the scrape-time gauges show."""

    name: str
    version: str
    queue_depth: int
    ready: bool
    restarts: int
    #: Workers by state name (every state present, zeros included), e.g. ``{"READY": 1}``.
    workers: Mapping[str, int] = field(default_factory=dict)
    #: ``(worker name, load seconds)`` of each live worker that finished loading.
    load_seconds: tuple[tuple[str, float], ...] = ()


class BatchObserver(Protocol):
    """Told how each batch of one model version went (``ModelMetrics`` has this shape)."""

    def observe_dispatch(self, waits: Sequence[float]) -> None: ...
    def observe_result(self, result: BatchResult, verb: str, roundtrip_s: float) -> None: ...


class ModelObserver(Protocol):
    """Told when a model version comes and goes; returns the series its batches report to."""

    def model_added(self, name: str, version: str) -> BatchObserver: ...
    def model_removed(self, name: str, version: str) -> None: ...


class ModelSource(Protocol):
    """Whatever holds the models (the registry): it tells, resolves names and takes snapshots."""

    def watch(self, observer: ModelObserver) -> None: ...
    def lookup(self, name: str, version: str | None) -> tuple[str, str] | None: ...
    def snapshots(self) -> Iterable[ModelSnapshot]: ...


class ModelState:
    """Gauges from the snapshots at scrape time: queues, readiness, workers, restarts."""

    def __init__(self, models: ModelSource) -> None:
        self.models = models

    def collect(self) -> Iterator[Metric]:
        pair = ["model", "version"]
        depth = GaugeMetricFamily(
            "marserve_queue_depth", "Requests waiting for a worker", labels=pair
        )
        ready = GaugeMetricFamily("marserve_model_ready", "1 when a worker is live", labels=pair)
        workers = GaugeMetricFamily(
            "marserve_workers", "Worker processes by state", labels=[*pair, "state"]
        )
        restarts = CounterMetricFamily(
            "marserve_worker_restarts", "Worker processes restarted after exiting", labels=pair
        )
        for snap in self.models.snapshots():
            values = [snap.name, snap.version]
            depth.add_metric(values, float(snap.queue_depth))
            ready.add_metric(values, 1.0 if snap.ready else 0.0)
            restarts.add_metric(values, float(snap.restarts))
            for state, count in snap.workers.items():
                workers.add_metric([*values, state.lower()], float(count))
        yield from (depth, ready, workers, restarts)


class WorkerLoadTimes:
    """TorchServe's ``WorkerLoadTime``: how long each live worker took to load its model (ms)."""

    def __init__(self, models: ModelSource, hostname: str) -> None:
        self.models = models
        self.hostname = hostname

    def collect(self) -> Iterator[Metric]:
        load = GaugeMetricFamily(
            "WorkerLoadTime",
            "Torchserve prometheus gauge metric with unit: Milliseconds",
            labels=["WorkerName", "Level", "Hostname"],
        )
        for snap in self.models.snapshots():
            for worker, seconds in snap.load_seconds:
                load.add_metric([worker, "Host", self.hostname], seconds * 1000.0)
        yield load
