"""``marserve export kserve``: the manifests a KServe cluster needs for one InferenceService."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from marserve.errors import ConfigError


@click.group()
def export() -> None:
    """Write manifests for another platform."""


@export.command("kserve")
@click.option("-f", "--filename", "path", required=True, type=click.Path(path_type=Path))
@click.option("--runtime", is_flag=True, help="Also emit the kserve-marserve runtime.")
@click.option(
    "--deployment-mode",
    default="Knative",
    show_default=True,
    help="The target cluster's default mode: Knative (Serverless), Standard or RawDeployment.",
)
def kserve(path: Path, runtime: bool, deployment_mode: str) -> None:
    """Check an InferenceService file and print what to `kubectl apply`."""
    from marserve.kube.export import export_kserve

    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from exc
    if len(docs) != 1:
        raise click.ClickException(f"{path}: expected one InferenceService, found {len(docs)}")
    try:
        result = export_kserve(docs[0], runtime=runtime, deployment_mode=deployment_mode)
    except ConfigError as exc:
        raise click.ClickException(f"{path}: {exc}") from exc
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(yaml.safe_dump_all(result.documents, sort_keys=False), nl=False)
