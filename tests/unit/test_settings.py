"""Tests for marserve.settings: properties parsing, server keys, precedence, model configs."""

from __future__ import annotations

import dataclasses
import logging
import pickle
from pathlib import Path
from typing import Any

import pytest

from marserve.errors import ArchiveError, ConfigError, InvalidInput
from marserve.settings import (
    MAX_MODEL_YAML_BYTES,
    Address,
    ModelConfig,
    ServerSettings,
    load_model_yaml,
    load_settings,
    model_config,
    parse_properties,
)

# The KServe example config.properties, copied exactly from the seed document
# (seeds/003: "以下是 KServe 的示例文件").
SEED_CONFIG = """\
inference_address=http://0.0.0.0:8085
management_address=http://0.0.0.0:8085
metrics_address=http://0.0.0.0:8082
grpc_inference_port=7070
grpc_management_port=7071
enable_metrics_api=true
metrics_format=prometheus
number_of_netty_threads=4
job_queue_size=10
enable_envvars_config=true
install_py_dep_per_model=true
model_store=/mnt/models/model-store
model_snapshot={"name":"startup.cfg","modelCount":1,"models":{"mnist":{"1.0":{"defaultVersion":true,"marName":"mnist.mar","minWorkers":1,"maxWorkers":5,"batchSize":1,"maxBatchDelay":10,"responseTimeout":120}}}}
"""

SNAPSHOT = (
    '{"name":"startup.cfg","modelCount":1,"models":{"mnist":{"1.0":{"defaultVersion":true,'
    '"marName":"mnist.mar","minWorkers":1,"maxWorkers":5,"batchSize":2,"maxBatchDelay":10,'
    '"responseTimeout":60}}}}'
)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.properties"
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, **kwargs: Any) -> ServerSettings:
    return load_settings(write_config(tmp_path, text), **kwargs)


# --------------------------------------------------------------------------- properties parser


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=1", {"a": "1"}),
        ("a:1", {"a": "1"}),
        ("a 1", {"a": "1"}),
        ("  a  =  1", {"a": "1"}),
        ("a=1  ", {"a": "1  "}),  # Java keeps trailing whitespace in values
        ("a\t:\t1", {"a": "1"}),
        ("a=", {"a": ""}),
        ("a", {"a": ""}),
        ("# a comment\n! another\n  # indented\nb=2", {"b": "2"}),
        ("\n\n   \nb=2\n\n", {"b": "2"}),
        ("a=x=y:z", {"a": "x=y:z"}),
        ("a\\=b=c", {"a=b": "c"}),
        ("a\\:b:c", {"a:b": "c"}),
        ("a\\ b=c", {"a b": "c"}),
        ("a=first\\\n    second", {"a": "firstsecond"}),
        ("a=one, \\\n  two, \\\n  three", {"a": "one, two, three"}),
        (
            "a=ends with escaped backslash\\\\\nb=2",
            {"a": "ends with escaped backslash\\", "b": "2"},
        ),
        ("a=x\\\n# not a comment\nb=2", {"a": "x# not a comment", "b": "2"}),
        ("# comment ends in backslash \\\nb=2", {"b": "2"}),
        ("a=tab\\there\\nnewline", {"a": "tab\there\nnewline"}),
        ("a=\\u00e9t\\u00E9", {"a": "été"}),
        ("a=c:\\\\path", {"a": "c:\\path"}),
        ("a=1\r\nb=2\rc=3", {"a": "1", "b": "2", "c": "3"}),
        ("a=1\na=2", {"a": "2"}),  # the later duplicate wins
        ("a=trailing continuation\\", {"a": "trailing continuation"}),
        ("a=\\#literal", {"a": "#literal"}),
    ],
)
def test_parse_properties(text: str, expected: dict[str, str]) -> None:
    assert parse_properties(text) == expected


def test_parse_properties_json_continuations() -> None:
    # TorchServe's documented multi-line `models` value.
    text = 'models={\\\n  "noop": {\\\n    "1.0": {"batchSize": 4}\\\n  }\\\n}\n'
    assert parse_properties(text) == {"models": '{"noop": {"1.0": {"batchSize": 4}}}'}


@pytest.mark.parametrize("text", ["a=\\u00g1", "a=\\u12", "a=bad \\u"])
def test_parse_properties_rejects_malformed_unicode_escape(text: str) -> None:
    with pytest.raises(ConfigError, match=r"line 1: malformed \\u escape"):
        parse_properties(text)


# --------------------------------------------------------------------------- Address


