"""gRPC inference against a real ``marserve serve`` of the MNIST example, with real clients:
tritonclient.grpc (KServe v2) and TorchServe-style stubs generated from inference.proto."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from google.protobuf import empty_pb2, json_format
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from marserve.grpc.protos import (
    inference_pb2,
    inference_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
)
from tests.e2e.conftest import EXAMPLE
from tests.e2e.server import RunningServer

REQUESTS = EXAMPLE / "requests" / "v2"
TENSOR_ID = "d3b15cad-50a2-4eaf-80ce-8b0a428bd298"


def png(digit: int) -> bytes:
    return (EXAMPLE / "test_data" / f"{digit}.png").read_bytes()


def sample(name: str) -> service_pb2.ModelInferRequest:
    return json_format.Parse((REQUESTS / name).read_text(), service_pb2.ModelInferRequest())


def seed_tensor() -> np.ndarray:
    document = json.loads((REQUESTS / "mnist_v2_tensor.json").read_text())
    return np.asarray(document["inputs"][0]["data"], dtype=np.float32).reshape(1, 28, 28)


@pytest.fixture(scope="module")
def triton(mnist_server: RunningServer) -> Iterator[tc.InferenceServerClient]:
    client = tc.InferenceServerClient(mnist_server.grpc_target())
    yield client
    client.close()


@pytest.fixture(scope="module")
def channel(mnist_server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(mnist_server.grpc_target()) as opened:
        yield opened


@pytest.fixture(scope="module")
def v2_stub(channel: grpc.Channel) -> service_pb2_grpc.GRPCInferenceServiceStub:
    return service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def ts_stub(channel: grpc.Channel) -> inference_pb2_grpc.InferenceAPIsServiceStub:
    return inference_pb2_grpc.InferenceAPIsServiceStub(channel)


def status(error: InferenceServerException) -> str:
    return str(error.status())


# KServe v2: health and metadata ------------------------------------------------------------------
def test_health(triton: tc.InferenceServerClient) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("mnist")
    assert triton.is_model_ready("mnist", "1.0")


@pytest.mark.parametrize(("name", "version"), [("nope", ""), ("mnist", "9.9")])
def test_readiness_of_an_unknown_model_is_not_found(
    triton: tc.InferenceServerClient, name: str, version: str
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        triton.is_model_ready(name, version)
    assert status(caught.value) == "StatusCode.NOT_FOUND"


def test_server_and_model_metadata(triton: tc.InferenceServerClient) -> None:
    server = triton.get_server_metadata(as_json=True)
    assert server["name"] == "marserve"
    assert "binary_tensor_data" in server["extensions"]
    model = triton.get_model_metadata("mnist", as_json=True)
    assert model["name"] == "mnist" and model["versions"] == ["1.0"]
    assert model["platform"] == "pytorch"
    assert model["inputs"] == [{"name": "input-0", "datatype": "BYTES", "shape": ["-1"]}]


# KServe v2: inference ----------------------------------------------------------------------------
def test_seeds_tensor_sample_is_a_zero(v2_stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    response = v2_stub.ModelInfer(sample("mnist_v2_tensor_grpc.json"))
    assert (response.model_name, response.model_version, response.id) == ("mnist", "1.0", TENSOR_ID)
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("predict", "INT64", [1])
    assert list(output.contents.int64_contents) == [0]
    assert not response.raw_output_contents


def test_seeds_bytes_sample_is_a_zero(v2_stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    response = v2_stub.ModelInfer(sample("mnist_v2_bytes_grpc.json"))
    (output,) = response.outputs
    assert list(output.contents.int64_contents) == [0]
    assert response.id  # the sample sends none: the server makes one


def test_raw_tensor_with_tritonclient(triton: tc.InferenceServerClient) -> None:
    tensor = tc.InferInput("input-0", [1, 28, 28], "FP32")
    tensor.set_data_from_numpy(seed_tensor())
    result = triton.infer("mnist", [tensor], request_id="raw-1")
    assert result.as_numpy("predict").tolist() == [0]
    response = result.get_response()
    assert response.id == "raw-1" and len(response.raw_output_contents) == 1


def test_a_batch_of_png_bytes_answers_each_digit(triton: tc.InferenceServerClient) -> None:
    digits = [3, 1, 4, 1, 5, 9, 2, 6]
    tensor = tc.InferInput("input-0", [len(digits)], "BYTES")
    tensor.set_data_from_numpy(np.array([png(d) for d in digits], dtype=np.object_))
    requested = [tc.InferRequestedOutput("predict")]
    result = triton.infer("mnist", [tensor], model_version="1.0", outputs=requested)
    assert result.as_numpy("predict").tolist() == digits


@pytest.mark.parametrize(
    ("model", "version", "datatype", "shape", "code"),
    [
        ("nope", "", "FP32", [1, 28, 28], "NOT_FOUND"),
        ("mnist", "2.0", "FP32", [1, 28, 28], "NOT_FOUND"),
        ("mnist", "", "FP32", [1, 28, 27], "INVALID_ARGUMENT"),
        ("mnist", "", "FLOAT32", [1, 28, 28], "INVALID_ARGUMENT"),
    ],
)
def test_inference_errors(
    triton: tc.InferenceServerClient,
    model: str,
    version: str,
    datatype: str,
    shape: list[int],
    code: str,
) -> None:
    tensor = tc.InferInput("input-0", shape, datatype)
    tensor._raw_content = seed_tensor().tobytes()  # as sent, whatever the declared shape
    tensor._input.ClearField("contents")
    with pytest.raises(InferenceServerException) as caught:
        triton.infer(model, [tensor], model_version=version)
    assert status(caught.value) == f"StatusCode.{code}"
    if datatype == "FLOAT32":
        assert caught.value.message() == "input 'input-0': invalid datatype 'FLOAT32'"


def test_asking_for_an_output_the_model_lacks_is_invalid(triton: tc.InferenceServerClient) -> None:
    tensor = tc.InferInput("input-0", [1, 28, 28], "FP32")
    tensor.set_data_from_numpy(seed_tensor())
    with pytest.raises(InferenceServerException) as caught:
        triton.infer("mnist", [tensor], outputs=[tc.InferRequestedOutput("probabilities")])
    assert status(caught.value) == "StatusCode.INVALID_ARGUMENT"
    assert "probabilities" in caught.value.message()


def test_methods_outside_kserves_protocol_are_unimplemented(
    v2_stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        v2_stub.ModelConfig(service_pb2.ModelConfigRequest(name="mnist"))
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED


# message size ------------------------------------------------------------------------------------
def test_default_message_limit_is_above_grpcs_4_mb(triton: tc.InferenceServerClient) -> None:
    """max_request_size defaults to TorchServe's 6553500 bytes: 5 MB passes gRPC, 7 MB does not."""
    for size, refused in ((5_000_000, False), (7_000_000, True)):
        tensor = tc.InferInput("input-0", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"\x00" * size], dtype=np.object_))
        with pytest.raises(InferenceServerException) as caught:
            triton.infer("mnist", [tensor])  # not an image: the handler refuses it
        code = status(caught.value)
        assert (code == "StatusCode.RESOURCE_EXHAUSTED") is refused, (size, code)


