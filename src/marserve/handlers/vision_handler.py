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

    Explain requests get integrated gradients for every image of the batch (see
    :mod:`marserve.explain`); ``self.ig`` is Captum's ``IntegratedGradients`` over the model, as
    TorchServe's VisionHandler provides it to subclasses that write their own ``get_insights``.
    """

    image_processing: Callable[[Image.Image], Any] = staticmethod(to_chw_float)
    explain_with_integrated_gradients = True

    def __init__(self) -> None:
        super().__init__()
        self.max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
        self._ig: Any = None

    @property
    def ig(self) -> Any:
        """Captum's ``IntegratedGradients(self.model)``, made on first use (501 without Captum)."""
        explainer = getattr(self, "_ig", None)
        if explainer is None:
            from marserve.explain import integrated_gradients_class

            explainer = integrated_gradients_class()(self.model)
            self._ig = explainer
        return explainer

    @ig.setter
    def ig(self, explainer: Any) -> None:
        self._ig = explainer

    def get_insights(self, tensor_data: Any, raw_data: Any, target: Any = 0) -> list[Any]:
        """TorchServe's signature: integrated gradients of ``target`` for every row, as lists.

        The server itself explains through :meth:`explain_handle`, which also honours per-row
        targets and ``n_steps``; this is for code that calls ``get_insights`` directly.
        """
        from marserve.explain import integrated_gradients

        settings = self.explain_settings
        attributions, _ = integrated_gradients(
            self.model,
            tensor_data,
            target,
            n_steps=settings.n_steps,
            internal_batch_size=settings.internal_batch_size,
        )
        result: list[Any] = attributions.tolist()
        return result

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
