"""Real `marserve serve` replicas behind the gateway: the seeds' REST calls, gRPC by authority."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tc
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc

from marserve.controlplane.routing import Endpoint
from tests.e2e.conftest import EXAMPLE
from tests.e2e.gateway.harness import GatewayThread, service
from tests.e2e.server import RunningServer, snapshot, start_server, write_config

REQUESTS = EXAMPLE / "requests"
SDK_CALLS = Path(__file__).resolve().parent / "gateway" / "kserve_sdk_calls.py"
HOST = "torchserve.kserve-test.example.com"
GRPC_HOST = "torchserve-grpc.kserve-test.example.com"
REVISION = ("kserve-test", "torchserve-predictor-00001")


def png(digit: int) -> bytes:
    return (EXAMPLE / "test_data" / f"{digit}.png").read_bytes()


def endpoint(server: RunningServer) -> Endpoint:
    port = int(server.url.rsplit(":", 1)[1])
    grpc_port = int(server.grpc_target().rsplit(":", 1)[1])
    return Endpoint("127.0.0.1", port, grpc_port)


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, mnist_store: Path
) -> Iterator[list[RunningServer]]:
    started = []
    for i in range(2):
        tmp = tmp_path_factory.mktemp(f"gateway-replica-{i}")
        model = {"name": "mnist", "marName": "mnist.mar"}
        config = write_config(tmp / "config.properties", model_snapshot=snapshot(model))
        started.append(start_server(tmp, mnist_store / "model-store", config, wait=False))
    for server in started:
        server.wait_ready()
    yield started
    for server in started:
        assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def gw(replicas: list[RunningServer]) -> Iterator[GatewayThread]:
    thread = GatewayThread()
    endpoints = [endpoint(r) for r in replicas]
    thread.update(
        [
            service("torchserve", [(REVISION[1], 100, endpoints, None)], namespace="kserve-test"),
            service(
                "torchserve-grpc",
                [("torchserve-grpc-predictor-00001", 100, endpoints, None)],
                namespace="kserve-test",
                protocol="grpc",
            ),
        ]
    )
    yield thread
    thread.close()


def curl(gw: GatewayThread, path: str, *args: str) -> bytes:
    command = ["curl", "-s", "-H", f"Host: {HOST}", f"{gw.url}{path}", *args]
    return subprocess.run(command, check=True, capture_output=True, timeout=60).stdout


def test_seeds_v1_predict_with_curl(gw: GatewayThread) -> None:
    out = curl(gw, "/v1/models/mnist:predict", "-d", f"@{REQUESTS / 'v1' / 'mnist.json'}")
    assert json.loads(out) == {"predictions": [2]}


def test_seeds_v1_explain_with_curl(gw: GatewayThread) -> None:
    out = curl(gw, "/v1/models/mnist:explain", "-d", f"@{REQUESTS / 'v1' / 'mnist.json'}")
    [explanation] = json.loads(out)["explanations"]
    assert np.asarray(explanation).shape == (1, 28, 28)


def test_v1_predict_over_h2c_with_curl(gw: GatewayThread) -> None:
    sample = f"@{REQUESTS / 'v1' / 'mnist.json'}"
    out = curl(gw, "/v1/models/mnist:predict", "--http2-prior-knowledge", "-d", sample)
    assert json.loads(out) == {"predictions": [2]}


def test_torchserve_predictions_png_with_curl(gw: GatewayThread) -> None:
    out = curl(gw, "/predictions/mnist", "-T", str(EXAMPLE / "test_data" / "0.png"))
    assert json.loads(out) == 0


@pytest.mark.parametrize("sample", ["mnist_v2_tensor.json", "mnist_v2_bytes.json"])
def test_v2_infer_with_httpx(gw: GatewayThread, sample: str) -> None:
    body = (REQUESTS / "v2" / sample).read_bytes()
    response = httpx.post(
        f"{gw.url}/v2/models/mnist/infer", content=body, headers={"Host": HOST}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [0]


def served(server: RunningServer) -> float:
    """The replica's own count of inference requests (TorchServe's counter on its metrics port)."""
    text = httpx.get(f"{server.urls['metrics']}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ts_inference_requests_total"
    )


def test_requests_spread_over_both_replicas(
    gw: GatewayThread, replicas: list[RunningServer]
) -> None:
    before = [served(r) for r in replicas]
    with httpx.Client(base_url=gw.url, headers={"Host": HOST}, timeout=60) as client:
        digits = [client.post("/predictions/mnist", content=png(d % 10)).json() for d in range(20)]
    assert digits == [d % 10 for d in range(20)]
    moved = [served(r) - b for r, b in zip(replicas, before, strict=True)]
    assert sum(moved) == 20 and min(moved) >= 1, moved  # idle ties are broken at random


@pytest.fixture(scope="module")
def triton(gw: GatewayThread) -> Iterator[tc.InferenceServerClient]:
    client = tc.InferenceServerClient(
        gw.address, channel_args=[("grpc.default_authority", GRPC_HOST)]
    )
    yield client
    client.close()


def test_grpc_v2_through_the_gateway_by_authority(triton: tc.InferenceServerClient) -> None:
    assert triton.is_server_live() and triton.is_model_ready("mnist")
    document = json.loads((REQUESTS / "v2" / "mnist_v2_tensor.json").read_text())
    tensor = tc.InferInput("input-0", [1, 28, 28], "FP32")
    tensor.set_data_from_numpy(
        np.asarray(document["inputs"][0]["data"], dtype=np.float32).reshape(1, 28, 28)
    )
    result = triton.infer("mnist", [tensor], request_id="via-gateway")
    assert result.as_numpy("predict").tolist() == [0]
    assert result.get_response().id == "via-gateway"


def test_grpc_seed_sample_and_a_png_batch(gw: GatewayThread) -> None:
    import grpc

    options = [("grpc.default_authority", GRPC_HOST)]
    with grpc.insecure_channel(gw.address, options=options) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = json_format.Parse(
            (REQUESTS / "v2" / "mnist_v2_bytes_grpc.json").read_text(),
            service_pb2.ModelInferRequest(),
        )
        (output,) = stub.ModelInfer(request, timeout=60).outputs
        assert list(output.contents.int64_contents) == [0]


def test_grpc_unknown_authority_is_unimplemented_with_a_message(gw: GatewayThread) -> None:
    client = tc.InferenceServerClient(
        gw.address, channel_args=[("grpc.default_authority", "nope.default.example.com")]
    )
    try:
        with pytest.raises(tc.InferenceServerException) as caught:
            client.is_server_live()
    finally:
        client.close()
    assert "StatusCode.UNIMPLEMENTED" in str(caught.value.status())
    assert "nope.default.example.com" in str(caught.value.message())


def test_grpc_message_larger_than_the_flow_control_windows(
    triton: tc.InferenceServerClient,
) -> None:
    document = json.loads((REQUESTS / "v2" / "mnist_v2_tensor.json").read_text())
    image = np.asarray(document["inputs"][0]["data"], dtype=np.float32).reshape(1, 28, 28)
    batch = np.repeat(image, 1500, axis=0)  # 4.7 MB: more than one 4 MiB window, in both hops
    tensor = tc.InferInput("input-0", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    with pytest.raises(tc.InferenceServerException) as caught:
        triton.infer("mnist", [tensor], client_timeout=120)
    # the replica parsed the whole message (the model takes one image per row), and its
    # trailers-only error came back through the gateway intact
    assert str(caught.value.status()) == "StatusCode.INVALID_ARGUMENT"
    assert "got [1500, 28, 28]" in str(caught.value.message())


def test_grpc_many_concurrent_calls_multiplex(triton: tc.InferenceServerClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(digit: int) -> int:
        tensor = tc.InferInput("input-0", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([png(digit)], dtype=np.object_))
        return int(triton.infer("mnist", [tensor]).as_numpy("predict")[0])

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, [d % 10 for d in range(40)])) == [d % 10 for d in range(40)]


def test_kserve_sdk_clients_through_one_address(gw: GatewayThread) -> None:
    """KServe's own REST (v1 and v2) and gRPC clients through one address, each by its host.

    In a child process: kserve's v2 protos clash with tritonclient's (both are ``inference.*``)
    in one descriptor pool.
    """
    done = subprocess.run(
        [sys.executable, str(SDK_CALLS), gw.url, gw.address, HOST, GRPC_HOST, str(REQUESTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["v1-rest", "v2-rest", "v2-grpc"]
