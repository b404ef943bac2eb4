"""Every metric marserve exports, declared once on an injected Prometheus registry.

``ServerMetrics`` is built by the Server (one per process, on its own ``CollectorRegistry``) and
handed to whatever measures: the REST observer, the gRPC adapter (``observe_request``) and each
model's batch path (``ModelMetrics``, handed to the model source when it tells of a new model).
Metrics never reach into the registry: it tells them (``model_added``/``model_removed``), resolves
request names (``lookup``) and hands over state snapshots at scrape time (``snapshots``). Workers
send their measurements with every ``BatchResult``; only the front process holds metrics.

Families, by origin:

- marserve: ``marserve_requests_total`` and ``marserve_request_duration_seconds`` (model,
  version, protocol, verb, status), ``marserve_queue_wait_seconds``, ``marserve_batch_size``,
  ``marserve_queue_depth``, ``marserve_model_ready``, ``marserve_workers`` (by state),
  ``marserve_worker_restarts_total``, ``marserve_rejected_requests_total`` (reason),
  ``marserve_cancelled_requests_total`` (model, version, protocol),
  ``marserve_handler_metrics_dropped_total``.
- KServe: ``request_{preprocess,predict,postprocess,explain}_seconds`` (model_name), per batch.
- TorchServe: ``Requests2XX/4XX/5XX``, ``ts_inference_requests_total``,
  ``ts_inference_latency_microseconds``, ``ts_queue_latency_microseconds``, ``QueueTime``,
  ``WorkerThreadTime``, ``WorkerLoadTime``, host gauges, and the handlers' own metrics
  (``HandlerTime``, ``PredictionTime``, anything from ``context.metrics``). The text format
  writes these as TorchServe does (``torchserve_text``: declared label order, trailing comma,
  counters typed ``counter`` under their exact names); its ``ts_*`` series outlive an
  unregistered model, as TorchServe's do.

Labels never carry request ids or free text: a request for a model that is not loaded is
counted under ``model=""``, and a status outside 100-599 as ``status="other"``.
"""

from __future__ import annotations

import socket
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, UnknownMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from marserve.errors import QueueFull, RequestTimeout
from marserve.observability.custom_metrics import HandlerMetrics
from marserve.observability.model_state import ModelSource, ModelState, WorkerLoadTimes
from marserve.observability.system_metrics import GPU_FAMILIES, SystemMetrics
from marserve.observability.torchserve_text import help_text, render
from marserve.status import ErrorCode, status_of
from marserve.workers.messages import BatchResult

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
PROTOCOLS = ("torchserve", "v1", "v2", "grpc")
VERBS = ("predict", "explain")
UNKNOWN_MODEL = ""
# KServe's histogram names, by the handler phase the worker times.
KSERVE_PHASES = {"preprocess": "preprocess", "inference": "predict", "postprocess": "postprocess"}
# TorchServe's default model metrics: recorded by every worker, so always exportable.
HANDLER_DEFAULTS = ("HandlerTime", "PredictionTime")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
_REQUEST_LABELS = ("model", "version", "protocol", "verb", "status")
# The client went away first (499, nginx's code), as REST and gRPC both report it.
CANCELLED_STATUS = status_of(ErrorCode.CANCELLED).http


_REJECTED = {401: "auth", 403: "auth", 413: "too_large", 429: "throttled", 503: "unavailable"}


def rejection_reason(status: int, error: BaseException | None = None) -> str | None:
    """Why a request was refused before or instead of running, or None when it was not."""
    if isinstance(error, QueueFull):
        return "queue_full"
    if isinstance(error, RequestTimeout) or status == 504:
        return "timeout"
    return _REJECTED.get(status)


def status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else "other"


def sample_names(families: dict[str, str]) -> frozenset[str]:
    """The sample names families (name -> type) appear under in the text format."""
    return frozenset(
        name + suffix for name, kind in families.items() for suffix in _SUFFIXES.get(kind, ("",))
    )