@pytest.mark.parametrize(
    ("value", "expected", "url"),
    [
        ("http://127.0.0.1:8080", Address("http", "127.0.0.1", 8080), "http://127.0.0.1:8080"),
        ("https://0.0.0.0:8443", Address("https", "0.0.0.0", 8443), "https://0.0.0.0:8443"),
        ("HTTP://localhost:1/", Address("http", "localhost", 1), "http://localhost:1"),
        ("https://127.0.0.1", Address("https", "127.0.0.1", 443), "https://127.0.0.1:443"),
        ("http://example.com", Address("http", "example.com", 80), "http://example.com:80"),
        ("http://[::1]:8080", Address("http", "::1", 8080), "http://[::1]:8080"),
        ("http://127.0.0.1:0", Address("http", "127.0.0.1", 0), "http://127.0.0.1:0"),
        (" http://127.0.0.1:8080 ", Address("http", "127.0.0.1", 8080), "http://127.0.0.1:8080"),
        ("unix:/tmp/m.sock", Address("unix", "", 0, "/tmp/m.sock"), "unix:/tmp/m.sock"),
    ],
)
def test_address_parse(value: str, expected: Address, url: str) -> None:
    address = Address.parse(value, "inference_address")
    assert address == expected
    assert address.url == url


@pytest.mark.parametrize(
    "value",
    [
        "127.0.0.1:8080",
        "ftp://127.0.0.1:21",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:-1",
        "http://127.0.0.1:port",
        "http://:8080",
        "http://user:pw@127.0.0.1:8080",
        "http://127.0.0.1:8080/path",
        "http://127.0.0.1:8080?x=1",
        "http://bad host:8080",
        "unix:relative.sock",
        "",
    ],
)
def test_address_parse_rejects(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Address.parse(value, "management_address")
    message = str(info.value)
    assert message.startswith(f"management_address={value!r}: expected ")


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        (Address("http", "127.0.0.1", 1), True),
        (Address("http", "::1", 1), True),
        (Address("http", "localhost", 1), True),
        (Address("unix", "", 0, "/s"), True),
        (Address("http", "0.0.0.0", 1), False),
        (Address("http", "10.0.0.1", 1), False),
        (Address("http", "example.com", 1), False),
    ],
)
def test_address_is_loopback(address: Address, loopback: bool) -> None:
    assert address.is_loopback is loopback


# --------------------------------------------------------------------------- server keys


def test_defaults_without_config_file() -> None:
    settings = load_settings(None)
    assert settings == ServerSettings()
    assert settings.inference_address.url == "http://127.0.0.1:8080"
    assert settings.management_address.url == "http://127.0.0.1:8081"
    assert settings.metrics_address.url == "http://127.0.0.1:8082"
    assert settings.grpc_inference_address.url == "http://127.0.0.1:7070"
    assert settings.grpc_management_address.url == "http://127.0.0.1:7071"
    assert settings.allowed_urls == ()  # deny every remote URL
    assert settings.enable_model_api is False
    assert settings.disable_token_authorization is False  # token auth on
    assert settings.token_expiration_min == 60
    assert settings.job_queue_size == 100
    assert settings.max_request_size == settings.max_response_size == 6553500
    assert settings.default_response_timeout_s == 120
    assert settings.default_workers_per_model == 0
    assert settings.enable_metrics_api is True
    assert settings.model_store is None
    assert settings.models == ()
    assert settings.service_envelope is None
    assert settings.source is None


