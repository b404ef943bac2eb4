"""TorchServe's gRPC management API and token authorization over gRPC, against a real server
(model API on, token auth on), with stubs generated from management.proto and inference.proto."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import tritonclient.grpc as tc
from google.protobuf import empty_pb2
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from marserve.grpc.protos import grpc_predict_v2_pb2 as v2_pb2
from marserve.grpc.protos import grpc_predict_v2_pb2_grpc as v2_pb2_grpc
from marserve.grpc.protos import (
    inference_pb2,
    inference_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
)
from tests.e2e.conftest import EXAMPLE
from tests.e2e.server import RunningServer, start_server, write_config

PNG = {digit: (EXAMPLE / "test_data" / f"{digit}.png").read_bytes() for digit in (2, 8)}
Metadata = tuple[tuple[str, str], ...]


class Stubs:
    def __init__(self, server: RunningServer, key_file: Path) -> None:
        self.server = server
        self.key_file = key_file
        self.channels = [
            grpc.insecure_channel(server.grpc_target()),
            grpc.insecure_channel(server.grpc_target("management")),
        ]
        inference, management = self.channels
        self.v2 = service_pb2_grpc.GRPCInferenceServiceStub(inference)
        self.kserve = v2_pb2_grpc.GRPCInferenceServiceStub(inference)
        self.ts = inference_pb2_grpc.InferenceAPIsServiceStub(inference)
        self.mgmt = management_pb2_grpc.ManagementAPIsServiceStub(management)

    def key(self, scope: str) -> Metadata:
        value = json.loads(self.key_file.read_text())[scope]["key"]
        return (("authorization", f"Bearer {value}"),)

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory, mnist_store: Path) -> Iterator[Stubs]:
    tmp = tmp_path_factory.mktemp("grpc-managed")
    config = write_config(tmp / "config.properties", enable_model_api="true")
    config.write_text(config.read_text().replace("disable_token_authorization=true\n", ""))
    key_file = tmp / "key_file.json"
    server = start_server(
        tmp, mnist_store / "model-store", config, "--key-file", str(key_file), wait=False
    )
    deadline = time.monotonic() + 60
    while not key_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    opened = Stubs(server, key_file)
    yield opened
    opened.close()
    assert server.stop() == 0, server.log()


@pytest.fixture()
def server_target(stubs: Stubs) -> str:
    return stubs.server.grpc_target()


def msg(response: management_pb2.ManagementResponse) -> Any:
    return json.loads(response.msg)


def code_of(call: Any, request: Any, metadata: Metadata = ()) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, metadata=metadata)
    return caught.value.code()  # type: ignore[no-any-return]


# token authorization -----------------------------------------------------------------------------
def test_health_answers_without_a_token(stubs: Stubs) -> None:
    assert stubs.v2.ServerLive(service_pb2.ServerLiveRequest()).live
    assert stubs.v2.ServerReady(service_pb2.ServerReadyRequest()).ready
    assert json.loads(stubs.ts.Ping(empty_pb2.Empty()).health) == {"status": "Healthy"}


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "bearer {inference}", "{inference}", "Basic {inference}"],
)
def test_missing_or_malformed_tokens_are_unauthenticated(
    stubs: Stubs, authorization: str | None
) -> None:
    metadata: Metadata = ()
    if authorization is not None:
        key = stubs.key("inference")[0][1].removeprefix("Bearer ")
        metadata = (("authorization", authorization.format(inference=key)),)
    request = service_pb2.ServerMetadataRequest()
    with pytest.raises(grpc.RpcError) as caught:
        stubs.v2.ServerMetadata(request, metadata=metadata)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert dict(caught.value.trailing_metadata())["www-authenticate"].startswith("Bearer")
    listing = management_pb2.ListModelsRequest()
    assert code_of(stubs.mgmt.ListModels, listing, metadata) is grpc.StatusCode.UNAUTHENTICATED


def test_each_listener_takes_only_its_own_key(stubs: Stubs) -> None:
    request = service_pb2.ServerMetadataRequest()
    assert stubs.v2.ServerMetadata(request, metadata=stubs.key("inference")).name == "marserve"
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert code_of(stubs.v2.ServerMetadata, request, stubs.key("management")) is denied
    predict = inference_pb2.PredictionsRequest(model_name="mnist", input={"data": PNG[2]})
    assert code_of(stubs.ts.Predictions, predict, stubs.key("management")) is denied
    listing = management_pb2.ListModelsRequest()
    assert code_of(stubs.mgmt.ListModels, listing, stubs.key("inference")) is denied
    assert msg(stubs.mgmt.ListModels(listing, metadata=stubs.key("management"))) == {"models": []}


def test_repository_load_and_unload_in_kserves_layout(stubs: Stubs) -> None:
    inference, management = stubs.key("inference"), stubs.key("management")
    load = v2_pb2.RepositoryModelLoadRequest(model_name="mnist")
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert code_of(stubs.kserve.RepositoryModelLoad, load, inference) is denied
    loaded = stubs.kserve.RepositoryModelLoad(load, metadata=management)
    assert (loaded.model_name, loaded.isLoaded) == ("mnist", True)
    ready = service_pb2.ModelReadyRequest(name="mnist")
    assert stubs.v2.ModelReady(ready, metadata=inference).ready
    unload = v2_pb2.RepositoryModelUnloadRequest(model_name="mnist")
    unloaded = stubs.kserve.RepositoryModelUnload(unload, metadata=management)
    assert (unloaded.model_name, unloaded.isUnloaded) == ("mnist", True)
    assert code_of(stubs.v2.ModelReady, ready, inference) is grpc.StatusCode.NOT_FOUND
    missing = v2_pb2.RepositoryModelLoadRequest(model_name="absent")
    assert (
        code_of(stubs.kserve.RepositoryModelLoad, missing, management) is grpc.StatusCode.NOT_FOUND
    )


def test_repository_load_and_unload_from_tritonclient(stubs: Stubs, server_target: str) -> None:
    """tritonclient sends Triton's layout (model_name is field 2): it works too."""
    client = tc.InferenceServerClient(server_target)
    headers = dict(stubs.key("management"))
    try:
        client.load_model("mnist", headers=headers)
        assert client.is_model_ready("mnist", headers=dict(stubs.key("inference")))
        client.unload_model("mnist", headers=headers)
        with pytest.raises(InferenceServerException) as caught:
            client.is_model_ready("mnist", headers=dict(stubs.key("inference")))
        assert str(caught.value.status()) == "StatusCode.NOT_FOUND"
    finally:
        client.close()


