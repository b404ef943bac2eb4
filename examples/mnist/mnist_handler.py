"""TorchServe handler for the MNIST example: 28x28 digit images or tensors in, one digit per row.

It imports only TorchServe's public handler API, so the same file runs under marserve (through
its ``ts`` shim) and under TorchServe itself. Images are decoded with Pillow and numpy, not
torchvision.

Explanations are Captum integrated gradients. marserve computes them itself for every row of a
batch (``explain_with_integrated_gradients``: the predicted digit unless the request names a
``target``, ``n_steps`` per request); TorchServe, which ignores that attribute, calls
``get_insights`` with the first row's target instead. Captum is only imported to explain.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image
from ts.torch_handler.base_handler import BaseHandler
from ts.utils.util import PredictionException

MEAN = 0.1307
STD = 0.3081
SIDE = 28
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF87a", b"GIF89a", b"RIFF")
TENSOR_SHAPES = ((1, SIDE, SIDE), (SIDE, SIDE), (SIDE * SIDE,))
N_STEPS = 50  # integration steps when TorchServe asks get_insights for an explanation


def encoded_image(value: str | bytes | bytearray) -> bytes:
    """The encoded image in a row: base64 text (strictly checked) or raw image bytes.

    Bytes that do not start with an image signature are tried as base64 text, since KServe v2
    ``BYTES`` elements may carry the base64 string itself.
    """
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("invalid base64 data: cannot decode image") from exc
    raw = bytes(value)
    if raw.startswith(IMAGE_SIGNATURES):
        return raw
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return raw


def image_input(data: bytes) -> np.ndarray:
    """A 28x28 image -> the model's normalized ``1 x 28 x 28`` float32 input."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        except Exception as exc:  # Pillow raises many types for hostile or broken files
            raise ValueError(f"cannot decode image ({type(exc).__name__})") from exc
        if image.size != (SIDE, SIDE):
            width, height = image.size
            raise ValueError(f"expected a {SIDE}x{SIDE} image, got {width}x{height}")
        try:
            image.load()
        except Exception as exc:
            raise ValueError(f"cannot decode image ({type(exc).__name__})") from exc
    pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return ((pixels - MEAN) / STD)[np.newaxis, :, :]


def tensor_input(value: Any) -> np.ndarray:
    """A nested list or array shaped 1x28x28, 28x28 or 784, used as the model input as given."""
    array = np.asarray(value, dtype=np.float32)
    if array.shape not in TENSOR_SHAPES:
        shape = list(array.shape)
        raise ValueError(f"expected a tensor shaped [1,28,28], [28,28] or [784], got {shape}")
    if not np.isfinite(array).all():
        raise ValueError("tensor contains NaN or infinite values")
    return array.reshape(1, SIDE, SIDE)


def row_input(row: Any) -> np.ndarray:
    """One request row (``{"data": ...}`` or ``{"body": ...}``) -> one model input."""
    value = row.get("data") if isinstance(row, dict) else row
    if value is None and isinstance(row, dict):
        value = row.get("body")
    if value is None:
        raise ValueError("request row has no data or body")
    if isinstance(value, (str, bytes, bytearray)):
        return image_input(encoded_image(value))
    return tensor_input(value)


class MNISTDigitClassifier(BaseHandler):
    """Predicts the digit in each row: PNG/JPEG bytes, base64 text, or a tensor."""

    # marserve: explain every row with batched integrated gradients (TorchServe ignores this).
    explain_with_integrated_gradients = True

    def preprocess(self, data: list[dict[str, Any]]) -> torch.Tensor:
        if not isinstance(data, list) or not data:
            raise PredictionException("expected a non-empty list of request rows", 400)
        inputs = []
        for index, row in enumerate(data):
            try:
                inputs.append(row_input(row))
            except (ValueError, TypeError) as exc:
                raise PredictionException(f"row {index}: {exc}", 400) from exc
        return torch.from_numpy(np.stack(inputs)).to(self.device)

    def postprocess(self, data: torch.Tensor) -> list[int]:
        return data.argmax(1).tolist()

    def get_insights(self, tensor_data: torch.Tensor, _raw_data: Any, target: Any = 0) -> list[Any]:
        """TorchServe's explain path: integrated gradients of ``target`` for every row."""
        from captum.attr import IntegratedGradients

        explainer = IntegratedGradients(self.model)
        return explainer.attribute(tensor_data, target=target, n_steps=N_STEPS).tolist()
