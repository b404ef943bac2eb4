"""``ts.torch_handler.image_classifier``: re-exported from marserve."""

from marserve.handlers.image_classifier import ImageClassifier

__all__ = ["ImageClassifier"]
