"""The Starlette app: bearer-token auth, discovery, OpenAPI, and resource verbs over the store."""

from __future__ import annotations

import hmac
import logging
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
from marserve.controlplane import discovery, openapi
from marserve.controlplane.api.logs import follow, log_path, tail
from marserve.controlplane.api.request import (
    Target,
    dry_run,
    field_manager,
    flag,
    parse_target,
    read_body,
    wants_table,
)
from marserve.controlplane.api.verbs import MAX_OBJECTS, Verbs, select, with_kind
from marserve.controlplane.api.watch import bookmark, watch_stream
from marserve.controlplane.config import ControllerConfig
from marserve.controlplane.errors import (
    ApiError,
    BadRequest,
    Invalid,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    UnsupportedMediaType,
)
from marserve.controlplane.patch import APPLY, PATCH_TYPES
from marserve.controlplane.selectors import parse as parse_labels
from marserve.controlplane.selectors import parse_fields
from marserve.controlplane.store import Obj, Store
from marserve.controlplane.tables import table
from marserve.controlplane.validation import field_validation

MAX_WATCH_S = 1800
log = logging.getLogger(__name__)


def _json(body: Any, status: int = 200, warnings: list[str] | None = None) -> Response:
    response = Response(orjson.dumps(body), status, media_type="application/json")
    for warning in warnings or []:
        text = warning.replace("\\", "\\\\").replace('"', '\\"')
        response.raw_headers.append((b"warning", f'299 - "{text}"'.encode()))
    return response


