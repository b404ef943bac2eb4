"""Explanations as pictures, drawn in the REST front: PNG negotiation and heatmaps.

:func:`wants_png` and :func:`heatmap_png` turn the attributions of a response into one PNG, each
item drawn over its input image (Pillow and numpy only: no torch or Captum in the front).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from marserve import text_picture
from marserve.errors import InvalidInput
from marserve.handlers.exceptions import PredictionException
from marserve.handlers.images import image_bytes, open_image

#: Pictures are scaled up (nearest neighbour) until their longer side is at least this.
MIN_PICTURE_SIDE = 224
#: The most pixels a picture may have (the PNG, and each input image decoded under it).
MAX_PICTURE_PIXELS = 16_000_000


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def wants_png(accept: str | None, format_param: str | None) -> bool:
    """Whether an explain request asks for a picture: ``?format=png`` or ``Accept: image/png``."""
    if format_param is not None:
        chosen = format_param.strip().lower()
        if chosen not in ("png", "json"):
            raise InvalidInput(f"format must be png or json, got {_shown(format_param)}")
        return chosen == "png"
    if not accept:
        return False
    return any(part.split(";", 1)[0].strip().lower() == "image/png" for part in accept.split(","))


def attribution_map(value: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A handler's explanation for one item as a float64 array (the delta dict unwrapped)."""
    if isinstance(value, Mapping) and "attributions" in value:
        value = value["attributions"]
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput("the explanation is not numeric and cannot be drawn") from None
    if array.size == 0:
        raise InvalidInput("the explanation is empty and cannot be drawn")
    return array


def _plane(array: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """An array as one 2-D plane: leading singleton axes dropped, channels (C x H x W) summed."""
    plane = np.asarray(array, dtype=np.float64)
    while plane.ndim > 2 and plane.shape[0] == 1:
        plane = plane[0]
    if plane.ndim == 3:
        plane = plane.sum(axis=0)
    elif plane.ndim > 3:
        plane = plane.reshape(-1, plane.shape[-1])
    if plane.ndim == 1:
        plane = plane[np.newaxis, :]
    return plane


def input_picture(value: Any) -> np.ndarray[Any, np.dtype[np.float64]] | None:
    """A request item as a grey picture in [0, 1] (an encoded image or a numeric tensor)."""
    if isinstance(value, Mapping):
        value = value.get("data", value.get("body"))
    if isinstance(value, Mapping):  # a TorchServe JSON body carrying {"data": ...}
        value = value.get("data")
    if value is None:
        return None
    if isinstance(value, (str, bytes, bytearray)):
        try:
            image = open_image(image_bytes(value), MAX_PICTURE_PIXELS)
        except PredictionException:
            return None
        grey = np.asarray(image.convert("L"), dtype=np.float64)
        return grey / 255.0
    try:
        plane = _plane(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError):
        return None
    low, high = float(np.nanmin(plane)), float(np.nanmax(plane))
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return (plane - low) / (high - low) if high > low else np.zeros_like(plane)


def _panel(plane: np.ndarray[Any, Any], picture: np.ndarray[Any, Any] | None) -> Any:
    """One item: red where attributions are positive, blue where negative, over the picture."""
    plane = np.nan_to_num(plane, nan=0.0, posinf=0.0, neginf=0.0)
    scale = float(np.abs(plane).max())
    strength = np.abs(plane) / scale if scale > 0 else np.zeros_like(plane)
    if picture is None or picture.shape != plane.shape:
        picture = np.full(plane.shape, 0.5)  # no matching input picture: a neutral grey ground
    grey = np.repeat(picture[:, :, np.newaxis], 3, axis=2) * 255.0
    colour = np.where(plane[:, :, np.newaxis] >= 0, [220.0, 30.0, 30.0], [30.0, 80.0, 230.0])
    alpha = strength[:, :, np.newaxis]
    pixels = grey * (1.0 - alpha) + colour * alpha
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def heatmap_png(explanations: Sequence[Any], inputs: Sequence[Any] | None = None) -> bytes:
    """One PNG: the items side by side, each its attributions over its input picture.

    Each panel is the attribution map's height x width (channels summed), enlarged by a whole
    factor until its longer side is at least :data:`MIN_PICTURE_SIDE` (less when the picture
    would pass :data:`MAX_PICTURE_PIXELS`); the input is drawn underneath when it decodes to a
    picture of the map's size, else a neutral grey.
    """
    if not explanations:
        raise InvalidInput("there is nothing to draw: no explanations")
    if all(text_picture.is_word_explanation(value) for value in explanations):
        return text_picture.words_png(explanations)  # text: shaded words, not a heatmap
    planes = [_plane(attribution_map(value)) for value in explanations]
    height = max(plane.shape[0] for plane in planes)
    width = max(plane.shape[1] for plane in planes)
    base = height * width * len(planes)
    if base > MAX_PICTURE_PIXELS:
        raise InvalidInput(
            f"too much to draw: {len(planes)} maps of up to {height}x{width} pixels exceed "
            f"{MAX_PICTURE_PIXELS} pixels"
        )
    wanted = math.ceil(MIN_PICTURE_SIDE / max(height, width))
    factor = max(1, min(wanted, math.isqrt(MAX_PICTURE_PIXELS // base)))
    given = list(inputs or [])
    canvas = np.zeros((height * factor, width * factor * len(planes), 3), dtype=np.uint8)
    for index, plane in enumerate(planes):
        picture = input_picture(given[index]) if index < len(given) else None
        big = _panel(plane, picture).repeat(factor, axis=0).repeat(factor, axis=1)
        left = index * width * factor
        canvas[: big.shape[0], left : left + big.shape[1]] = big
    out = io.BytesIO()
    Image.fromarray(canvas).save(out, format="PNG")
    return out.getvalue()
