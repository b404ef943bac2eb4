"""The KPA's settings: ``config-autoscaler`` defaults and one revision's resolved values.

Knative's defaults and annotation validation (``pkg/autoscaler/config``,
``pkg/apis/autoscaling``) and the per-replica target of ``resources/target.go``, with KServe's
mapping of the predictor spec (``scaleTarget``, ``scaleMetric``, ``minReplicas``,
``maxReplicas``, ``containerConcurrency``). :mod:`marserve.controlplane.autoscaler` uses them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from marserve.controlplane.errors import Invalid

PREFIX = "autoscaling.knative.dev/"
CONCURRENCY, RPS = "concurrency", "rps"
TARGET_MIN = 0.01
WINDOW_MIN, WINDOW_MAX = 6.0, 3600.0


@dataclass(frozen=True)
class Defaults:
    """The global ``config-autoscaler`` values (Knative's defaults; durations in seconds)."""

    container_concurrency_target_percentage: float = 70.0
    container_concurrency_target_default: float = 100.0
    requests_per_second_target_default: float = 200.0
    target_burst_capacity: float = 211.0
    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    enable_scale_to_zero: bool = True
    scale_to_zero_grace_period: float = 30.0
    scale_to_zero_pod_retention_period: float = 0.0
    scale_down_delay: float = 0.0
    initial_scale: int = 1
    allow_zero_initial_scale: bool = False
    activation_timeout: float = 630.0  # progress deadline (600 s) + Knative's 30 s buffer
    tick: float = 2.0


@dataclass(frozen=True)
class Settings:
    """One revision's decider spec and scale bounds, resolved from defaults, annotations, spec."""

    metric: str
    target: float  # per replica, after target utilization
    total: float  # per replica, before it (burst capacity uses it)
    target_burst_capacity: float
    panic_threshold: float  # a ratio: 2.0 is 200 %
    stable_window: float
    panic_window: float
    max_scale_up_rate: float
    max_scale_down_rate: float
    scale_down_delay: float
    activation_scale: int
    min_scale: int
    max_scale: int  # 0: no limit
    initial_scale: int
    enable_scale_to_zero: bool
    scale_to_zero_grace_period: float
    pod_retention: float
    activation_timeout: float
    tick: float


# Durations and messages ----------------------------------------------------------------------
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")


def parse_duration(text: str) -> float:
    """A Go duration (``60s``, ``1m30s``, ``500ms``, ``0``) in seconds; ValueError otherwise."""
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    body = body[1:] if body[:1] in ("+", "-") else body
    if body == "0":
        return 0.0
    parts = list(_PART.finditer(body))
    if not body or "".join(p.group(0) for p in parts) != body:
        raise ValueError(f"invalid duration {text!r}")
    return sign * sum(float(p.group(1)) * _UNITS[p.group(2)] for p in parts)


def go_duration(seconds: float) -> str:
    """Seconds as Go prints a duration: ``6s``, ``1m0s``, ``1h0m0s``, ``1.5s``."""
    if seconds == 0:
        return "0s"
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{sign}{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{sign}{int(minutes)}m{text}"
    return sign + text


def _field(key: str) -> str:
    return f"metadata.annotations.{PREFIX}{key}"


def _invalid(value: str, key: str) -> Invalid:
    return Invalid(f"invalid value: {value}: {_field(key)}", field=_field(key))


def _bounds(value: str, low: str, high: str, key: str) -> Invalid:
    return Invalid(f"expected {low} <= {value} <= {high}: {_field(key)}", field=_field(key))


# Settings ------------------------------------------------------------------------------------
def settings_from(
    annotations: Mapping[str, str] | None,
    component: Mapping[str, Any] | None,
    defaults: Defaults | None = None,
) -> Settings:
    """A revision's settings from the isvc's annotations and its predictor spec.

    KServe's rules: ``scaleTarget``/``scaleMetric`` replace the ``target``/``metric``
    annotations, ``minReplicas`` (default 1) and ``maxReplicas`` (0 = none) give the bounds (the
    ``min-scale``/``max-scale`` annotations are ignored, as KServe strips them), an
    ``initial-scale`` that is not an integer, or 0 while zero is not allowed, is dropped.
    """
    d = defaults or Defaults()
    notes = {
        k[len(PREFIX) :]: str(v) for k, v in (annotations or {}).items() if k.startswith(PREFIX)
    }
    spec = component or {}
    if spec.get("scaleTarget") is not None:
        notes["target"] = str(spec["scaleTarget"])
    if spec.get("scaleMetric") is not None:
        notes["metric"] = str(spec["scaleMetric"])
    _check_class(notes)
    metric = notes.get("metric", CONCURRENCY)
    if metric not in (CONCURRENCY, RPS):
        raise _invalid(metric, "metric")
    cc = _int_field(spec, "containerConcurrency", 0)
    target, total = _per_replica_target(notes, d, metric, cc)
    stable = _window(notes, d)
    low, high = _replica_bounds(spec)
    return Settings(
        metric=metric,
        target=target,
        total=total,
        target_burst_capacity=_burst_capacity(notes, d),
        panic_threshold=_percent(
            notes, "panic-threshold-percentage", d.panic_threshold_percentage, 110, 1000
        )
        / 100,
        stable_window=stable,
        panic_window=panic_window(
            stable, _percent(notes, "panic-window-percentage", d.panic_window_percentage, 1, 100)
        ),
        max_scale_up_rate=d.max_scale_up_rate,
        max_scale_down_rate=d.max_scale_down_rate,
        scale_down_delay=_scale_down_delay(notes, d),
        activation_scale=_activation_scale(notes),
        min_scale=low,
        max_scale=high,
        initial_scale=_initial_scale(notes, d),
        enable_scale_to_zero=d.enable_scale_to_zero,
        scale_to_zero_grace_period=d.scale_to_zero_grace_period,
        pod_retention=_retention(notes, d),
        activation_timeout=d.activation_timeout,
        tick=d.tick,
    )


def panic_window(stable_window: float, percentage: float) -> float:
    """The panic window: ``percentage`` of the stable window, whole seconds, at least 1 s."""
    return float(max(1, math.ceil(stable_window * percentage / 100 - 1e-9)))


def _check_class(notes: dict[str, str]) -> None:
    value = notes.get("class", "kpa.autoscaling.knative.dev")
    if value != "kpa.autoscaling.knative.dev":
        raise Invalid(
            f"{PREFIX}class {value!r} is not supported here: marserve's local autoscaler is "
            "Knative's KPA (kpa.autoscaling.knative.dev)",
            field=_field("class"),
        )
    algorithm = notes.get("metric-aggregation-algorithm", "linear")
    if algorithm != "linear":
        raise _invalid(algorithm, "metric-aggregation-algorithm")


def _int_field(spec: Mapping[str, Any], key: str, default: int) -> int:
    value = spec.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(f"{key} must be an integer, got {value!r}", field=f"spec.predictor.{key}")
    return value


def _replica_bounds(spec: Mapping[str, Any]) -> tuple[int, int]:
    low = _int_field(spec, "minReplicas", 1)
    high = _int_field(spec, "maxReplicas", 0)
    if low < 0:
        raise Invalid("MinReplicas cannot be less than 0", field="spec.predictor.minReplicas")
    if high < 0:
        raise Invalid("MaxReplicas cannot be less than 0", field="spec.predictor.maxReplicas")
    if high != 0 and low > high:
        raise Invalid(
            "MinReplicas cannot be greater than MaxReplicas", field="spec.predictor.minReplicas"
        )
    return low, high


def _float(notes: dict[str, str], key: str) -> float | None:
    if key not in notes:
        return None
    try:
        value = float(notes[key])
    except ValueError:
        raise _invalid(notes[key], key) from None
    if not math.isfinite(value):
        raise _invalid(notes[key], key)
    return value


def _per_replica_target(
    notes: dict[str, str], d: Defaults, metric: str, cc: int
) -> tuple[float, float]:
    """Knative's ``ResolveMetricTarget``: (per-replica target, total) for the metric."""
    if metric == RPS:
        total = d.requests_per_second_target_default
    else:
        total = float(cc) if cc > 0 else d.container_concurrency_target_default
    utilization = d.container_concurrency_target_percentage / 100
    annotated = _float(notes, "target")
    if annotated is not None:
        if annotated < TARGET_MIN:
            raise _invalid(notes["target"], "target")
        total = min(annotated, float(cc)) if metric == CONCURRENCY and cc > 0 else annotated
    percent = _float(notes, "target-utilization-percentage")
    if percent is not None:
        if not 1 <= percent <= 100:
            raise _bounds(
                notes["target-utilization-percentage"], "1", "100", "target-utilization-percentage"
            )
        utilization = percent / 100
    return max(TARGET_MIN, total * utilization), total


def _percent(notes: dict[str, str], key: str, default: float, low: int, high: int) -> float:
    value = _float(notes, key)
    if value is None:
        return default
    if not low <= value <= high:
        raise _bounds(notes[key], str(low), str(high), key)
    return value


def _burst_capacity(notes: dict[str, str], d: Defaults) -> float:
    value = _float(notes, "target-burst-capacity")
    if value is None:
        return d.target_burst_capacity
    if value < 0 and value != -1:
        raise _invalid(notes["target-burst-capacity"], "target-burst-capacity")
    return value


def _duration(notes: dict[str, str], key: str) -> float | None:
    if key not in notes:
        return None
    try:
        return parse_duration(notes[key])
    except ValueError:
        raise _invalid(notes[key], key) from None


def _whole_seconds(value: float, key: str) -> None:
    if abs(value - round(value)) > 1e-9:
        raise Invalid(
            f"must be specified with at most second precision: {_field(key)}", field=_field(key)
        )


def _window(notes: dict[str, str], d: Defaults) -> float:
    value = _duration(notes, "window")
    if value is None:
        return d.stable_window
    if not WINDOW_MIN <= value <= WINDOW_MAX:
        raise _bounds(
            go_duration(value), go_duration(WINDOW_MIN), go_duration(WINDOW_MAX), "window"
        )
    _whole_seconds(value, "window")
    return value


def _scale_down_delay(notes: dict[str, str], d: Defaults) -> float:
    value = _duration(notes, "scale-down-delay")
    if value is None:
        return d.scale_down_delay
    if not 0 <= value <= WINDOW_MAX:
        raise _bounds(go_duration(value), "0s", go_duration(WINDOW_MAX), "scale-down-delay")
    _whole_seconds(value, "scale-down-delay")
    return value


def _retention(notes: dict[str, str], d: Defaults) -> float:
    value = _duration(notes, "scale-to-zero-pod-retention-period")
    if value is None:
        return d.scale_to_zero_pod_retention_period
    if not 0 <= value <= WINDOW_MAX:
        key = "scale-to-zero-pod-retention-period"
        raise _bounds(go_duration(value), "0s", go_duration(WINDOW_MAX), key)
    return value


def _activation_scale(notes: dict[str, str]) -> int:
    text = notes.get("activation-scale")
    if text is None:
        return 1
    if not text.strip().isdigit() or int(text) < 1:
        raise _invalid(text, "activation-scale")
    return int(text)


def _initial_scale(notes: dict[str, str], d: Defaults) -> int:
    text = notes.get("initial-scale")
    if text is None:
        return d.initial_scale
    try:
        value = int(text)
    except ValueError:
        return d.initial_scale  # KServe drops an initial-scale that is not an integer
    if value == 0 and not d.allow_zero_initial_scale:
        return d.initial_scale  # ... and a 0 unless allow-zero-initial-scale is on
    if value < 0:
        raise _invalid(text, "initial-scale")
    return value


def initial_replicas(settings: Settings) -> int:
    """How many replicas a new revision starts with: its initial scale, at least minReplicas."""
    low = settings.min_scale
    high = settings.max_scale or max(low, settings.initial_scale)
    return min(max(settings.initial_scale, low), high)


# config-autoscaler ---------------------------------------------------------------------------
_DURATIONS = {
    "stable-window",
    "scale-to-zero-grace-period",
    "scale-to-zero-pod-retention-period",
    "scale-down-delay",
    "activation-timeout",
    "tick",
}
_FLAGS = {"enable-scale-to-zero", "allow-zero-initial-scale"}
_INTS = {"initial-scale"}


def defaults_from(config: Mapping[str, str]) -> Defaults:
    """``config-autoscaler``-style keys (``stable-window: 60s``, ...) over Knative's defaults.

    Knative's ranges apply, except that windows, the grace period and the tick only need to
    be positive whole seconds (Knative wants a stable window of 6 s at least), so a local setup
    or a test can scale in seconds. ValueError names the key and what is wrong with it.
    """
    known = {f.name.replace("_", "-"): f.name for f in fields(Defaults)}
    values: dict[str, Any] = {}
    for key, text in config.items():
        name = known.get(key)
        if name is None:
            raise ValueError(f"config-autoscaler: unknown key {key!r}")
        values[name] = _config_value(key, str(text))
    defaults = Defaults(**values)
    _check_defaults(defaults)
    return defaults


def _config_value(key: str, text: str) -> float | int | bool:
    try:
        if key in _DURATIONS:
            return parse_duration(text)
        if key in _FLAGS:
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if key in _INTS:
            return int(text)
        value = float(text)
    except ValueError:
        raise ValueError(f"config-autoscaler: {key} = {text!r} is not a valid value") from None
    if not math.isfinite(value):
        raise ValueError(f"config-autoscaler: {key} = {text!r} is not a valid value")
    return value


def _check_defaults(d: Defaults) -> None:
    problems = [
        (
            d.stable_window < 1 or abs(d.stable_window - round(d.stable_window)) > 1e-9,
            "stable-window must be a positive number of whole seconds",
        ),
        (
            not 0 < d.container_concurrency_target_percentage <= 100,
            "container-concurrency-target-percentage must be in (0, 100]",
        ),
        (
            d.container_concurrency_target_default < TARGET_MIN,
            f"container-concurrency-target-default must be at least {TARGET_MIN}",
        ),
        (
            d.requests_per_second_target_default < TARGET_MIN,
            f"requests-per-second-target-default must be at least {TARGET_MIN}",
        ),
        (
            d.target_burst_capacity < 0 and d.target_burst_capacity != -1,
            "target-burst-capacity must be either non-negative or -1 (for unlimited)",
        ),
        (not 1 <= d.panic_window_percentage <= 100, "panic-window-percentage must be in [1, 100]"),
        (
            not 110 <= d.panic_threshold_percentage <= 1000,
            "panic-threshold-percentage must be in [110, 1000]",
        ),
        (d.max_scale_up_rate <= 1, "max-scale-up-rate must be greater than 1.0"),
        (d.max_scale_down_rate <= 1, "max-scale-down-rate must be greater than 1.0"),
        (d.scale_to_zero_grace_period <= 0, "scale-to-zero-grace-period must be positive"),
        (
            d.scale_to_zero_pod_retention_period < 0,
            "scale-to-zero-pod-retention-period cannot be negative",
        ),
        (d.scale_down_delay < 0, "scale-down-delay cannot be negative"),
        (
            d.initial_scale < 0 or (d.initial_scale == 0 and not d.allow_zero_initial_scale),
            "initial-scale must be at least 0 (at least 1 unless allow-zero-initial-scale)",
        ),
        (d.activation_timeout <= 0, "activation-timeout must be positive"),
        (d.tick <= 0, "tick must be positive"),
    ]
    for bad, message in problems:
        if bad:
            raise ValueError(f"config-autoscaler: {message}")