def _int(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    if not raw.isdigit():
        raise BadRequest(f"{name}: Invalid value: {raw!r}: must be a non-negative integer")
    return int(raw)


class Api:
    """Request handlers; each turns the request into a :class:`Verbs` call."""

    def __init__(self, store: Store, config: ControllerConfig, max_objects: int) -> None:
        self.store, self.config = store, config
        self.verbs = Verbs(store, max_objects=max_objects)

    async def version(self, request: Request) -> Response:
        return _json(
            {
                "major": "1",
                "minor": "30",
                "gitVersion": f"v1.30.0-marserve+{__version__}",
                "gitCommit": "",
                "gitTreeState": "clean",
                "buildDate": "",
                "goVersion": "",
                "compiler": "",
                "platform": "linux/amd64",
            }
        )

    async def api(self, request: Request) -> Response:
        return _json(discovery.api_versions(f"{self.config.host}:{self.config.port}"))

    async def apis(self, request: Request) -> Response:
        return _json(discovery.api_group_list())

    async def group(self, request: Request) -> Response:
        if request.path_params["group"] != "serving.kserve.io":
            raise NotFound("the server could not find the requested resource")
        return _json(discovery.api_group())

    async def openapi_root(self, request: Request) -> Response:
        return _json(openapi.root())

    async def openapi_doc(self, request: Request) -> Response:
        doc = openapi.by_path(request.path_params["path"])
        if doc is None:
            raise NotFound("the server could not find the requested resource")
        return Response(doc, media_type="application/json")

    async def healthz(self, request: Request) -> Response:
        return Response(b"ok", media_type="text/plain")

    async def resources(self, request: Request) -> Response:
        """Everything under ``/api/v1`` and ``/apis/G/V``: discovery, then resource verbs."""
        path = request.url.path.rstrip("/")
        gv = "v1" if path == "/api/v1" else path.removeprefix("/apis/")
        if path == "/api/v1" or (path.startswith("/apis/") and path.count("/") == 3):
            doc = discovery.resource_list(gv)
            if doc is None:
                raise NotFound("the server could not find the requested resource")
            return _json(doc)
        target = parse_target(path)
        if target.sub == "log" and target.resource.plural == "pods":
            return await self.pod_log(request, target)
        method = request.method
        if method == "GET" and target.name is None:
            return await self.list(request, target)
        if method == "GET":
            if target.sub not in (None, "status"):
                raise NotFound("the server could not find the requested resource")
            obj = self.verbs.get(target.resource, target.namespace or "", target.name or "")
            return self.render(request, target, obj)
        return await self.write(request, target)

    def render(self, request: Request, target: Target, obj: Obj) -> Response:
        if wants_table(request):
            include = request.query_params.get("includeObject", "Metadata")
            return _json(table(target.resource.key, [obj], None, include=include))
        return _json(obj)

    async def list(self, request: Request, target: Target) -> Response:
        res, q = target.resource, request.query_params
        labels = parse_labels(q.get("labelSelector"))
        fields = parse_fields(q.get("fieldSelector"))
        if flag(request, "watch"):
            return await self.watch(request, target, labels, fields)
        items, rv = self.verbs.list_objects(res, target.namespace, labels, fields)
        if wants_table(request):
            include = q.get("includeObject", "Metadata")
            return _json(table(res.key, items, str(rv), include=include))
        return _json(
            {
                "apiVersion": res.group_version,
                "kind": f"{res.kind}List",
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            }
        )

    async def watch(self, request: Request, target: Target, labels: Any, fields: Any) -> Response:
        res, q = target.resource, request.query_params
        raw_rv = q.get("resourceVersion", "")
        if raw_rv not in ("", "0") and not raw_rv.isdigit():
            raise BadRequest(f"resourceVersion: Invalid value: {raw_rv!r}")
        since = int(raw_rv) if raw_rv not in ("", "0") else None
        send_initial = q.get("sendInitialEvents")
        if send_initial == "true" and q.get("resourceVersionMatch") != "NotOlderThan":
            raise Invalid(
                "resourceVersionMatch: Forbidden: sendInitialEvents requires setting "
                "resourceVersionMatch to NotOlderThan",
                field="resourceVersionMatch",
            )
        # What matches now: the objects the client is taken to hold, so selector transitions
        # are ADDED/DELETED. Listing first also gives the start when none was asked for, or
        # the objects of client-go's streaming list (sendInitialEvents, then an end bookmark).
        current, listed_rv = self.verbs.list_objects(res, target.namespace, labels, fields)
        matched = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in current}
        initial: list[Obj] = []
        if send_initial == "true" or (since is None and send_initial != "false"):
            initial = current
        if send_initial == "true" or since is None:
            since = listed_rv
        ns = target.namespace if res.namespaced and target.namespace else None
        as_table = wants_table(request)

        def render(obj: Obj) -> Obj:
            full = with_kind(res, obj)
            return table(res.key, [full], None) if as_table else full

        def keep(obj: Obj) -> bool:
            return bool(select([obj], labels, fields))

        timeout = min(_int(request, "timeoutSeconds", MAX_WATCH_S) or MAX_WATCH_S, MAX_WATCH_S)
        stream = watch_stream(
            self.store,
            res.key,
            ns,
            since,
            initial=initial,
            keep=keep,
            render=render,
            timeout_s=float(timeout),
            bookmarks=flag(request, "allowWatchBookmarks"),
            bookmark_obj=bookmark(res.kind, res.group_version),
            initial_end=send_initial == "true",
            matched=matched,
        )
        return StreamingResponse(stream, media_type="application/json")

    async def write(self, request: Request, target: Target) -> Response:
        res, ns, name, q = (
            target.resource,
            target.namespace or "",
            target.name,
            request.query_params,
        )
        mode = field_validation(q.get("fieldValidation"))
        manager, dry = field_manager(request), dry_run(request)
        if request.method == "POST" and name is None:
            obj, warnings = self.verbs.create(res, ns, await read_body(request), mode, manager, dry)
            return _json(obj, 201, warnings)
        if name is None:
            if request.method == "DELETE":
                return await self.delete_collection(request, target, dry)
            raise MethodNotAllowed(f"{request.method} is not supported on a collection")
        if request.method == "PUT":
            body = await read_body(request)
            obj, warnings = self.verbs.replace(res, ns, name, target.sub, body, mode, manager, dry)
            return _json(obj, 200, warnings)
        if request.method == "PATCH":
            return await self.patch(request, target, mode, manager, dry)
        if request.method == "DELETE":
            return self.delete(target, dry)
        raise MethodNotAllowed(f"{request.method} is not supported")

    async def patch(
        self, request: Request, target: Target, mode: str, manager: str, dry: bool
    ) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        if ctype not in PATCH_TYPES:
            raise UnsupportedMediaType(
                "the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(PATCH_TYPES)}"
            )
        opts = {
            "mode": mode,
            "manager": manager,
            "dry": dry,
            "force": flag(request, "force"),
            "explicit_manager": bool(request.query_params.get("fieldManager")),
        }
        body = await read_body(request)
        ns, name = target.namespace or "", target.name or ""
        created = ctype == APPLY and target.sub is None and not self.exists(target)
        obj, warnings = self.verbs.patch(target.resource, ns, name, target.sub, body, ctype, opts)
        return _json(obj, 201 if created else 200, warnings)

    def exists(self, target: Target) -> bool:
        try:
            self.store.get(target.resource.key, target.namespace or "", target.name or "")
        except NotFound:
            return False
        return True

    def delete(self, target: Target, dry: bool) -> Response:
        res, name = target.resource, target.name or ""
        obj = self.verbs.delete(res, target.namespace or "", name, dry)
        if res.plural == "namespaces":
            return _json({**obj, "status": {"phase": "Terminating"}})
        details = {
            "name": name,
            "group": res.group_version.rpartition("/")[0],
            "kind": res.plural,
            "uid": obj["metadata"].get("uid"),
        }
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
        return _json({**status, "details": details})

    async def delete_collection(self, request: Request, target: Target, dry: bool) -> Response:
        res = target.resource
        labels = parse_labels(request.query_params.get("labelSelector"))
        fields = parse_fields(request.query_params.get("fieldSelector"))
        items, _ = self.verbs.list_objects(res, target.namespace, labels, fields)
        for obj in items:
            meta = obj["metadata"]
            self.verbs.delete(res, meta.get("namespace", ""), meta["name"], dry)
        rv = self.store.resource_version
        return _json(
            {
                "apiVersion": res.group_version,
                "kind": f"{res.kind}List",
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            }
        )

    async def pod_log(self, request: Request, target: Target) -> Response:
        q, ns, pod = request.query_params, target.namespace or "", target.name or ""
        self.store.get("pods", ns, pod)
        path = log_path(self.config.pods_dir, ns, pod, q.get("container"))
        lines = q.get("tailLines")
        if lines is not None and not lines.lstrip("-").isdigit():
            raise BadRequest(f"tailLines: invalid integer {lines!r}")
        data = path.read_bytes()
        first = tail(data, int(lines) if lines is not None else None)
        if not flag(request, "follow"):
            return Response(first, media_type="text/plain")

        async def stream() -> AsyncIterator[bytes]:
            yield first
            async for chunk in follow(path, len(data)):
                yield chunk

        return StreamingResponse(stream(), media_type="text/plain")


