"""KServe v1 and Open Inference Protocol v2 REST routes over the DataPlane."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from marserve import explain_render
from marserve.dataplane import DataPlane, request_rows
from marserve.errors import NotFound
from marserve.protocol import v1, v2_json
from marserve.protocol.limits import DecodeLimits
from marserve.rest.body import read_body
from marserve.types import InferRequest

_JSON = "application/json"
_V1_VERBS = frozenset({"predict", "explain"})
_ALIVE = b'{"status":"alive"}'


def _json(obj: object, status: int = 200) -> Response:
    return Response(v2_json.encode_json(obj), status_code=status, media_type=_JSON)


def _wants_png(request: Request) -> bool:
    """An explain request asking for a heatmap (``?format=png`` or ``Accept: image/png``)."""
    return explain_render.wants_png(
        request.headers.get("accept"), request.query_params.get("format")
    )


async def _png_response(values: list[Any], inputs: list[Any]) -> Response:
    """The explanations drawn over their inputs, rendered off the event loop."""
    picture = await run_in_threadpool(explain_render.heatmap_png, values, inputs)
    return Response(picture, media_type="image/png")


class KServeRoutes:
    def __init__(self, dataplane: DataPlane, max_request_size: int, limits: DecodeLimits) -> None:
        self.dataplane = dataplane
        self.max_request_size = max_request_size
        self.limits = limits

    async def alive(self, request: Request) -> Response:
        """``GET /``: KServe's model server liveness body (its SDK's ``is_server_live``)."""
        return Response(_ALIVE, media_type=_JSON)

    # v1 -------------------------------------------------------------------------------------
    async def v1_list(self, request: Request) -> Response:
        return _json({"models": self.dataplane.registry.names()})

    async def v1_model(self, request: Request) -> Response:
        name = request.path_params["name"]
        ready = self.dataplane.model_ready(name)
        return _json({"name": name, "ready": ready}, 200 if ready else 503)  # as KServe does

    async def v1_verb(self, request: Request) -> Response:
        name, _, verb = request.path_params["name_verb"].rpartition(":")
        if not name or verb not in _V1_VERBS:
            raise NotFound(f"Unknown v1 endpoint: {request.url.path[:200]}")
        png = verb == "explain" and _wants_png(request)
        body = await read_body(request, self.max_request_size)
        instances = v1.decode_predict_request(body, limits=self.limits)
        values = await self.dataplane.v1(name, None, instances, request.headers, verb=verb)
        if png:
            return await _png_response(values, instances)
        encode = v1.encode_predictions if verb == "predict" else v1.encode_explanations
        return Response(encode(values), media_type=_JSON)

    # v2 -------------------------------------------------------------------------------------
    async def server_metadata(self, request: Request) -> Response:
        return _json(self.dataplane.server_metadata())

    async def live(self, request: Request) -> Response:
        return _json({"live": self.dataplane.live()})

    async def ready(self, request: Request) -> Response:
        ready = self.dataplane.ready()
        return _json({"ready": ready}, 200 if ready else 503)

    async def model_metadata(self, request: Request) -> Response:
        params = request.path_params
        return _json(self.dataplane.model_metadata(params["name"], params.get("version")))

    async def model_ready(self, request: Request) -> Response:
        params = request.path_params
        ready = self.dataplane.model_ready(params["name"], params.get("version"))
        return _json({"name": params["name"], "ready": ready}, 200 if ready else 503)

    async def _decode_v2(self, request: Request) -> InferRequest:
        params = request.path_params
        body = await read_body(request, self.max_request_size)
        header_length = request.headers.get(v2_json.HEADER_LENGTH)
        v2_json.check_binary_header(request.headers.get("content-type"), header_length)
        return v2_json.decode_infer_request(
            body,
            model_name=params["name"],
            model_version=params.get("version"),
            header_length=header_length,
            limits=self.limits,
        )

    async def _infer(self, request: Request, verb: str) -> Response:
        infer_request = await self._decode_v2(request)
        response = await self.dataplane.infer(infer_request, request.headers, verb=verb)
        payload, headers = v2_json.encode_infer_response(
            response,
            infer_request.outputs,
            binary_outputs_default=v2_json.binary_output_default(infer_request),
        )
        return Response(payload, headers=headers)

    async def infer(self, request: Request) -> Response:
        return await self._infer(request, "predict")

    async def explain(self, request: Request) -> Response:
        if not _wants_png(request):
            return await self._infer(request, "explain")
        infer_request = await self._decode_v2(request)
        headers = request.headers
        _, values = await self.dataplane.infer_values(infer_request, headers, verb="explain")
        return await _png_response(values, request_rows(infer_request))

    def routes(self) -> list[Route]:
        model = "/v2/models/{name}"
        versioned = "/v2/models/{name}/versions/{version}"
        routes = [
            Route("/", self.alive, methods=["GET"]),
            Route("/v1/models", self.v1_list, methods=["GET"]),
            Route("/v1/models/{name_verb}", self.v1_verb, methods=["POST"]),
            Route("/v1/models/{name}", self.v1_model, methods=["GET"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/models", self.v1_list, methods=["GET"]),  # KServe lists models there too
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
        ]
        for prefix in (model, versioned):
            routes += [
                Route(prefix, self.model_metadata, methods=["GET"]),
                Route(prefix + "/ready", self.model_ready, methods=["GET"]),
                Route(prefix + "/infer", self.infer, methods=["POST"]),
                Route(prefix + "/explain", self.explain, methods=["POST"]),
            ]
        return routes
