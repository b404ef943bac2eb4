"""TorchServe's management API (``/models``, ``/token``) and KServe's v2 repository extension."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from marserve.auth import TokenAuthority
from marserve.errors import InvalidInput, NotFound
from marserve.management import Answer, ModelManager
from marserve.management_params import Registration, ts_bool, ts_int
from marserve.protocol.v2_json import encode_json

# Every parameter TorchServe documents; others are refused, so that a typo is not ignored.
_REGISTER_PARAMS = frozenset(
    {"url", "model_name", "handler", "runtime", "batch_size", "max_batch_delay",
     "initial_workers", "synchronous", "response_timeout", "startup_timeout", "s3_sse_kms"}
)  # fmt: skip
_SCALE_PARAMS = frozenset({"min_worker", "max_worker", "synchronous", "number_gpu", "timeout"})


def _json(body: object, status: int = 200) -> Response:
    return Response(encode_json(body), status_code=status, media_type="application/json")


def _answer(answer: Answer) -> Response:
    return _json(answer.body, answer.status)


def _only(request: Request, allowed: frozenset[str]) -> None:
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise InvalidInput(f"Unsupported parameter(s): {', '.join(k[:50] for k in unknown)}")


class ManagementRoutes:
    def __init__(self, manager: ModelManager, auth: TokenAuthority | None) -> None:
        self.manager = manager
        self.auth = auth

    async def list_models(self, request: Request) -> Response:
        query = request.query_params
        limit, token = ts_int(query.get("limit")), ts_int(query.get("next_page_token"))
        return _answer(self.manager.list_models(limit, token))

    async def register(self, request: Request) -> Response:
        _only(request, _REGISTER_PARAMS)
        query = request.query_params
        registration = Registration(
            url=query.get("url", ""),
            model_name=query.get("model_name"),
            handler=query.get("handler") or None,
            runtime=query.get("runtime") or None,
            batch_size=ts_int(query.get("batch_size")),
            max_batch_delay=ts_int(query.get("max_batch_delay")),
            initial_workers=ts_int(query.get("initial_workers")),
            response_timeout=ts_int(query.get("response_timeout")),
            startup_timeout=ts_int(query.get("startup_timeout")),
            synchronous=ts_bool(query.get("synchronous"), True),
            s3_sse_kms=ts_bool(query.get("s3_sse_kms"), False),
        )
        return _answer(await self.manager.register(registration))

    async def describe(self, request: Request) -> Response:
        params = request.path_params
        name, version = params["model"], params.get("version")
        if ts_bool(request.query_params.get("customized"), False):
            return _answer(await self.manager.describe_customized(name, version))
        return _answer(self.manager.describe(name, version))

    async def scale(self, request: Request) -> Response:
        _only(request, _SCALE_PARAMS)
        params = request.path_params
        query = request.query_params
        answer = await self.manager.scale(
            params["model"],
            params.get("version"),
            min_worker=ts_int(query.get("min_worker")),
            max_worker=ts_int(query.get("max_worker")),
            synchronous=ts_bool(query.get("synchronous"), False),
        )
        return _answer(answer)

    async def unregister(self, request: Request) -> Response:
        params = request.path_params
        return _answer(await self.manager.unregister(params["model"], params.get("version")))

    async def set_default(self, request: Request) -> Response:
        params = request.path_params
        return _answer(self.manager.set_default(params["model"], params["version"]))

    async def token(self, request: Request) -> Response:
        if self.auth is None:
            raise NotFound("Token authorization is disabled")
        scope = request.query_params.get("type", "")
        return _json(self.auth.rotate(request.headers.get("authorization"), scope))

    # KServe v2 repository extension (served on the inference listener) -------------------
    async def repository_index(self, request: Request) -> Response:
        return _json(self.manager.repository_index())

    async def repository_load(self, request: Request) -> Response:
        await self.manager.repository_load(request.path_params["model"])
        return Response(b"", status_code=200)

    async def repository_unload(self, request: Request) -> Response:
        await self.manager.repository_unload(request.path_params["model"])
        return Response(b"", status_code=200)

    def routes(self) -> list[Route]:
        return [
            Route("/models", self.list_models, methods=["GET"]),
            Route("/models", self.register, methods=["POST"]),
            Route("/models/{model}", self.describe, methods=["GET"]),
            Route("/models/{model}", self.scale, methods=["PUT"]),
            Route("/models/{model}", self.unregister, methods=["DELETE"]),
            # TorchServe splits the path on "/" and drops empty parts: "models/m/" is "models/m"
            Route("/models/{model}/", self.describe, methods=["GET"]),
            Route("/models/{model}/", self.scale, methods=["PUT"]),
            Route("/models/{model}/", self.unregister, methods=["DELETE"]),
            Route("/models/{model}/{version}", self.describe, methods=["GET"]),
            Route("/models/{model}/{version}", self.scale, methods=["PUT"]),
            Route("/models/{model}/{version}", self.unregister, methods=["DELETE"]),
            Route("/models/{model}/{version}/set-default", self.set_default, methods=["PUT"]),
            Route("/token", self.token, methods=["GET"]),
        ]

    def repository_routes(self) -> list[Route]:
        return [
            Route("/v2/repository/index", self.repository_index, methods=["POST"]),
            Route("/v2/repository/models/{model}/load", self.repository_load, methods=["POST"]),
            Route("/v2/repository/models/{model}/unload", self.repository_unload, methods=["POST"]),
        ]
