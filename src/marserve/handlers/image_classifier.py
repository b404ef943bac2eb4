"""``ImageClassifier``: the built-in ``image_classifier`` handler (ImageNet transform, top-k)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from marserve.handlers.images import ImageNetTransform
from marserve.handlers.labels import map_class_to_label
from marserve.handlers.vision_handler import VisionHandler


class ImageClassifier(VisionHandler):
    """Classifies images: softmax over the model's logits, the ``topk`` best as {label: prob}."""

    topk = 5
    image_processing: Callable[[Image.Image], Any] = ImageNetTransform()

    def set_max_result_classes(self, topk: int) -> None:
        self.topk = topk

    def get_max_result_classes(self) -> int:
        return self.topk

    def postprocess(self, data: Any) -> list[Any]:
        probabilities = torch.nn.functional.softmax(data, dim=1)
        k = min(self.topk, probabilities.shape[1])
        probs, classes = torch.topk(probabilities, k, dim=1)
        return map_class_to_label(probs.tolist(), self.mapping, classes.tolist())