GOOD: list[tuple[str, str, str, Any]] = [
    # (key, raw value, field, expected typed value)
    ("inference_address", "https://0.0.0.0:8443", "inference_address",
     Address("https", "0.0.0.0", 8443)),
    ("management_address", "unix:/run/m.sock", "management_address",
     Address("unix", "", 0, "/run/m.sock")),
    ("metrics_address", "http://10.1.2.3:9000", "metrics_address",
     Address("http", "10.1.2.3", 9000)),
    ("grpc_inference_port", "9090", "grpc_inference_address", Address("http", "127.0.0.1", 9090)),
    ("grpc_management_port", "9091", "grpc_management_address", Address("http", "127.0.0.1", 9091)),
    ("grpc_inference_address", "0.0.0.0", "grpc_inference_address",
     Address("http", "0.0.0.0", 7070)),
    ("grpc_management_address", "[::1]", "grpc_management_address", Address("http", "::1", 7071)),
    ("enable_grpc_ssl", "true", "grpc_inference_address", Address("https", "127.0.0.1", 7070)),
    ("enable_envvars_config", "TRUE", "enable_envvars_config", True),
    ("install_py_dep_per_model", "True", "install_py_dep_per_model", True),
    ("enable_metrics_api", "false", "enable_metrics_api", False),
    ("metrics_mode", "prometheus", "metrics_mode", "prometheus"),
    ("metrics_format", "prometheus", "metrics_mode", "prometheus"),
    ("disable_system_metrics", "true", "disable_system_metrics", True),
    ("number_of_netty_threads", "4", "number_of_netty_threads", 4),
    ("netty_client_threads", "2", "netty_client_threads", 2),
    ("job_queue_size", "10", "job_queue_size", 10),
    ("model_store", "/mnt/models/model-store", "model_store", Path("/mnt/models/model-store")),
    ("load_models", "ALL", "load_models", ("all",)),
    ("load_models", "a.mar, b=b.mar", "load_models", ("a.mar", "b=b.mar")),
    ("NUM_WORKERS", "3", "default_workers_per_model", 3),
    ("default_workers_per_model", "2", "default_workers_per_model", 2),
    ("default_response_timeout", "30", "default_response_timeout_s", 30),
    ("unregister_model_timeout", "15", "unregister_model_timeout_s", 15),
    ("max_request_size", "1024", "max_request_size", 1024),
    ("max_response_size", "2048", "max_response_size", 2048),
    ("allowed_urls", "https://s3.amazonaws.com/.*, file:///models/.*", "allowed_urls",
     ("https://s3.amazonaws.com/.*", "file:///models/.*")),
    ("use_env_allowed_urls", "true", "use_env_allowed_urls", True),
    ("enable_model_api", "true", "enable_model_api", True),
    ("disable_token_authorization", "true", "disable_token_authorization", True),
    ("token_expiration_min", "5", "token_expiration_min", 5),
    ("token_expiration_min", "0.25", "token_expiration_min", 0.25),  # TorchServe's test config
    ("token_expiration_min", ".5", "token_expiration_min", 0.5),
    ("service_envelope", "kservev2", "service_envelope", "kservev2"),
    ("service_envelope", "kfserving", "service_envelope", "kserve"),
    ("service_envelope", "", "service_envelope", None),
    ("number_of_gpu", "0", "number_of_gpu", 0),
    ("async_logging", "true", "async_logging", True),
    ("default_service_handler", "image_classifier", "default_service_handler", "image_classifier"),
    ("cors_allowed_origin", "https://yourdomain.com", "cors_allowed_origin", "https://yourdomain.com"),
    ("cors_allowed_methods", "GET, POST, PUT, OPTIONS", "cors_allowed_methods",
     ("GET", "POST", "PUT", "OPTIONS")),
    ("cors_allowed_headers", "X-Custom-Header", "cors_allowed_headers", ("X-Custom-Header",)),
    ("keystore", "keystore.p12", "keystore", Path("keystore.p12")),
    ("keystore_pass", "changeit", "keystore_pass", "changeit"),
    ("keystore_type", "JKS", "keystore_type", "JKS"),
    ("private_key_file", "/etc/tls/key.pem", "private_key_file", Path("/etc/tls/key.pem")),
    ("certificate_file", "/etc/tls/cert.pem", "certificate_file", Path("/etc/tls/cert.pem")),
    ("workflow_store", "/wf", "workflow_store", Path("/wf")),
    ("model_server_home", "/opt/ms", "model_server_home", Path("/opt/ms")),
    ("blacklist_env_vars", "AWS_.*|.*TOKEN.*", "blacklist_env_vars", "AWS_.*|.*TOKEN.*"),
    ("decode_input_request", "false", "decode_input_request", False),
    ("limit_max_image_pixels", "false", "limit_max_image_pixels", False),
]  # fmt: skip


# Keys that set more than one field.
ALSO_CHANGES = {
    "enable_grpc_ssl": {"enable_grpc_ssl", "grpc_management_address"},
    "metrics_format": {"metrics_format"},
}


@pytest.mark.parametrize(("key", "raw", "field", "expected"), GOOD)
def test_key_parses(tmp_path: Path, key: str, raw: str, field: str, expected: Any) -> None:
    settings = load_text(tmp_path, f"{key}={raw}\n")
    assert getattr(settings, field) == expected
    defaults = dataclasses.asdict(ServerSettings())
    changed = {k for k, v in dataclasses.asdict(settings).items() if v != defaults[k]}
    assert changed - {"source", "workflow_store"} <= {field} | ALSO_CHANGES.get(key, set())


