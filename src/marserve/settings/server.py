"""ServerSettings and load_settings: config.properties, TS_ environment and command line merged."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from marserve.errors import ConfigError
from marserve.settings.model import ModelConfig, models_from_json
from marserve.settings.properties import parse_properties
from marserve.settings.values import (
    Address,
    to_address,
    to_bool,
    to_choice,
    to_host,
    to_int,
    to_list,
    to_non_negative_int,
    to_optional_non_negative_int,
    to_optional_regex,
    to_optional_text,
    to_path,
    to_port,
    to_positive_int,
    to_positive_number,
    to_regex_list,
    to_text,
)

log = logging.getLogger("marserve.settings")

TORCHSERVE_MAX_BODY = 6553500
_EMPTY: Mapping[str, Any] = MappingProxyType({})
# TorchServe's default ports, every listener on loopback (Address is immutable, so shared).
DEFAULT_INFERENCE = Address("http", "127.0.0.1", 8080)
DEFAULT_MANAGEMENT = Address("http", "127.0.0.1", 8081)
DEFAULT_METRICS = Address("http", "127.0.0.1", 8082)
DEFAULT_GRPC_INFERENCE = Address("http", "127.0.0.1", 7070)
DEFAULT_GRPC_MANAGEMENT = Address("http", "127.0.0.1", 7071)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Everything the server process is configured with; built once by :func:`load_settings`.

    Each field is the config.properties key of the same name unless its comment says otherwise.
    """

    # Listeners. TorchServe's defaults, all on 127.0.0.1; 0.0.0.0 only when configured.
    inference_address: Address = DEFAULT_INFERENCE
    management_address: Address = DEFAULT_MANAGEMENT
    metrics_address: Address = DEFAULT_METRICS
    # gRPC: host from grpc_*_address, port from grpc_*_port, https when enable_grpc_ssl.
    grpc_inference_address: Address = DEFAULT_GRPC_INFERENCE
    grpc_management_address: Address = DEFAULT_GRPC_MANAGEMENT
    enable_grpc_ssl: bool = False
    # marserve's own key: the inference gRPC APIs also listen on this port of
    # grpc_inference_address's host (KServe's grpc-v2 port 8081 in the container image).
    kserve_grpc_port: int | None = None
    # Models. load_models entries: "all", "name", "file.mar", "name=file.mar" or a URL.
    model_store: Path | None = None
    load_models: tuple[str, ...] = ()
    models: tuple[ModelConfig, ...] = ()  # from model_snapshot, then the `models` key over it
    workflow_store: Path | None = None  # defaults to model_store
    model_server_home: Path | None = None
    no_config_snapshots: bool = False  # the --ncs command-line flag
    default_workers_per_model: int = 0  # 0: choose automatically (CPU/GPU count); NUM_WORKERS
    default_response_timeout_s: int = 120  # default_response_timeout
    unregister_model_timeout_s: int = 120  # unregister_model_timeout
    default_service_handler: str | None = None
    install_py_dep_per_model: bool = False
    # Admission and sizes (bytes).
    job_queue_size: int = 100
    max_request_size: int = TORCHSERVE_MAX_BODY
    max_response_size: int = TORCHSERVE_MAX_BODY
    # Connection limits of every HTTP listener (and gRPC's streams/keep-alive): see rest/guard.py.
    header_read_timeout_s: int = 10  # header_read_timeout: request line + headers in full
    body_read_timeout_s: int = 60  # body_read_timeout: the body in full, after the headers
    keep_alive_timeout_s: int = 30  # keep_alive_timeout: idle between requests
    max_connections: int = 1000  # per listener; 503 beyond, refused beyond it plus the reserve
    max_request_line_size: int = 8192  # 414 beyond
    max_header_size: int = 16384  # all header lines together; 431 beyond
    max_header_count: int = 100  # 431 beyond
    max_chunk_count: int = 10000  # chunks in one chunked body; 413 beyond
    max_chunk_extension_size: int = 1024  # chunk extensions (per chunk, on average); 400 beyond
    grpc_max_concurrent_streams: int = 100  # per gRPC connection
    grpc_keepalive_min_time_s: int = 10  # pings more often than this end the connection
    number_of_netty_threads: int = 0  # 0: number of CPUs (front-end concurrency hint)
    netty_client_threads: int = 0  # 0: number of CPUs
    number_of_gpu: int | None = None  # None: every visible GPU
    # Metrics.
    enable_metrics_api: bool = True
    metrics_mode: str = "log"  # "log" or "prometheus"; metrics_format=prometheus implies it
    metrics_format: str = "prometheus"  # TorchServe's only format
    disable_system_metrics: bool = False
    # Security. allowed_urls: regexes a remote model URL must fully match; () denies all.
    allowed_urls: tuple[str, ...] = ()
    use_env_allowed_urls: bool = False  # only then may TS_ALLOWED_URLS set allowed_urls
    enable_model_api: bool = False  # register/unregister over the management API
    allowed_hosts: tuple[str, ...] = ()  # extra Host names a loopback listener answers ("*": any)
    disable_token_authorization: bool = False  # token auth is on unless this is true
    token_expiration_min: float = 60.0  # fractions as in TorchServe (its test config: 0.25)
    blacklist_env_vars: str | None = None  # regex of environment names hidden from workers
    # TLS: file paths only; nothing is read here.
    keystore: Path | None = None
    keystore_pass: str | None = field(default=None, repr=False)
    keystore_type: str = "PKCS12"
    private_key_file: Path | None = None
    certificate_file: Path | None = None
    # CORS: disabled unless cors_allowed_origin is set.
    cors_allowed_origin: str | None = None
    cors_allowed_methods: tuple[str, ...] = ()
    cors_allowed_headers: tuple[str, ...] = ()
    # Request handling.
    service_envelope: str | None = None  # json, body, kserve, kservev2 (kfserving* mapped)
    decode_input_request: bool = True
    limit_max_image_pixels: bool = True
    async_logging: bool = False
    enable_envvars_config: bool = False  # only config.properties or the command line set it
    source: Path | None = None  # the config file these settings came from


