"""``VisionHandler``: image rows (base64, encoded bytes or tensors) to one batch tensor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from marserve.handlers.base_handler import BaseHandler, row_payload
from marserve.handlers.context import Context
from marserve.handlers.exceptions import PredictionException
from marserve.handlers.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    image_bytes,
    open_image,
    to_chw_float,
)


class VisionHandler(BaseHandler):
    """Base for image handlers: decodes each row and applies ``image_processing`` to it.

    A row's ``data`` (or ``body``) may be a base64 ``str``, encoded image bytes, or a nested
    list / array taken as the image tensor as given. Subclasses set ``image_processing`` to a
    callable from a Pillow image to a ``C x H x W`` array or tensor.
    """

    image_processing: Callable[[Image.Image], Any] = staticmethod(to_chw_float)

    def __init__(self) -> None:
        super().__init__()
        self.max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS

    def initialize(self, context: Context) -> None:
        super().initialize(context)
        if not context.system_properties.get("limit_max_image_pixels", True):
            # The operator turned the limit off (TorchServe's limit_max_image_pixels=false).
            self.max_image_pixels = None
            Image.MAX_IMAGE_PIXELS = None
        self.initialized = True

    def _row_tensor(self, row: Any) -> torch.Tensor:
        value = row_payload(row)
        if value is None:
            raise PredictionException("request row has no data or body", 400)
        if isinstance(value, (str, bytes, bytearray)):
            image = open_image(image_bytes(value), self.max_image_pixels)
            return torch.as_tensor(self.image_processing(image))
        try:
            return torch.as_tensor(np.asarray(value, dtype=np.float32))
        except (TypeError, ValueError) as exc:
            message = f"input is neither an image nor a tensor: {exc}"
            raise PredictionException(message, 400) from exc

    def preprocess(self, data: Any) -> torch.Tensor:
        if not isinstance(data, list) or not data:
            raise PredictionException("expected a non-empty list of request rows", 400)
        images = [self._row_tensor(row) for row in data]
        try:
            batch = torch.stack(images)
        except RuntimeError as exc:
            shapes = sorted({tuple(t.shape) for t in images})
            raise PredictionException(f"batch inputs differ in shape: {shapes}", 400) from exc
        return batch.to(self.device)