BAD: list[tuple[str, str, str]] = [
    # (key, bad raw value, words of the expectation)
    ("inference_address", "localhost:8080", "expected http://host:port"),
    ("management_address", "http://127.0.0.1:70000", "expected http://host:port"),
    ("metrics_address", "tcp://0.0.0.0:8082", "expected http://host:port"),
    ("grpc_inference_port", "seventy", "expected an integer from 0 to 65535"),
    ("grpc_management_port", "65536", "expected an integer from 0 to 65535"),
    ("grpc_inference_address", "http://0.0.0.0", "expected an IP address or host name"),
    ("grpc_management_address", "bad host", "expected an IP address or host name"),
    ("enable_grpc_ssl", "on", "expected true or false"),
    ("enable_envvars_config", "yes", "expected true or false"),
    ("install_py_dep_per_model", "1", "expected true or false"),
    ("enable_metrics_api", "maybe", "expected true or false"),
    ("metrics_mode", "statsd", "expected one of log, prometheus"),
    ("metrics_format", "json", "expected one of prometheus"),
    ("disable_system_metrics", "nope", "expected true or false"),
    ("number_of_netty_threads", "-1", "expected a non-negative integer"),
    ("netty_client_threads", "1.5", "expected a non-negative integer"),
    ("job_queue_size", "ten", "expected a positive integer"),
    ("job_queue_size", "0", "expected a positive integer"),
    ("model_store", "/mnt/\\u0000x", "expected a filesystem path"),
    ("NUM_WORKERS", "many", "expected a non-negative integer"),
    ("default_workers_per_model", "-2", "expected a non-negative integer"),
    ("default_response_timeout", "0", "expected a positive integer"),
    ("unregister_model_timeout", "2m", "expected a positive integer"),
    ("max_request_size", "6MB", "expected an integer from 1 to 2147483647"),
    ("max_response_size", "99999999999", "expected an integer from 1 to 2147483647"),
    ("allowed_urls", "https://ok/.*,https://(bad", "expected a valid regular expression"),
    ("use_env_allowed_urls", "sure", "expected true or false"),
    ("enable_model_api", "enabled", "expected true or false"),
    ("disable_token_authorization", "0", "expected true or false"),
    ("token_expiration_min", "never", "expected a positive number"),
    ("token_expiration_min", "0", "expected a positive number"),
    ("token_expiration_min", "-1", "expected a positive number"),
    ("token_expiration_min", "nan", "expected a positive number"),
    ("service_envelope", "soap", "expected one of json, body, kserve, kservev2"),
    ("number_of_gpu", "all", "expected a non-negative integer"),
    ("async_logging", "y", "expected true or false"),
    ("keystore", "\\u0000", "expected a filesystem path"),
    ("private_key_file", "k\\u0000", "expected a filesystem path"),
    ("certificate_file", "c\\u0000", "expected a filesystem path"),
    ("workflow_store", "w\\u0000", "expected a filesystem path"),
    ("model_server_home", "h\\u0000", "expected a filesystem path"),
    ("blacklist_env_vars", "AWS_(", "expected a valid regular expression"),
    ("decode_input_request", "nah", "expected true or false"),
    ("limit_max_image_pixels", "off", "expected true or false"),
    ("model_snapshot", "{not json", "expected JSON"),
    ("model_snapshot", '{"models": []}', 'expected a JSON object with a "models" object'),
    ("models", "[1, 2]", "expected a JSON object"),
]


# List keys name the one item that failed rather than the whole value.
SHOWN = {"allowed_urls": "https://(bad"}


@pytest.mark.parametrize(("key", "raw", "expectation"), BAD)
def test_key_rejects_bad_value(tmp_path: Path, key: str, raw: str, expectation: str) -> None:
    path = write_config(tmp_path, f"{key}={raw}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    value = SHOWN.get(key, parse_properties(f"v={raw}")["v"])
    assert message.startswith(f"{key}=")
    assert repr(value)[:60] in message
    assert expectation in message
    assert str(path) in message


def test_error_message_shape(tmp_path: Path) -> None:
    path = write_config(tmp_path, "job_queue_size=ten\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == f"job_queue_size='ten': expected a positive integer (in {path})"


@pytest.mark.parametrize(
    ("snapshot", "words"),
    [
        ('{"models": {"m": {"1.0": {"batchSize": "x"}}}}', "model_snapshot.m.1.0.batchSize='x'"),
        ('{"models": {"m": {"1.0": {"minWorkers": -1}}}}', "model_snapshot.m.1.0.minWorkers=-1"),
        ('{"models": {"m": {"1.0": {"minWorkers": 3, "maxWorkers": 2}}}}', "maxWorkers=2"),
        ('{"models": {"m": {"1.0": {"deviceType": "tpu"}}}}', "expected one of cpu, gpu, neuron"),
        ('{"models": {"m": {"1.0": {"defaultVersion": "x"}}}}', "expected true or false"),
        ('{"models": {"m": {"1.0": 5}}}', "model_snapshot.m.1.0=5"),
        ('{"models": {"m": {}}}', "model_snapshot.m={}"),
    ],
)
def test_bad_snapshot_entries(tmp_path: Path, snapshot: str, words: str) -> None:
    with pytest.raises(ConfigError, match="expected") as info:
        load_text(tmp_path, f"model_snapshot={snapshot}\n")
    assert words in str(info.value)


def test_unknown_key_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="marserve.settings")
    settings = load_text(tmp_path, "job_queue_size=7\nno_such_key=1\nvmargs=-Xmx4g\n")
    assert settings.job_queue_size == 7
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'no_such_key'" in warnings[0].getMessage()
    assert warnings[0].name == "marserve.settings"
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("vmargs" in m for m in debug)


def test_service_envelope_in_file_is_deprecated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="marserve.settings")
    assert load_text(tmp_path, "service_envelope=kserve\n").service_envelope == "kserve"
    assert any("deprecated" in r.getMessage() for r in caplog.records)


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path / "missing.properties")


