"""TorchServe's handler-side metrics API (``context.metrics``), recording for the front.

Handlers call ``add_counter``/``add_time``/``add_size``/``add_percent``/``add_error``/``add_metric``
or fetch a declared metric with ``get_metric`` and ``add_or_update`` it, exactly as with
TorchServe's ``MetricsCacheYamlImpl``. Instead of printing ``[METRICS]`` log lines for a Java
frontend to parse, every value becomes a :class:`MetricRecord` that the worker sends back with
the batch's result; the front adds counters, sets gauges and observes histograms.

Declarations come from a TorchServe ``metrics.yaml`` (its ``model_metrics`` section). Request ids
are never dimensions: ``idx`` only decides the default dimensions, as in TorchServe.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from marserve.workers.messages import MetricRecord

log = logging.getLogger("marserve.handlers.metrics")

MAX_PENDING = 10_000  # records kept between two batches; more are dropped (and counted)
PHASES = ("preprocess", "inference", "postprocess")


class MetricTypes(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class Dimension:
    """A dimension (label) name and value."""

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value

    def __str__(self) -> str:
        return f"{self.name}:{self.value}"

    def __repr__(self) -> str:
        return f"Dimension({self.name!r}, {self.value!r})"

    def to_dict(self) -> dict[str, str]:
        return {"Name": self.name, "Value": self.value}


class Units:
    """TorchServe's short unit names and the names its metrics carry."""

    def __init__(self) -> None:
        self.units: dict[str | None, str] = {
            "ms": "Milliseconds",
            "s": "Seconds",
            "percent": "Percent",
            "count": "Count",
            "MB": "Megabytes",
            "GB": "Gigabytes",
            "kB": "Kilobytes",
            "B": "Bytes",
            "": "unit",
            None: "unit",
        }


_UNITS = Units().units


class GeneralMetricsCacheError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(f"Generic error: {message}")


class MetricsCacheIOError(IOError):
    def __init__(self, message: str) -> None:
        super().__init__(f"Error reading file: {message}")


class MetricsCachePyYamlError(yaml.YAMLError):
    def __init__(self, message: str) -> None:
        super().__init__(f"Error parsing file: {message}")


class MetricsCacheTypeError(TypeError):
    pass


class MetricsCacheValueError(ValueError):
    pass


class MetricsCacheKeyError(KeyError):
    pass


Sink = Callable[[MetricRecord], None]


def _log_only(record: MetricRecord) -> None:
    log.debug("metric %s=%s %s (no metrics cache attached)", record.name, record.value, record.unit)


