"""``marserve container``: the runtime's argv and env turned into marserve's settings."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from marserve.cli.container import (
    container_overrides,
    container_properties,
    envelope_for,
    split_args,
)
from marserve.settings.properties import parse_properties

RUNTIME = [
    "torchserve",
    "--start",
    "--model-store=/mnt/models/model-store",
    "--ts-config=/mnt/models/config/config.properties",
]


@pytest.mark.parametrize(
    ("argv", "serve", "ts_config", "ignored"),
    [
        (
            RUNTIME,
            ("--start", "--model-store", "/mnt/models/model-store"),
            Path("/mnt/models/config/config.properties"),
            (),
        ),
        (
            [*RUNTIME, "--disable-token-auth", "--enable-model-api"],
            (
                "--start",
                "--model-store",
                "/mnt/models/model-store",
                "--disable-token-auth",
                "--enable-model-api",
            ),
            Path("/mnt/models/config/config.properties"),
            (),
        ),
        (
            ["--ts-config", "c.properties", "--models", "all"],
            ("--models", "all"),
            Path("c.properties"),
            (),
        ),
        (["marserve", "serve", "--ncs"], ("--ncs",), None, ()),
        (
            ["--log-config", "log4j2.xml", "--no-config-snapshot"],
            (),
            None,
            ("--log-config log4j2.xml", "--no-config-snapshot"),
        ),
        (["--plugins-path=/p"], (), None, ("--plugins-path=/p",)),
    ],
)
def test_split_args(
    argv: list[str], serve: tuple[str, ...], ts_config: Path | None, ignored: tuple[str, ...]
) -> None:
    parsed = split_args(argv)
    assert parsed.serve_args == serve
    assert parsed.ts_config == ts_config
    assert parsed.ignored == ignored


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unknown argument '--bogus'"),
        (["--ts-config"], "option --ts-config needs a value"),
        (["--start=yes"], "unknown argument '--start=yes'"),
    ],
)
def test_split_args_refuses_what_torchserve_would_not_take(argv: list[str], message: str) -> None:
    with pytest.raises(click.UsageError, match=message):
        split_args(argv)


@pytest.mark.parametrize(
    ("env", "envelope"),
    [
        ({}, None),
        ({"TS_SERVICE_ENVELOPE": "kserve"}, "kserve"),
        ({"TS_SERVICE_ENVELOPE": "kservev2", "PROTOCOL_VERSION": "v1"}, "kservev2"),
        (
            {"TS_SERVICE_ENVELOPE": "{{.Labels.serviceEnvelope}}", "PROTOCOL_VERSION": "v2"},
            "kservev2",
        ),
        ({"PROTOCOL_VERSION": "v1"}, "kserve"),
        ({"PROTOCOL_VERSION": "grpc-v2"}, "kservev2"),
        ({"TS_SERVICE_ENVELOPE": " "}, None),
    ],
)
def test_envelope_for(env: dict[str, str], envelope: str | None) -> None:
    assert envelope_for(env) == envelope


def test_an_unknown_protocol_version_is_named() -> None:
    with pytest.raises(click.UsageError, match="PROTOCOL_VERSION='v3'"):
        envelope_for({"PROTOCOL_VERSION": "v3"})


def test_overrides_fix_the_runtime_ports() -> None:
    overrides = container_overrides({})
    assert overrides["inference_address"] == "http://0.0.0.0:8080"
    assert overrides["metrics_address"] == "http://0.0.0.0:8082"
    assert overrides["kserve_grpc_port"] == "8081"
    assert (overrides["grpc_inference_port"], overrides["grpc_management_port"]) == ("7070", "7071")
    assert "service_envelope" not in overrides
    assert container_overrides({"PORT": "9000"})["inference_address"] == "http://0.0.0.0:9000"


@pytest.mark.parametrize("port", ["8012", "9091", "8081", "8082"])
def test_a_port_the_pod_reserves_is_refused(port: str) -> None:
    with pytest.raises(click.UsageError, match=f"PORT={port}"):
        container_overrides({"PORT": port})


def test_properties_keep_the_file_and_override_its_listeners() -> None:
    original = "inference_address=http://127.0.0.1:8085\njob_queue_size=7\n"
    text = container_properties(original, container_overrides({"PROTOCOL_VERSION": "v2"}))
    parsed = parse_properties(text)
    assert parsed["inference_address"] == "http://0.0.0.0:8080"
    assert parsed["job_queue_size"] == "7"
    assert parsed["service_envelope"] == "kservev2"


def test_the_settings_accept_the_overrides(tmp_path: Path) -> None:
    from marserve.settings import load_settings

    config = tmp_path / "config.properties"
    config.write_text(container_properties("", container_overrides({})))
    settings = load_settings(config)
    assert settings.kserve_grpc_port == 8081
    assert settings.inference_address.port == 8080
    assert settings.grpc_inference_address.host == "0.0.0.0"


@pytest.mark.parametrize(("value", "expected"), [("8081", 8081), ("", None), (" ", None)])
def test_kserve_grpc_port_setting(tmp_path: Path, value: str, expected: int | None) -> None:
    from marserve.settings import load_settings

    config = tmp_path / "config.properties"
    config.write_text(f"kserve_grpc_port={value}\n")
    assert load_settings(config).kserve_grpc_port == expected


@pytest.mark.parametrize("value", ["abc", "70000", "-1"])
def test_a_bad_kserve_grpc_port_is_named(tmp_path: Path, value: str) -> None:
    from marserve.errors import ConfigError
    from marserve.settings import load_settings

    config = tmp_path / "config.properties"
    config.write_text(f"kserve_grpc_port={value}\n")
    with pytest.raises(ConfigError, match="kserve_grpc_port"):
        load_settings(config)
