"""``ObjectDetector``: the built-in ``object_detector`` handler (boxes, labels, scores >= 0.5).

As TorchServe's: each image becomes a ``C x H x W`` float tensor in [0, 1] (torchvision's
``ToTensor``, done with Pillow and numpy), the model answers one ``{"boxes", "labels",
"scores"}`` dict per image (torchvision's detection models do), and each image's answer is the
list of its detections scoring at least ``threshold``, as ``{label: [x1, y1, x2, y2], "score": s}``
(``label`` from ``index_to_name.json``, the class index when there is none).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from PIL import Image

from marserve.handlers.exceptions import PredictionException
from marserve.handlers.images import to_chw_float
from marserve.handlers.vision_handler import VisionHandler


class ObjectDetector(VisionHandler):
    """Detections above ``threshold`` per image; images of different sizes go as a list."""

    threshold = 0.5
    image_processing: Callable[[Image.Image], Any] = staticmethod(to_chw_float)
    explain_with_integrated_gradients = False

    def preprocess(self, data: Any) -> Any:
        if not isinstance(data, list) or not data:
            raise PredictionException("expected a non-empty list of request rows", 400)
        images = [self._row_tensor(row).to(self.device) for row in data]
        if len({tuple(image.shape) for image in images}) == 1:
            return torch.stack(images)
        return images  # detection models take a list of differently sized images

    def inference(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            return self.model(data, *args, **kwargs)

    def postprocess(self, data: Any) -> list[Any]:
        if not isinstance(data, Sequence) or not all(isinstance(row, Mapping) for row in data):
            raise PredictionException(
                "object_detector expects the model to return one dict of boxes, labels and "
                "scores per image",
                500,
            )
        return [self._detections(row) for row in data]

    def _detections(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        keep = row["scores"] >= self.threshold
        boxes, labels, scores = (row[key][keep].tolist() for key in ("boxes", "labels", "scores"))
        mapping = self.mapping or {}
        found: list[dict[str, Any]] = []
        for label, box, score in zip(labels, boxes, scores, strict=True):
            name = mapping.get(str(label), str(label))
            found.append({name: box, "score": score})
        return found

    def get_insights(self, tensor_data: Any, raw_data: Any, target: Any = 0) -> list[Any]:
        raise PredictionException("object_detector does not implement explanations", 501)
