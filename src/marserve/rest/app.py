"""Builds the Starlette applications: one per listening address, routes guarded by token scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from marserve.auth import TokenAuthority
from marserve.dataplane import DataPlane
from marserve.management import ModelManager
from marserve.protocol.limits import DecodeLimits
from marserve.rest.disconnect import WATCHED
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


def application(*route_sets: list[BaseRoute]) -> ASGIApp:
    """One app over several route sets (when two APIs share an address, the first wins a path).

    The inference verbs (POST and PUT under the inference prefixes) skip Starlette's router."""
    routes = [route for route_set in route_sets for route in route_set]
    app = Starlette(routes=routes, exception_handlers=dict(EXCEPTION_HANDLERS))
    verbs = [
        route
        for route in routes
        if isinstance(route, Route)
        and route.path.startswith(WATCHED)
        and route.methods is not None
        and route.methods & {"POST", "PUT"}
    ]
    return DirectRoutes(app, verbs) if verbs else app


class DirectRoutes:
    """ASGI: requests for ``routes`` go straight to their endpoints, all others on to ``app``.

    A prediction is the front's hot path, and Starlette's two error middlewares, its router and
    its per-request wrappers cost more front CPU than the endpoint does. A request whose path
    and method match one of ``routes`` (the first that matches) calls that endpoint with the
    same path parameters, and its errors go through the same table (``EXCEPTION_HANDLERS``).
    Anything else, a known path with the wrong method (405) included, is the app's.
    """

    def __init__(self, app: ASGIApp, routes: list[Route]) -> None:
        self.app = app
        self.routes = [
            (route.path_regex.match, route.param_convertors, route.methods or set(), route.endpoint)
            for route in routes
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            for match, convertors, methods, endpoint in self.routes:
                found = match(path)
                if found is None or method not in methods:
                    continue
                scope["path_params"] = {
                    key: convertors[key].convert(value) for key, value in found.groupdict().items()
                }
                request = Request(scope, receive)
                try:
                    response = await endpoint(request)
                except Exception as exc:
                    response = await _error_response(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _error_response(request: Request, exc: Exception) -> Response:
    """What the exception handlers answer for ``exc``: the nearest class in the table wins."""
    for kind in type(exc).__mro__:
        handler = EXCEPTION_HANDLERS.get(kind)
        if handler is not None:
            return await handler(request, exc)
    raise exc
