"""``marserve convert``: turn images and text files into KServe v1/v2 request bodies."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from marserve import convert as conv

FILES = click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
OUTPUT = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here, not stdout.",
)
TARGET = click.option("--target", type=int, help="Add the explain target class to each instance.")
GRPC = click.option(
    "--grpc", is_flag=True, help="The gRPC ModelInferRequest JSON form (for grpcurl -d @)."
)
MODEL = click.option("--model", default="", help="The model_name of a --grpc request (required).")
NAMES = click.option(
    "--name",
    "names",
    multiple=True,
    help="Input name; repeat once per input (default: a UUID, or input-N for tensors).",
)
REQUEST_ID = click.option("--id", "request_id", help="The request id (omitted unless given).")


def _sources(files: tuple[Path, ...]) -> list[conv.Source]:
    sources = []
    for path in files:
        try:
            sources.append(conv.Source(str(path), path.read_bytes()))
        except OSError as exc:
            raise click.ClickException(f"cannot read {path}: {exc.strerror or exc}") from exc
    return sources


def _emit(
    build: Callable[..., conv.Request], files: tuple[Path, ...], output: Path | None, **kw: Any
) -> None:
    try:
        request = build(_sources(files), **kw)
    except conv.ConvertError as exc:
        raise click.ClickException(str(exc)) from exc
    text = conv.render(request)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from exc


def _grpc_model(grpc: bool, model: str) -> str | None:
    if not grpc:
        if model:
            raise click.UsageError("--model only applies with --grpc")
        return None
    if not model:
        raise click.UsageError("--grpc needs --model NAME (the gRPC request names its model)")
    return model


def _emit_v2(
    build: Callable[..., conv.Request],
    files: tuple[Path, ...],
    output: Path | None,
    v2: tuple[bool, str, tuple[str, ...], str | None],
    **kw: Any,
) -> None:
    """:func:`_emit` of a v2 request; ``v2`` is the ``--grpc --model --name --id`` values."""
    grpc, model, names, request_id = v2
    grpc_model = _grpc_model(grpc, model)
    _emit(build, files, output, names=names, request_id=request_id, grpc_model=grpc_model, **kw)


def _v2_command(name: str) -> Callable[[Callable[..., None]], click.Command]:
    """A ``convert`` subcommand taking FILES, ``-o`` and the v2 ``--grpc --model --name --id``."""

    def decorate(function: Callable[..., None]) -> click.Command:
        for option in (REQUEST_ID, NAMES, MODEL, GRPC, OUTPUT, FILES):
            function = option(function)
        return convert.command(name)(function)

    return decorate


@click.group()
def convert() -> None:
    """Build request bodies from image and text files (the seeds' converter scripts).

    Several files make one request (a static batch); the JSON goes to stdout or -o FILE.
    """


@convert.command("image-v1")
@FILES
@OUTPUT
@TARGET
def image_v1(files: tuple[Path, ...], output: Path | None, target: int | None) -> None:
    """v1 {"instances": [{"data": <base64 image>}]} (img2bytearray / imgconv)."""
    _emit(conv.image_v1, files, output, target=target)


@_v2_command("image-v2-bytes")
def image_v2_bytes(
    files: tuple[Path, ...],
    output: Path | None,
    grpc: bool,
    model: str,
    names: tuple[str, ...],
    request_id: str | None,
) -> None:
    """v2 BYTES input of base64 images (bytes_conv)."""
    _emit_v2(conv.image_v2_bytes, files, output, (grpc, model, names, request_id))


@_v2_command("image-v2-tensor")
@click.option("--normalize", is_flag=True, help="Apply (x - mean) / std after ToTensor's x / 255.")
@click.option("--mean", type=float, default=conv.MNIST_MEAN, show_default=True)
@click.option("--std", type=float, default=conv.MNIST_STD, show_default=True)
@click.option("--decimals", type=int, default=conv.DEFAULT_DECIMALS, show_default=True)
def image_v2_tensor(
    files: tuple[Path, ...],
    output: Path | None,
    grpc: bool,
    model: str,
    names: tuple[str, ...],
    request_id: str | None,
    normalize: bool,
    mean: float,
    std: float,
    decimals: int,
) -> None:
    """v2 FP32 [1, H, W] tensor per grayscale image (tensor_conv / totensor.py)."""
    v2 = (grpc, model, names, request_id)
    settings = {"normalize": normalize, "decimals": decimals, "mean": mean, "std": std}
    _emit_v2(conv.image_v2_tensor, files, output, v2, **settings)


@convert.command("text-v1")
@FILES
@OUTPUT
@TARGET
def text_v1(files: tuple[Path, ...], output: Path | None, target: int | None) -> None:
    """v1 {"instances": [{"data": <text>}]}, one instance per UTF-8 text file."""
    _emit(conv.text_v1, files, output, target=target)


@_v2_command("text-v2")
@click.option(
    "--datatype",
    type=click.Choice(["BYTES", "INT64"], case_sensitive=False),
    default="BYTES",
    show_default=True,
    help="BYTES: one input of strings; INT64: one input of UTF-8 byte codes per file.",
)
def text_v2(
    files: tuple[Path, ...],
    output: Path | None,
    grpc: bool,
    model: str,
    names: tuple[str, ...],
    request_id: str | None,
    datatype: str,
) -> None:
    """v2 text: BYTES strings, or the seeds' INT64 byte codes."""
    build = conv.text_v2_int64 if datatype.upper() == "INT64" else conv.text_v2_bytes
    _emit_v2(build, files, output, (grpc, model, names, request_id))