class CachingMetric:
    """One declared metric: its name, unit, dimension names and type."""

    def __init__(
        self,
        metric_name: str,
        unit: str,
        dimension_names: list[str] | None = None,
        metric_type: MetricTypes = MetricTypes.COUNTER,
        *,
        sink: Sink | None = None,
    ) -> None:
        self.metric_name = metric_name
        self.unit = _UNITS.get(unit, unit)
        self.dimension_names = list(dimension_names or [])
        self.metric_type = metric_type
        self._sink = sink or _log_only

    def _checked(self, value: Any, dimension_values: Sequence[Any] | None) -> MetricRecord:
        if dimension_values is None or len(dimension_values) != len(self.dimension_names):
            raise ValueError(
                f"Dimension values: {dimension_values} should correspond to "
                f"Dimension names: {self.dimension_names}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"metric value must be an int or a float, not {type(value).__name__}")
        number = float(value)
        if math.isnan(number):
            raise ValueError("metric value must not be NaN")
        if self.metric_type is MetricTypes.COUNTER and number < 0:
            raise ValueError("Counter metric update value cannot be negative")
        dimensions = tuple(
            (str(name), str(dim_value))
            for name, dim_value in zip(self.dimension_names, dimension_values, strict=True)
        )
        return MetricRecord(self.metric_name, self.metric_type.value, number, self.unit, dimensions)

    def add_or_update(
        self,
        value: int | float,
        dimension_values: Sequence[Any] | None = None,
        request_id: str | None = "",
    ) -> None:
        """Add (counter), set (gauge) or observe (histogram) ``value`` for these dimensions.

        As in TorchServe, a bad update is logged and dropped, never raised into the handler.
        ``request_id`` is accepted for compatibility and never becomes a dimension.
        """
        try:
            record = self._checked(value, [] if dimension_values is None else dimension_values)
        except ValueError as exc:
            log.error("[METRICS]Failed to update metric with name:%s: %s", self.metric_name, exc)
            return
        self._sink(record)

    def update(
        self,
        value: int | float,
        request_id: str | None = "",
        dimensions: Sequence[Dimension] | None = None,
    ) -> None:
        """TorchServe's older call: the dimensions (objects) replace the declared names."""
        dims = list(dimensions or [])
        self.dimension_names = [d.name for d in dims]
        self.add_or_update(value, [d.value for d in dims], request_id)


class MetricsCache:
    """``context.metrics``: TorchServe's ``MetricsCacheYamlImpl`` feeding marserve's front.

    ``config_file_path`` names a TorchServe ``metrics.yaml``; its ``model_metrics`` are declared
    at once (so ``get_metric`` finds them). Without a file the cache starts empty and every
    ``add_*`` call declares its metric on first use.
    """

    def __init__(self, config_file_path: str | None = None, *, model_name: str | None = None):
        self.cache: dict[MetricTypes, dict[str, CachingMetric]] = {}
        self.store: list[Any] = []
        self.request_ids: Mapping[int, str] | list[str] | None = None
        self.model_name = model_name
        self.config_file_path = config_file_path
        self._pending: list[MetricRecord] = []
        self.dropped = 0
        self.phases: PhaseTimer | None = None
        self._parsed: dict[str, Any] = {}
        if config_file_path:
            self._parsed = _read_yaml(config_file_path)
            if self._parsed.get("model_metrics"):
                self.initialize_cache()

    # declarations ----------------------------------------------------------------------------
    def initialize_cache(self) -> None:
        """Declare every metric of the file's ``model_metrics`` section."""
        section = self._parsed.get("model_metrics")
        if not section:
            raise MetricsCacheValueError("Missing `model_metrics` specification")
        if not isinstance(section, dict):
            raise MetricsCacheTypeError("`model_metrics` must map metric types to lists")
        for type_name, entries in section.items():
            try:
                metric_type = MetricTypes(type_name)
            except ValueError as exc:
                raise MetricsCacheKeyError(f"Invalid metric type: {exc}") from None
            for entry in entries or []:
                try:
                    self.add_metric_to_cache(
                        str(entry["name"]),
                        str(entry["unit"]),
                        [str(d) for d in entry["dimensions"] or []],
                        metric_type,
                    )
                except (KeyError, TypeError) as exc:
                    raise MetricsCacheKeyError(f"Key not found in cache spec: {exc}") from None

    def add_metric_to_cache(
        self,
        metric_name: str,
        unit: str,
        dimension_names: list[str] | None = None,
        metric_type: MetricTypes = MetricTypes.COUNTER,
    ) -> CachingMetric:
        """Declare a metric (replacing one of the same type and name) and return it."""
        _check_type(metric_name, str, "`metric_name` must be a str")
        _check_type(unit, str, "`unit` must be a str")
        _check_type(metric_type, MetricTypes, "`metric_type` must be a MetricTypes enum")
        if dimension_names:
            _check_type(dimension_names, list, "`dimension_names` should be a list of str")
        metric = CachingMetric(metric_name, unit, dimension_names, metric_type, sink=self._record)
        self.cache.setdefault(metric_type, {})[metric_name] = metric
        return metric

    def get_metric(
        self, metric_name: str, metric_type: MetricTypes = MetricTypes.COUNTER
    ) -> CachingMetric:
        _check_type(metric_name, str, "`metric_name` must be a str")
        _check_type(metric_type, MetricTypes, "`metric_type` must be a MetricTypes enum")
        try:
            return self.cache[metric_type][metric_name]
        except KeyError:
            raise MetricsCacheKeyError(
                f"Metric of type '{metric_type}' and name '{metric_name}' doesn't exist"
            ) from None

    def cache_keys(self) -> list[str]:
        return [f"{t.value}:{name}" for t, metrics in self.cache.items() for name in metrics]

    # recording -------------------------------------------------------------------------------
    def set_request_ids(self, request_ids: Mapping[int, str] | list[str] | None) -> None:
        self.request_ids = request_ids

    def _request_id(self, idx: Any) -> str | None:
        ids = self.request_ids
        if ids is None:
            return None
        if isinstance(ids, Mapping):
            if idx is not None and idx in ids:
                return str(ids[idx])
            return ",".join(str(v) for v in ids.values())
        if isinstance(idx, int) and 0 <= idx < len(ids):
            return str(ids[idx])
        return ",".join(str(v) for v in ids)

    def _default_dims(self, request_id: str | None, dims: list[Dimension]) -> list[Dimension]:
        """TorchServe's defaults: ModelName and Level=Model inside a request, else Level=Error."""
        names = {d.name for d in dims}
        if request_id is None:
            if "Level" not in names:
                dims.append(Dimension("Level", "Error"))
            return dims
        if "ModelName" not in names:
            dims.append(Dimension("ModelName", self.model_name or ""))
        if "Level" not in names:
            dims.append(Dimension("Level", "Model"))
        return dims

    def _get_or_add(
        self, name: str, unit: str, dims: list[Dimension], metric_type: MetricTypes
    ) -> CachingMetric:
        try:
            return self.get_metric(name, metric_type)
        except MetricsCacheKeyError:
            return self.add_metric_to_cache(name, unit, [d.name for d in dims], metric_type)

    def add_metric(
        self,
        name: str,
        value: int | float,
        unit: str,
        idx: Any = None,
        dimensions: list[Dimension] | None = None,
        metric_type: MetricTypes = MetricTypes.COUNTER,
    ) -> None:
        request_id = self._request_id(idx)
        dims = self._default_dims(request_id, list(dimensions or []))
        metric = self._get_or_add(name, unit, dims, metric_type)
        metric.add_or_update(value, [d.value for d in dims], request_id)

    def add_counter(
        self,
        name: str,
        value: int | float,
        idx: Any = None,
        dimensions: list[Dimension] | None = None,
    ) -> None:
        self.add_metric(name, value, "count", idx, dimensions, MetricTypes.COUNTER)

    def add_time(
        self,
        name: str,
        value: int | float,
        idx: Any = None,
        unit: str = "ms",
        dimensions: list[Dimension] | None = None,
        metric_type: MetricTypes = MetricTypes.GAUGE,
    ) -> None:
        if unit not in ("ms", "s"):
            raise MetricsCacheValueError("the unit for a timed metric should be one of ['ms', 's']")
        self.add_metric(name, value, unit, idx, dimensions, metric_type)

    def add_size(
        self,
        name: str,
        value: int | float,
        idx: Any = None,
        unit: str = "MB",
        dimensions: list[Dimension] | None = None,
        metric_type: MetricTypes = MetricTypes.GAUGE,
    ) -> None:
        if unit not in ("MB", "kB", "GB", "B"):
            raise ValueError("The unit for size based metric is one of ['MB','kB', 'GB', 'B']")
        self.add_metric(name, value, unit, idx, dimensions, metric_type)

    def add_percent(
        self,
        name: str,
        value: int | float,
        idx: Any = None,
        dimensions: list[Dimension] | None = None,
        metric_type: MetricTypes = MetricTypes.GAUGE,
    ) -> None:
        self.add_metric(name, value, "percent", idx, dimensions, metric_type)

    def add_error(
        self, name: str, value: int | float, dimensions: list[Dimension] | None = None
    ) -> None:
        dims = self._default_dims(None, list(dimensions or []))
        metric = self._get_or_add(name, "", dims, MetricTypes.COUNTER)
        metric.add_or_update(value, [d.value for d in dims])

    def _record(self, record: MetricRecord) -> None:
        if len(self._pending) >= MAX_PENDING:
            if self.dropped == 0:
                log.warning("more than %d metric values in one batch: dropping", MAX_PENDING)
            self.dropped += 1
            return
        self._pending.append(record)

    def time_phases(self, entry: Callable[..., Any]) -> list[str]:
        """Time the handler's preprocess/inference/postprocess from now on (see PhaseTimer)."""
        self.phases = PhaseTimer()
        return self.phases.install(entry)

    def drain(self) -> list[MetricRecord]:
        """The values recorded since the last call (sent with the batch's result)."""
        pending, self._pending = self._pending, []
        return pending


def _check_type(value: Any, expected: type | tuple[type, ...], message: str) -> None:
    if not isinstance(value, expected):
        raise MetricsCacheTypeError(message)


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise MetricsCacheIOError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise MetricsCachePyYamlError(f"{path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GeneralMetricsCacheError(f"{path}: expected a mapping at the top level")
    return data


class PhaseTimer:
    """Times a class handler's ``preprocess``/``inference``/``postprocess`` calls.

    KServe exports one histogram per phase; TorchServe handlers have the same three steps. The
    timer wraps the bound methods on the handler instance (never its class), so ``super()``
    calls inside a handler are unaffected. Function handlers have no phases to time.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def install(self, entry: Callable[..., Any]) -> list[str]:
        """Wrap the phases of ``entry``'s handler object; returns the phases now timed."""
        service = getattr(entry, "__self__", None)
        timed: list[str] = []
        if service is None:
            return timed
        for phase in PHASES:
            method = getattr(service, phase, None)
            if not callable(method):
                continue
            try:
                setattr(service, phase, self._wrap(phase, method))
            except (AttributeError, TypeError):  # __slots__ or a read-only attribute
                continue
            timed.append(phase)
        return timed

    def _wrap(self, phase: str, method: Callable[..., Any]) -> Callable[..., Any]:
        seconds = self.seconds

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - start

        timed.__name__ = getattr(method, "__name__", phase)
        timed.__doc__ = getattr(method, "__doc__", None)
        return timed

    def take(self) -> dict[str, float]:
        taken = dict(self.seconds)
        self.seconds.clear()
        return taken


def batch_measurements(
    metrics: Any, handle_s: float
) -> tuple[list[MetricRecord], dict[str, float]]:
    """What a worker sends with a batch's result: the records and the phase timings (seconds).

    ``metrics`` is the context's metrics object (a handler may have replaced it). Adds
    TorchServe's ``PredictionTime`` (the whole handler call, in ms) as its backend does.
    """
    if not isinstance(metrics, MetricsCache):
        return [], {"handle": handle_s}
    timings = metrics.phases.take() if metrics.phases is not None else {}
    timings["handle"] = handle_s
    metrics.add_time("PredictionTime", round(handle_s * 1000.0, 2), None, "ms")
    return metrics.drain(), timings
