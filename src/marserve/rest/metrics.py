"""The metrics listener (``GET /metrics``) and the ASGI observer that measures every request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from marserve.access_log import AccessLog, request_id_from
from marserve.metrics import ServerMetrics, rejection_reason
from marserve.rest.errors import ERROR_KEY, EXCEPTION_HANDLERS, REQUEST_ID_KEY

CLIENT_CLOSED = 499  # no response was sent: the client went away first (nginx's code)
MAX_NAME_FILTERS = 200
# Requests whose handling stops when the client goes away after sending its whole body.
_WATCHED = ("/predictions/", "/explanations/", "/v1/models/", "/v2/models/")
WATCH_AFTER_S = 0.05  # a request unanswered this long (to twice it) watches for its client

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
    """The app of the metrics address, when it is an address of its own."""
    return Starlette(routes=metrics_routes(metrics), exception_handlers=dict(EXCEPTION_HANDLERS))


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


class _DisconnectWatch:
    """Once a request's body is in, watches for its client going away before the answer
    starts, and then cancels the request's task (its queued rows leave the queue with it)."""

    __slots__ = ("answered", "armed", "cancelled", "receive", "task", "watcher")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.task = asyncio.current_task()
        self.watcher: asyncio.Task[None] | None = None
        self.armed = False  # the whole body is in
        self.answered = False
        self.cancelled = False

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request" and not message.get("more_body"):
            self.armed = True
        return message

    def begin(self) -> None:
        if self.watcher is None and not self.answered:
            self.watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        message = await self.receive()
        if message["type"] == "http.disconnect" and not self.answered and self.task is not None:
            self.cancelled = True
            self.task.cancel()

    def close(self) -> None:
        if self.watcher is not None and not self.watcher.done():
            self.watcher.cancel()


class _Watches:
    """The requests in flight: those still unanswered one tick after they arrived start to
    watch their client. A quick answer costs a set insert, never a task or a timer (the front
    is the serial bottleneck)."""

    def __init__(self) -> None:
        self._current: set[_DisconnectWatch] = set()
        self._earlier: set[_DisconnectWatch] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def add(self, watch: _DisconnectWatch) -> None:
        self._current.add(watch)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def discard(self, watch: _DisconnectWatch) -> None:
        self._current.discard(watch)
        self._earlier.discard(watch)
        watch.close()

    async def _sweep(self) -> None:
        try:
            while self._current or self._earlier:
                await asyncio.sleep(WATCH_AFTER_S)
                for watch in self._earlier:
                    if watch.armed:
                        watch.begin()
                self._earlier |= self._current
                self._current = set()
        finally:
            self._sweeper = None


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
        self._watches = _Watches()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.skip:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        scope[REQUEST_ID_KEY] = request_id_from(_header(scope, b"x-request-id"))
        status = 0
        done = False
        watch = None
        if scope["method"] in ("POST", "PUT") and scope["path"].startswith(_WATCHED):
            watch = _DisconnectWatch(receive)
            receive = watch
            self._watches.add(watch)

        async def observed_send(message: Message) -> None:
            nonlocal status, done
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                if watch is not None:
                    watch.answered = True
            elif kind == "http.response.body" and not done and not message.get("more_body"):
                done = True
                self.record(scope, status, time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except asyncio.CancelledError:
            if watch is None or not watch.cancelled or watch.task is None:
                raise
            watch.task.uncancel()  # our own cancellation: the client left, nothing to answer
            status = 0
        finally:
            if watch is not None:
                self._watches.discard(watch)
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