_Converter = Callable[[object, str], Any]
_ENVELOPES = ("json", "body", "kserve", "kservev2", "kfserving", "kfservingv2")


def _envelope(value: object, key: str) -> str | None:
    text = to_text(value, key)
    if not text:
        return None
    choice = to_choice(text, key, _ENVELOPES)
    return {"kfserving": "kserve", "kfservingv2": "kservev2"}.get(choice, choice)


def _load_models(value: object, key: str) -> tuple[str, ...]:
    entries = to_list(value, key)
    return tuple("all" if entry.lower() == "all" else entry for entry in entries)


# config.properties key -> converter. Keys whose field has another name are in _FIELD_OF.
_KEYS: dict[str, _Converter] = {
    "inference_address": to_address,
    "management_address": to_address,
    "metrics_address": to_address,
    "grpc_inference_address": to_host,
    "grpc_management_address": to_host,
    "grpc_inference_port": to_port,
    "grpc_management_port": to_port,
    "enable_grpc_ssl": to_bool,
    "kserve_grpc_port": lambda v, k: to_port(v, k) if str(v).strip() else None,
    "model_store": to_path,
    "load_models": _load_models,
    "model_snapshot": lambda v, k: v,  # parsed once workers and timeout are known
    "models": lambda v, k: v,
    "workflow_store": to_path,
    "model_server_home": to_path,
    "default_workers_per_model": to_non_negative_int,
    "NUM_WORKERS": to_non_negative_int,
    "default_response_timeout": to_positive_int,
    "unregister_model_timeout": to_positive_int,
    "default_service_handler": to_optional_text,
    "install_py_dep_per_model": to_bool,
    "job_queue_size": to_positive_int,
    "max_request_size": lambda v, k: to_int(v, k, 1, 2**31 - 1),
    "max_response_size": lambda v, k: to_int(v, k, 1, 2**31 - 1),
    "header_read_timeout": to_positive_int,
    "body_read_timeout": to_positive_int,
    "keep_alive_timeout": to_positive_int,
    "max_connections": to_positive_int,
    "max_request_line_size": lambda v, k: to_int(v, k, 64, 2**20),
    "max_header_size": lambda v, k: to_int(v, k, 256, 2**24),
    "max_header_count": lambda v, k: to_int(v, k, 1, 10000),
    "max_chunk_count": to_positive_int,
    "max_chunk_extension_size": lambda v, k: to_int(v, k, 0, 2**20),
    "grpc_max_concurrent_streams": to_positive_int,
    "grpc_keepalive_min_time": to_positive_int,
    "number_of_netty_threads": to_non_negative_int,
    "netty_client_threads": to_non_negative_int,
    "number_of_gpu": to_optional_non_negative_int,
    "enable_metrics_api": to_bool,
    "metrics_mode": lambda v, k: to_choice(v, k, ("log", "prometheus")),
    "metrics_format": lambda v, k: to_choice(v, k, ("prometheus",)),
    "disable_system_metrics": to_bool,
    "allowed_urls": to_regex_list,
    "use_env_allowed_urls": to_bool,
    "enable_model_api": to_bool,
    "allowed_hosts": to_list,
    "disable_token_authorization": to_bool,
    "token_expiration_min": to_positive_number,
    "blacklist_env_vars": to_optional_regex,
    "keystore": to_path,
    "keystore_pass": to_optional_text,
    "keystore_type": lambda v, k: to_text(v, k) or "PKCS12",
    "private_key_file": to_path,
    "certificate_file": to_path,
    "cors_allowed_origin": to_optional_text,
    "cors_allowed_methods": to_list,
    "cors_allowed_headers": to_list,
    "service_envelope": _envelope,
    "decode_input_request": to_bool,
    "limit_max_image_pixels": to_bool,
    "async_logging": to_bool,
    "enable_envvars_config": to_bool,
}
_FIELD_OF = {
    "default_response_timeout": "default_response_timeout_s",
    "unregister_model_timeout": "unregister_model_timeout_s",
    "header_read_timeout": "header_read_timeout_s",
    "body_read_timeout": "body_read_timeout_s",
    "keep_alive_timeout": "keep_alive_timeout_s",
    "grpc_keepalive_min_time": "grpc_keepalive_min_time_s",
}
# Composed into other fields after conversion.
_COMPOSED = frozenset(
    {
        "grpc_inference_address", "grpc_management_address", "grpc_inference_port",
        "grpc_management_port", "model_snapshot", "models", "NUM_WORKERS",
    }
)  # fmt: skip
# TorchServe keys with no meaning here (JVM, Netty, C++ backend, plugins): accepted, logged.
_IGNORED = frozenset(
    {
        "vmargs", "initial_worker_port", "prefer_direct_buffer", "plugins_path", "use_native_io",
        "io_ratio", "metrics_config", "system_metrics_cmd", "snapshot_store", "cpp_log_config",
    }
)  # fmt: skip
# Command-line names -> keys. `models` on the command line is TorchServe's --models flag.
_CLI_ALIASES = {
    "models": "load_models",
    "ncs": "no_config_snapshots",
    "disable_token_auth": "disable_token_authorization",
}
# Flags TorchServe's command line can only switch one way: False there means "not given".
_CLI_ONE_WAY = frozenset({"enable_model_api", "disable_token_authorization", "no_config_snapshots"})
# Never taken from the environment: the switches that decide what the environment may set.
_ENV_EXCLUDED = frozenset({"enable_envvars_config", "use_env_allowed_urls"})

