"""Per-model settings: ModelConfig, model-config.yaml loading and the precedence merge."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import yaml

from marserve.errors import ArchiveError, ConfigError, InvalidInput
from marserve.settings.values import bad, to_bool, to_choice, to_int, to_text

log = logging.getLogger("marserve.settings")


class ModelDefaults(Protocol):
    """What a model's settings start from: ``ServerSettings`` has this shape (no import back)."""

    @property
    def models(self) -> Sequence[ModelConfig]: ...
    @property
    def default_workers_per_model(self) -> int: ...
    @property
    def default_response_timeout_s(self) -> int: ...


#: model-config.yaml larger than this is refused (TorchServe's are a few hundred bytes).
MAX_MODEL_YAML_BYTES = 1024 * 1024
#: Nodes and nesting allowed once YAML aliases are expanded ("billion laughs" stays bounded).
MAX_MODEL_YAML_NODES = 100_000
MAX_MODEL_YAML_DEPTH = 64

DEVICE_TYPES = ("cpu", "gpu", "neuron")
PARALLEL_TYPES = ("pp", "tp", "pptp", "custom")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Effective settings of one model version. Durations carry their unit in the name."""

    name: str  # the model name clients use
    version: str | None = None  # None: take the version from the archive's manifest
    mar_name: str | None = None  # archive file name in the model store, or a URL
    default_version: bool = True  # this version answers requests that name no version
    min_workers: int = 1  # workers started at load time (TorchServe minWorkers)
    max_workers: int = 1  # upper bound when scaling (TorchServe maxWorkers)
    batch_size: int = 1  # largest batch the dynamic batcher forms (batchSize)
    max_batch_delay_ms: int = 100  # longest wait for a batch to fill (maxBatchDelay)
    response_timeout_s: int = 120  # a worker silent this long is restarted (responseTimeout)
    startup_timeout_s: int = 120  # longest a worker may take to load the model (startupTimeout)
    job_queue_size: int | None = None  # queued requests allowed; None: server's job_queue_size
    device_type: str | None = None  # "cpu", "gpu" or "neuron"; None: GPU when one is available
    device_ids: tuple[int, ...] = ()  # GPUs handed round-robin to workers; (): all visible
    parallel_type: str | None = None  # "pp", "tp", "pptp" or "custom" (parallelType)
    # The `handler:` section of model-config.yaml. Treat as read-only.
    handler_config: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # The whole model-config.yaml: TorchServe's context.model_yaml_config. Treat as read-only.
    yaml_config: Mapping[str, Any] = field(default_factory=dict, hash=False)


# TorchServe's camelCase parameter -> (ModelConfig field, converter). Shared by model_snapshot,
# the `models` key and model-config.yaml.
_Converter = Callable[[object, str], Any]
_PARAMS: dict[str, tuple[str, _Converter]] = {
    "defaultVersion": ("default_version", to_bool),
    "marName": ("mar_name", lambda v, k: to_text(v, k) or None),
    "minWorkers": ("min_workers", lambda v, k: to_int(v, k, 0)),
    "maxWorkers": ("max_workers", lambda v, k: to_int(v, k, 0)),
    "batchSize": ("batch_size", lambda v, k: to_int(v, k, 1)),
    "maxBatchDelay": ("max_batch_delay_ms", lambda v, k: to_int(v, k, 0)),
    "responseTimeout": ("response_timeout_s", lambda v, k: to_int(v, k, 1)),
    "startupTimeout": ("startup_timeout_s", lambda v, k: to_int(v, k, 1)),
    "jobQueueSize": ("job_queue_size", lambda v, k: to_int(v, k, 1)),
    "deviceType": ("device_type", lambda v, k: to_choice(v, k, DEVICE_TYPES)),
    "deviceIds": ("device_ids", lambda v, k: _device_ids(v, k)),
    "parallelType": ("parallel_type", lambda v, k: to_choice(v, k, PARALLEL_TYPES)),
}
# TorchServe frontend parameters that marserve accepts but does not act on.
_IGNORED_PARAMS = frozenset(
    {
        "runtimeType", "parallelLevel", "torchrun", "useJobTicket", "maxRetryTimeoutInSec",
        "clientTimeoutInMills", "continuousBatching", "sequenceBatching", "sequenceMaxIdleMSec",
        "maxSequenceJobQueueSize", "maxNumSequence", "asyncCommunication", "useVenv",
    }
)  # fmt: skip
# Management API parameter names (TorchServe's register/scale query parameters) -> fields.
_API_ALIASES = {
    "min_worker": "min_workers",
    "max_worker": "max_workers",
    "max_batch_delay": "max_batch_delay_ms",
    "response_timeout": "response_timeout_s",
    "startup_timeout": "startup_timeout_s",
}
_FIELD_PARAMS = {name: param for param, (name, _conv) in _PARAMS.items()}


def _device_ids(value: object, key: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise bad(key, value, "a list of GPU ids")
    return tuple(to_int(item, key, 0) for item in value)


def _convert(params: Mapping[str, Any], *, warn_unknown: bool) -> tuple[dict[str, Any], set[str]]:
    """Convert camelCase parameters to ModelConfig fields; returns (fields, explicit names)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in _PARAMS:
            name, converter = _PARAMS[key]
            out[name] = converter(value, key)
        elif key in _IGNORED_PARAMS:
            log.debug("model parameter %s is accepted but not used by marserve", key)
        elif warn_unknown:
            log.warning("unknown model parameter %r ignored", key)
    return out, set(out)


