"""The handler-side metrics API (TorchServe's ``context.metrics``) and the ``ts.metrics`` shim."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import marserve
from marserve.handlers.context import Context
from marserve.handlers.metrics import (
    Dimension,
    MetricsCache,
    MetricsCacheKeyError,
    MetricsCachePyYamlError,
    MetricsCacheTypeError,
    MetricsCacheValueError,
    MetricTypes,
    PhaseTimer,
    batch_measurements,
)
from marserve.workers.child import run_batch
from marserve.workers.messages import Batch, MetricRecord

SRC = Path(marserve.__file__).resolve().parent.parent

METRICS_YAML = """
dimensions:
  - &model_name "ModelName"
  - &level "Level"
ts_metrics:
  counter:
    - name: Requests2XX
      unit: Count
      dimensions: [*level, "Hostname"]
model_metrics:
  counter:
    - name: InferenceRequestCount
      unit: count
      dimensions: [*model_name]
  histogram:
    - name: SizeOfInput
      unit: kB
      dimensions: [*model_name, *level]
"""


def cache(**kwargs: Any) -> MetricsCache:
    return MetricsCache(model_name="mnist", **kwargs)


def test_outside_a_request_dimensions_default_to_level_error() -> None:
    metrics = cache()
    metrics.add_counter("Loaded", 1)
    assert metrics.drain() == [
        MetricRecord("Loaded", "counter", 1.0, "Count", (("Level", "Error"),))
    ]


def test_inside_a_batch_dimensions_default_to_the_model() -> None:
    metrics = cache()
    metrics.set_request_ids({0: "a", 1: "b"})
    metrics.add_time("Latency", 12.5, 1)
    metrics.add_size("Payload", 3, None, "kB", [Dimension("Kind", "image")])
    metrics.add_percent("Fullness", 50)
    model = (("ModelName", "mnist"), ("Level", "Model"))
    assert metrics.drain() == [
        MetricRecord("Latency", "gauge", 12.5, "Milliseconds", model),
        MetricRecord("Payload", "gauge", 3.0, "Kilobytes", (("Kind", "image"), *model)),
        MetricRecord("Fullness", "gauge", 50.0, "Percent", model),
    ]
    assert metrics.drain() == []  # drained once


def test_request_ids_never_become_dimensions() -> None:
    metrics = cache()
    metrics.set_request_ids({0: "req-secret"})
    metrics.add_counter("Hits", 1, 0)
    metrics.add_metric("Generic", 2, "ms", 0, None, MetricTypes.HISTOGRAM)
    for record in metrics.drain():
        assert "req-secret" not in str(record.dimensions)


def test_units_are_checked_as_torchserve_does() -> None:
    metrics = cache()
    with pytest.raises(MetricsCacheValueError):
        metrics.add_time("T", 1, None, "minutes")
    with pytest.raises(ValueError, match="size based metric"):
        metrics.add_size("S", 1, None, "TB")


def test_bad_updates_are_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    metrics = cache()
    counter = metrics.add_metric_to_cache("C", "count", ["ModelName"], MetricTypes.COUNTER)
    with caplog.at_level(logging.ERROR, logger="marserve.handlers.metrics"):
        counter.add_or_update(-1, ["mnist"])  # counters never decrease
        counter.add_or_update(1, ["mnist", "extra"])  # wrong number of dimension values
        counter.add_or_update("many", ["mnist"])  # type: ignore[arg-type]
        counter.add_or_update(float("nan"), ["mnist"])
    assert metrics.drain() == []
    assert caplog.text.count("Failed to update metric") == 4
    counter.add_or_update(2, ["mnist"], "req-1")
    assert metrics.drain() == [
        MetricRecord("C", "counter", 2.0, "Count", (("ModelName", "mnist"),))
    ]


def test_update_replaces_the_dimension_names() -> None:
    metrics = cache()
    gauge = metrics.add_metric_to_cache("G", "ms", ["A"], MetricTypes.GAUGE)
    gauge.update(5, "req", [Dimension("B", "x")])
    assert gauge.dimension_names == ["B"]
    assert metrics.drain()[0].dimensions == (("B", "x"),)


def test_metrics_yaml_declares_model_metrics(tmp_path: Path) -> None:
    path = tmp_path / "metrics.yaml"
    path.write_text(METRICS_YAML)
    metrics = cache(config_file_path=str(path))
    assert sorted(metrics.cache_keys()) == [
        "counter:InferenceRequestCount",
        "histogram:SizeOfInput",
    ]
    histogram = metrics.get_metric("SizeOfInput", MetricTypes.HISTOGRAM)
    histogram.add_or_update(4.5, ["mnist", "Model"])
    assert metrics.drain() == [
        MetricRecord(
            "SizeOfInput",
            "histogram",
            4.5,
            "Kilobytes",
            (("ModelName", "mnist"), ("Level", "Model")),
        )
    ]
    with pytest.raises(MetricsCacheKeyError):
        metrics.get_metric("SizeOfInput", MetricTypes.COUNTER)
    with pytest.raises(MetricsCacheTypeError):
        metrics.get_metric("SizeOfInput", "histogram")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("model_metrics: [unclosed", MetricsCachePyYamlError),
        (
            "model_metrics:\n  timer:\n    - {name: T, unit: ms, dimensions: []}\n",
            MetricsCacheKeyError,
        ),
        ("model_metrics:\n  counter:\n    - {name: T, dimensions: []}\n", MetricsCacheKeyError),
    ],
)
def test_bad_metrics_yaml_is_refused(tmp_path: Path, text: str, error: type[Exception]) -> None:
    path = tmp_path / "metrics.yaml"
    path.write_text(text)
    with pytest.raises(error):
        cache(config_file_path=str(path))


def test_a_missing_metrics_yaml_is_an_io_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="Error reading file"):
        cache(config_file_path=str(tmp_path / "absent.yaml"))


def test_pending_records_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("marserve.handlers.metrics.MAX_PENDING", 5)
    metrics = cache()
    for _ in range(8):
        metrics.add_counter("C", 1)
    assert len(metrics.drain()) == 5 and metrics.dropped == 3


class Steps:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def preprocess(self, data: Any) -> Any:
        self.calls.append("preprocess")
        return data

    def inference(self, data: Any) -> Any:
        self.calls.append("inference")
        return data

    def postprocess(self, data: Any) -> Any:
        self.calls.append("postprocess")
        return data

    def handle(self, data: Any, context: Any) -> Any:
        return self.postprocess(self.inference(self.preprocess(data)))


def test_the_phase_timer_times_each_step_of_a_class_handler() -> None:
    service = Steps()
    timer = PhaseTimer()
    assert timer.install(service.handle) == ["preprocess", "inference", "postprocess"]
    assert service.handle([1, 2], None) == [1, 2]
    assert service.calls == ["preprocess", "inference", "postprocess"]
    taken = timer.take()
    assert set(taken) == {"preprocess", "inference", "postprocess"}
    assert all(seconds >= 0 for seconds in taken.values())
    assert timer.take() == {}
    assert service.preprocess.__name__ == "preprocess"
    Steps().handle([3], None)  # the class is untouched: another instance is not timed
    assert timer.take() == {}


def test_function_handlers_have_no_phases() -> None:
    def handle(data: Any, context: Any) -> Any:
        return data

    assert PhaseTimer().install(handle) == []


def test_a_batch_carries_its_records_and_timings_to_the_front() -> None:
    metrics = cache()
    context = Context("mnist", "/nowhere", {}, 2, None, "0", metrics=metrics)
    service = Steps()
    metrics.time_phases(service.handle)

    def entry(data: Any, ctx: Context) -> Any:
        ctx.metrics.add_counter("Rows", len(data))
        return service.handle(data, ctx)

    batch = Batch(7, "predict", [{"data": 1}, {"data": 2}], ["r1", "r2"], [{}, {}])
    result = run_batch(entry, context, batch)
    assert result.results is not None and len(result.results) == 2
    assert set(result.timings) == {"preprocess", "inference", "postprocess", "handle"}
    names = [record.name for record in result.metrics]
    assert names == ["Rows", "PredictionTime"]
    assert result.metrics[0].dimensions == (("ModelName", "mnist"), ("Level", "Model"))
    assert result.metrics[0].value == 2


def test_a_failed_batch_still_reports_its_timing() -> None:
    metrics = cache()
    context = Context("mnist", "/nowhere", {}, 1, None, "0", metrics=metrics)

    def entry(data: Any, ctx: Context) -> Any:
        raise ValueError("boom")

    result = run_batch(entry, context, Batch(1, "predict", [{}], ["r"], [{}]))
    assert result.results is None and result.error_status == 500
    assert "handle" in result.timings
    assert [r.name for r in result.metrics] == ["PredictionTime"]


def test_a_handler_may_replace_context_metrics() -> None:
    records, timings = batch_measurements(object(), 0.25)
    assert records == [] and timings == {"handle": 0.25}


def test_ts_metrics_shim_imports_in_a_clean_interpreter() -> None:
    script = textwrap.dedent(
        """
        from marserve.handlers.shim import install_ts_shim
        assert install_ts_shim()
        from ts.metrics.dimension import Dimension
        from ts.metrics.metric_type_enum import MetricTypes
        from ts.metrics.unit import Units
        from ts.metrics.caching_metric import CachingMetric
        from ts.metrics.metric_abstract import MetricAbstract
        from ts.metrics.metric_cache_abstract import MetricCacheAbstract
        from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
        from ts.metrics.metric_cache_errors import MetricsCacheKeyError, MetricsCacheValueError
        import marserve.handlers.metrics as ours
        assert MetricsCacheYamlImpl is ours.MetricsCache is MetricCacheAbstract
        assert CachingMetric is MetricAbstract is ours.CachingMetric
        assert MetricTypes.HISTOGRAM.value == "histogram"
        assert Units().units["ms"] == "Milliseconds"
        assert str(Dimension("Level", "Model")) == "Level:Model"
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=SRC, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