# Logged at WARNING when the environment sets them, so they never change silently.
_SECURITY_KEYS = frozenset({"allowed_urls", "enable_model_api", "disable_token_authorization"})

_Raw = dict[str, tuple[object, str]]  # key -> (raw value, where it came from)
_CLI_ONLY: dict[str, _Converter] = {"no_config_snapshots": to_bool}


def load_settings(
    config_file: Path | None,
    *,
    env: Mapping[str, str] = _EMPTY,
    cli: Mapping[str, Any] = _EMPTY,
) -> ServerSettings:
    """Build the server's settings, TorchServe's precedence highest first.

    ``env`` (the caller passes ``os.environ``; ``TS_<KEY>`` variables, read only when
    ``enable_envvars_config=true`` in the file or on the command line; empty values are
    skipped; ``TS_ALLOWED_URLS`` also needs ``use_env_allowed_urls=true``) > ``cli`` (property
    keys, plus ``models`` = ``--models``, ``ncs``, ``disable_token_auth``; ``None`` = not given;
    ``enable_model_api``/``disable_token_authorization`` only switch on) > ``config_file``
    (config.properties) > defaults. Unknown file keys are logged and ignored; a bad value raises
    :class:`ConfigError` naming the key, the value, what was expected and where it came from.
    """
    raw: _Raw = {}
    if config_file is not None:
        _file_layer(raw, config_file)
    _cli_layer(raw, cli)
    if _flag(raw, "enable_envvars_config"):
        _env_layer(raw, env, allow_urls=_flag(raw, "use_env_allowed_urls"))
    values = _convert_all(raw)
    return _build(values, raw, config_file)


