"""ServerMetrics: series, labels, TorchServe and KServe names, worker results, exposition."""

from __future__ import annotations

import pytest
from metrics_fixtures import handle
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from marserve.batching import QueueFull
from marserve.errors import RequestTimeout
from marserve.observability.metrics import ServerMetrics, rejection_reason, status_label
from marserve.registry import ModelRegistry
from marserve.workers.messages import BatchResult, MetricRecord
from marserve.workers.pool import Worker, WorkerState

HOST = "testhost"


@pytest.fixture()
def models() -> ModelRegistry:
    registry = ModelRegistry()
    registry.add(handle("mnist", "1.0"), default=True)
    registry.add(handle("mnist", "2.0"), default=False)
    return registry


@pytest.fixture()
def metrics(models: ModelRegistry) -> ServerMetrics:
    return ServerMetrics(models, registry=CollectorRegistry(), hostname=HOST, system_metrics=False)


def sample(metrics: ServerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def request_labels(model: str, version: str, protocol: str, status: int, verb: str = "predict"):
    return {"model": model, "version": version, "protocol": protocol, "verb": verb,
            "status": str(status)}  # fmt: skip


def test_requests_are_counted_in_their_series(metrics: ServerMetrics) -> None:
    for _ in range(3):
        metrics.observe_request(
            "mnist", None, protocol="v2", verb="predict", status=200, seconds=0.02
        )
    metrics.observe_request(
        "mnist", "2.0", protocol="v1", verb="predict", status=400, seconds=0.001
    )
    metrics.observe_request("mnist", "2.0", protocol="v1", verb="explain", status=200, seconds=0.5)
    labels = request_labels("mnist", "1.0", "v2", 200)  # no version: the default one
    assert sample(metrics, "marserve_requests_total", **labels) == 3
    assert sample(metrics, "marserve_request_duration_seconds_count", **labels) == 3
    assert sample(metrics, "marserve_request_duration_seconds_sum", **labels) == pytest.approx(0.06)
    assert sample(metrics, "marserve_request_duration_seconds_bucket", le="0.025", **labels) == 3
    assert sample(metrics, "marserve_request_duration_seconds_bucket", le="0.01", **labels) == 0
    assert (
        sample(metrics, "marserve_requests_total", **request_labels("mnist", "2.0", "v1", 400)) == 1
    )
    explain = request_labels("mnist", "2.0", "v1", 200, verb="explain")
    assert sample(metrics, "marserve_requests_total", **explain) == 1
    ts = {"model_name": "mnist", "model_version": "1.0", "hostname": HOST}
    assert sample(metrics, "ts_inference_requests_total", **ts) == 3
    assert sample(metrics, "ts_inference_latency_microseconds", **ts) == pytest.approx(60000)
    host = {"Level": "Host", "Hostname": HOST}
    assert sample(metrics, "Requests2XX", **host) == 4
    assert sample(metrics, "Requests4XX", **host) == 1
    assert sample(metrics, "Requests5XX", **host) is None  # TorchServe: no sample before one


def test_unknown_models_and_versions_share_one_series(metrics: ServerMetrics) -> None:
    for index in range(500):
        metrics.observe_request(
            f"attacker-{index}", None, protocol="v2", verb="predict", status=404, seconds=0.001
        )
    metrics.observe_request("mnist", "9.9", protocol="torchserve", verb="predict", status=404,
                            seconds=0.001)  # fmt: skip
    metrics.observe_request(None, None, protocol="v1", verb="predict", status=404, seconds=0.001)
    assert sample(metrics, "marserve_requests_total", **request_labels("", "", "v2", 404)) == 500
    assert (
        sample(metrics, "marserve_requests_total", **request_labels("", "", "torchserve", 404)) == 1
    )
    text = metrics.exposition(None)[0].decode()
    assert "attacker" not in text and 'version="9.9"' not in text
    assert sample(metrics, "Requests4XX", Level="Host", Hostname=HOST) == 502


def test_statuses_outside_http_are_one_label() -> None:
    assert status_label(200) == "200" and status_label(599) == "599"
    assert status_label(1234) == "other" and status_label(-1) == "other"


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (503, QueueFull("full"), "queue_full"),
        (504, RequestTimeout("slow"), "timeout"),
        (504, None, "timeout"),
        (401, None, "auth"),
        (403, None, "auth"),
        (413, None, "too_large"),
        (503, None, "unavailable"),
        (429, None, "throttled"),
        (400, None, None),
        (404, None, None),
        (500, None, None),
    ],
)
def test_rejection_reasons(status: int, error: Exception | None, reason: str | None) -> None:
    assert rejection_reason(status, error) == reason


