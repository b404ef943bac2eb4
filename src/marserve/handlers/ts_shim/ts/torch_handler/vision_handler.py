"""``ts.torch_handler.vision_handler``: re-exported from marserve."""

from marserve.handlers.vision_handler import VisionHandler

__all__ = ["VisionHandler"]
