"""``ts.context``: the handler Context, re-exported from marserve."""

from marserve.handlers.context import Context, RequestProcessor

__all__ = ["Context", "RequestProcessor"]
