"""``marserve container``: the image's entrypoint; takes KServe's torchserve runtime args."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import click

log = logging.getLogger("marserve.container")

# The ports KServe's torchserve runtime contract fixes (research 5.3/5.4); queue-proxy owns
# 8012/8013/8022/9090/9091, so nothing here may land on those.
REST_PORT = 8080
KSERVE_GRPC_PORT = 8081
METRICS_PORT = 8082
MANAGEMENT_PORT = 8085
GRPC_INFERENCE_PORT = 7070
GRPC_MANAGEMENT_PORT = 7071
RESERVED_PORTS = frozenset({8008, 8012, 8013, 8022, 9090, 9091})

# `marserve serve` options that take a value / that are flags (the TorchServe names it shares).
_VALUE_OPTIONS = frozenset({"--model-store", "--ts-config", "--models", "--log-level"})
_FLAG_OPTIONS = frozenset({"--start", "--ncs", "--no-config-snapshots", "--disable-token-auth",
                           "--enable-model-api", "--foreground"})  # fmt: skip
# TorchServe flags with no meaning here: warned about and dropped, never a crash.
_IGNORED_VALUE_OPTIONS = frozenset({"--log-config", "--workflow-store", "--plugins-path",
                                    "--cpp-log-config", "--wfs"})  # fmt: skip
_IGNORED_FLAG_OPTIONS = frozenset({"--no-config-snapshot"})
_COMMAND_WORDS = frozenset({"torchserve", "marserve", "serve"})
_ENVELOPE_OF_PROTOCOL = {"v1": "kserve", "v2": "kservev2", "grpc-v2": "kservev2"}


@dataclass(frozen=True)
class ContainerArgs:
    """The runtime's argv, split into what ``marserve serve`` takes and what it ignores."""

    serve_args: tuple[str, ...]
    ts_config: Path | None
    ignored: tuple[str, ...]


def split_args(argv: Sequence[str]) -> ContainerArgs:
    """Parse ``torchserve --start --model-store=DIR --ts-config=FILE [user args]``."""
    args = list(argv)
    while args and args[0] in _COMMAND_WORDS:
        args.pop(0)
    serve: list[str] = []
    ignored: list[str] = []
    ts_config: Path | None = None
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        takes_value = name in _VALUE_OPTIONS or name in _IGNORED_VALUE_OPTIONS
        if takes_value and not eq:
            if not args:
                raise click.UsageError(f"option {name} needs a value")
            value = args.pop(0)
        if name == "--ts-config":
            ts_config = Path(value)
        elif name in _VALUE_OPTIONS:
            serve += [name, value]
        elif name in _FLAG_OPTIONS and not eq:
            serve.append(name)
        elif name in _IGNORED_VALUE_OPTIONS or name in _IGNORED_FLAG_OPTIONS:
            ignored.append(arg if not takes_value or eq else f"{name} {value}")
        else:
            raise click.UsageError(f"unknown argument {arg!r} (not a TorchServe flag)")
    return ContainerArgs(tuple(serve), ts_config, tuple(ignored))


def envelope_for(env: Mapping[str, str]) -> str | None:
    """TS_SERVICE_ENVELOPE when KServe filled it in, else the envelope PROTOCOL_VERSION implies."""
    envelope = env.get("TS_SERVICE_ENVELOPE", "").strip()
    if envelope and "{{" not in envelope:  # an unrendered template means "not set"
        return envelope
    protocol = env.get("PROTOCOL_VERSION", "").strip()
    if protocol and protocol not in _ENVELOPE_OF_PROTOCOL:
        raise click.UsageError(
            f"PROTOCOL_VERSION={protocol!r} is not one of {', '.join(_ENVELOPE_OF_PROTOCOL)}"
        )
    return _ENVELOPE_OF_PROTOCOL.get(protocol)


def container_overrides(env: Mapping[str, str]) -> dict[str, str]:
    """config.properties keys the container contract fixes, whatever the mounted file says."""
    port = int(env.get("PORT", "").strip() or REST_PORT)
    if port in RESERVED_PORTS or port in {KSERVE_GRPC_PORT, METRICS_PORT, MANAGEMENT_PORT}:
        raise click.UsageError(f"PORT={port} collides with a port the container reserves")
    everywhere = "0.0.0.0"  # noqa: S104 - a container's ports are its only interface
    overrides = {
        "inference_address": f"http://0.0.0.0:{port}",
        "management_address": f"http://0.0.0.0:{MANAGEMENT_PORT}",
        "metrics_address": f"http://0.0.0.0:{METRICS_PORT}",
        "grpc_inference_address": everywhere,
        "grpc_management_address": everywhere,
        "grpc_inference_port": str(GRPC_INFERENCE_PORT),
        "grpc_management_port": str(GRPC_MANAGEMENT_PORT),
        "kserve_grpc_port": str(KSERVE_GRPC_PORT),
        "enable_metrics_api": "true",
        "metrics_mode": "prometheus",
    }
    envelope = envelope_for(env)
    if envelope is not None:
        overrides["service_envelope"] = envelope
    return overrides


def container_properties(original: str, overrides: Mapping[str, str]) -> str:
    """The mounted file with the overrides appended (a later key replaces an earlier one)."""
    lines = [f"{key}={value}" for key, value in overrides.items()]
    return original.rstrip("\n") + "\n# set by marserve container\n" + "\n".join(lines) + "\n"


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def container(ctx: click.Context, argv: tuple[str, ...]) -> None:
    """Serve in the foreground as KServe's torchserve runtime starts its container."""
    from marserve.cli.serve import serve

    parsed = split_args(argv)
    for arg in parsed.ignored:
        click.echo(f"marserve: ignoring TorchServe option {arg} (no meaning here)", err=True)
    original = ""
    if parsed.ts_config is not None:
        try:
            original = parsed.ts_config.read_text()
        except OSError as exc:
            message = f"cannot read --ts-config {parsed.ts_config}: {exc}"
            raise click.ClickException(message) from exc
    work = Path(tempfile.mkdtemp(prefix="marserve-"))
    config = work / "config.properties"
    config.write_text(container_properties(original, container_overrides(os.environ)))
    args = ["--foreground", "--log-level", "INFO", "--ts-config", str(config)]
    args += ["--pid-file", str(work / "marserve.pid")]
    args += ["--key-file", str(work / "key_file.json"), *parsed.serve_args]
    ctx.invoke(serve, **serve.make_context("serve", args, parent=ctx).params)
