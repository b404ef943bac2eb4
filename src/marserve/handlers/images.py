"""Safe image decoding (strict base64, format allow-list, pixel cap) and Pillow/numpy transforms."""

from __future__ import annotations

import base64
import binascii
import io
import struct
import warnings
from typing import Any

import numpy as np
from PIL import Image

from marserve.handlers.exceptions import PredictionException

# Formats a request may carry; everything else (TIFF, PSD, FITS, SVG...) is refused.
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
# Pillow's own default for Image.MAX_IMAGE_PIXELS (~ 0.25 GiB of 24-bit pixels).
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF87a", b"GIF89a", b"RIFF")
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError)


def b64decode_strict(text: str | bytes) -> bytes:
    """Base64 text -> bytes, refusing any character outside the alphabet (no silent dropping)."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PredictionException("invalid base64 data: cannot decode image", 400) from exc


def image_bytes(value: str | bytes | bytearray) -> bytes:
    """The encoded image in a request value: a base64 ``str``, raw bytes, or base64 as bytes.

    KServe v2 ``BYTES`` elements may carry the base64 text itself, so bytes that are not a
    known image signature but are valid base64 are decoded once.
    """
    if isinstance(value, str):
        return b64decode_strict(value)
    raw = bytes(value)
    if raw.startswith(_IMAGE_MAGIC):
        return raw
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return raw


def open_image(data: bytes, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode one image fully, or raise ``PredictionException(..., 400)``.

    Only :data:`ALLOWED_FORMATS` are tried; the pixel count is checked from the header before
    any pixel data is decompressed, and Pillow's decompression-bomb warning is an error.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise PredictionException(
                    f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels",
                    400,
                )
            image.load()
    except PredictionException:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PredictionException("image has too many pixels (decompression bomb)", 400) from exc
    except _DECODE_ERRORS as exc:
        raise PredictionException(
            f"cannot decode image (supported formats: {', '.join(ALLOWED_FORMATS)})", 400
        ) from exc
    return image


def to_chw_float(image: Image.Image) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Pixels scaled to [0, 1] as a float32 ``C x H x W`` array (grey stays one channel)."""
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    if array.ndim == 2:
        return array[np.newaxis, :, :]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Scale so the shorter side is ``size``, keeping the aspect ratio (bilinear)."""
    width, height = image.size
    if width <= height:
        new_size = (size, int(size * height / width))
    else:
        new_size = (int(size * width / height), size)
    if new_size == image.size:
        return image
    return image.resize(new_size, Image.Resampling.BILINEAR)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """The central ``size x size`` square."""
    width, height = image.size
    left = round((width - size) / 2.0)
    top = round((height - size) / 2.0)
    return image.crop((left, top, left + size, top + size))


class ImageNetTransform:
    """Resize (shorter side), center crop, scale to [0, 1] CHW, normalize per channel."""

    def __init__(
        self,
        resize: int = 256,
        crop: int = 224,
        mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    ) -> None:
        self.resize = resize
        self.crop = crop
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    def __call__(self, image: Image.Image) -> np.ndarray[Any, np.dtype[np.float32]]:
        image = center_crop(resize_shorter_side(image.convert("RGB"), self.resize), self.crop)
        array: np.ndarray[Any, np.dtype[np.float32]] = (to_chw_float(image) - self.mean) / self.std
        return array
