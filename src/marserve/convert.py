"""Request converters: images and text files to the KServe v1/v2 (REST and gRPC JSON) bodies.

Pure functions behind ``marserve convert``; they do what the seeds' converter scripts do:

- :func:`image_v1`: ``img2bytearray``/``imgconv``, ``{"instances": [{"data": <base64 file>}]}``.
- :func:`image_v2_bytes`: v2 ``bytes_conv``, one BYTES input holding each file's base64 text.
- :func:`image_v2_tensor`: v2 ``tensor_conv``/``totensor.py``, one FP32 ``[1, H, W]`` input per
  grayscale image (``ToTensor``: pixel / 255, optionally ``(x - mean) / std``), rounded to the
  seeds' 4 decimals.
- :func:`text_v1`, :func:`text_v2_bytes`, :func:`text_v2_int64`: text as v1 instances, as one v2
  BYTES input, or as the seeds' INT64 byte codes (one input per text, shape ``[n_bytes]``).

Every builder takes several inputs and makes one request (static batch). ``grpc=True`` gives the
``ModelInferRequest`` JSON form the seeds' ``*_grpc.json`` use (``contents.*_contents``,
``model_name``), ready for ``grpcurl -d @``. :func:`render` writes a request in the layout of the
seeds' sample files, so the seeds' own inputs convert to their sample requests byte for byte.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
DEFAULT_DECIMALS = 4


class ConvertError(ValueError):
    """An input that cannot become the requested request (the message names what is wrong)."""


@dataclass(frozen=True)
class Source:
    """One input: a display name for messages (usually the path) and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class Request:
    """A converted request and the layout it is written in (see :func:`render`)."""

    body: dict[str, Any]
    layout: Layout


@dataclass(frozen=True)
class Layout:
    """How :func:`render` lays out JSON: indent unit, key order, ``[{`` hugging, float format."""

    indent: str
    sort_keys: bool = False
    hug: bool = False
    float_format: Callable[[float], str] | None = None


V1_LAYOUT = Layout("  ")
V2_BYTES_LAYOUT = Layout("    ", sort_keys=True)
GRPC_BYTES_LAYOUT = Layout("    ", hug=True)


def _fixed(decimals: int) -> Callable[[float], str]:
    return lambda value: f"{value:.{decimals}f}"


# Images --------------------------------------------------------------------------------------
def _check_image(source: Source) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(source.data))
    except UnidentifiedImageError as exc:
        raise ConvertError(f"{source.name}: not an image (no known image format)") from exc
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ConvertError(f"{source.name}: a broken {image.format} image ({exc})") from exc
    return image


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _need(sources: Sequence[Source]) -> None:
    if not sources:
        raise ConvertError("no input files given")


def image_v1(sources: Sequence[Source], target: int | None = None) -> Request:
    """v1 ``instances``: each image file base64-encoded as is (the seeds' ``img2bytearray``)."""
    _need(sources)
    instances = []
    for source in sources:
        _check_image(source)
        instances.append(_instance(_b64(source.data), target))
    return Request({"instances": instances}, V1_LAYOUT)


def _instance(data: str, target: int | None) -> dict[str, Any]:
    instance: dict[str, Any] = {"data": data}
    if target is not None:
        instance["target"] = target
    return instance


def image_v2_bytes(
    sources: Sequence[Source],
    names: Sequence[str] = (),
    request_id: str | None = None,
    grpc_model: str | None = None,
) -> Request:
    """One v2 BYTES input (shape ``[-1]``) of the files' base64 text (the seeds' ``bytes_conv``).

    In the gRPC form the same base64 text fills ``bytes_contents``, which the protobuf JSON
    mapping (``grpcurl``) decodes into the file's own bytes.
    """
    _need(sources)
    for source in sources:
        _check_image(source)
    texts = [_b64(source.data) for source in sources]
    (name,) = _names(names, 1, uuid_default=True)
    layouts = (V2_BYTES_LAYOUT, GRPC_BYTES_LAYOUT)
    return _request([(name, [-1], texts)], "BYTES", grpc_model, request_id, layouts)


