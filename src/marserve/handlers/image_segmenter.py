"""``ImageSegmenter``: the built-in ``image_segmenter`` handler (the top class of every pixel).

As TorchServe's: the ImageNet transform (resize 256, center crop 224, normalize; Pillow and
numpy), a model answering ``{"out": N x classes x H x W}`` (torchvision's segmentation models
do; a plain tensor is taken as ``out``), and per image an ``H x W x 2`` list of ``[class,
probability]`` for the most probable class of each pixel (not every class: the answer would be
tens of megabytes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from PIL import Image

from marserve.handlers.exceptions import PredictionException
from marserve.handlers.images import ImageNetTransform
from marserve.handlers.vision_handler import VisionHandler


class ImageSegmenter(VisionHandler):
    image_processing: Callable[[Image.Image], Any] = ImageNetTransform()
    explain_with_integrated_gradients = False

    def postprocess(self, data: Any) -> list[Any]:
        out = data["out"] if isinstance(data, Mapping) else data
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            raise PredictionException(
                "image_segmenter expects the model to return N x classes x H x W scores "
                '(or {"out": ...})',
                500,
            )
        best = torch.max(torch.nn.functional.softmax(out, dim=1), dim=1)
        pixels = torch.stack([best.indices.to(best.values.dtype), best.values], dim=3)
        result: list[Any] = pixels.tolist()
        return result

    def get_insights(self, tensor_data: Any, raw_data: Any, target: Any = 0) -> list[Any]:
        raise PredictionException("image_segmenter does not implement explanations", 501)