def _settle_workers(values: dict[str, Any], explicit: set[str], key_hint: str) -> None:
    """maxWorkers follows minWorkers up unless it was given; a given max below min is an error."""
    if values["max_workers"] >= values["min_workers"]:
        return
    if "max_workers" in explicit:
        minimum = values["min_workers"]
        raise bad(key_hint, values["max_workers"], f"a value >= the minimum workers ({minimum})")
    values["max_workers"] = values["min_workers"]


def models_from_json(
    value: object,
    key: str,
    *,
    workers: int,
    response_timeout_s: int,
    base: Mapping[tuple[str, str | None], ModelConfig] = MappingProxyType({}),
) -> tuple[ModelConfig, ...]:
    """Parse ``model_snapshot`` (``{"models": {...}}``) or ``models`` (``{name: {version: ..}}``).

    Parameters an entry leaves out come from the ``base`` entry of the same name and version,
    else ``workers`` and ``response_timeout_s``.
    """
    try:
        data = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as exc:
        raise bad(key, value, f"JSON ({exc.msg} at character {exc.pos})") from None
    if key == "model_snapshot":
        if not isinstance(data, dict) or not isinstance(data.get("models", {}), dict):
            raise bad(key, value, 'a JSON object with a "models" object')
        count, data = data.get("modelCount"), data.get("models", {})
        if count is not None and count != len(data):
            log.warning("model_snapshot: modelCount=%r but %d models listed", count, len(data))
    if not isinstance(data, dict):
        raise bad(key, value, 'a JSON object {"model": {"version": {...}}}')
    models: list[ModelConfig] = []
    for name, versions in data.items():
        if not name or not isinstance(versions, dict) or not versions:
            raise bad(f"{key}.{name}", versions, 'a JSON object {"version": {parameters}}')
        for version, params in versions.items():
            where = f"{key}.{name}.{version}"
            if not isinstance(params, dict):
                raise bad(where, params, "a JSON object of model parameters")
            start = base.get((name, version)) or ModelConfig(
                name, version, min_workers=workers, max_workers=workers,
                response_timeout_s=response_timeout_s,
            )  # fmt: skip
            models.append(_with_params(start, params, f"{where}.", warn_unknown=True))
    return tuple(models)


def _with_params(
    base: ModelConfig, params: Mapping[str, Any], prefix: str, *, warn_unknown: bool
) -> ModelConfig:
    """``base`` with TorchServe camelCase ``params`` applied; errors start with ``prefix``."""
    try:
        values, explicit = _convert(params, warn_unknown=warn_unknown)
        merged = {**_fields(base), **values}
        _settle_workers(merged, explicit, "maxWorkers")
    except ConfigError as exc:
        raise ConfigError(f"{prefix}{exc}") from None
    return dataclasses.replace(base, **merged)


