"""The Starlette app: bearer-token auth, version, and resource verbs over the store."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from marserve import __version__
from marserve.controlplane.admission import default_isvc, validate_isvc
from marserve.controlplane.api.logs import follow, log_path, tail
from marserve.controlplane.config import ControllerConfig
from marserve.controlplane.errors import ApiError, BadRequest, NotFound
from marserve.controlplane.store import Store

ISVC = "inferenceservices.serving.kserve.io"
CORE = {"pods": "Pod", "services": "Service", "events": "Event", "namespaces": "Namespace"}
MAX_BODY = 3 * 1024 * 1024


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(err: ApiError) -> Response:
    return _json(err.status(), err.code)


def _list(kind: str, api_version: str, items: list[dict[str, Any]], rv: int) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": f"{kind}List",
        "metadata": {"resourceVersion": str(rv)},
        "items": items,
    }


def _labels(request: Request) -> dict[str, str]:
    raw = request.query_params.get("labelSelector", "")
    out: dict[str, str] = {}
    for term in filter(None, raw.split(",")):
        key, sep, value = term.partition("=")
        if not sep:
            raise BadRequest(f"unable to parse requirement: {term!r}")
        out[key.strip()] = value.lstrip("=").strip()
    return out


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BadRequest(f"the request body is larger than {MAX_BODY} bytes")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body of the request was in an unknown format: {exc}") from None
    if not isinstance(obj, dict):
        raise BadRequest("the body of the request must be an object")
    return obj


def build_app(store: Store, config: ControllerConfig) -> Starlette:
    """The API app; every request must carry ``Authorization: Bearer <config.token>``."""

    async def version(request: Request) -> Response:
        return _json(
            {
                "major": "1",
                "minor": "30",
                "gitVersion": f"v1.30.0-marserve+{__version__}",
                "platform": "linux/amd64",
            }
        )

    async def core(request: Request) -> Response:
        p = request.path_params
        resource = p["resource"]
        if resource not in CORE:
            raise NotFound(f"the server could not find the requested resource ({resource})")
        ns = "" if resource == "namespaces" else p.get("namespace")
        return await _handle(request, resource, "v1", CORE[resource], ns)

    async def pod_log(request: Request) -> Response:
        p, q = request.path_params, request.query_params
        store.get("pods", p["namespace"], p["name"])
        path = log_path(config.pods_dir, p["namespace"], p["name"], q.get("container"))
        raw = q.get("tailLines")
        if raw is not None and not raw.lstrip("-").isdigit():
            raise BadRequest(f"tailLines: invalid integer {raw!r}")
        data = path.read_bytes()
        first = tail(data, int(raw) if raw is not None else None)
        if q.get("follow") not in ("true", "1"):
            return Response(first, media_type="text/plain")

        async def stream() -> AsyncIterator[bytes]:
            yield first
            async for chunk in follow(path, len(data)):
                yield chunk

        return StreamingResponse(stream(), media_type="text/plain")

    async def isvc(request: Request) -> Response:
        ns = request.path_params.get("namespace")
        return await _handle(request, ISVC, "serving.kserve.io/v1beta1", "InferenceService", ns)

    async def _handle(
        request: Request, resource: str, api_version: str, kind: str, ns: str | None
    ) -> Response:
        name = request.path_params.get("name")
        if request.method == "GET" and name is None:
            items, rv = store.list(resource, ns, _labels(request))
            return _json(_list(kind, api_version, items, rv))
        if request.method == "GET":
            return _json(store.get(resource, ns or "", name or ""))
        if request.method == "DELETE" and name is not None:
            store.delete(resource, ns or "", name)
            return _json(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Success",
                    "details": {"name": name, "kind": resource},
                }
            )
        if resource != ISVC and resource != "namespaces":
            raise ApiError("method not allowed")
        obj = await _body(request)
        meta = obj.setdefault("metadata", {})
        if ns:
            meta["namespace"] = ns
        if resource == ISVC:
            obj = default_isvc(obj)
            validate_isvc(obj)
        if request.method == "POST":
            return _json(store.create(resource, obj), 201)
        if request.path_params.get("sub") == "status":
            return _json(store.update_status(resource, obj))
        return _json(store.update(resource, obj))

    async def guard(request: Request, call: Any) -> Response:
        header = request.headers.get("authorization", "")
        if not hmac.compare_digest(header.encode(), f"Bearer {config.token}".encode()):
            return _json(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": "Unauthorized",
                    "reason": "Unauthorized",
                    "code": 401,
                },
                401,
            )
        try:
            response: Response = await call(request)
        except ApiError as err:
            return _error(err)
        return response

    methods = ["GET", "POST", "PUT", "DELETE"]
    base = "/apis/serving.kserve.io/v1beta1"
    routes = [
        Route("/version", version),
        Route("/api/v1/{resource}", core, methods=methods),
        Route("/api/v1/{resource}/{name}", core, methods=methods),
        Route("/api/v1/namespaces/{namespace}/{resource}", core, methods=methods),
        Route("/api/v1/namespaces/{namespace}/pods/{name}/log", pod_log),
        Route("/api/v1/namespaces/{namespace}/{resource}/{name}", core, methods=methods),
        Route(f"{base}/inferenceservices", isvc),
        Route(f"{base}/namespaces/{{namespace}}/inferenceservices", isvc, methods=methods),
        Route(f"{base}/namespaces/{{namespace}}/inferenceservices/{{name}}", isvc, methods=methods),
        Route(
            f"{base}/namespaces/{{namespace}}/inferenceservices/{{name}}/{{sub}}",
            isvc,
            methods=methods,
        ),
    ]
    return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)])