def test_latin1_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.properties"
    path.write_bytes("default_service_handler=caf\xe9\n".encode("latin-1"))
    assert load_settings(path).default_service_handler == "café"


def test_settings_pickle(tmp_path: Path) -> None:
    settings = load_text(tmp_path, SEED_CONFIG)
    assert pickle.loads(pickle.dumps(settings)) == settings
    assert "changeit" not in repr(load_text(tmp_path, "keystore_pass=changeit\n"))


# --------------------------------------------------------------------------- the seed file


def test_seed_config_properties(tmp_path: Path) -> None:
    path = write_config(tmp_path, SEED_CONFIG)
    settings = load_settings(path)
    assert settings.inference_address == Address("http", "0.0.0.0", 8085)
    assert settings.management_address == Address("http", "0.0.0.0", 8085)
    assert settings.metrics_address == Address("http", "0.0.0.0", 8082)
    assert settings.grpc_inference_address == Address("http", "127.0.0.1", 7070)
    assert settings.grpc_management_address == Address("http", "127.0.0.1", 7071)
    assert settings.enable_metrics_api is True
    assert settings.metrics_format == "prometheus"
    assert settings.metrics_mode == "prometheus"  # implied by metrics_format
    assert settings.number_of_netty_threads == 4
    assert settings.job_queue_size == 10
    assert settings.enable_envvars_config is True
    assert settings.install_py_dep_per_model is True
    assert settings.model_store == Path("/mnt/models/model-store")
    assert settings.workflow_store == Path("/mnt/models/model-store")
    assert settings.source == path
    assert settings.models == (
        ModelConfig(
            name="mnist",
            version="1.0",
            mar_name="mnist.mar",
            default_version=True,
            min_workers=1,
            max_workers=5,
            batch_size=1,
            max_batch_delay_ms=10,
            response_timeout_s=120,
        ),
    )


def test_seed_004_num_workers(tmp_path: Path) -> None:
    settings = load_text(tmp_path, "NUM_WORKERS=1\nmodel_store=/mnt/models/model-store\n")
    assert settings.default_workers_per_model == 1
    both = load_text(tmp_path, "NUM_WORKERS=1\ndefault_workers_per_model=4\n")
    assert both.default_workers_per_model == 4


def test_models_key_over_snapshot(tmp_path: Path) -> None:
    text = (
        f"model_snapshot={SNAPSHOT}\n"
        'models={"mnist": {"1.0": {"batchSize": 8}}, "other": {"2.0": {"marName": "o.mar"}}}\n'
        "default_workers_per_model=3\ndefault_response_timeout=40\n"
    )
    settings = load_text(tmp_path, text)
    mnist, other = settings.models
    assert (mnist.name, mnist.version) == ("mnist", "1.0")
    assert (mnist.batch_size, mnist.max_workers) == (8, 5)
    assert mnist.response_timeout_s == 60
    assert (other.name, other.version, other.mar_name) == ("other", "2.0", "o.mar")
    assert (other.min_workers, other.max_workers, other.response_timeout_s) == (3, 3, 40)


# --------------------------------------------------------------------------- env and CLI


def test_env_ignored_unless_enabled(tmp_path: Path) -> None:
    env = {"TS_JOB_QUEUE_SIZE": "5", "TS_INFERENCE_ADDRESS": "http://0.0.0.0:9000"}
    off = load_text(tmp_path, "job_queue_size=10\n", env=env)
    assert off.job_queue_size == 10
    assert off.inference_address.host == "127.0.0.1"
    explicit_off = load_text(tmp_path, "enable_envvars_config=false\n", env=env)
    assert explicit_off.job_queue_size == 100
    on = load_text(tmp_path, "enable_envvars_config=true\njob_queue_size=10\n", env=env)
    assert on.job_queue_size == 5
    assert on.inference_address == Address("http", "0.0.0.0", 9000)


