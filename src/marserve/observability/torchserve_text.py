"""TorchServe's Prometheus text form for its own families, as its Java client writes them.

TorchServe (Prometheus simpleclient 0.x) writes every family with ``# HELP``/``# TYPE`` lines,
labels in their declared order with a trailing comma, counters under their own names (no
``_total`` added: ``Requests2XX`` is a counter called ``Requests2XX``) and no sample for a
labelled family nothing was recorded in yet::

    # HELP Requests2XX Torchserve prometheus counter metric with unit: Count
    # TYPE Requests2XX counter
    Requests2XX{Level="Host",Hostname="vm",} 4.0

marserve's own families keep prometheus_client's form; this module renders only TorchServe's.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable

from prometheus_client.metrics_core import Metric


def help_text(kind: str, unit: str) -> str:
    """TorchServe's ``# HELP`` text, e.g. ``Torchserve prometheus gauge metric with unit: ms``."""
    return f"Torchserve prometheus {kind} metric with unit: {unit}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _kind(metric: Metric) -> str:
    # TorchServe has counters, gauges and histograms only: its counters without a ``_total``
    # suffix are untyped families to prometheus_client, and counters here.
    return "counter" if metric.type == "unknown" else metric.type


def _name(metric: Metric) -> str:
    """The family name as TorchServe writes it (``ts_inference_requests_total``)."""
    return metric.name + "_total" if metric.type == "counter" else metric.name


def render(metrics: Iterable[Metric], names: Collection[str] = ()) -> str:
    """TorchServe's text form of ``metrics``; with ``names``, only the families or samples named."""
    wanted = frozenset(names)
    lines: list[str] = []
    for metric in metrics:
        family = _name(metric)
        samples = metric.samples
        if wanted and family not in wanted:
            samples = [s for s in samples if s.name in wanted]
            if not samples:
                continue
        lines.append(f"# HELP {family} {_escape(metric.documentation)}")
        lines.append(f"# TYPE {family} {_kind(metric)}")
        for sample in samples:
            labels = "".join(f'{k}="{_escape(v)}",' for k, v in sample.labels.items())
            labelled = f"{{{labels}}}" if labels else ""
            lines.append(f"{sample.name}{labelled} {_number(sample.value)}")
    return "".join(line + "\n" for line in lines)
