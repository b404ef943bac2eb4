"""The seeds' requests, byte for byte, against a real ``marserve serve`` of the MNIST example."""

from __future__ import annotations

import base64
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as triton

from tests.e2e.conftest import EXAMPLE
from tests.e2e.server import RunningServer

REQUESTS = EXAMPLE / "requests"
V1_SAMPLE = REQUESTS / "v1" / "mnist.json"
V2_TENSOR = REQUESTS / "v2" / "mnist_v2_tensor.json"
V2_BYTES = REQUESTS / "v2" / "mnist_v2_bytes.json"
DIGITS = range(10)


def png(digit: int) -> bytes:
    return (EXAMPLE / "test_data" / f"{digit}.png").read_bytes()


def test_v1_predict_with_the_seeds_curl(mnist_server: RunningServer) -> None:
    output = subprocess.run(
        [
            "curl",
            "-s",
            "-H",
            "Host: torchserve.kserve-test.example.com",
            f"{mnist_server.url}/v1/models/mnist:predict",
            "-d",
            f"@{V1_SAMPLE}",
        ],
        check=True,
        capture_output=True,
    ).stdout
    assert json.loads(output) == {"predictions": [2]}


def test_v1_static_batch_answers_each_instance_in_order(mnist_server: RunningServer) -> None:
    instances = [{"data": base64.b64encode(png(d)).decode()} for d in (3, 1, 4, 1, 5, 9)]
    response = mnist_server.client.post("/v1/models/mnist:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [3, 1, 4, 1, 5, 9]}


def test_v1_accepts_inputs_as_well_as_instances(mnist_server: RunningServer) -> None:
    body = {"inputs": [{"data": base64.b64encode(png(7)).decode()}]}
    response = mnist_server.client.post("/v1/models/mnist:predict", json=body)
    assert response.json() == {"predictions": [7]}


def test_v1_model_status_and_list(mnist_server: RunningServer) -> None:
    assert mnist_server.client.get("/v1/models").json() == {"models": ["mnist"]}
    assert mnist_server.client.get("/v1/models/mnist").json() == {"name": "mnist", "ready": True}


def test_v2_tensor_sample_is_a_zero(mnist_server: RunningServer) -> None:
    response = mnist_server.client.post("/v2/models/mnist/infer", content=V2_TENSOR.read_bytes())
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": "d3b15cad-50a2-4eaf-80ce-8b0a428bd298",
        "model_name": "mnist",
        "model_version": "1.0",
        "outputs": [{"name": "predict", "shape": [1], "datatype": "INT64", "data": [0]}],
    }


def test_v2_bytes_sample_is_a_zero(mnist_server: RunningServer) -> None:
    response = mnist_server.client.post("/v2/models/mnist/infer", content=V2_BYTES.read_bytes())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["outputs"] == [{"name": "predict", "shape": [1], "datatype": "INT64", "data": [0]}]
    assert body["id"] == json.loads(V2_BYTES.read_bytes())["id"]


def test_v2_generates_an_id_when_none_is_given(mnist_server: RunningServer) -> None:
    request = json.loads(V2_TENSOR.read_bytes())
    del request["id"]
    first = mnist_server.client.post("/v2/models/mnist/infer", json=request).json()
    second = mnist_server.client.post("/v2/models/mnist/infer", json=request).json()
    assert first["id"] and second["id"] and first["id"] != second["id"]


def test_v2_versioned_path(mnist_server: RunningServer) -> None:
    response = mnist_server.client.post(
        "/v2/models/mnist/versions/1.0/infer", content=V2_TENSOR.read_bytes()
    )
    assert response.json()["outputs"][0]["data"] == [0]


@pytest.mark.parametrize("digit", DIGITS)
def test_predictions_with_each_png(mnist_server: RunningServer, digit: int) -> None:
    response = mnist_server.client.post("/predictions/mnist", content=png(digit))
    assert response.status_code == 200, response.text
    assert response.json() == digit


def test_predictions_with_curl_upload_and_multipart(mnist_server: RunningServer) -> None:
    image = EXAMPLE / "test_data" / "8.png"
    output = subprocess.run(
        ["curl", "-s", f"{mnist_server.url}/predictions/mnist", "-T", str(image)],
        check=True,
        capture_output=True,
    ).stdout
    assert json.loads(output) == 8
    response = mnist_server.client.post(
        "/predictions/mnist/1.0", files={"data": ("8.png", image.read_bytes(), "image/png")}
    )
    assert response.status_code == 200, response.text
    assert response.json() == 8


def test_ping_and_v2_health(mnist_server: RunningServer) -> None:
    assert mnist_server.client.get("/ping").json() == {"status": "Healthy"}
    assert mnist_server.client.get("/v2/health/live").json() == {"live": True}
    assert mnist_server.client.get("/v2/health/ready").json() == {"ready": True}
    ready = mnist_server.client.get("/v2/models/mnist/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    metadata = mnist_server.client.get("/v2/models/mnist").json()
    assert metadata["name"] == "mnist" and metadata["versions"] == ["1.0"]
    assert metadata["inputs"] and metadata["outputs"]
    assert mnist_server.client.get("/v2").json()["name"] == "marserve"


def test_options_describes_the_api(mnist_server: RunningServer) -> None:
    response = mnist_server.client.request("OPTIONS", "/")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert "/predictions/{model_name}" in document["paths"]
    assert "/v2/models/{model_name}/infer" in document["paths"]


def _triton(server: RunningServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_infer_json_and_binary(mnist_server: RunningServer, binary: bool) -> None:
    sample = json.loads(V2_TENSOR.read_bytes())["inputs"][0]
    tensor = np.asarray(sample["data"], dtype=np.float32)
    infer_input = triton.InferInput("input-0", [1, 28, 28], "FP32")
    infer_input.set_data_from_numpy(tensor, binary_data=binary)
    output = triton.InferRequestedOutput("predict", binary_data=binary)
    client = _triton(mnist_server)
    try:
        result = client.infer("mnist", [infer_input], outputs=[output], request_id="triton-1")
    finally:
        client.close()
    assert result.get_response()["id"] == "triton-1"
    assert result.as_numpy("predict").tolist() == [0]


def test_tritonclient_bytes_input(mnist_server: RunningServer) -> None:
    infer_input = triton.InferInput("input-0", [2], "BYTES")
    images = [png(4), png(6)]
    infer_input.set_data_from_numpy(np.array(images, dtype=object), binary_data=True)
    client = _triton(mnist_server)
    try:
        result = client.infer("mnist", [infer_input])
    finally:
        client.close()
    assert result.as_numpy("predict").tolist() == [4, 6]


def test_tritonclient_health_and_metadata(mnist_server: RunningServer) -> None:
    client = _triton(mnist_server)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("mnist")
        assert client.get_model_metadata("mnist")["name"] == "mnist"
        assert client.get_server_metadata()["name"] == "marserve"
    finally:
        client.close()


def test_concurrent_clients_all_get_their_own_answer(mnist_server: RunningServer) -> None:
    digits = [d for _ in range(4) for d in DIGITS]

    def predict(digit: int) -> int:
        return int(mnist_server.client.post("/predictions/mnist", content=png(digit)).json())

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(predict, digits)) == digits
