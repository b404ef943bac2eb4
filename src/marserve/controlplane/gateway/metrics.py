"""The gateway's per-revision request metrics: Prometheus series and the autoscaler's stats()."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class RevisionStats:
    """What the autoscaler reads per revision: requests in flight now and answered so far."""

    namespace: str
    revision: str
    in_flight: int
    requests: int


class _Revision:
    __slots__ = ("codes", "gauge", "histogram", "in_flight", "name", "namespace", "requests")

    def __init__(self, metrics: GatewayMetrics, namespace: str, name: str) -> None:
        self.namespace = namespace
        self.name = name
        self.in_flight = 0
        self.requests = 0
        self.gauge = metrics.in_flight.labels(namespace, name)
        self.histogram = metrics.latency.labels(namespace, name)
        self.codes: dict[int, Counter] = {}


class GatewayMetrics:
    """Counters on an injected registry; each call is a dict lookup and an add on the hot path."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ("namespace", "revision")
        self.requests = Counter(
            "marserve_gateway_requests",
            "Requests the gateway answered, by revision and HTTP status code.",
            (*labels, "code"),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "marserve_gateway_requests_in_flight",
            "Requests the gateway is proxying now, by revision.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "marserve_gateway_request_duration_seconds",
            "Time from request head read to response end, by revision.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._revisions: dict[tuple[str, str], _Revision] = {}

    def _revision(self, namespace: str, name: str) -> _Revision:
        key = (namespace, name)
        found = self._revisions.get(key)
        if found is None:
            found = self._revisions[key] = _Revision(self, namespace, name)
        return found

    def started(self, namespace: str, revision: str) -> None:
        entry = self._revision(namespace, revision)
        entry.in_flight += 1
        entry.gauge.inc()

    def finished(self, namespace: str, revision: str, code: int, seconds: float) -> None:
        entry = self._revision(namespace, revision)
        entry.in_flight -= 1
        entry.requests += 1
        entry.gauge.dec()
        entry.histogram.observe(seconds)
        counter = entry.codes.get(code)
        if counter is None:
            counter = entry.codes[code] = self.requests.labels(namespace, revision, str(code))
        counter.inc()

    def stats(self) -> dict[tuple[str, str], RevisionStats]:
        """A snapshot per ``(namespace, revision)`` of in-flight and answered request counts."""
        return {
            key: RevisionStats(e.namespace, e.name, e.in_flight, e.requests)
            for key, e in self._revisions.items()
        }

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
