"""``densenet_handler``: TorchServe's built-in DenseNet classifier, a module-level ``handle``.

The ImageNet transform (Pillow and numpy), softmax over the logits and, per image, the five
most probable classes as a list of one-entry dicts ``[{label: probability}, ...]`` (TorchServe's
answer shape for this handler; ``image_classifier`` answers one dict). Labels come from
``index_to_name.json`` (ImageNet's ``["n01440764", "tench"]`` gives ``tench``), else the index.
Unlike TorchServe's, every request of a batch gets its own answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from marserve.handlers.context import Context
from marserve.handlers.images import ImageNetTransform
from marserve.handlers.vision_handler import VisionHandler


class DenseNetClassifier(VisionHandler):
    topk = 5
    image_processing: Callable[[Image.Image], Any] = ImageNetTransform()

    def postprocess(self, data: Any) -> list[Any]:
        probabilities = torch.nn.functional.softmax(data, dim=1)
        k = min(self.topk, probabilities.shape[1])
        probs, classes = torch.topk(probabilities, k, dim=1)
        mapping = self.mapping or {}
        return [
            [{mapping.get(str(c), str(c)): p} for c, p in zip(row_classes, row_probs, strict=True)]
            for row_classes, row_probs in zip(classes.tolist(), probs.tolist(), strict=True)
        ]


_service = DenseNetClassifier()


def handle(data: list[dict[str, Any]] | None, context: Context) -> list[Any] | None:
    """TorchServe's entry point: initialise on the first call, then classify the batch."""
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
