"""``ts.torch_handler.text_classifier``: re-exported from marserve (no torchtext needed)."""

from marserve.handlers.text_classifier import TextClassifier

__all__ = ["TextClassifier"]