def build_app(
    store: Store, config: ControllerConfig, *, max_objects: int = MAX_OBJECTS
) -> Starlette:
    """The API app; every request must carry ``Authorization: Bearer <config.token>``."""
    api = Api(store, config, max_objects)

    async def guard(request: Request, call: Any) -> Response:
        header = request.headers.get("authorization", "")
        if not hmac.compare_digest(header.encode(), f"Bearer {config.token}".encode()):
            return _json(Unauthorized("Unauthorized").status(), 401)
        try:
            response: Response = await call(request)
        except ApiError as err:
            return _json(err.status(), err.code)
        except Exception as exc:  # a bug must not take the API down: answer a 500 Status
            log.exception("%s %s failed", request.method, request.url.path)
            return _json(ApiError(f"internal error: {type(exc).__name__}").status(), 500)
        return response

    async def not_allowed(request: Request, exc: Exception) -> Response:
        err = MethodNotAllowed("the server does not allow this method on the requested resource")
        return _json(err.status(), 405)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _json(NotFound("the server could not find the requested resource").status(), 404)

    every = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes = [
        Route("/version", api.version),
        Route("/healthz", api.healthz),
        Route("/livez", api.healthz),
        Route("/readyz", api.healthz),
        Route("/api", api.api),
        Route("/apis", api.apis),
        Route("/apis/{group}", api.group),
        Route("/openapi/v3", api.openapi_root),
        Route("/openapi/v3/{path:path}", api.openapi_doc),
        Route("/api/v1", api.resources),
        Route("/api/v1/{rest:path}", api.resources, methods=every),
        Route("/apis/{group}/{version}", api.resources),
        Route("/apis/{group}/{version}/{rest:path}", api.resources, methods=every),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)],
        exception_handlers={404: not_found, 405: not_allowed},
    )