# TorchServe's inference API ----------------------------------------------------------------------
def test_ping(ts_stub: inference_pb2_grpc.InferenceAPIsServiceStub) -> None:
    response = ts_stub.Ping(empty_pb2.Empty())
    assert json.loads(response.health) == {"status": "Healthy"}


@pytest.mark.parametrize("digit", [0, 3, 7])
def test_predictions_answer_as_rest_does(
    mnist_server: RunningServer, ts_stub: inference_pb2_grpc.InferenceAPIsServiceStub, digit: int
) -> None:
    request = inference_pb2.PredictionsRequest(model_name="mnist", input={"data": png(digit)})
    response = ts_stub.Predictions(request)
    rest = mnist_server.client.post("/predictions/mnist", content=png(digit))
    assert response.prediction == rest.content
    assert json.loads(response.prediction) == digit


def test_predictions_with_a_version_and_a_stream(
    ts_stub: inference_pb2_grpc.InferenceAPIsServiceStub,
) -> None:
    request = inference_pb2.PredictionsRequest(
        model_name="mnist", model_version="1.0", input={"data": png(4)}
    )
    assert json.loads(ts_stub.Predictions(request).prediction) == 4
    streamed = list(ts_stub.StreamPredictions(request))
    assert [json.loads(r.prediction) for r in streamed] == [4]


