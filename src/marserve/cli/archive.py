"""``marserve archive``: write model archives like torch-model-archiver, and inspect them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from marserve.archive import (
    ARCHIVE_FORMATS,
    LARGE_FILE_BYTES,
    MANIFEST_PATH,
    RUNTIMES,
    ProgressHook,
    create_archive,
    list_members,
    read_manifest,
)
from marserve.errors import MarserveError

_CONTEXT = {"help_option_names": ["-h", "--help"]}
# Options that only make sense when writing an archive (not with a subcommand).
_WRITE_OPTIONS = (
    "model_name",
    "version",
    "serialized_file",
    "model_file",
    "handler",
    "extra_files",
    "requirements_file",
    "config_file",
    "export_path",
)


@click.group(
    "archive",
    invoke_without_command=True,
    context_settings=_CONTEXT,
    short_help="Create or inspect a model archive (.mar).",
)
@click.option(
    "--model-name",
    metavar="NAME",
    help="Model name; the archive is written as NAME.mar in --export-path.",
)
@click.option("-v", "--version", "version", metavar="VERSION", help="Model's version.")
@click.option(
    "--serialized-file",
    metavar="PATH",
    help="Weights: a .pt/.pth state_dict (eager mode), a TorchScript file, an .onnx file...",
)
@click.option(
    "--model-file",
    metavar="PATH",
    help="Python file with the model architecture (needed for eager-mode state_dicts).",
)
@click.option(
    "--handler",
    metavar="HANDLER",
    help="A handler .py file, module:function, or a built-in name such as image_classifier.",
)
@click.option(
    "--extra-files",
    metavar="PATHS",
    help="Comma-separated files, folders or globs; a folder's contents go to the archive root.",
)
@click.option(
    "-r", "--requirements-file", metavar="PATH", help="requirements.txt with the model's packages."
)
@click.option(
    "-c", "--config-file", metavar="PATH", help="model-config.yaml (batch size, workers...)."
)
@click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    default="python",
    show_default=True,
    help="Language the handler runs in.",
)
@click.option(
    "--export-path",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the archive to.  [default: the current folder]",
)
@click.option(
    "--archive-format",
    type=click.Choice(ARCHIVE_FORMATS),
    default="default",
    show_default=True,
    help="default: NAME.mar (zip); tgz: NAME.tar.gz; no-archive: a folder NAME; "
    "zip-store: NAME.mar without compression.",
)
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing archive of that name.")
@click.pass_context
def archive(
    ctx: click.Context,
    model_name: str | None,
    version: str | None,
    serialized_file: str | None,
    model_file: str | None,
    handler: str | None,
    extra_files: str | None,
    requirements_file: str | None,
    config_file: str | None,
    runtime: str,
    export_path: Path | None,
    archive_format: str,
    force: bool,
) -> None:
    """Package a model into a .mar archive (torch-model-archiver's flags and layout).

    \b
      marserve archive --model-name mnist --version 1.0 --model-file mnist.py \\
          --serialized-file mnist_cnn.pt --handler mnist_handler.py
      marserve archive inspect mnist.mar
    """
    if ctx.invoked_subcommand is not None:
        given = [name for name in _WRITE_OPTIONS if ctx.params.get(name) is not None]
        if given or force:
            raise click.UsageError("archive options cannot be combined with a subcommand")
        return
    if not model_name:
        raise click.UsageError("Missing option '--model-name'.")
    if not handler:
        raise click.UsageError("Missing option '--handler'.")
    try:
        with _progress(serialized_file) as progress:
            path = create_archive(
                model_name=model_name,
                handler=handler,
                version=version,
                serialized_file=serialized_file,
                model_file=model_file,
                extra_files=extra_files,
                requirements_file=requirements_file,
                config_file=config_file,
                runtime=runtime,
                export_path=export_path,
                archive_format=archive_format,
                force=force,
                progress=progress,
            )
    except MarserveError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"Wrote {path}")


@archive.command("inspect", context_settings=_CONTEXT)
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print {manifest, members} as JSON.")
def inspect_command(file: Path, as_json: bool) -> None:
    """Print the manifest and the members of a .mar, tar.gz or model folder."""
    try:
        manifest = read_manifest(file)
        members = list_members(file)
    except MarserveError as exc:
        raise click.ClickException(exc.message) from exc
    if as_json:
        listing = [{"name": name, "size": size} for name, size in members]
        click.echo(json.dumps({"manifest": manifest.raw, "members": listing}, indent=2))
        return
    click.echo(f"{MANIFEST_PATH}:")
    click.echo(manifest.to_json().decode("utf-8"))
    total = sum(size for _, size in members)
    click.echo(f"\nMembers ({len(members)} files, {total} bytes):")
    width = max((len(str(size)) for _, size in members), default=1)
    for name, size in members:
        shown = name if name.isprintable() else repr(name)
        click.echo(f"  {size:>{width}}  {shown}")


@contextmanager
def _progress(serialized_file: str | None) -> Iterator[ProgressHook | None]:
    """A rich progress bar on stderr when the serialized file is large, else no hook."""
    try:
        large = bool(serialized_file) and os.path.getsize(str(serialized_file)) >= LARGE_FILE_BYTES
    except OSError:
        large = False
    if not large:
        yield None
        return
    columns = (
        TextColumn("Archiving"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("archive", total=None)

        def advance(size: int, total: int) -> None:
            bar.update(task, advance=size, total=total)

        yield advance
