"""CancelOnDisconnect under the REST observer: a client leaving after its body cancels the
request, which is counted as 499 and a cancellation; a client that stays gets its answer."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from marserve.observability.metrics import ServerMetrics
from marserve.registry import ModelRegistry
from marserve.rest.disconnect import CancelOnDisconnect
from marserve.rest.metrics import CLIENT_CLOSED, ObservedApp

SCOPE = {"type": "http", "method": "POST", "path": "/predictions/m", "headers": []}


def _metrics() -> ServerMetrics:
    return ServerMetrics(
        ModelRegistry(), registry=CollectorRegistry(), system_metrics=False, find_nvidia_smi=False
    )


class Client:
    """An ASGI receive/send pair: one body, then (optionally) a disconnect."""

    def __init__(self, leaves: bool) -> None:
        self.leaves = leaves
        self.gone = asyncio.Event()
        self.sent: list[dict[str, Any]] = []
        self._body_sent = False

    async def receive(self) -> dict[str, Any]:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": b"{}", "more_body": False}
        if self.leaves:
            await asyncio.sleep(0.01)
            return {"type": "http.disconnect"}
        await self.gone.wait()  # never, while the request runs
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def _app(seconds: float, events: list[str]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _requests(metrics: ServerMetrics, status: str) -> float:
    value = metrics.registry.get_sample_value(
        "marserve_requests_total",
        {"model": "", "version": "", "protocol": "torchserve", "verb": "predict", "status": status},
    )
    return value or 0.0


def test_a_client_leaving_after_its_body_cancels_the_request() -> None:
    async def scenario() -> None:
        metrics, events = _metrics(), []
        observed = ObservedApp(CancelOnDisconnect(_app(5.0, events)), metrics)
        client = Client(leaves=True)
        await asyncio.wait_for(observed(dict(SCOPE), client.receive, client.send), 3.0)
        assert events == ["cancelled"] and client.sent == []
        assert _requests(metrics, str(CLIENT_CLOSED)) == 1
        cancelled = metrics.registry.get_sample_value(
            "marserve_cancelled_requests_total",
            {"model": "", "version": "", "protocol": "torchserve"},
        )
        assert cancelled == 1

    asyncio.run(scenario())


def test_a_client_that_stays_gets_its_answer_and_nothing_is_left_running() -> None:
    async def scenario() -> None:
        metrics, events = _metrics(), []
        for seconds in (0.0, 0.2):
            client = Client(leaves=False)
            await ObservedApp(CancelOnDisconnect(_app(seconds, events)), metrics)(
                dict(SCOPE), client.receive, client.send
            )
            assert client.sent[0]["status"] == 200
        assert events == [] and _requests(metrics, "200") == 2
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.sleep(0.15)  # the sweeper ends once nothing is in flight
        assert all(t.done() for t in tasks)

    asyncio.run(scenario())


def test_any_endpoint_whose_client_leaves_mid_body_answers_499_not_500() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from marserve.rest.errors import EXCEPTION_HANDLERS

    async def reads(request: Request) -> Response:
        return Response(await request.body())

    app = Starlette(
        routes=[Route("/models", reads, methods=["POST"])],
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )

    async def scenario() -> None:
        metrics = _metrics()
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {**SCOPE, "path": "/models", "query_string": b"", "server": ("x", 1)}
        await ObservedApp(app, metrics)(scope, receive, send)
        assert sent[0]["status"] == CLIENT_CLOSED
        text = metrics.exposition(None)[0].decode()
        counts = {  # by family: the parser names TorchServe's counter samples ``..._total``
            family.name: sum(sample.value for sample in family.samples)
            for family in text_string_to_metric_families(text)
            if family.name.startswith("Requests")
        }
        # TorchServe prints no sample for a family nothing was counted in
        assert counts.get("Requests5XX", 0) == 0 and counts["Requests4XX"] == 1

    asyncio.run(scenario())
