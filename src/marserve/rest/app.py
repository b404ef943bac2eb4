"""Builds the Starlette applications: one per listening address, routes guarded by token scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from marserve.auth import TokenAuthority
from marserve.dataplane import DataPlane
from marserve.management import ModelManager
from marserve.protocol.limits import DecodeLimits
from marserve.rest.errors import EXCEPTION_HANDLERS
from marserve.rest.kserve import KServeRoutes
from marserve.rest.management import ManagementRoutes
from marserve.rest.openapi import openapi_response
from marserve.rest.torchserve import TorchServeRoutes

Endpoint = Callable[[Request], Awaitable[Response]]

# Answered without a token: health probes (kubelet, load balancers) and the API description.
OPEN_PATHS = frozenset({"/", "/ping", "/v2/health/live", "/v2/health/ready", "/token"})


def guard(endpoint: Endpoint, scope: str, auth: TokenAuthority | None) -> Endpoint:
    """The endpoint behind a token check for ``scope`` (unchanged when auth is off)."""
    if auth is None:
        return endpoint

    async def checked(request: Request) -> Response:
        auth.check(request.headers.get("authorization"), scope)
        return await endpoint(request)

    return checked


def _guarded(routes: list[Route], scope: str, auth: TokenAuthority | None) -> list[BaseRoute]:
    return [
        route
        if route.path in OPEN_PATHS
        else Route(route.path, guard(route.endpoint, scope, auth), methods=route.methods)
        for route in routes
    ]


def inference_routes(
    dataplane: DataPlane,
    manager: ModelManager,
    auth: TokenAuthority | None,
    *,
    max_request_size: int,
    limits: DecodeLimits,
) -> list[BaseRoute]:
    """TorchServe's inference API, KServe v1 and v2, and the v2 repository extension."""
    routes = TorchServeRoutes(dataplane, max_request_size, limits).routes()
    routes += KServeRoutes(dataplane, max_request_size, limits).routes()
    repository = ManagementRoutes(manager, auth).repository_routes()
    return _guarded(routes, "inference", auth) + _guarded(repository, "management", auth)


def management_routes(manager: ModelManager, auth: TokenAuthority | None) -> list[BaseRoute]:
    routes = [Route("/", openapi_response, methods=["OPTIONS"])]
    routes += ManagementRoutes(manager, auth).routes()
    return _guarded(routes, "management", auth)


def application(*route_sets: list[BaseRoute]) -> Starlette:
    """One app over several route sets (when two APIs share an address, the first wins a path)."""
    routes = [route for route_set in route_sets for route in route_set]
    return Starlette(routes=routes, exception_handlers=dict(EXCEPTION_HANDLERS))