def test_rejections_are_counted_by_reason(metrics: ServerMetrics) -> None:
    for _ in range(2):
        metrics.observe_request("mnist", None, protocol="torchserve", verb="predict", status=503,
                                seconds=0.0, error=QueueFull("full"))  # fmt: skip
    metrics.observe_request("nope", None, protocol="grpc", verb="predict", status=401, seconds=0.0)
    assert (
        sample(metrics, "marserve_rejected_requests_total", model="mnist", reason="queue_full") == 2
    )
    assert sample(metrics, "marserve_rejected_requests_total", model="", reason="auth") == 1


def test_a_batch_records_queue_waits_size_and_phases(
    metrics: ServerMetrics, models: ModelRegistry
) -> None:
    series = models.get("mnist").metrics
    assert series is not None  # attached when registered
    series.observe_dispatch([0.01, 0.03])
    timings = {"preprocess": 0.001, "inference": 0.004, "postprocess": 0.002, "handle": 0.008}
    series.observe_result(BatchResult(1, timings=timings), "predict", roundtrip_s=0.010)
    pair = {"model": "mnist", "version": "1.0"}
    assert sample(metrics, "marserve_batch_size_count", **pair) == 1
    assert sample(metrics, "marserve_batch_size_sum", **pair) == 2
    assert sample(metrics, "marserve_queue_wait_seconds_count", **pair) == 2
    assert sample(metrics, "marserve_queue_wait_seconds_sum", **pair) == pytest.approx(0.04)
    ts = {"model_name": "mnist", "model_version": "1.0", "hostname": HOST}
    assert sample(metrics, "ts_queue_latency_microseconds", **ts) == pytest.approx(40000)
    for phase, seconds in (("preprocess", 0.001), ("predict", 0.004), ("postprocess", 0.002)):
        assert sample(metrics, f"request_{phase}_seconds_sum", model_name="mnist") == seconds
    assert sample(metrics, "request_explain_seconds_count", model_name="mnist") == 0
    host = {"Level": "Host", "Hostname": HOST}
    assert sample(metrics, "QueueTime", **host) == pytest.approx(30.0)
    assert sample(metrics, "WorkerThreadTime", **host) == pytest.approx(2.0)


def test_explain_and_function_handler_batches(
    metrics: ServerMetrics, models: ModelRegistry
) -> None:
    series = models.get("mnist").metrics
    assert series is not None
    explain = {"preprocess": 0.001, "inference": 0.5, "handle": 0.6}
    series.observe_result(BatchResult(1, timings=explain), "explain", roundtrip_s=0.61)
    assert sample(metrics, "request_explain_seconds_sum", model_name="mnist") == 0.6
    assert sample(metrics, "request_predict_seconds_count", model_name="mnist") == 0
    assert sample(metrics, "request_preprocess_seconds_count", model_name="mnist") == 1
    series.observe_result(BatchResult(2, timings={"handle": 0.05}), "predict", roundtrip_s=0.06)
    assert sample(metrics, "request_predict_seconds_sum", model_name="mnist") == 0.05


def test_handler_metrics_from_workers_are_combined(
    metrics: ServerMetrics, models: ModelRegistry
) -> None:
    series = models.get("mnist").metrics
    assert series is not None
    dims = (("ModelName", "mnist"), ("Level", "Model"))
    first = [
        MetricRecord("Hits", "counter", 2, "Count", dims),
        MetricRecord("Temp", "gauge", 10, "Percent", dims),
        MetricRecord("Size", "histogram", 3, "count", dims),
    ]
    second = [  # another worker's batch
        MetricRecord("Hits", "counter", 1, "Count", dims),
        MetricRecord("Temp", "gauge", 7, "Percent", dims),
        MetricRecord("Size", "histogram", 700, "count", dims),
    ]
    series.observe_result(BatchResult(1, metrics=first), "predict", 0.0)
    series.observe_result(BatchResult(2, metrics=second), "predict", 0.0)
    labels = {"ModelName": "mnist", "Level": "Model", "Hostname": HOST}
    assert sample(metrics, "Hits", **labels) == 3
    assert sample(metrics, "Temp", **labels) == 7
    assert sample(metrics, "Size_count", **labels) == 2
    assert sample(metrics, "Size_sum", **labels) == 703
    assert sample(metrics, "Size_bucket", le="5.0", **labels) == 1
    families = {f.name: f.type for f in text_string_to_metric_families(exposed(metrics))}
    assert families["Hits"] == "counter"  # TorchServe's name, no _total, typed counter
    assert families["Temp"] == "gauge" and families["Size"] == "histogram"