@pytest.mark.parametrize(
    ("model", "version", "code"),
    [
        ("nope", "", grpc.StatusCode.NOT_FOUND),
        ("mnist", "9.9", grpc.StatusCode.NOT_FOUND),
        ("", "", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_prediction_errors(
    ts_stub: inference_pb2_grpc.InferenceAPIsServiceStub,
    model: str,
    version: str,
    code: grpc.StatusCode,
) -> None:
    request = inference_pb2.PredictionsRequest(
        model_name=model, model_version=version, input={"data": png(1)}
    )
    with pytest.raises(grpc.RpcError) as caught:
        ts_stub.Predictions(request)
    assert caught.value.code() is code
    with pytest.raises(grpc.RpcError) as streamed:
        list(ts_stub.StreamPredictions(request))
    assert streamed.value.code() is code


def test_sequence_streaming_is_unimplemented(
    ts_stub: inference_pb2_grpc.InferenceAPIsServiceStub,
) -> None:
    requests = iter([inference_pb2.PredictionsRequest(model_name="mnist", sequenceId="s1")])
    with pytest.raises(grpc.RpcError) as caught:
        list(ts_stub.StreamPredictions2(requests))
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_registration_is_off_unless_the_model_api_is_enabled(mnist_server: RunningServer) -> None:
    """TorchServe's default: reading works, changing what is loaded is refused (405 ->
    UNIMPLEMENTED in the status table)."""
    with grpc.insecure_channel(mnist_server.grpc_target("management")) as opened:
        stub = management_pb2_grpc.ManagementAPIsServiceStub(opened)
        listing = json.loads(stub.ListModels(management_pb2.ListModelsRequest()).msg)
        assert [m["modelName"] for m in listing["models"]] == ["mnist"]
        for call, request in (
            (stub.RegisterModel, management_pb2.RegisterModelRequest(url="mnist.mar")),
            (stub.UnregisterModel, management_pb2.UnregisterModelRequest(model_name="mnist")),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call(request)
            assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
            assert "enable_model_api" in caught.value.details()


def grpc_requests(server: RunningServer, model: str, status: str) -> float:
    text = server.client.get(server.urls["metrics"] + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            wanted = {"protocol": "grpc", "model": model, "status": status}
            if sample.name == "marserve_requests_total" and wanted.items() <= sample.labels.items():
                return sample.value
    return 0.0


def test_grpc_requests_are_counted_in_metrics(
    mnist_server: RunningServer, triton: tc.InferenceServerClient
) -> None:
    ok, missing = (
        grpc_requests(mnist_server, "mnist", "200"),
        grpc_requests(mnist_server, "", "404"),
    )
    tensor = tc.InferInput("input-0", [1, 28, 28], "FP32")
    tensor.set_data_from_numpy(seed_tensor())
    triton.infer("mnist", [tensor])
    with pytest.raises(InferenceServerException):
        triton.infer("nope", [tensor])
    assert grpc_requests(mnist_server, "mnist", "200") == ok + 1
    assert grpc_requests(mnist_server, "", "404") == missing + 1