class ModelMetrics:
    """One model version's series, with their label children resolved once."""

    def __init__(self, server: ServerMetrics, name: str, version: str) -> None:
        self.name = name
        self.version = version
        self._server = server
        self._requests: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._rejected: dict[str, Any] = {}
        self.ts = server.compat.series(name, version)
        self._cancelled: dict[str, Any] = {}
        if name:
            self._queue_wait = server.queue_wait.labels(name, version)
            self._batch_size = server.batch_size.labels(name, version)
            self._phases = {phase: h.labels(name) for phase, h in server.phases.items()}
            self._dropped = server.handler_metrics_dropped.labels(name, version)

    def observe_request(self, protocol: str, verb: str, status: int, seconds: float) -> None:
        key = (protocol, verb, status)
        children = self._requests.get(key)
        if children is None:
            values = (self.name, self.version, protocol, verb, status_label(status))
            server = self._server
            children = (server.requests.labels(*values), server.request_duration.labels(*values))
            self._requests[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if 200 <= status < 300 and self.name:
            self.ts.requests += 1
            self.ts.latency_us += seconds * 1e6

    def reject(self, reason: str) -> None:
        child = self._rejected.get(reason)
        if child is None:
            child = self._rejected[reason] = self._server.rejected.labels(self.name, reason)
        child.inc()

    def cancel(self, protocol: str) -> None:
        """The client went away before its answer (HTTP disconnect, gRPC cancel or deadline)."""
        child = self._cancelled.get(protocol)
        if child is None:
            labels = (self.name, self.version, protocol)
            child = self._cancelled[protocol] = self._server.cancelled.labels(*labels)
        child.inc()

    def observe_dispatch(self, waits: Sequence[float]) -> None:
        """A batch leaves the queue: each request's wait in seconds, and the batch size."""
        if not self.name or not waits:
            return
        self._batch_size.observe(len(waits))
        total = 0.0
        for wait in waits:
            self._queue_wait.observe(wait)
            total += wait
        self.ts.queue_us += total * 1e6
        self._server.compat.queue_time_ms = waits[-1] * 1000.0

    def observe_result(self, result: BatchResult, verb: str, roundtrip_s: float) -> None:
        """A worker answered a batch: its phase timings and handler metrics."""
        if not self.name:
            return
        timings = result.timings
        handle = timings.get("handle")
        if handle is not None:
            self._server.compat.worker_thread_ms = max(0.0, roundtrip_s - handle) * 1000.0
        measured = False
        for phase, kserve in KSERVE_PHASES.items():
            seconds = timings.get(phase)
            if seconds is not None and (kserve != "predict" or verb != "explain"):
                self._phases[kserve].observe(seconds)
                measured = True
        if handle is not None and verb == "explain":
            self._phases["explain"].observe(handle)
        elif handle is not None and not measured:  # a function handler: no phases to time
            self._phases["predict"].observe(handle)
        if result.metrics:
            dropped = self._server.handler.apply(result.metrics)
            if dropped:
                self._dropped.inc(dropped)

    def forget(self) -> None:
        """Remove this model version's labelled series (the model was unregistered).

        TorchServe's ``ts_*`` series stay, as TorchServe keeps them, and count on when the
        version is registered again."""
        server = self._server
        for protocol, verb, status in self._requests:
            values = (self.name, self.version, protocol, verb, status_label(status))
            server.requests.remove(*values)
            server.request_duration.remove(*values)
        for reason in self._rejected:
            server.rejected.remove(self.name, reason)
        for protocol in self._cancelled:
            server.cancelled.remove(self.name, self.version, protocol)
        if self.name:
            for metric in (server.queue_wait, server.batch_size, server.handler_metrics_dropped):
                metric.remove(self.name, self.version)


@dataclass(slots=True)
class TorchServeSeries:
    """One model version's ``ts_*`` counters (kept after it is unregistered, as TorchServe)."""

    requests: int = 0
    latency_us: float = 0.0
    queue_us: float = 0.0


class TorchServeCompat:
    """TorchServe's frontend metrics, by its names and labels, from marserve's measurements."""

    NAMES = ("Requests2XX", "Requests4XX", "Requests5XX", "ts_inference_requests",
             "ts_inference_latency_microseconds", "ts_queue_latency_microseconds", "QueueTime",
             "WorkerThreadTime")  # fmt: skip

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self._series: dict[tuple[str, str], TorchServeSeries] = {}
        self.responses = [0] * 6  # by status class: Requests2XX is responses[2]
        self.queue_time_ms: float | None = None
        self.worker_thread_ms: float | None = None

    def series(self, name: str, version: str) -> TorchServeSeries:
        """The ``ts_*`` counters of a model version (unknown names count nowhere)."""
        if not name:
            return TorchServeSeries()
        found = self._series.get((name, version))
        if found is None:
            found = self._series[(name, version)] = TorchServeSeries()
        return found

    def collect(self) -> Iterator[Metric]:
        host = ["Host", self.hostname]
        for status_class in (2, 4, 5):
            name = f"Requests{status_class}XX"
            family = UnknownMetricFamily(
                name, help_text("counter", "Count"), labels=["Level", "Hostname"]
            )
            count = self.responses[status_class]
            if count:  # TorchServe writes no sample before the first one
                family.add_metric(host, float(count))
            yield family
        labels = ["model_name", "model_version", "hostname"]
        requests = CounterMetricFamily(
            "ts_inference_requests", help_text("counter", "Count"), labels=labels
        )
        latency = UnknownMetricFamily(
            "ts_inference_latency_microseconds", help_text("counter", "Microseconds"), labels=labels
        )
        queue = UnknownMetricFamily(
            "ts_queue_latency_microseconds", help_text("counter", "Microseconds"), labels=labels
        )
        for (model, version), ts in list(self._series.items()):
            values = [model, version, self.hostname]
            requests.add_metric(values, float(ts.requests))
            latency.add_metric(values, ts.latency_us)
            queue.add_metric(values, ts.queue_us)
        yield from (requests, latency, queue)
        for name, value in (
            ("QueueTime", self.queue_time_ms),
            ("WorkerThreadTime", self.worker_thread_ms),
        ):
            gauge = GaugeMetricFamily(
                name, help_text("gauge", "Milliseconds"), labels=["Level", "Hostname"]
            )
            if value is not None:
                gauge.add_metric(host, value)
            yield gauge


class _Listed:
    """Families collected once, as a source for an encoder."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


class _Only:
    """A registry view keeping the families (or samples) named in TorchServe's ``name[]``."""

    def __init__(
        self,
        registry: CollectorRegistry | _Listed,
        names: Collection[str],
        skip: Collection[str] = (),
    ) -> None:
        self.registry = registry
        self.names = frozenset(names)
        self.skip = frozenset(skip)

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            if metric.name in self.skip:
                continue
            if not self.names or metric.name in self.names:
                yield metric
                continue
            samples = [s for s in metric.samples if s.name in self.names]
            if samples:
                kept = Metric(metric.name, metric.documentation, metric.type, metric.unit)
                kept.samples = samples
                yield kept


class ServerMetrics:
    """The one place marserve's metrics are declared; see the module docstring for the list."""

    def __init__(
        self,
        models: ModelSource,
        *,
        registry: CollectorRegistry | None = None,
        hostname: str | None = None,
        system_metrics: bool = True,
        find_nvidia_smi: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.hostname = hostname or socket.gethostname()
        self.models = models
        self._by_model: dict[tuple[str, str], ModelMetrics] = {}
        self._declare(self.registry)
        self.compat = TorchServeCompat(self.hostname)
        loads = WorkerLoadTimes(models, self.hostname)
        for collector in (self.compat, ModelState(models), loads):
            self.registry.register(collector)
        self.system: SystemMetrics | None = None
        if system_metrics:
            self.system = SystemMetrics(self.hostname, find_nvidia_smi=find_nvidia_smi)
            self.registry.register(self.system)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        own = {metric.name: metric.type for metric in self.registry.collect()}
        own.update({name: "gauge" for name in GPU_FAMILIES})
        self.handler = HandlerMetrics(self.hostname, reserved=sample_names(own))
        self.registry.register(self.handler)
        self._exported = sample_names({**own, **{n: "gauge" for n in HANDLER_DEFAULTS}})
        self.unknown = ModelMetrics(self, UNKNOWN_MODEL, "")
        models.watch(self)

    def _declare(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            "marserve_requests", "Inference requests answered", _REQUEST_LABELS, registry=r
        )
        self.request_duration = Histogram(
            "marserve_request_duration_seconds",
            "Inference request latency, first byte in to last byte out",
            _REQUEST_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        pair = ("model", "version")
        self.queue_wait = Histogram(
            "marserve_queue_wait_seconds",
            "Time a request waited for a worker",
            pair,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "marserve_batch_size", "Requests per batch", pair, buckets=BATCH_BUCKETS, registry=r
        )
        self.rejected = Counter(
            "marserve_rejected_requests",
            "Requests refused: queue_full, timeout, auth, too_large, throttled, unavailable",
            ("model", "reason"),
            registry=r,
        )
        self.cancelled = Counter(
            "marserve_cancelled_requests",
            "Requests whose client went away before the answer (disconnect, gRPC cancel)",
            ("model", "version", "protocol"),
            registry=r,
        )
        self.handler_metrics_dropped = Counter(
            "marserve_handler_metrics_dropped",
            "Handler metric values dropped (bad name, type clash, too many series)",
            pair,
            registry=r,
        )
        self.phases = {
            phase: Histogram(
                f"request_{phase}_seconds",
                f"Handler {phase} time per batch",
                ("model_name",),
                registry=r,
            )
            for phase in ("preprocess", "predict", "postprocess", "explain")
        }

    # models -----------------------------------------------------------------------------------
    def model(self, name: str, version: str) -> ModelMetrics:
        """The series of a registered model version (created on first use)."""
        metrics = self._by_model.get((name, version))
        if metrics is None:
            metrics = self._by_model[(name, version)] = ModelMetrics(self, name, version)
        return metrics

    def model_added(self, name: str, version: str) -> ModelMetrics:
        """Told: a model version was registered; returns the series its batches report to."""
        return self.model(name, version)

    def model_removed(self, name: str, version: str) -> None:
        """Told: a model version was unregistered; its series go."""
        metrics = self._by_model.pop((name, version), None)
        if metrics is not None:
            metrics.forget()

    def resolve(self, name: str | None, version: str | None = None) -> ModelMetrics:
        """The series for a request naming ``name``/``version``; unknown names share one."""
        if not name:
            return self.unknown
        found = self.models.lookup(name, version or None)
        if found is None:
            return self.unknown
        return self.model(*found)

    # requests ---------------------------------------------------------------------------------
    def observe_status(self, status: int) -> None:
        """Any HTTP response (health and metadata too): TorchServe's Requests2XX/4XX/5XX."""
        if 0 < status < 600:
            self.compat.responses[status // 100] += 1

    def observe_request(
        self,
        model: str | None,
        version: str | None,
        *,
        protocol: str,
        verb: str,
        status: int,
        seconds: float,
        error: BaseException | None = None,
    ) -> ModelMetrics:
        """One answered inference request (REST or gRPC); returns the series it counted in.

        ``model``/``version`` are as the client named them (resolved against the registry),
        ``protocol`` one of :data:`PROTOCOLS`, ``verb`` one of :data:`VERBS`, ``status`` the
        HTTP status (gRPC: the HTTP status of the error, from ``status.py``), ``seconds`` the
        latency, ``error`` the exception that produced an error answer, if any.
        """
        metrics = self.resolve(model, version)
        metrics.observe_request(protocol, verb, status, seconds)
        self.observe_status(status)
        if status == CANCELLED_STATUS:
            metrics.cancel(protocol)
        if status >= 400:
            reason = rejection_reason(status, error)
            if reason is not None:
                metrics.reject(reason)
        return metrics

    # scraping ---------------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Readings that must not block the event loop (GPU), refreshed before a scrape."""
        if self.system is not None:
            await self.system.refresh()

    def exposition(self, accept: str | None, names: Collection[str] = ()) -> tuple[bytes, str]:
        """The scrape body and its content type (OpenMetrics when ``accept`` asks for it)."""
        encoder, content_type = choose_encoder(accept or "")
        if not content_type.startswith("text/plain"):
            source = _Only(self.registry, names) if names else self.registry
            return encoder(source), content_type
        torchserve = self._torchserve_names()
        collected = list(self.registry.collect())  # once: host readings are not free
        theirs = [metric for metric in collected if metric.name in torchserve]
        ours = _Only(_Listed(collected), names, skip=torchserve)
        return encoder(ours) + render(theirs, names).encode(), content_type

    def _torchserve_names(self) -> frozenset[str]:
        """TorchServe's families, written in its text form (see ``torchserve_text``)."""
        names = {*TorchServeCompat.NAMES, "WorkerLoadTime", *self.handler.names()}
        if self.system is not None:
            names.update(self.system.families)
        return frozenset(names)

    def exported_names(self) -> frozenset[str]:
        """Every sample name marserve itself can export (dashboards may use only these)."""
        return self._exported
