"""``ts.utils.util``: the handler helpers TorchServe exposes, re-exported from marserve."""

from marserve.handlers.exceptions import PredictionException
from marserve.handlers.labels import load_label_mapping, map_class_to_label
from marserve.handlers.loader import list_classes_from_module

__all__ = [
    "PredictionException",
    "list_classes_from_module",
    "load_label_mapping",
    "map_class_to_label",
]
