"""Metrics, access logs and the dashboard's metric names against a real server."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ARCHIVER, run
from tests.e2e.server import RunningServer, snapshot, start_server, write_config
from tests.unit.metrics_fixtures import dashboard_metric_names

PROBE = Path(__file__).resolve().parent / "metrics_probe"
MODEL = "mprobe"
ACCESS = "marserve.access"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


@pytest.fixture(scope="module")
def metrics_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mprobe.mar`` from torch-model-archiver, shipping the handler's metrics.yaml."""
    store = tmp_path_factory.mktemp("metrics-store")
    weights = store / "empty.bin"
    weights.write_bytes(b"")
    run(
        ARCHIVER,
        "--model-name",
        MODEL,
        "--version",
        "1.0",
        "--serialized-file",
        weights,
        "--handler",
        PROBE / "metrics_handler.py",
        "--extra-files",
        PROBE / "metrics.yaml",
        "--export-path",
        store,
    )
    weights.unlink()
    return store


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, metrics_store: Path
) -> Iterator[RunningServer]:
    """One worker, batches of one and a queue of two; JSON logs, default access-log policy."""
    tmp = tmp_path_factory.mktemp("metrics-server")
    config = write_config(
        tmp / "config.properties",
        job_queue_size=2,
        model_snapshot=snapshot({"name": MODEL, "marName": f"{MODEL}.mar"}),
    )
    running = start_server(tmp, metrics_store, config, "--log-format", "json")
    yield running
    assert running.stop() == 0, running.log()


def scrape(server: RunningServer, **params: Any) -> Samples:
    response = httpx.get(server.urls["metrics"] + "/metrics", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text_string_to_metric_families(response.text)  # the whole body parses
    samples: Samples = {}
    for line in response.text.splitlines():  # names as written: TorchServe's have no _total
        found = _SAMPLE.match(line)
        if found is not None:
            labels = frozenset(_LABEL.findall(found.group(2) or ""))
            samples[(found.group(1), labels)] = float(found.group(3))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == name and wanted <= got)


def post(server: RunningServer, path: str, body: object, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return server.client.post(path, content=content, headers=headers, **kwargs)


def wait_for(condition: Callable[[], bool], deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def v2_body(text: str) -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [text]}]}


# (protocol, path, body, expected model label) for the requests the counting test sends.
KNOWN_REQUESTS: list[tuple[str, str, object, str]] = [
    ("torchserve", f"/predictions/{MODEL}", {"echo": 1}, MODEL),
    ("torchserve", f"/predictions/{MODEL}", {"echo": 2}, MODEL),
    ("torchserve", f"/predictions/{MODEL}/1.0", {"echo": 3}, MODEL),
    ("torchserve", f"/predictions/{MODEL}", {"reject": 400}, MODEL),
    ("torchserve", "/predictions/no-such-model", {"echo": 4}, ""),
    ("torchserve", f"/predictions/{MODEL}/9.9", {"echo": 5}, ""),
    ("v1", f"/v1/models/{MODEL}:predict", {"instances": [{"echo": 6}, {"echo": 7}]}, MODEL),
    ("v1", "/v1/models/no-such-model:predict", {"instances": [1]}, ""),
    ("v2", f"/v2/models/{MODEL}/infer", v2_body('{"echo": 8}'), MODEL),
    ("v2", f"/v2/models/{MODEL}/infer", b"{not json", MODEL),
    ("v2", "/v2/models/no-such-model/infer", v2_body("x"), ""),
]


