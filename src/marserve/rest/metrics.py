"""The metrics listener (``GET /metrics``) and the ASGI observer that measures every request."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from marserve.observability.access_log import AccessLog, request_id_from
from marserve.observability.metrics import ServerMetrics, rejection_reason
from marserve.rest.errors import ERROR_KEY, EXCEPTION_HANDLERS, REQUEST_ID_KEY
from marserve.rest.openapi import metrics_openapi_response

CLIENT_CLOSED = 499  # no response was sent: the client went away first (nginx's code)
MAX_NAME_FILTERS = 200

log = logging.getLogger("marserve.rest")

Kind = tuple[str, str, str | None, str | None]  # protocol, verb, model, version


def metrics_routes(metrics: ServerMetrics) -> list[BaseRoute]:
    """``GET /metrics``: Prometheus text, OpenMetrics on request, ``?name[]=`` as TorchServe."""

    async def scrape(request: Request) -> Response:
        await metrics.refresh()
        names = request.query_params.getlist("name[]")[:MAX_NAME_FILTERS]
        body, content_type = metrics.exposition(request.headers.get("accept"), names)
        return Response(body, headers={"content-type": content_type})

    return [Route("/metrics", scrape, methods=["GET"])]


def metrics_app(metrics: ServerMetrics) -> Starlette:
    """The app of the metrics address, when it is an address of its own (with ``OPTIONS /``)."""
    routes = [*metrics_routes(metrics), Route("/", metrics_openapi_response, methods=["OPTIONS"])]
    return Starlette(routes=routes, exception_handlers=dict(EXCEPTION_HANDLERS))


def classify(method: str, path: str, params: Mapping[str, Any]) -> Kind | None:
    """Protocol, verb, model and version of an inference request; None for anything else."""
    if path.startswith("/predictions/"):
        return "torchserve", "predict", params.get("model"), params.get("version")
    if path.startswith("/explanations/"):
        return "torchserve", "explain", params.get("model"), params.get("version")
    if path.startswith("/v1/models/") and method == "POST":
        name, _, verb = str(params.get("name_verb", "")).rpartition(":")
        return "v1", "explain" if verb == "explain" else "predict", name or None, None
    if path.startswith("/v2/models/") and method == "POST":
        verb = "explain" if path.endswith("/explain") else "predict"
        return "v2", verb, params.get("name"), params.get("version")
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class ObservedApp:
    """Wraps an ASGI app: metrics for every response, and an access line when the policy says.

    A request is counted when its last body chunk is handed to the server (before the client
    can see the end of the response), so a client that reads a response and then scrapes
    always finds that response counted.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServerMetrics,
        access_log: AccessLog | None = None,
        *,
        skip: Collection[str] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.skip = frozenset(skip)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.skip:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        scope[REQUEST_ID_KEY] = request_id_from(_header(scope, b"x-request-id"))
        status = 0
        done = False

        async def observed_send(message: Message) -> None:
            nonlocal status, done
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            elif kind == "http.response.body" and not done and not message.get("more_body"):
                done = True
                self.record(scope, status, time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            if not done:
                done = True
                self.record(scope, status or CLIENT_CLOSED, time.perf_counter() - start)

    def record(self, scope: Scope, status: int, seconds: float) -> None:
        kind = classify(scope["method"], scope["path"], scope.get("path_params") or {})
        if status == CLIENT_CLOSED:
            log.debug("client went away: %s %s", scope["method"], scope["path"][:200])
        error = scope.get(ERROR_KEY)
        model = version = protocol = ""
        if kind is None:
            self.metrics.observe_status(status)
            if rejection_reason(status, error) == "auth":
                self.metrics.unknown.reject("auth")
        else:
            protocol, verb, name, requested = kind
            series = self.metrics.observe_request(
                name,
                requested,
                protocol=protocol,
                verb=verb,
                status=status,
                seconds=seconds,
                error=error,
            )
            model, version = series.name, series.version
        access = self.access_log
        if access is not None and access.admit():
            client = scope.get("client")
            access.write(
                method=scope["method"],
                path=scope["path"],
                status=status,
                seconds=seconds,
                client=f"{client[0]}:{client[1]}" if client else "-",
                model=model,
                version=version,
                protocol=protocol,
                request_id=scope[REQUEST_ID_KEY],
            )
