"""TorchServe's management API (``/models``, ``/token``) and KServe's v2 repository extension."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from marserve.auth import TokenAuthority
from marserve.errors import InvalidInput, NotFound
from marserve.management import Answer, ModelManager
from marserve.protocol.v2_json import encode_json

_DIGITS = re.compile(r"[0-9]{1,10}")
_REGISTER_PARAMS = frozenset(
    {"url", "model_name", "batch_size", "max_batch_delay", "initial_workers", "synchronous",
     "response_timeout"}
)  # fmt: skip
_SCALE_PARAMS = frozenset({"min_worker", "max_worker", "synchronous", "number_gpu", "timeout"})


def _json(body: object, status: int = 200) -> Response:
    return Response(encode_json(body), status_code=status, media_type="application/json")


def _answer(answer: Answer) -> Response:
    return _json(answer.body, answer.status)


def _int(request: Request, key: str) -> int | None:
    value = request.query_params.get(key)
    if value is None:
        return None
    if not _DIGITS.fullmatch(value):
        raise InvalidInput(f"{key}={value[:50]!r}: expected a non-negative integer")
    return int(value)


def _bool(request: Request, key: str, default: bool) -> bool:
    value = request.query_params.get(key)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise InvalidInput(f"{key}={value[:50]!r}: expected true or false")
    return value.lower() == "true"


def _only(request: Request, allowed: frozenset[str]) -> None:
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise InvalidInput(f"Unsupported parameter(s): {', '.join(k[:50] for k in unknown)}")


class ManagementRoutes:
    def __init__(self, manager: ModelManager, auth: TokenAuthority | None) -> None:
        self.manager = manager
        self.auth = auth

    async def list_models(self, request: Request) -> Response:
        limit = _int(request, "limit")
        token = _int(request, "next_page_token")
        return _answer(self.manager.list_models(100 if limit is None else limit, token or 0))

    async def register(self, request: Request) -> Response:
        _only(request, _REGISTER_PARAMS)
        answer = await self.manager.register(
            url=request.query_params.get("url", ""),
            model_name=request.query_params.get("model_name"),
            batch_size=_int(request, "batch_size"),
            max_batch_delay=_int(request, "max_batch_delay"),
            initial_workers=_int(request, "initial_workers"),
            response_timeout=_int(request, "response_timeout"),
            synchronous=_bool(request, "synchronous", True),
        )
        return _answer(answer)

    async def describe(self, request: Request) -> Response:
        params = request.path_params
        return _answer(self.manager.describe(params["model"], params.get("version")))

    async def scale(self, request: Request) -> Response:
        _only(request, _SCALE_PARAMS)
        params = request.path_params
        answer = await self.manager.scale(
            params["model"],
            params.get("version"),
            min_worker=_int(request, "min_worker"),
            max_worker=_int(request, "max_worker"),
            synchronous=_bool(request, "synchronous", False),
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
