"""TorchServe-compatible handler runtime used inside worker processes: Context, loader, handlers."""

from __future__ import annotations

from marserve.handlers.context import Context, RequestProcessor
from marserve.handlers.exceptions import PredictionException
from marserve.handlers.loader import EntryPoint, load_entry_point
from marserve.handlers.shim import install_ts_shim

__all__ = [
    "Context",
    "EntryPoint",
    "PredictionException",
    "RequestProcessor",
    "install_ts_shim",
    "load_entry_point",
]
