"""``ts.torch_handler.base_handler``: re-exported from marserve."""

from marserve.handlers.base_handler import BaseHandler

__all__ = ["BaseHandler"]