def test_bad_handler_metrics_are_dropped_and_counted(
    metrics: ServerMetrics, models: ModelRegistry
) -> None:
    series = models.get("mnist").metrics
    assert series is not None
    dims = (("ModelName", "mnist"),)
    records = [
        MetricRecord("Hits", "counter", 1, "Count", dims),
        MetricRecord("Hits", "gauge", 1, "Count", dims),  # a type clash
        MetricRecord("Hits", "counter", 1, "Count", (("Other", "x"),)),  # other dimensions
        MetricRecord("marserve_requests_total", "counter", 1, "Count", dims),  # ours
        MetricRecord("Hits", "counter", -1, "Count", dims),  # counters never go down
        MetricRecord("bad name-1", "gauge", 1, "ms", (("bad-dim", "v"),)),  # sanitised, kept
    ]
    series.observe_result(BatchResult(1, metrics=records), "predict", 0.0)
    pair = {"model": "mnist", "version": "1.0"}
    assert sample(metrics, "marserve_handler_metrics_dropped_total", **pair) == 4
    assert sample(metrics, "Hits", ModelName="mnist", Hostname=HOST) == 1
    assert sample(metrics, "bad_name_1", bad_dim="v", Hostname=HOST) == 1


def test_handler_metric_series_are_capped(models: ModelRegistry) -> None:
    metrics = ServerMetrics(
        models, registry=CollectorRegistry(), hostname=HOST, system_metrics=False
    )
    metrics.handler.max_series = 10
    series = models.get("mnist").metrics
    assert series is not None
    records = [
        MetricRecord("PerRequest", "gauge", 1, "ms", (("RequestId", str(i)),)) for i in range(50)
    ]
    series.observe_result(BatchResult(1, metrics=records), "predict", 0.0)
    assert (
        sample(metrics, "marserve_handler_metrics_dropped_total", model="mnist", version="1.0")
        == 40
    )
    assert exposed(metrics).count("PerRequest{") == 10


def test_model_state_is_read_at_scrape_time(metrics: ServerMetrics, models: ModelRegistry) -> None:
    model = models.get("mnist")
    ready, busy, starting = (Worker(model.pool._load, 1.0) for _ in range(3))
    ready.state, busy.state = WorkerState.READY, WorkerState.BUSY
    ready.load_seconds = 1.5
    model.pool.workers += [ready, busy, starting]
    model.pool.restarts = 4
    pair = {"model": "mnist", "version": "1.0"}
    assert sample(metrics, "marserve_workers", state="ready", **pair) == 1
    assert sample(metrics, "marserve_workers", state="busy", **pair) == 1
    assert sample(metrics, "marserve_workers", state="starting", **pair) == 1
    assert sample(metrics, "marserve_workers", state="dead", **pair) == 0
    assert sample(metrics, "marserve_worker_restarts_total", **pair) == 4
    assert sample(metrics, "marserve_model_ready", **pair) == 1
    assert sample(metrics, "marserve_queue_depth", **pair) == 0
    assert sample(metrics, "marserve_model_ready", model="mnist", version="2.0") == 0
    load = {"WorkerName": "W-0-mnist_1.0", "Level": "Host", "Hostname": HOST}
    assert sample(metrics, "WorkerLoadTime", **load) == 1500.0
    assert exposed(metrics).count("WorkerLoadTime{") == 1  # only loaded, live workers


def test_unregistered_models_lose_their_own_series_and_keep_torchserves(
    metrics: ServerMetrics, models: ModelRegistry
) -> None:
    metrics.observe_request("mnist", "2.0", protocol="v2", verb="predict", status=200, seconds=0.1)
    labels = request_labels("mnist", "2.0", "v2", 200)
    assert sample(metrics, "marserve_requests_total", **labels) == 1
    models.remove("mnist", "2.0")
    assert sample(metrics, "marserve_requests_total", **labels) is None
    assert (
        sample(metrics, "marserve_queue_wait_seconds_count", model="mnist", version="2.0") is None
    )
    text = exposed(metrics)
    assert ',version="2.0"' not in text and '{version="2.0"' not in text
    # TorchServe never drops its series: the counters of the unregistered version stay.
    ts = f'{{model_name="mnist",model_version="2.0",hostname="{HOST}",}}'
    assert f"ts_inference_requests_total{ts} 1.0" in text
    metrics.observe_request("mnist", "2.0", protocol="v2", verb="predict", status=404, seconds=0.1)
    assert sample(metrics, "marserve_requests_total", **request_labels("", "", "v2", 404)) == 1
    models.add(handle("mnist", "2.0"), default=False)  # registered again: they count on
    metrics.observe_request("mnist", "2.0", protocol="v2", verb="predict", status=200, seconds=0.1)
    assert f"ts_inference_requests_total{ts} 2.0" in exposed(metrics)