def test_metrics_mode_wins_over_metrics_format(tmp_path: Path) -> None:
    settings = load_text(tmp_path, "metrics_format=prometheus\nmetrics_mode=log\n")
    assert (settings.metrics_mode, settings.metrics_format) == ("log", "prometheus")


def test_env_security_settings_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="marserve.settings")
    env = {"TS_ENABLE_MODEL_API": "true", "TS_DISABLE_TOKEN_AUTHORIZATION": "true"}
    settings = load_text(tmp_path, "enable_envvars_config=true\n", env=env)
    assert settings.enable_model_api is True
    assert settings.disable_token_authorization is True
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "TS_ENABLE_MODEL_API" in logged
    assert "TS_DISABLE_TOKEN_AUTHORIZATION" in logged


def test_env_cannot_enable_itself(tmp_path: Path) -> None:
    env = {"TS_ENABLE_ENVVARS_CONFIG": "true", "TS_JOB_QUEUE_SIZE": "5"}
    assert load_text(tmp_path, "", env=env).job_queue_size == 100


@pytest.mark.parametrize(
    ("value", "expected"), [("kserve", "kserve"), ("kservev2", "kservev2"), ("", None)]
)
def test_ts_service_envelope(tmp_path: Path, value: str, expected: str | None) -> None:
    settings = load_text(tmp_path, SEED_CONFIG, env={"TS_SERVICE_ENVELOPE": value})
    assert settings.service_envelope == expected


def test_empty_env_value_keeps_file_value(tmp_path: Path) -> None:
    text = "enable_envvars_config=true\nservice_envelope=kservev2\n"
    settings = load_text(tmp_path, text, env={"TS_SERVICE_ENVELOPE": "", "TS_JOB_QUEUE_SIZE": " "})
    assert settings.service_envelope == "kservev2"
    assert settings.job_queue_size == 100


def test_bad_env_value_names_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, SEED_CONFIG, env={"TS_JOB_QUEUE_SIZE": "ten"})
    assert str(info.value) == (
        "job_queue_size='ten': expected a positive integer "
        "(in environment variable TS_JOB_QUEUE_SIZE)"
    )


def test_env_num_workers_and_unrelated_variables(tmp_path: Path) -> None:
    env = {"TS_NUM_WORKERS": "2", "TS_CONFIG_FILE": "/x", "TS_SERVICE_HOST": "10.0.0.1"}
    settings = load_text(tmp_path, "enable_envvars_config=true\n", env=env)
    assert settings.default_workers_per_model == 2


