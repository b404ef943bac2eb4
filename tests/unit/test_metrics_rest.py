"""The ASGI observer (metrics and access lines per request) and the /metrics app."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from metrics_fixtures import handle
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from marserve.batching import QueueFull
from marserve.errors import Unauthenticated
from marserve.observability.access_log import AccessLog
from marserve.observability.metrics import ServerMetrics
from marserve.registry import ModelRegistry
from marserve.rest.errors import EXCEPTION_HANDLERS
from marserve.rest.metrics import CLIENT_CLOSED, ObservedApp, classify, metrics_app

_LOGGER_IDS = itertools.count()
HOST = "testhost"


async def predict(request: Request) -> Response:
    command = request.query_params.get("do", "")
    if command == "full":
        raise QueueFull("Model queue is full, retry later", headers={"Retry-After": "1"})
    if command == "auth":
        raise Unauthenticated("no token")
    if command == "gone":
        raise asyncio.CancelledError()
    return Response(b'{"ok": true}', media_type="application/json")


def api() -> Starlette:
    routes = [
        Route("/predictions/{model}", predict, methods=["POST"]),
        Route("/predictions/{model}/{version}", predict, methods=["POST"]),
        Route("/v1/models/{name_verb}", predict, methods=["POST"]),
        Route("/v2/models/{name}/infer", predict, methods=["POST"]),
        Route("/v2/models/{name}/explain", predict, methods=["POST"]),
        Route("/ping", lambda r: Response(b"{}"), methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers=dict(EXCEPTION_HANDLERS))


@pytest.fixture()
def metrics() -> ServerMetrics:
    models = ModelRegistry()
    models.add(handle("mnist", "1.0"), default=True)
    return ServerMetrics(models, registry=CollectorRegistry(), hostname=HOST, system_metrics=False)


def count(metrics: ServerMetrics, **labels: str) -> float:
    full = {"model": "mnist", "version": "1.0", "protocol": "torchserve", "verb": "predict"}
    full.update(labels)
    return metrics.registry.get_sample_value("marserve_requests_total", full) or 0.0


def call(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("method", "path", "params", "kind"),
    [
        ("POST", "/predictions/m", {"model": "m"}, ("torchserve", "predict", "m", None)),
        (
            "PUT",
            "/predictions/m/2",
            {"model": "m", "version": "2"},
            ("torchserve", "predict", "m", "2"),
        ),
        ("POST", "/explanations/m", {"model": "m"}, ("torchserve", "explain", "m", None)),
        ("POST", "/v1/models/m:predict", {"name_verb": "m:predict"}, ("v1", "predict", "m", None)),
        ("POST", "/v1/models/m:explain", {"name_verb": "m:explain"}, ("v1", "explain", "m", None)),
        ("POST", "/v2/models/m/infer", {"name": "m"}, ("v2", "predict", "m", None)),
        (
            "POST",
            "/v2/models/m/versions/3/explain",
            {"name": "m", "version": "3"},
            ("v2", "explain", "m", "3"),
        ),
        ("POST", "/predictions/", {}, ("torchserve", "predict", None, None)),
        ("GET", "/v1/models/m", {"name": "m"}, None),
        ("GET", "/v2/models/m", {"name": "m"}, None),
        ("GET", "/ping", {}, None),
        ("POST", "/models", {}, None),
    ],
)
def test_classify(method: str, path: str, params: dict[str, str], kind: object) -> None:
    assert classify(method, path, params) == kind


def test_each_protocol_is_counted_for_the_resolved_model(metrics: ServerMetrics) -> None:
    app = ObservedApp(api(), metrics)
    assert call(app, "POST", "/predictions/mnist").status_code == 200
    assert call(app, "POST", "/predictions/mnist/1.0").status_code == 200
    assert call(app, "POST", "/v1/models/mnist:predict").status_code == 200
    assert call(app, "POST", "/v2/models/mnist/explain").status_code == 200
    assert call(app, "POST", "/predictions/ghost").status_code == 200  # the route answers...
    assert count(metrics, status="200") == 2
    assert count(metrics, protocol="v1", status="200") == 1
    assert count(metrics, protocol="v2", verb="explain", status="200") == 1
    assert count(metrics, model="", version="", status="200") == 1  # ...but ghost is no label


def test_rejections_are_classified_from_the_error_behind_the_response(
    metrics: ServerMetrics,
) -> None:
    app = ObservedApp(api(), metrics)
    response = call(app, "POST", "/predictions/mnist?do=full")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert call(app, "POST", "/predictions/mnist?do=auth").status_code == 401
    rejected = "marserve_rejected_requests_total"
    assert (
        metrics.registry.get_sample_value(rejected, {"model": "mnist", "reason": "queue_full"}) == 1
    )
    assert metrics.registry.get_sample_value(rejected, {"model": "mnist", "reason": "auth"}) == 1
    assert count(metrics, status="503") == 1


def test_other_requests_count_only_as_responses(metrics: ServerMetrics) -> None:
    app = ObservedApp(api(), metrics)
    assert call(app, "GET", "/ping").status_code == 200
    assert call(app, "GET", "/nothing-here").status_code == 404
    host = {"Level": "Host", "Hostname": HOST}
    assert metrics.registry.get_sample_value("Requests2XX", host) == 1
    assert metrics.registry.get_sample_value("Requests4XX", host) == 1
    assert metrics.registry.get_sample_value("marserve_requests_total", {}) is None
    assert "marserve_requests_total{" not in metrics.exposition(None)[0].decode()


def test_skipped_paths_are_not_observed(metrics: ServerMetrics) -> None:
    app = ObservedApp(api(), metrics, skip=("/ping",))
    call(app, "GET", "/ping")
    host = {"Level": "Host", "Hostname": HOST}
    assert metrics.registry.get_sample_value("Requests2XX", host) is None  # none counted yet


def test_a_response_is_counted_before_its_last_byte_leaves(metrics: ServerMetrics) -> None:
    app = ObservedApp(api(), metrics)
    seen_at_end: list[float] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            seen_at_end.append(count(metrics, status="200"))

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http", "method": "POST", "path": "/predictions/mnist", "raw_path": b"",
        "query_string": b"", "headers": [], "client": ("127.0.0.1", 9), "server": None,
        "scheme": "http", "root_path": "", "http_version": "1.1",
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert seen_at_end == [1.0]


def test_a_request_without_a_response_is_counted_as_client_closed(metrics: ServerMetrics) -> None:
    app = ObservedApp(api(), metrics)
    with pytest.raises(asyncio.CancelledError):
        call(app, "POST", "/predictions/mnist?do=gone")
    assert count(metrics, status=str(CLIENT_CLOSED)) == 1


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def access(policy: str) -> tuple[AccessLog, Lines]:
    logger = logging.getLogger(f"test.access.{policy}.{next(_LOGGER_IDS)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    lines = Lines()
    logger.addHandler(lines)
    return AccessLog(policy, logger=logger), lines


def test_access_lines_name_the_request(metrics: ServerMetrics) -> None:
    log, lines = access("all")
    app = ObservedApp(api(), metrics, log)
    call(app, "POST", "/predictions/mnist", headers={"x-request-id": "abc-1"})
    call(app, "POST", "/predictions/mnist%0Aforged", headers={"x-request-id": "bad id\n"})
    first, second = (record.access for record in lines.records)
    assert first["model"] == "mnist" and first["version"] == "1.0" and first["status"] == 200
    assert first["request_id"] == "abc-1" and first["protocol"] == "torchserve"
    assert first["client"].startswith("127.0.0.1:")
    assert "\n" not in lines.records[1].getMessage()
    assert second["path"] == "/predictions/mnist\\x0aforged"
    assert second["model"] == "-"
    assert second["request_id"] not in ("bad id\n", "abc-1")  # generated: <run>-<sequence>
    assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]{12}", second["request_id"])


def test_access_log_off_writes_nothing(metrics: ServerMetrics) -> None:
    log, lines = access("off")
    app = ObservedApp(api(), metrics, log)
    call(app, "POST", "/predictions/mnist")
    assert lines.records == [] and count(metrics, status="200") == 1


def test_metrics_app_serves_prometheus_and_openmetrics(metrics: ServerMetrics) -> None:
    app = metrics_app(metrics)
    metrics.observe_status(200)
    metrics.observe_status(404)
    plain = call(app, "GET", "/metrics")
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "Requests2XX{" in plain.text
    om = call(app, "GET", "/metrics", headers={"accept": "application/openmetrics-text"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")
    only = call(app, "GET", "/metrics", params={"name[]": ["Requests4XX"]})
    assert [line for line in only.text.splitlines() if not line.startswith("#")] == [
        f'Requests4XX{{Level="Host",Hostname="{HOST}",}} 1.0'
    ]
    assert call(app, "GET", "/other").status_code == 404


def test_gpu_families_are_refreshed_before_a_scrape(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '0, 37, 1024, 4096'\n")
    fake.chmod(0o755)
    metrics = ServerMetrics(ModelRegistry(), registry=CollectorRegistry(), hostname=HOST)
    assert metrics.system is not None
    metrics.system.nvidia_smi = str(fake)
    text = call(metrics_app(metrics), "GET", "/metrics").text
    assert f'GPUUtilization{{Level="Host",DeviceId="0",Hostname="{HOST}",}} 37.0' in text
    assert f'GPUMemoryUtilization{{Level="Host",DeviceId="0",Hostname="{HOST}",}} 25.0' in text