def _fields(config: ModelConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def load_model_yaml(data: bytes, source: str) -> dict[str, Any]:
    """Parse an archive's ``model-config.yaml`` safely; ``source`` names it in errors.

    Refuses files over :data:`MAX_MODEL_YAML_BYTES`, anything but plain YAML data (no
    ``!!python/...`` tags), a top level that is not a mapping with string keys, and alias
    expansions beyond :data:`MAX_MODEL_YAML_NODES` nodes or :data:`MAX_MODEL_YAML_DEPTH` levels.
    An empty file is an empty mapping. Raises :class:`ArchiveError`.
    """
    if len(data) > MAX_MODEL_YAML_BYTES:
        raise ArchiveError(
            f"{source}: {len(data)} bytes: expected at most {MAX_MODEL_YAML_BYTES} bytes"
        )
    try:
        _check_nesting(data, source)
        loaded = yaml.safe_load(data)  # plain data only: !!python/... tags are errors
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ArchiveError(f"{source}: invalid YAML{where}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ArchiveError(f"{source}: top level is {type(loaded).__name__}: expected a mapping")
    if not all(isinstance(key, str) for key in loaded):
        raise ArchiveError(f"{source}: top-level keys must be strings")
    budget = [MAX_MODEL_YAML_NODES]
    copied: dict[str, Any] = _bounded_copy(loaded, 0, budget, source)
    return copied


def _check_nesting(data: bytes, source: str) -> None:
    """Refuse deep nesting from the event stream, before the recursive composer sees it."""
    depth = 0
    for event in yaml.parse(data, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_MODEL_YAML_DEPTH:
                raise ArchiveError(f"{source}: nested deeper than {MAX_MODEL_YAML_DEPTH} levels")
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1


def _bounded_copy(node: Any, depth: int, budget: list[int], source: str) -> Any:
    """A tree copy of YAML data that fails once too many nodes or levels are expanded."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ArchiveError(f"{source}: expands to over {MAX_MODEL_YAML_NODES} nodes")
    if depth > MAX_MODEL_YAML_DEPTH:
        raise ArchiveError(f"{source}: nested deeper than {MAX_MODEL_YAML_DEPTH} levels")
    if isinstance(node, dict):
        return {k: _bounded_copy(v, depth + 1, budget, source) for k, v in node.items()}
    if isinstance(node, list):
        return [_bounded_copy(v, depth + 1, budget, source) for v in node]
    return node


def model_config(
    name: str,
    version: str | None,
    settings: ModelDefaults,
    *,
    yaml_config: Mapping[str, Any] | None = None,
    api_overrides: Mapping[str, Any] | None = None,
    auto_workers: int = 1,
    source: str = "model-config.yaml",
) -> ModelConfig:
    """The effective settings of one model version.

    Precedence, highest first: ``api_overrides`` (management API; ModelConfig field names or
    TorchServe's query names such as ``initial_workers``, ``min_worker``, ``max_batch_delay``;
    ``None`` values are skipped) > ``yaml_config`` (from :func:`load_model_yaml`) > the matching
    ``settings.models`` entry (``model_snapshot``/``models``) > server defaults. ``auto_workers``
    is the worker count used when ``default_workers_per_model`` is 0 (the server's CPU or GPU
    count). Bad yaml values raise :class:`ArchiveError`; bad API values :class:`InvalidInput`.
    """
    config = _base(name, version, settings, auto_workers)
    if yaml_config:
        config = _apply_yaml(config, yaml_config, source)
    if api_overrides:
        config = _apply_api(config, api_overrides)
    return config


def _base(name: str, version: str | None, settings: ModelDefaults, workers: int) -> ModelConfig:
    """The config.properties entry for this model version, or one built from server defaults."""
    entries = [m for m in settings.models if m.name == name]
    if version is not None:
        entries = [m for m in entries if m.version == version]
    else:
        entries = [m for m in entries if m.default_version] or entries[:1]
    if entries:
        return entries[0]
    count = settings.default_workers_per_model or workers
    return ModelConfig(
        name, version, min_workers=count, max_workers=count,
        response_timeout_s=settings.default_response_timeout_s,
    )  # fmt: skip


def _apply_yaml(config: ModelConfig, yaml_config: Mapping[str, Any], source: str) -> ModelConfig:
    handler = yaml_config.get("handler", {})
    if handler is None:
        handler = {}
    if not isinstance(handler, dict):
        raise ArchiveError(f"{source}: handler={_short(handler)}: expected a mapping")
    frontend = {k: v for k, v in yaml_config.items() if k not in ("defaultVersion", "marName")}
    try:
        config = _with_params(config, frontend, f"{source}: ", warn_unknown=False)
    except ConfigError as exc:
        raise ArchiveError(str(exc)) from None
    return dataclasses.replace(config, handler_config=dict(handler), yaml_config=dict(yaml_config))


def _apply_api(config: ModelConfig, overrides: Mapping[str, Any]) -> ModelConfig:
    """Management API values, converted under the names the caller used."""
    values: dict[str, Any] = {}
    explicit_max = None
    try:
        for key, value in overrides.items():
            if value is None:
                continue
            names = ["min_workers", "max_workers"] if key == "initial_workers" else None
            for name in names or [_API_ALIASES.get(key, key)]:
                if name not in _FIELD_PARAMS:
                    raise InvalidInput(f"unknown model parameter {key!r}")
                values[name] = _PARAMS[_FIELD_PARAMS[name]][1](value, key)
                explicit_max = key if name == "max_workers" else explicit_max
        merged = {**_fields(config), **values}
        _settle_workers(merged, {"max_workers"} if explicit_max else set(), explicit_max or "")
    except ConfigError as exc:
        raise InvalidInput(str(exc)) from None
    return dataclasses.replace(config, **merged)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:76] + "..."