def test_env_allowed_urls_needs_opt_in(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = {"TS_ALLOWED_URLS": "https://.*", "TS_USE_ENV_ALLOWED_URLS": "true"}
    caplog.set_level(logging.WARNING, logger="marserve.settings")
    denied = load_text(tmp_path, "enable_envvars_config=true\n", env=env)
    assert denied.allowed_urls == ()
    assert any("TS_ALLOWED_URLS" in r.getMessage() for r in caplog.records)
    text = "enable_envvars_config=true\nuse_env_allowed_urls=true\n"
    assert load_text(tmp_path, text, env=env).allowed_urls == ("https://.*",)


def test_precedence_env_cli_file_defaults(tmp_path: Path) -> None:
    text = "enable_envvars_config=true\njob_queue_size=10\nmodel_store=/file\nnumber_of_gpu=1\n"
    cli = {"job_queue_size": 20, "model_store": "/cli", "number_of_gpu": 2}
    env = {"TS_JOB_QUEUE_SIZE": "30"}
    settings = load_text(tmp_path, text, env=env, cli=cli)
    assert settings.job_queue_size == 30  # env over cli over file
    assert settings.model_store == Path("/cli")  # cli over file
    assert settings.number_of_gpu == 2
    assert settings.max_request_size == 6553500  # default
    assert load_text(tmp_path, text, cli=cli).job_queue_size == 20
    assert load_text(tmp_path, text).job_queue_size == 10


def test_cli_mapping(tmp_path: Path) -> None:
    cli: dict[str, Any] = {
        "model_store": Path("/store"),
        "models": ["mnist=mnist.mar", "all"],
        "ncs": True,
        "disable_token_auth": True,
        "enable_model_api": True,
        "workflow_store": None,
    }
    settings = load_text(tmp_path, "load_models=other.mar\n", cli=cli)
    assert settings.model_store == Path("/store")
    assert settings.load_models == ("mnist=mnist.mar", "all")
    assert settings.no_config_snapshots is True
    assert settings.disable_token_authorization is True
    assert settings.enable_model_api is True
    assert settings.workflow_store == Path("/store")


def test_cli_flags_only_switch_one_way(tmp_path: Path) -> None:
    text = "enable_model_api=true\ndisable_token_authorization=true\n"
    cli = {"enable_model_api": False, "disable_token_auth": False, "ncs": False}
    settings = load_text(tmp_path, text, cli=cli)
    assert settings.enable_model_api is True
    assert settings.disable_token_authorization is True


def test_cli_rejects_unknown_and_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown command-line setting 'no_such_flag'"):
        load_settings(None, cli={"no_such_flag": 1})
    with pytest.raises(ConfigError) as info:
        load_settings(None, cli={"job_queue_size": True})
    assert str(info.value) == "job_queue_size=True: expected a positive integer (in command line)"


# --------------------------------------------------------------------------- model-config.yaml


def test_load_model_yaml() -> None:
    data = b"minWorkers: 2\nbatchSize: 4\nhandler:\n  threshold: 0.5\n  labels: [a, b]\n"
    assert load_model_yaml(data, "m.mar/model-config.yaml") == {
        "minWorkers": 2,
        "batchSize": 4,
        "handler": {"threshold": 0.5, "labels": ["a", "b"]},
    }
    assert load_model_yaml(b"", "empty.yaml") == {}
    assert load_model_yaml(b"# only a comment\n", "c.yaml") == {}


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"!!python/object/apply:os.system ['touch {pwn}']\n", "invalid YAML"),
        (b"a: !!python/object/apply:os.system ['touch {pwn}']\n", "invalid YAML"),
        (b"a: !!python/object/new:subprocess.call [['touch', '{pwn}']]\n", "invalid YAML"),
        (b"a: !!python/name:os.system\n", "invalid YAML"),
        (b"- 1\n- 2\n", "top level is list: expected a mapping"),
        (b"just a string\n", "top level is str: expected a mapping"),
        (b"a: [1, 2\n", "invalid YAML (line"),
        (b"1: x\n", "top-level keys must be strings"),
        (b"a: 1\n" + b"#" * MAX_MODEL_YAML_BYTES, "expected at most 1048576 bytes"),
    ],
)
def test_load_model_yaml_rejects(data: bytes, words: str, tmp_path: Path) -> None:
    pwn = tmp_path / "pwn"
    with pytest.raises(ArchiveError) as info:
        load_model_yaml(data.replace(b"{pwn}", str(pwn).encode()), "m.mar/model-config.yaml")
    assert str(info.value).startswith("m.mar/model-config.yaml: ")
    assert words in str(info.value)
    assert not pwn.exists()  # nothing was executed


def test_load_model_yaml_alias_bomb() -> None:
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 9):
        prev, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(ArchiveError, match="expands to over 100000 nodes"):
        load_model_yaml("\n".join(lines).encode(), "bomb.yaml")


@pytest.mark.parametrize(
    "data",
    [
        b"a: " + b"[" * 80 + b"]" * 80 + b"\n",
        b"a: " + b"[" * 200_000,  # would exhaust the recursive composer's stack
        b"a: " + b"{x: " * 5_000,
        b"a: &r [1, *r]\n",  # a recursive alias
    ],
)
def test_load_model_yaml_too_deep(data: bytes) -> None:
    with pytest.raises(ArchiveError, match="nested deeper than 64 levels"):
        load_model_yaml(data, "deep.yaml")


# --------------------------------------------------------------------------- model precedence


def test_model_precedence_api_yaml_snapshot_defaults(tmp_path: Path) -> None:
    settings = load_text(tmp_path, f"model_snapshot={SNAPSHOT}\n")
    yaml_config = load_model_yaml(
        b"batchSize: 8\nmaxBatchDelay: 50\nstartupTimeout: 300\nhandler:\n  k: v\npippy: {x: 1}\n",
        "m.yaml",
    )
    config = model_config(
        "mnist", None, settings, yaml_config=yaml_config, api_overrides={"batch_size": "16"}
    )
    assert config.batch_size == 16  # api over yaml over snapshot
    assert config.max_batch_delay_ms == 50  # yaml over snapshot (10)
    assert config.startup_timeout_s == 300  # yaml over default
    assert config.response_timeout_s == 60  # snapshot over default
    assert (config.min_workers, config.max_workers) == (1, 5)  # snapshot
    assert config.job_queue_size is None  # default: the server's
    assert (config.version, config.mar_name) == ("1.0", "mnist.mar")
    assert config.handler_config == {"k": "v"}
    assert config.yaml_config["pippy"] == {"x": 1}
    snapshot_only = model_config("mnist", "1.0", settings)
    assert (snapshot_only.batch_size, snapshot_only.max_batch_delay_ms) == (2, 10)


