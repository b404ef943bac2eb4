"""How a request ends: all-or-nothing admission, client disconnects and gRPC cancellations as
their own outcome, and what KServe's clients (SDK, v2 REST and gRPC) are told about models."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.e2e.conftest import ARCHIVER, run
from tests.e2e.server import RunningServer, snapshot, start_server, write_config

QUEUE = 10
DEADLINE_S = 30.0
HANDLER = '''
"""One JSON command per row (a dict, or JSON text/bytes): sleep, then echo."""
import json
import os
import time


def _command(value):
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def handle(data, context):
    if data is None:
        return None
    answers = []
    for row in data:
        command = _command(row.get("data", row.get("body")))
        if command.get("sleep"):
            time.sleep(float(command["sleep"]))
        answers.append({"echo": command.get("echo"), "pid": os.getpid()})
    return answers
'''
MODEL_CONFIG = """\
inputs:
  - name: command
    datatype: BYTES
    shape: [-1]
outputs:
  - name: answer
    datatype: BYTES
    shape: [-1]
"""
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("outcomes")
    (tmp / "echo_handler.py").write_text(HANDLER)
    (tmp / "model-config.yaml").write_text(MODEL_CONFIG)
    (tmp / "empty.bin").write_bytes(b"")
    store = tmp / "store"
    store.mkdir()
    run(
        ARCHIVER,
        *("--model-name", "echo", "--version", "1.0", "--serialized-file", tmp / "empty.bin"),
        *("--handler", tmp / "echo_handler.py", "--config-file", tmp / "model-config.yaml"),
        *("--export-path", store),
    )
    config = write_config(
        tmp / "config.properties",
        job_queue_size=QUEUE,
        model_snapshot=snapshot({"name": "echo", "marName": "echo.mar"}),
    )
    running = start_server(tmp, store, config)
    yield running
    assert running.stop() == 0, running.log()


def scrape(server: RunningServer) -> Samples:
    response = httpx.get(server.urls["metrics"] + "/metrics")
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == name and wanted <= got)


def wait_for(condition: Callable[[], bool], deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def cancelled(server: RunningServer, protocol: str) -> float:
    return value(scrape(server), "marserve_cancelled_requests_total", protocol=protocol)


def server_errors(server: RunningServer) -> float:
    samples = scrape(server)
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == "marserve_requests_total" and dict(labels)["status"].startswith("5")
    )


def batches(server: RunningServer) -> float:
    return value(scrape(server), "marserve_batch_size_count", model="echo")


def pending(server: RunningServer) -> int:
    described = httpx.get(f"{server.urls['management']}/models/echo").json()[0]
    return int(described["jobQueueStatus"]["pendingRequests"])


def settle(server: RunningServer) -> None:
    """Wait until nothing is queued or running (a quick request answers at once)."""
    wait_for(lambda: pending(server) == 0)
    assert server.client.post("/predictions/echo", json={"echo": "settle"}).status_code == 200


# admission ---------------------------------------------------------------------------------------
def test_a_v1_request_larger_than_the_queue_is_413_and_runs_nothing(server: RunningServer) -> None:
    settle(server)
    before = batches(server)
    instances = [{"data": {"echo": i}} for i in range(QUEUE + 1)]
    refused = server.client.post("/v1/models/echo:predict", json={"instances": instances})
    assert refused.status_code == 413, refused.text
    assert "jobQueueSize" in refused.json()["error"] and "Retry-After" not in refused.headers
    time.sleep(0.3)
    assert batches(server) == before  # none of its rows ran
    fits = server.client.post("/v1/models/echo:predict", json={"instances": instances[:QUEUE]})
    assert fits.status_code == 200
    assert [p["echo"] for p in fits.json()["predictions"]] == list(range(QUEUE))


def test_a_v2_bytes_tensor_larger_than_the_queue_is_413(server: RunningServer) -> None:
    body = {
        "inputs": [
            {
                "name": "command",
                "datatype": "BYTES",
                "shape": [QUEUE + 1],
                "data": [json.dumps({"echo": i}) for i in range(QUEUE + 1)],
            }
        ]
    }
    refused = server.client.post("/v2/models/echo/infer", json=body)
    assert refused.status_code == 413, refused.text
    assert "jobQueueSize" in refused.json()["error"]
    assert "never retrieved" not in server.log()


def test_a_request_that_could_fit_later_is_503_retry_after_and_queues_nothing(
    server: RunningServer,
) -> None:
    settle(server)
    # one row runs, one waits in the worker's socket, the rest hold places in the queue
    rows = [{"data": {"sleep": 0.5, "echo": i}} for i in range(QUEUE - 1)]
    with httpx.Client(base_url=server.url, timeout=60) as slow, ThreadPoolExecutor(1) as pool:
        busy = pool.submit(slow.post, "/v1/models/echo:predict", json={"instances": rows})
        wait_for(lambda: pending(server) > 0)
        more = [{"data": {"echo": i}} for i in range(QUEUE)]
        refused = server.client.post("/v1/models/echo:predict", json={"instances": more})
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert pending(server) <= QUEUE - 1  # none of its rows was queued
        assert busy.result(60).status_code == 200
    settle(server)


# client disconnects ------------------------------------------------------------------------------
def _raw(server: RunningServer, request: bytes) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(request)
    return sock


def _post(path: str, body: bytes, length: int | None = None) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    return head.encode() + body


def test_a_client_leaving_mid_body_is_a_cancellation_not_a_server_error(
    server: RunningServer,
) -> None:
    settle(server)
    errors, before = server_errors(server), cancelled(server, "torchserve")
    pids = server.worker_pids()
    _raw(server, _post("/predictions/echo", b'{"echo": ', length=1000)).close()
    wait_for(lambda: cancelled(server, "torchserve") == before + 1)
    assert server_errors(server) == errors
    assert server.worker_pids() == pids
    log = server.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log


def test_a_client_leaving_after_its_body_takes_its_rows_out_of_the_queue(
    server: RunningServer,
) -> None:
    settle(server)
    errors, before, count = server_errors(server), cancelled(server, "v1"), batches(server)
    pids = server.worker_pids()
    body = json.dumps({"instances": [{"data": {"sleep": 3.0}}] * 2}).encode()
    running = _raw(server, _post("/v1/models/echo:predict", body))  # on the worker
    wait_for(lambda: pending(server) == 0 and batches(server) == count + 2)
    queued = json.dumps({"instances": [{"data": {"echo": i}} for i in range(5)]}).encode()
    leaving = _raw(server, _post("/v1/models/echo:predict", queued))
    wait_for(lambda: pending(server) == 5)
    leaving.close()
    wait_for(lambda: pending(server) == 0)
    wait_for(lambda: cancelled(server, "v1") == before + 1)
    running.settimeout(30)
    assert running.recv(100).startswith(b"HTTP/1.1 200")
    running.close()
    settle(server)
    assert batches(server) == count + 3  # the two sleeping rows and settle(); none of the five
    assert server_errors(server) == errors
    assert server.worker_pids() == pids


def _v2_request(command: dict[str, Any]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="echo")
    tensor = request.inputs.add(name="command", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(json.dumps(command).encode())
    return request


def test_grpc_cancel_and_deadline_are_cancellations(server: RunningServer) -> None:
    settle(server)
    errors, before = server_errors(server), cancelled(server, "grpc")
    pids = server.worker_pids()
    with grpc.insecure_channel(server.grpc_target()) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ModelInfer.future(_v2_request({"sleep": 1.0}))
        time.sleep(0.3)
        call.cancel()
        with pytest.raises(grpc.RpcError) as late:
            stub.ModelInfer(_v2_request({"sleep": 1.0}), timeout=0.3)
        assert late.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: cancelled(server, "grpc") == before + 2)
    settle(server)
    assert server_errors(server) == errors
    assert server.worker_pids() == pids


# KServe's clients --------------------------------------------------------------------------------
# KServe's SDK and tritonclient both register protos named ``inference.*``: one process each.
SDK_SCRIPT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

def request():
    tensor = InferInput("command", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([json.dumps({"echo": 7})], dtype=np.object_))
    return InferRequest(model_name="echo", infer_inputs=[tensor])

def answer(response):
    output = response.outputs[0]
    return [output.datatype, json.loads(output.as_numpy()[0])["echo"]]

async def main(url, target):
    seen = {}
    v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
    seen["v1"] = [await v1.is_server_live(url), await v1.is_model_ready(url, "echo")]
    await v1.close()
    v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
    seen["v2"] = [
        await v2.is_server_live(url),
        await v2.is_server_ready(url),
        await v2.is_model_ready(url, "echo"),
        answer(await v2.infer(url, request(), model_name="echo")),
    ]
    await v2.close()
    remote = InferenceGRPCClient(target)
    seen["grpc"] = [
        await remote.is_server_live(),
        await remote.is_server_ready(),
        await remote.is_model_ready("echo"),
        answer(await remote.infer(request())),
    ]
    await remote.close()
    print(json.dumps(seen))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_kserve_sdk_clients_see_the_server_live_ready_and_answering(
    server: RunningServer,
) -> None:
    answer = subprocess.run(
        [sys.executable, "-c", SDK_SCRIPT, server.url, server.grpc_target()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    seen = json.loads(answer.stdout.strip().splitlines()[-1])
    assert seen == {
        "v1": [True, True],
        "v2": [True, True, True, ["BYTES", 7]],
        "grpc": [True, True, True, ["BYTES", 7]],
    }
    options = server.client.options("/")
    assert options.status_code == 200 and "openapi" in options.json()  # TorchServe's stays


def test_v2_models_lists_the_models(server: RunningServer) -> None:
    listing = server.client.get("/v2/models")
    assert listing.status_code == 200
    assert listing.json() == {"models": ["echo"]}


def test_declared_inputs_and_outputs_are_the_metadata_over_rest_and_grpc(
    server: RunningServer,
) -> None:
    inputs = [{"name": "command", "datatype": "BYTES", "shape": [-1]}]
    outputs = [{"name": "answer", "datatype": "BYTES", "shape": [-1]}]
    rest = thttp.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        metadata = rest.get_model_metadata("echo")
    finally:
        rest.close()
    assert metadata["inputs"] == inputs and metadata["outputs"] == outputs
    remote = tgrpc.InferenceServerClient(server.grpc_target())
    try:
        answer = remote.get_model_metadata("echo", as_json=True)
    finally:
        remote.close()
    as_strings = [{**spec, "shape": ["-1"]} for spec in inputs]
    assert answer["inputs"] == as_strings
    assert answer["outputs"] == [{**spec, "shape": ["-1"]} for spec in outputs]
