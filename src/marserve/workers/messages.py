"""Messages between the front and a worker: plain data, errors included (never exceptions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class LoadModel:
    """The first message a worker receives: what to load and how."""

    model_name: str
    model_version: str | None
    model_dir: str
    manifest: dict[str, Any]
    handler: str
    batch_size: int
    worker_index: int  # global across models, for GPU round robin
    torch_threads: int
    model_yaml_config: dict[str, Any] = field(default_factory=dict)  # the whole model-config.yaml
    deps_dir: str | None = None  # per-model site folder for requirements.txt, when enabled
    server_version: str = ""
    metrics_config: str | None = None  # a TorchServe metrics.yaml declaring handler metrics


@dataclass(slots=True)
class Loaded:
    """A worker's answer to ``LoadModel``: ``error`` is None on success."""

    pid: int
    device: str
    error: str | None = None
    permanent: bool = False  # the error is one a restart cannot fix (the handler won't import)


@dataclass(slots=True)
class Batch:
    """One batch for the handler: ``items`` are TorchServe's per-request input dicts."""

    batch_id: int
    verb: str  # "predict" or "explain"
    items: list[dict[str, Any]]
    request_ids: list[str]
    headers: list[dict[str, str]]


@dataclass(slots=True)
class ItemResult:
    """The handler's answer for one request of a batch; ``status`` >= 400 makes it an error."""

    value: Any
    status: int = 200
    message: str = ""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class MetricRecord:
    """One value a handler recorded through ``context.metrics`` (TorchServe's metrics API)."""

    name: str
    kind: str  # "counter" (added), "gauge" (set) or "histogram" (observed)
    value: float
    unit: str
    dimensions: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class BatchResult:
    """A worker's answer to ``Batch``: either one result per item, or one error for all.

    ``metrics`` and ``timings`` (handler phase -> seconds) are the worker's measurements of the
    batch; the front applies them to its metrics registry.
    """

    batch_id: int
    results: list[ItemResult] | None = None
    error_status: int = 500
    error_message: str = ""
    metrics: list[MetricRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