def test_model_defaults_from_server(tmp_path: Path) -> None:
    settings = load_text(tmp_path, "default_workers_per_model=3\ndefault_response_timeout=45\n")
    config = model_config("resnet", None, settings)
    expected = ModelConfig("resnet", None, min_workers=3, max_workers=3, response_timeout_s=45)
    assert config == expected
    auto = model_config("resnet", "2.0", load_settings(None), auto_workers=4)
    assert (auto.version, auto.min_workers, auto.max_workers) == ("2.0", 4, 4)
    assert (auto.batch_size, auto.max_batch_delay_ms, auto.response_timeout_s) == (1, 100, 120)


def test_model_version_selection(tmp_path: Path) -> None:
    snapshot = (
        '{"models": {"m": {"1.0": {"defaultVersion": false, "batchSize": 1},'
        ' "2.0": {"defaultVersion": true, "batchSize": 2}}}}'
    )
    settings = load_text(tmp_path, f"model_snapshot={snapshot}\n")
    assert model_config("m", None, settings).batch_size == 2
    assert model_config("m", "1.0", settings).batch_size == 1
    assert model_config("m", "3.0", settings).batch_size == 1  # unknown version: defaults


def test_model_yaml_frontend_keys() -> None:
    yaml_config = load_model_yaml(
        b"minWorkers: 2\nmaxWorkers: 4\njobQueueSize: 7\nresponseTimeout: 9\n"
        b"deviceType: GPU\ndeviceIds: [0, 2]\nparallelType: tp\nuseVenv: true\n",
        "m.yaml",
    )
    config = model_config("m", None, ServerSettings(), yaml_config=yaml_config)
    assert (config.min_workers, config.max_workers, config.job_queue_size) == (2, 4, 7)
    assert (config.response_timeout_s, config.device_type) == (9, "gpu")
    assert (config.device_ids, config.parallel_type) == ((0, 2), "tp")
    raised = model_config("m", None, ServerSettings(), yaml_config={"minWorkers": 3})
    assert (raised.min_workers, raised.max_workers) == (3, 3)  # max follows an implicit min


@pytest.mark.parametrize(
    ("yaml_config", "words"),
    [
        ({"batchSize": 0}, "m.yaml: batchSize=0: expected a positive integer"),
        ({"maxBatchDelay": "soon"}, "m.yaml: maxBatchDelay='soon': expected a non-negative"),
        ({"deviceIds": "0,1"}, "m.yaml: deviceIds='0,1': expected a list of GPU ids"),
        ({"deviceIds": [0, -1]}, "m.yaml: deviceIds=-1: expected a non-negative integer"),
        ({"minWorkers": 4, "maxWorkers": 2}, "maxWorkers=2: expected a value >= the minimum"),
        ({"parallelType": "zz"}, "expected one of pp, tp, pptp, custom"),
        ({"handler": [1, 2]}, "m.yaml: handler=[1, 2]: expected a mapping"),
    ],
)
def test_model_yaml_bad_values(yaml_config: dict[str, Any], words: str) -> None:
    with pytest.raises(ArchiveError) as info:
        model_config("m", None, ServerSettings(), yaml_config=yaml_config, source="m.yaml")
    assert words in str(info.value)


def test_model_api_overrides() -> None:
    settings = ServerSettings()
    config = model_config(
        "m",
        None,
        settings,
        api_overrides={
            "initial_workers": "2",
            "max_batch_delay": 5,
            "response_timeout": "30",
            "startup_timeout": None,
        },
    )
    assert (config.min_workers, config.max_workers, config.max_batch_delay_ms) == (2, 2, 5)
    assert (config.response_timeout_s, config.startup_timeout_s) == (30, 120)
    scaled = model_config(
        "m", None, settings, api_overrides={"min_worker": 1, "max_worker": 3, "job_queue_size": 9}
    )
    assert (scaled.min_workers, scaled.max_workers, scaled.job_queue_size) == (1, 3, 9)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": "big"}, "batch_size='big': expected a positive integer"),
        ({"min_worker": 3, "max_worker": 1}, "max_worker=1: expected a value >= the minimum"),
        ({"initial_workers": -1}, "initial_workers=-1: expected a non-negative integer"),
        ({"bogus": 1}, "unknown model parameter 'bogus'"),
    ],
)
def test_model_api_bad_values(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        model_config("m", None, ServerSettings(), api_overrides=overrides)
    assert str(info.value).startswith(message)


def test_model_config_is_hashable_and_picklable() -> None:
    yaml_config = load_model_yaml(b"handler:\n  a: [1, 2]\n", "m.yaml")
    config = model_config("m", None, ServerSettings(), yaml_config=yaml_config)
    assert pickle.loads(pickle.dumps(config)) == config
    assert hash(config) == hash(dataclasses.replace(config, handler_config={}))