def test_counters_and_histograms_move_by_exactly_the_requests_sent(server: RunningServer) -> None:
    before = scrape(server)
    answers = [
        (proto, model, post(server, path, body)) for proto, path, body, model in KNOWN_REQUESTS
    ]
    after = scrape(server)
    statuses = [r.status_code for _, _, r in answers]
    assert sorted(set(statuses)) == [200, 400, 404], statuses
    expected: dict[tuple[str, str, str], int] = {}
    for proto, model, response in answers:
        key = (proto, model, str(response.status_code))
        expected[key] = expected.get(key, 0) + 1
    for (proto, model, status), count in expected.items():
        labels = {"protocol": proto, "model": model, "status": status, "verb": "predict"}
        for name in ("marserve_requests_total", "marserve_request_duration_seconds_count"):
            moved = value(after, name, **labels) - value(before, name, **labels)
            assert moved == count, (name, labels)
        assert (
            value(after, "marserve_request_duration_seconds_bucket", le="+Inf", **labels)
            - value(before, "marserve_request_duration_seconds_bucket", le="+Inf", **labels)
            == count
        )
    total = value(after, "marserve_requests_total") - value(before, "marserve_requests_total")
    assert total == len(KNOWN_REQUESTS)
    ok_for_model = sum(1 for _, m, r in answers if m == MODEL and r.status_code == 200)
    ts_moved = value(after, "ts_inference_requests_total", model_name=MODEL) - value(
        before, "ts_inference_requests_total", model_name=MODEL
    )
    assert ts_moved == ok_for_model
    for status_class in (2, 4, 5):
        name = f"Requests{status_class}XX"
        sent = sum(1 for s in statuses if s // 100 == status_class)
        assert value(after, name) - value(before, name) == sent
    # only registered models ever appear as a model label
    models = {dict(labels).get("model") for (_, labels) in after if dict(labels).get("model")}
    assert models == {MODEL}
    assert not any("no-such-model" in str(labels) for (_, labels) in after)


def test_a_full_queue_answers_503_and_is_counted_as_rejected(server: RunningServer) -> None:
    before = scrape(server)
    with ThreadPoolExecutor(6) as pool:
        slow = pool.submit(post, server, f"/predictions/{MODEL}", {"sleep": 1.5})
        wait_for(lambda: value(scrape(server), "marserve_workers", state="busy") == 1)
        quick = list(
            pool.map(lambda i: post(server, f"/predictions/{MODEL}", {"echo": i}), range(5))
        )
        statuses = [r.status_code for r in quick] + [slow.result().status_code]
    after = scrape(server)
    assert statuses.count(503) >= 2, statuses
    assert all(r.headers.get("retry-after") == "1" for r in quick if r.status_code == 503)
    for status in (200, 503):
        labels = {"model": MODEL, "protocol": "torchserve", "status": str(status)}
        moved = value(after, "marserve_requests_total", **labels) - value(
            before, "marserve_requests_total", **labels
        )
        assert moved == statuses.count(status)
    rejected = value(after, "marserve_rejected_requests_total", model=MODEL, reason="queue_full")
    assert rejected - value(
        before, "marserve_rejected_requests_total", model=MODEL, reason="queue_full"
    ) == statuses.count(503)
    waits = value(after, "marserve_queue_wait_seconds_count", model=MODEL) - value(
        before, "marserve_queue_wait_seconds_count", model=MODEL
    )
    assert waits == statuses.count(200)  # every request that ran left the queue once


def test_handler_metrics_and_worker_timings_appear(server: RunningServer) -> None:
    before = scrape(server)
    for color in ("red", "red", "blue"):
        assert post(server, f"/predictions/{MODEL}", {"color": color}).status_code == 200
    after = scrape(server)
    host = {"ModelName": MODEL, "Level": "Model"}
    red = value(after, "ProbeRows", Color="red", **host) - value(before, "ProbeRows", Color="red")
    assert red == 2
    assert (
        value(after, "ProbeRows", Color="blue", **host) - value(before, "ProbeRows", Color="blue")
        == 1
    )
    assert value(after, "ProbeInitialized", Level="Error") == 1  # recorded once, at load
    assert value(after, "ProbeFullness", **host) == 25.0  # a gauge: the latest batch (1 of 4)
    assert value(after, "ProbeBatchBytes", **host) > 0
    sizes = value(after, "ProbeBatchSize_count", ModelName=MODEL) - value(
        before, "ProbeBatchSize_count", ModelName=MODEL
    )
    assert sizes == 3  # the declared histogram from metrics.yaml, observed once per batch
    assert value(after, "PredictionTime", **host) > 0
    for phase in ("preprocess", "predict", "postprocess"):
        name = f"request_{phase}_seconds_count"
        assert value(after, name, model_name=MODEL) - value(before, name, model_name=MODEL) == 3
    assert all("Hostname" in dict(labels) for (n, labels) in after if n == "ProbeRows")
    load = [v for (n, labels), v in after.items() if n == "WorkerLoadTime"]
    assert len(load) == 1 and load[0] > 0


def test_a_restarted_worker_is_counted(server: RunningServer) -> None:
    restarts = value(scrape(server), "marserve_worker_restarts_total", model=MODEL)
    assert post(server, f"/predictions/{MODEL}", {"exit": True}).status_code == 500
    wait_for(
        lambda: value(scrape(server), "marserve_worker_restarts_total", model=MODEL) == restarts + 1
    )
    wait_for(lambda: value(scrape(server), "marserve_workers", model=MODEL, state="ready") == 1)
    samples = scrape(server)
    assert value(samples, "marserve_model_ready", model=MODEL) == 1
    assert value(samples, "marserve_workers", model=MODEL, state="dead") == 0


def test_openmetrics_and_name_filters(server: RunningServer) -> None:
    url = server.urls["metrics"] + "/metrics"
    response = httpx.get(url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    names = {family.name for family in openmetrics_families(response.text)}
    assert {"marserve_requests", "ts_inference_latency_microseconds", "Requests2XX"} <= names
    only = scrape(server, **{"name[]": ["ts_inference_requests_total", "QueueTime"]})
    assert {name for name, _ in only} == {"ts_inference_requests_total", "QueueTime"}


def test_every_metric_the_dashboard_queries_is_scraped(server: RunningServer) -> None:
    post(server, f"/explanations/{MODEL}", {"echo": 1})  # any answer: explain series exist
    post(server, "/predictions/no-such-model", {})
    scraped = {name for name, _ in scrape(server)}
    gpu = {"GPUUtilization", "GPUMemoryUtilization", "GPUMemoryUsed"}  # none on this machine
    # The "Local KServe" row reads the controller's gateway, not a model server
    # (tests/unit/test_metrics_dashboard.py checks those names against what it exports).
    controller = ("marserve_gateway_", "marserve_autoscaler_")
    served = {name for name in dashboard_metric_names() if not name.startswith(controller)}
    assert served - gpu <= scraped


def access_lines(server: RunningServer) -> list[dict[str, Any]]:
    lines = []
    for line in server.log().splitlines():
        if line.startswith("{") and '"marserve.access"' in line:
            lines.append(json.loads(line))
    return lines


def test_access_log_lines_are_json_and_quiet_under_load(server: RunningServer) -> None:
    time.sleep(1.1)  # let the default policy's budget (10 lines a second) refill
    response = post(server, f"/predictions/{MODEL}", {}, headers={"X-Request-Id": "req-42"})
    assert response.status_code == 200
    line = next(entry for entry in access_lines(server) if entry.get("request_id") == "req-42")
    assert line["model"] == MODEL and line["version"] == "1.0" and line["status"] == 200
    assert line["method"] == "POST" and line["path"] == f"/predictions/{MODEL}"
    assert line["protocol"] == "torchserve" and float(line["latency_ms"]) > 0
    written_before = len(access_lines(server))
    start = time.monotonic()
    for _ in range(100):
        post(server, "/predictions/no-such-model", {})
    elapsed = time.monotonic() - start
    written = len(access_lines(server)) - written_before
    assert written <= 10 + 10 * elapsed + 1, (written, elapsed)
    time.sleep(1.1)
    post(server, "/predictions/no-such-model%0Aforged%20line", {})  # decoded: a newline
    since = access_lines(server)[written_before:]
    assert len(since) == written + 1
    # every request of the burst either has a line or is counted in a later line's suppressed=
    skipped = sum(int(entry.get("suppressed", 0)) for entry in since)
    assert skipped == 100 - written
    assert "\n" not in str(since[-1]["path"]) and "\\x0a" in str(since[-1]["path"])


def test_worker_logs_are_json_too(server: RunningServer) -> None:
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    ready = [line for line in lines if line.get("message") == "probe handler ready"]
    assert ready and ready[0]["logger"] == "mprobe" and ready[0]["level"] == "WARNING"
    assert ready[0]["pid"] != server.pid  # written by the worker process
    assert all(line["pid"] == server.pid for line in lines if line["logger"] == ACCESS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_metrics_share_the_inference_address_when_configured(
    tmp_path: Path, metrics_store: Path
) -> None:
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    config = write_config(tmp_path / "config.properties", inference_address=address)
    config.write_text(
        config.read_text().replace(
            "metrics_address=http://127.0.0.1:0", f"metrics_address={address}"
        )
    )
    running = start_server(tmp_path, metrics_store, config)
    try:
        assert running.urls["metrics"] == running.urls["inference"]
        response = running.client.get("/metrics")
        assert response.status_code == 200 and "Requests2XX" in response.text
        assert running.client.get("/ping").status_code == 200
        counted = value(scrape(running), "Requests2XX")
        assert counted >= 1  # /ping counted, the scrapes themselves are not
        assert value(scrape(running), "Requests2XX") == counted
    finally:
        assert running.stop() == 0, running.log()


def test_no_metrics_listener_when_the_metrics_api_is_disabled(
    tmp_path: Path, metrics_store: Path
) -> None:
    config = write_config(tmp_path / "config.properties", enable_metrics_api="false")
    running = start_server(tmp_path, metrics_store, config)
    try:
        assert "metrics" not in running.urls
        assert running.client.get("/metrics").status_code == 404
    finally:
        assert running.stop() == 0, running.log()