def _read_properties(path: Path) -> dict[str, str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # what java.util.Properties reads
    try:
        return parse_properties(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _file_layer(raw: _Raw, path: Path) -> None:
    for key, value in _read_properties(path).items():
        if key in _KEYS:
            raw[key] = (value, str(path))
        elif key in _IGNORED:
            log.debug("config key %s has no effect in marserve; ignored", key)
        else:
            log.warning("unknown config key %r in %s ignored", key, path)
    if "service_envelope" in raw and str(raw["service_envelope"][0]).strip():
        log.warning(
            "service_envelope in %s is deprecated: set enable_envvars_config=true and the "
            "TS_SERVICE_ENVELOPE environment variable instead",
            path,
        )


def _cli_layer(raw: _Raw, cli: Mapping[str, Any]) -> None:
    for name, value in cli.items():
        key = _CLI_ALIASES.get(name, name)
        if key not in _KEYS and key not in _CLI_ONLY:
            raise ConfigError(f"unknown command-line setting {name!r}")
        if value is None or (key in _CLI_ONE_WAY and value is False):
            continue
        raw[key] = (value, "command line")


def _env_layer(raw: _Raw, env: Mapping[str, str], *, allow_urls: bool) -> None:
    for name, value in env.items():
        if not name.startswith("TS_"):
            continue
        key = name[3:].lower()
        key = "NUM_WORKERS" if key == "num_workers" else key
        if key in _ENV_EXCLUDED or key not in _KEYS:
            log.debug("environment variable %s is not a setting marserve reads", name)
        elif key == "allowed_urls" and not allow_urls:
            log.warning("%s ignored: it needs use_env_allowed_urls=true in the config file", name)
        elif not value.strip():
            log.debug("environment variable %s is empty; ignored", name)
        else:
            raw[key] = (value, f"environment variable {name}")
            if key in _SECURITY_KEYS:
                log.warning("security setting %s taken from environment variable %s", key, name)


def _flag(raw: _Raw, key: str) -> bool:
    if key not in raw:
        return False
    value, origin = raw[key]
    return bool(_checked(to_bool, value, key, origin))


def _checked(converter: _Converter, value: object, key: str, origin: str) -> Any:
    try:
        return converter(value, key)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (in {origin})") from None


def _convert_all(raw: _Raw) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, (value, origin) in raw.items():
        values[key] = _checked(_KEYS.get(key) or _CLI_ONLY[key], value, key, origin)
    return values


def _build(values: dict[str, Any], raw: _Raw, config_file: Path | None) -> ServerSettings:
    kwargs = {_FIELD_OF.get(k, k): v for k, v in values.items() if k not in _COMPOSED}
    if "default_workers_per_model" not in values and "NUM_WORKERS" in values:
        kwargs["default_workers_per_model"] = values["NUM_WORKERS"]
    scheme = "https" if values.get("enable_grpc_ssl", False) else "http"
    for api, port in (("inference", 7070), ("management", 7071)):
        host = values.get(f"grpc_{api}_address", "127.0.0.1")
        kwargs[f"grpc_{api}_address"] = Address(scheme, host, values.get(f"grpc_{api}_port", port))
    kwargs["models"] = _models(
        raw,
        workers=kwargs.get("default_workers_per_model", 0) or 1,
        response_timeout_s=kwargs.get("default_response_timeout_s", 120),
    )
    kwargs.setdefault("workflow_store", kwargs.get("model_store"))
    if "metrics_format" in values and "metrics_mode" not in values:
        kwargs["metrics_mode"] = "prometheus"  # pre-0.8 TorchServe configs ask for it this way
    return ServerSettings(**kwargs, source=config_file)


def _models(raw: _Raw, *, workers: int, response_timeout_s: int) -> tuple[ModelConfig, ...]:
    """model_snapshot's models, then the `models` key applied over them field by field."""
    merged: dict[tuple[str, str | None], ModelConfig] = {}
    for key in ("model_snapshot", "models"):
        if key not in raw:
            continue
        value, origin = raw[key]
        parse = functools.partial(
            models_from_json, workers=workers, response_timeout_s=response_timeout_s, base=merged
        )
        for model in _checked(parse, value, key, origin):
            merged[(model.name, model.version)] = model
    return tuple(merged.values())