def grayscale_pixels(
    source: Source, normalize: bool, mean: float = MNIST_MEAN, std: float = MNIST_STD
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A grayscale image as ``[1, H, W]`` floats: pixel / 255, then ``(x - mean) / std``."""
    image = _check_image(source)
    if image.mode != "L":
        raise ConvertError(
            f"{source.name}: image-v2-tensor needs a grayscale (mode L) image like MNIST's, "
            f"got mode {image.mode}"
        )
    if normalize and std == 0:
        raise ConvertError("--std must not be 0")
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    if normalize:
        pixels = (pixels - np.float32(mean)) / np.float32(std)
    return pixels[np.newaxis].astype(np.float64)


def image_v2_tensor(
    sources: Sequence[Source],
    normalize: bool = False,
    names: Sequence[str] = (),
    request_id: str | None = None,
    grpc_model: str | None = None,
    decimals: int = DEFAULT_DECIMALS,
    mean: float = MNIST_MEAN,
    std: float = MNIST_STD,
) -> Request:
    """One FP32 ``[1, H, W]`` input per grayscale image, values rounded to ``decimals``.

    REST writes the nested ``[1][H][W]`` lists with ``decimals`` digits, as the seeds' sample
    does; gRPC writes ``fp32_contents`` flat, each value the float32 nearest the rounded one.
    """
    _need(sources)
    if not 0 <= decimals <= 8:
        raise ConvertError(f"--decimals must be between 0 and 8, got {decimals}")
    arrays = [np.round(grayscale_pixels(s, normalize, mean, std), decimals) for s in sources]
    all_names = _names(names, len(arrays), uuid_default=False)
    grpc = grpc_model is not None
    inputs = [
        (n, list(a.shape), _as_fp32(a) if grpc else a.tolist())
        for n, a in zip(all_names, arrays, strict=True)
    ]
    layouts = (Layout("  ", hug=True, float_format=_fixed(decimals)), Layout("\t", hug=True))
    return _request(inputs, "FP32", grpc_model, request_id, layouts)


def _as_fp32(array: np.ndarray[Any, Any]) -> list[float]:
    return [float(v) for v in array.astype(np.float32).ravel()]


# Text ----------------------------------------------------------------------------------------
def text_of(source: Source) -> str:
    """A text file's content as one instance: UTF-8, trailing line breaks dropped, not empty."""
    try:
        text = source.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConvertError(f"{source.name}: not UTF-8 text (byte {exc.start})") from exc
    text = text.rstrip("\r\n")
    if not text:
        raise ConvertError(f"{source.name}: the text is empty")
    return text


def text_v1(sources: Sequence[Source], target: int | None = None) -> Request:
    """v1 ``instances``: one ``{"data": <text>}`` per file (the seeds' BERT and text forms)."""
    _need(sources)
    return Request({"instances": [_instance(text_of(s), target) for s in sources]}, V1_LAYOUT)


def text_v2_bytes(
    sources: Sequence[Source],
    names: Sequence[str] = (),
    request_id: str | None = None,
    grpc_model: str | None = None,
) -> Request:
    """One v2 BYTES input, shape ``[n]``, one UTF-8 string per file (gRPC: base64 of the UTF-8)."""
    _need(sources)
    texts = [text_of(s) for s in sources]
    (name,) = _names(names, 1, uuid_default=True)
    values = texts if grpc_model is None else [_b64(t.encode("utf-8")) for t in texts]
    layouts = (V1_LAYOUT, GRPC_BYTES_LAYOUT)
    return _request([(name, [len(texts)], values)], "BYTES", grpc_model, request_id, layouts)


def text_v2_int64(
    sources: Sequence[Source],
    names: Sequence[str] = (),
    request_id: str | None = None,
    grpc_model: str | None = None,
) -> Request:
    """One INT64 input per file: its text's UTF-8 byte codes, shape ``[n_bytes]`` (seed 004)."""
    _need(sources)
    codes = [list(text_of(s).encode("utf-8")) for s in sources]
    all_names = _names(names, len(codes), uuid_default=True)
    inputs = [(n, [len(c)], c) for n, c in zip(all_names, codes, strict=True)]
    return _request(inputs, "INT64", grpc_model, request_id, (V1_LAYOUT, GRPC_BYTES_LAYOUT))


# Request bodies ------------------------------------------------------------------------------
def _names(given: Sequence[str], count: int, uuid_default: bool) -> list[str]:
    if given:
        if len(given) != count:
            raise ConvertError(
                f"--name was given {len(given)} times but the request has {count} inputs"
            )
        return list(given)
    if uuid_default:
        return [str(uuid.uuid4()) for _ in range(count)]
    return [f"input-{index}" for index in range(count)]


def _request(
    inputs: Sequence[tuple[str, list[int], Any]],
    datatype: str,
    grpc_model: str | None,
    request_id: str | None,
    layouts: tuple[Layout, Layout],
) -> Request:
    """The v2 request of ``inputs`` (name, shape, values) of one datatype.

    REST (``grpc_model`` None) puts the values in ``data`` and uses ``layouts[0]``; gRPC puts
    them in ``contents.<datatype>_contents`` and uses ``layouts[1]``.
    """
    if grpc_model is None:
        tensors = [_tensor(n, shape, datatype, values) for n, shape, values in inputs]
        return Request(_rest_body(tensors, request_id), layouts[0])
    key = f"{datatype.lower()}_contents"
    tensors = [_tensor(n, shape, datatype, {key: v}, grpc=True) for n, shape, v in inputs]
    return Request(_grpc_body(grpc_model, tensors, request_id), layouts[1])


def _tensor(
    name: str, shape: list[int], datatype: str, data: Any, grpc: bool = False
) -> dict[str, Any]:
    payload = "contents" if grpc else "data"
    return {"name": name, "shape": shape, "datatype": datatype, payload: data}


def _rest_body(tensors: list[dict[str, Any]], request_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {} if request_id is None else {"id": request_id}
    body["inputs"] = tensors
    return body


def _grpc_body(model: str, tensors: list[dict[str, Any]], request_id: str | None) -> dict[str, Any]:
    if not model:
        raise ConvertError("--grpc needs --model NAME (the gRPC request names its model)")
    body: dict[str, Any] = {} if request_id is None else {"id": request_id}
    body["model_name"] = model
    body["inputs"] = tensors
    return body


# Rendering -----------------------------------------------------------------------------------
def render(request: Request) -> str:
    """The request as JSON text in its layout, ending in a newline.

    Arrays of scalars stay on one line; arrays holding arrays or objects get a line per item,
    except that a hugging layout writes a list of objects as ``[{ ... }, { ... }]``.
    """
    return _value(request.body, request.layout, 0) + "\n"


def _value(value: Any, layout: Layout, depth: int) -> str:
    if isinstance(value, dict):
        return _object(value, layout, depth)
    if isinstance(value, list):
        return _array(value, layout, depth)
    if isinstance(value, float) and layout.float_format is not None:
        return layout.float_format(value)
    return json.dumps(value)


def _object(value: dict[str, Any], layout: Layout, depth: int) -> str:
    keys = sorted(value) if layout.sort_keys else list(value)
    if not keys:
        return "{}"
    inner = layout.indent * (depth + 1)
    items = [f"{inner}{json.dumps(k)}: {_value(value[k], layout, depth + 1)}" for k in keys]
    return "{\n" + ",\n".join(items) + "\n" + layout.indent * depth + "}"


def _array(value: list[Any], layout: Layout, depth: int) -> str:
    if not any(isinstance(item, (list, dict)) for item in value):
        return "[" + ", ".join(_value(item, layout, depth) for item in value) + "]"
    if layout.hug and all(isinstance(item, dict) for item in value):
        return "[" + ", ".join(_object(item, layout, depth) for item in value) + "]"
    inner = layout.indent * (depth + 1)
    items = [inner + _value(item, layout, depth + 1) for item in value]
    return "[\n" + ",\n".join(items) + "\n" + layout.indent * depth + "]"