# management --------------------------------------------------------------------------------------
def test_register_describe_scale_predict_and_unregister(stubs: Stubs) -> None:
    key, inference = stubs.key("management"), stubs.key("inference")
    register = management_pb2.RegisterModelRequest(
        url="mnist.mar", model_name="digits", initial_workers=1, synchronous=True
    )
    answer = msg(stubs.mgmt.RegisterModel(register, metadata=key))
    assert answer["status"] == 'Model "digits" Version: 1.0 registered with 1 initial workers'
    assert code_of(stubs.mgmt.RegisterModel, register, key) is grpc.StatusCode.ABORTED  # 409

    listing = msg(stubs.mgmt.ListModels(management_pb2.ListModelsRequest(), metadata=key))
    assert listing == {"models": [{"modelName": "digits", "modelUrl": "mnist.mar"}]}
    (described,) = msg(
        stubs.mgmt.DescribeModel(
            management_pb2.DescribeModelRequest(model_name="digits"), metadata=key
        )
    )
    assert (described["modelName"], described["modelVersion"]) == ("digits", "1.0")
    assert described["minWorkers"] == 1 and described["isDefault"] is True

    scale = management_pb2.ScaleWorkerRequest(
        model_name="digits", min_worker=2, max_worker=2, synchronous=True
    )
    assert msg(stubs.mgmt.ScaleWorker(scale, metadata=key))["status"].startswith(
        "Workers scaled to 2"
    )
    default = management_pb2.SetDefaultRequest(model_name="digits", model_version="1.0")
    assert "successfully updated" in msg(stubs.mgmt.SetDefault(default, metadata=key))["status"]

    predict = inference_pb2.PredictionsRequest(model_name="digits", input={"data": PNG[8]})
    assert json.loads(stubs.ts.Predictions(predict, metadata=inference).prediction) == 8

    unregister = management_pb2.UnregisterModelRequest(model_name="digits")
    assert msg(stubs.mgmt.UnregisterModel(unregister, metadata=key)) == {
        "status": 'Model "digits" unregistered'
    }
    describe = management_pb2.DescribeModelRequest(model_name="digits")
    assert code_of(stubs.mgmt.DescribeModel, describe, key) is grpc.StatusCode.NOT_FOUND
    assert code_of(stubs.ts.Predictions, predict, inference) is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("method", "request_", "code"),
    [
        ("RegisterModel", management_pb2.RegisterModelRequest(), "INVALID_ARGUMENT"),
        ("RegisterModel", management_pb2.RegisterModelRequest(url="nope.mar"), "NOT_FOUND"),
        (
            "RegisterModel",
            management_pb2.RegisterModelRequest(url="mnist.mar", handler="os:system"),
            "INVALID_ARGUMENT",
        ),
        ("ScaleWorker", management_pb2.ScaleWorkerRequest(model_name="nope"), "NOT_FOUND"),
        ("SetDefault", management_pb2.SetDefaultRequest(model_name="nope"), "INVALID_ARGUMENT"),
        ("UnregisterModel", management_pb2.UnregisterModelRequest(), "INVALID_ARGUMENT"),
        ("DescribeModel", management_pb2.DescribeModelRequest(model_name="nope"), "NOT_FOUND"),
    ],
)
def test_management_errors(stubs: Stubs, method: str, request_: Any, code: str) -> None:
    call = getattr(stubs.mgmt, method)
    with pytest.raises(grpc.RpcError) as caught:
        call(request_, metadata=stubs.key("management"))
    assert caught.value.code() is getattr(grpc.StatusCode, code), caught.value.details()
