"""TorchServe's inference API: ``/ping``, ``/predictions``, ``/explanations``, ``OPTIONS /``."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from marserve import explain_render
from marserve.dataplane import DataPlane
from marserve.protocol.limits import DecodeLimits
from marserve.protocol.torchserve import decode_prediction_body, encode_prediction_result
from marserve.rest.body import read_body
from marserve.rest.errors import REQUEST_ID_KEY
from marserve.rest.openapi import openapi_response

_HEALTHY = b'{"status": "Healthy"}'
_UNHEALTHY = b'{"status": "Unhealthy"}'


class TorchServeRoutes:
    def __init__(self, dataplane: DataPlane, max_request_size: int, limits: DecodeLimits) -> None:
        self.dataplane = dataplane
        self.max_request_size = max_request_size
        self.limits = limits

    async def ping(self, request: Request) -> Response:
        if self.dataplane.ready():
            return Response(_HEALTHY, media_type="application/json")
        return Response(_UNHEALTHY, status_code=503, media_type="application/json")

    async def _run(self, request: Request, verb: str) -> Response:
        params = request.path_params
        png = verb == "explain" and explain_render.wants_png(
            request.headers.get("accept"), request.query_params.get("format")
        )
        # Explanations take their options (target, n_steps, ...) from the query string, which
        # reaches the handler row as TorchServe passes query parameters: name -> bytes.
        query = list(request.query_params.multi_items()) if verb == "explain" else []
        body = await read_body(request, self.max_request_size)
        content_type = request.headers.get("content-type")
        data = decode_prediction_body(body, content_type, limits=self.limits, query=query)
        result = await self.dataplane.predict_one(
            params["model"],
            params.get("version"),
            data,
            request.headers,
            verb=verb,
            request_id=request.scope.get(REQUEST_ID_KEY),  # the access log's id too
        )
        if png:
            picture = await run_in_threadpool(explain_render.heatmap_png, [result.value], [data])
            return Response(picture, media_type="image/png")
        payload, media_type = encode_prediction_result(result.value)
        return Response(
            payload,
            status_code=result.status,
            headers=result.headers or None,
            media_type=result.content_type or media_type,
        )

    async def predictions(self, request: Request) -> Response:
        return await self._run(request, "predict")

    async def explanations(self, request: Request) -> Response:
        return await self._run(request, "explain")

    def routes(self) -> list[Route]:
        return [
            Route("/", openapi_response, methods=["OPTIONS"]),
            Route("/ping", self.ping, methods=["GET", "POST"]),
            Route("/predictions/{model}", self.predictions, methods=["POST", "PUT"]),
            Route("/predictions/{model}/{version}", self.predictions, methods=["POST", "PUT"]),
            Route("/explanations/{model}", self.explanations, methods=["POST", "PUT"]),
            Route("/explanations/{model}/{version}", self.explanations, methods=["POST", "PUT"]),
        ]
