"""Builds the Starlette application for the inference address."""

from __future__ import annotations

from starlette.applications import Starlette

from marserve.dataplane import DataPlane
from marserve.protocol.limits import DecodeLimits
from marserve.rest.errors import EXCEPTION_HANDLERS
from marserve.rest.kserve import KServeRoutes
from marserve.rest.torchserve import TorchServeRoutes


def inference_app(
    dataplane: DataPlane, *, max_request_size: int, limits: DecodeLimits
) -> Starlette:
    """TorchServe's inference API plus KServe v1 and v2 on one listener."""
    routes = TorchServeRoutes(dataplane, max_request_size, limits).routes()
    routes += KServeRoutes(dataplane, max_request_size, limits).routes()
    return Starlette(routes=routes, exception_handlers=dict(EXCEPTION_HANDLERS))
