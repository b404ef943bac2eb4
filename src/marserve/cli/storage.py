"""``marserve storage pull URI DEST``, and the storage options ``marserve serve`` shares."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from marserve.storage.base import DEFAULT_CACHE_DIR

if TYPE_CHECKING:
    from marserve.storage import StorageSettings


def pvc_mapping(values: Sequence[str]) -> dict[str, Path]:
    """``--pvc CLAIM=DIR`` flags as a mapping; a malformed one is a usage error."""
    mapping: dict[str, Path] = {}
    for value in values:
        claim, sep, folder = value.partition("=")
        if not sep or not claim or not folder:
            raise click.BadParameter(f"expected CLAIM=DIR, got {value!r}", param_hint="--pvc")
        mapping[claim] = Path(folder).expanduser()
    return mapping


def settings_for(
    pvc: Sequence[str], cache_dir: Path | None, timeout_s: float | None
) -> StorageSettings:
    from marserve.storage import StorageSettings

    settings = StorageSettings(
        cache_dir=cache_dir or DEFAULT_CACHE_DIR.expanduser(),
        pvc=pvc_mapping(pvc),
        env=dict(os.environ),
    )
    return settings if timeout_s is None else replace(settings, timeout_s=timeout_s)


PVC_HELP = "Map a PersistentVolumeClaim to a local folder: CLAIM=DIR (repeatable)."


@click.group()
def storage() -> None:
    """storageUri downloads, as KServe's storage initializer does them."""


@storage.command()
@click.argument("uri")
@click.argument("dest", type=click.Path(path_type=Path, file_okay=False))
@click.option("--pvc", multiple=True, help=PVC_HELP)
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--timeout", "timeout_s", type=float, help="Seconds for the whole pull.")
def pull(
    uri: str, dest: Path, pvc: tuple[str, ...], cache_dir: Path | None, timeout_s: float | None
) -> None:
    """Copy the model store at URI into DEST (config/ + model-store/); prints the folder."""
    click.echo(str(pull_model(uri, dest, settings_for(pvc, cache_dir, timeout_s))))


def pull_model(uri: str, dest: Path, settings: StorageSettings) -> Path:
    """The pulled folder; a StorageError becomes the CLI's one-line error."""
    from marserve.storage import StorageError
    from marserve.storage import pull as pull_uri

    try:
        return pull_uri(uri, dest, settings, progress=True).path
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None