def exposed(metrics: ServerMetrics) -> str:
    return metrics.exposition(None)[0].decode()


def test_the_text_format_parses_with_torchserve_names_intact(metrics: ServerMetrics) -> None:
    metrics.observe_request("mnist", None, protocol="v2", verb="predict", status=200, seconds=0.1)
    body, content_type = metrics.exposition("text/plain")
    assert content_type.startswith("text/plain; version=0.0.4")
    types = {family.name: family.type for family in text_string_to_metric_families(body.decode())}
    assert types["ts_inference_requests"] == "counter"
    assert types["ts_inference_latency_microseconds"] == "counter"
    assert types["Requests2XX"] == "counter"
    assert types["marserve_request_duration_seconds"] == "histogram"
    assert types["request_predict_seconds"] == "histogram"
    text = body.decode()
    ts = f'{{model_name="mnist",model_version="1.0",hostname="{HOST}",}}'
    for lines in (
        "# HELP Requests2XX Torchserve prometheus counter metric with unit: Count\n"
        "# TYPE Requests2XX counter\n"
        f'Requests2XX{{Level="Host",Hostname="{HOST}",}} 1.0\n',
        "# TYPE Requests4XX counter\n# HELP Requests5XX",  # nothing counted yet: no sample
        f"# TYPE ts_inference_requests_total counter\nts_inference_requests_total{ts} 1.0\n",
        "# TYPE ts_inference_latency_microseconds counter\n"
        f"ts_inference_latency_microseconds{ts} 100000.0\n",
        "# HELP QueueTime Torchserve prometheus gauge metric with unit: Milliseconds\n"
        "# TYPE QueueTime gauge\n",
        '# TYPE marserve_requests_total counter\nmarserve_requests_total{model="mnist",',
    ):
        assert lines in text


def test_openmetrics_when_the_scraper_asks(metrics: ServerMetrics) -> None:
    metrics.observe_request("mnist", None, protocol="v2", verb="predict", status=200, seconds=0.1)
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    names = {family.name for family in openmetrics_families(body.decode())}
    assert {"marserve_requests", "Requests2XX", "ts_queue_latency_microseconds"} <= names


def test_name_filters_keep_only_the_named_metrics(metrics: ServerMetrics) -> None:
    metrics.observe_request("mnist", None, protocol="v2", verb="predict", status=200, seconds=0.1)
    body, _ = metrics.exposition(None, ["ts_inference_requests_total", "marserve_queue_depth"])
    samples = {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}
    assert samples == {"ts_inference_requests_total", "marserve_queue_depth"}


def test_exported_names_cover_every_scraped_sample(
    metrics: ServerMetrics, models: ModelRegistry
) -> None:
    metrics.observe_request("mnist", None, protocol="v2", verb="predict", status=200, seconds=0.1)
    series = models.get("mnist").metrics
    assert series is not None
    series.observe_dispatch([0.1])
    records = [MetricRecord("HandlerTime", "gauge", 1, "ms", (("ModelName", "mnist"),))]
    series.observe_result(BatchResult(1, metrics=records, timings={"handle": 0.1}), "predict", 0.2)
    with_system = ServerMetrics(models, registry=CollectorRegistry(), hostname=HOST)
    for source in (metrics, with_system):
        scraped = {s.name for f in source.registry.collect() for s in f.samples}
        assert scraped <= source.exported_names(), sorted(scraped - source.exported_names())


def test_metrics_live_on_the_injected_registry_only(models: ModelRegistry) -> None:
    from prometheus_client import REGISTRY

    before = {f.name for f in REGISTRY.collect()}
    one = ServerMetrics(models, registry=CollectorRegistry(), hostname=HOST, system_metrics=False)
    two = ServerMetrics(models, registry=CollectorRegistry(), hostname=HOST, system_metrics=False)
    assert {f.name for f in REGISTRY.collect()} == before
    assert one.registry is not two.registry
