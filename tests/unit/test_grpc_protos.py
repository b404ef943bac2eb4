"""The shipped gRPC protocols against the published ones: names, numbers and types, field by field.

KServe's v2 messages are compared with the ones tritonclient.grpc ships (the same protocol; Triton
defines the repository messages differently, so those four are checked against KServe's table).
TorchServe's inference.proto and management.proto are checked against tables of their fields.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from tritonclient.grpc import service_pb2 as triton

from marserve.grpc import generate
from marserve.grpc.protos import google_rpc_status_pb2 as status_pb
from marserve.grpc.protos import grpc_predict_v2_pb2 as v2
from marserve.grpc.protos import inference_pb2 as ts_inference
from marserve.grpc.protos import management_pb2 as ts_management

F = FieldDescriptor
KSERVE_ONLY = {
    "RepositoryModelLoadRequest": [("model_name", 1, F.TYPE_STRING)],
    "RepositoryModelLoadResponse": [("model_name", 1, F.TYPE_STRING), ("isLoaded", 2, F.TYPE_BOOL)],
    "RepositoryModelUnloadRequest": [("model_name", 1, F.TYPE_STRING)],
    "RepositoryModelUnloadResponse": [
        ("model_name", 1, F.TYPE_STRING),
        ("isUnloaded", 2, F.TYPE_BOOL),
    ],
}
V2_METHODS = [
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
]


def field_shape(field: FieldDescriptor) -> tuple[Any, ...]:
    target = field.message_type
    if target is not None and target.GetOptions().map_entry:
        key, value = target.fields_by_name["key"], target.fields_by_name["value"]
        kind: Any = ("map", key.type, value.type, _type_name(value))
    else:
        kind = (field.type, _type_name(field))
    oneof = field.containing_oneof
    real_oneof = oneof.name if oneof is not None and not oneof.name.startswith("_") else None
    return (field.number, kind, field.is_repeated, real_oneof)


def _type_name(field: FieldDescriptor) -> str | None:
    return field.message_type.full_name if field.message_type is not None else None


def message_shape(message: Descriptor) -> dict[str, Any]:
    """Every field and nested message (map entries folded into their fields), recursively."""
    shape: dict[str, Any] = {f.name: field_shape(f) for f in message.fields}
    for nested in message.nested_types:
        if not nested.GetOptions().map_entry:
            shape[f"<{nested.name}>"] = message_shape(nested)
    return shape


def table(message: Descriptor) -> list[tuple[str, int, int]]:
    return [(f.name, f.number, f.type) for f in message.fields]


def methods(service: ServiceDescriptor) -> dict[str, tuple[str, str, bool, bool]]:
    return {
        m.name: (
            m.input_type.full_name,
            m.output_type.full_name,
            m.client_streaming,
            m.server_streaming,
        )
        for m in service.methods
    }


# KServe v2 ---------------------------------------------------------------------------------------
def test_package_and_service_names() -> None:
    assert v2.DESCRIPTOR.package == "inference"
    service = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert [m.name for m in service.methods] == V2_METHODS


@pytest.mark.parametrize(
    "name", sorted(set(v2.DESCRIPTOR.message_types_by_name) - set(KSERVE_ONLY))
)
def test_v2_message_matches_tritonclient_field_by_field(name: str) -> None:
    ours = v2.DESCRIPTOR.message_types_by_name[name]
    theirs = triton.DESCRIPTOR.message_types_by_name[name]
    assert message_shape(ours) == message_shape(theirs)


def test_v2_shared_messages_cover_the_protocol() -> None:
    shared = set(v2.DESCRIPTOR.message_types_by_name) - set(KSERVE_ONLY)
    assert {"ModelInferRequest", "ModelInferResponse", "InferParameter"} <= shared
    assert len(shared) == 14


@pytest.mark.parametrize("name", sorted(KSERVE_ONLY))
def test_repository_messages_follow_kserve(name: str) -> None:
    assert table(v2.DESCRIPTOR.message_types_by_name[name]) == KSERVE_ONLY[name]


def test_v2_methods_match_tritonclient() -> None:
    ours = methods(v2.DESCRIPTOR.services_by_name["GRPCInferenceService"])
    theirs = methods(triton.DESCRIPTOR.services_by_name["GRPCInferenceService"])
    for name in V2_METHODS:
        if not name.startswith("Repository"):
            assert ours[name] == theirs[name], name
    assert ours["RepositoryModelLoad"] == (
        "inference.RepositoryModelLoadRequest",
        "inference.RepositoryModelLoadResponse",
        False,
        False,
    )


def test_v2_request_crosses_between_the_two_definitions_on_the_wire() -> None:
    theirs = triton.ModelInferRequest(model_name="m", model_version="2", id="x")
    theirs.parameters["flag"].bool_param = True
    theirs.parameters["n"].int64_param = -3
    theirs.parameters["s"].string_param = "text"
    theirs.parameters["d"].double_param = 0.5
    theirs.parameters["u"].uint64_param = 1 << 63
    tensor = theirs.inputs.add(name="a", datatype="FP32", shape=[1, 2])
    tensor.contents.fp32_contents.extend([1.5, 2.5])
    theirs.inputs.add(name="b", datatype="BYTES", shape=[1])
    theirs.outputs.add(name="out").parameters["binary_data"].bool_param = True
    theirs.raw_input_contents.append(b"\x01\x00\x00\x00z")
    ours = v2.ModelInferRequest.FromString(theirs.SerializeToString())
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True
    )
    assert ours.parameters["u"].uint64_param == 1 << 63
    assert list(ours.inputs[0].contents.fp32_contents) == [1.5, 2.5]
    back = triton.ModelInferRequest.FromString(ours.SerializeToString())
    assert back == theirs


# TorchServe --------------------------------------------------------------------------------------
def test_torchserve_inference_proto() -> None:
    assert ts_inference.DESCRIPTOR.package == "org.pytorch.serve.grpc.inference"
    messages = ts_inference.DESCRIPTOR.message_types_by_name
    assert table(messages["PredictionsRequest"]) == [
        ("model_name", 1, F.TYPE_STRING),
        ("model_version", 2, F.TYPE_STRING),
        ("input", 3, F.TYPE_MESSAGE),
        ("sequenceId", 4, F.TYPE_STRING),
    ]
    request = messages["PredictionsRequest"]
    assert field_shape(request.fields_by_name["input"])[1] == (
        "map",
        F.TYPE_STRING,
        F.TYPE_BYTES,
        None,
    )
    assert request.fields_by_name["sequenceId"].has_presence
    assert table(messages["PredictionResponse"]) == [
        ("prediction", 1, F.TYPE_BYTES),
        ("sequenceId", 2, F.TYPE_STRING),
        ("status", 3, F.TYPE_MESSAGE),
    ]
    status = messages["PredictionResponse"].fields_by_name["status"].message_type
    assert status.full_name == "google.rpc.Status"
    assert table(messages["TorchServeHealthResponse"]) == [("health", 1, F.TYPE_STRING)]
    service = ts_inference.DESCRIPTOR.services_by_name["InferenceAPIsService"]
    assert service.full_name == "org.pytorch.serve.grpc.inference.InferenceAPIsService"
    prefix = "org.pytorch.serve.grpc.inference."
    request_name, response_name = prefix + "PredictionsRequest", prefix + "PredictionResponse"
    assert methods(service) == {
        "Ping": ("google.protobuf.Empty", prefix + "TorchServeHealthResponse", False, False),
        "Predictions": (request_name, response_name, False, False),
        "StreamPredictions": (request_name, response_name, False, True),
        "StreamPredictions2": (request_name, response_name, True, True),
    }


def test_google_rpc_status_matches_googleapis() -> None:
    assert status_pb.Status.DESCRIPTOR.full_name == "google.rpc.Status"
    assert table(status_pb.Status.DESCRIPTOR) == [
        ("code", 1, F.TYPE_INT32),
        ("message", 2, F.TYPE_STRING),
        ("details", 3, F.TYPE_MESSAGE),
    ]
    assert status_pb.Status.DESCRIPTOR.fields_by_name["details"].is_repeated


MANAGEMENT = {
    "ManagementResponse": [("msg", 1, F.TYPE_STRING)],
    "DescribeModelRequest": [
        ("model_name", 1, F.TYPE_STRING),
        ("model_version", 2, F.TYPE_STRING),
        ("customized", 3, F.TYPE_BOOL),
    ],
    "ListModelsRequest": [("limit", 1, F.TYPE_INT32), ("next_page_token", 2, F.TYPE_INT32)],
    "RegisterModelRequest": [
        ("batch_size", 1, F.TYPE_INT32),
        ("handler", 2, F.TYPE_STRING),
        ("initial_workers", 3, F.TYPE_INT32),
        ("max_batch_delay", 4, F.TYPE_INT32),
        ("model_name", 5, F.TYPE_STRING),
        ("response_timeout", 6, F.TYPE_INT32),
        ("runtime", 7, F.TYPE_STRING),
        ("synchronous", 8, F.TYPE_BOOL),
        ("url", 9, F.TYPE_STRING),
        ("s3_sse_kms", 10, F.TYPE_BOOL),
        ("queue_timeout", 11, F.TYPE_INT32),
    ],
    "ScaleWorkerRequest": [
        ("model_name", 1, F.TYPE_STRING),
        ("model_version", 2, F.TYPE_STRING),
        ("max_worker", 3, F.TYPE_INT32),
        ("min_worker", 4, F.TYPE_INT32),
        ("number_gpu", 5, F.TYPE_INT32),
        ("synchronous", 6, F.TYPE_BOOL),
        ("timeout", 7, F.TYPE_INT32),
    ],
    "SetDefaultRequest": [("model_name", 1, F.TYPE_STRING), ("model_version", 2, F.TYPE_STRING)],
    "UnregisterModelRequest": [
        ("model_name", 1, F.TYPE_STRING),
        ("model_version", 2, F.TYPE_STRING),
    ],
}


@pytest.mark.parametrize("name", sorted(MANAGEMENT))
def test_torchserve_management_messages(name: str) -> None:
    assert ts_management.DESCRIPTOR.package == "org.pytorch.serve.grpc.management"
    assert table(ts_management.DESCRIPTOR.message_types_by_name[name]) == MANAGEMENT[name]


def test_torchserve_management_service() -> None:
    service = ts_management.DESCRIPTOR.services_by_name["ManagementAPIsService"]
    prefix = "org.pytorch.serve.grpc.management."
    assert methods(service) == {
        name: (prefix + request, prefix + "ManagementResponse", False, False)
        for name, request in [
            ("DescribeModel", "DescribeModelRequest"),
            ("ListModels", "ListModelsRequest"),
            ("RegisterModel", "RegisterModelRequest"),
            ("ScaleWorker", "ScaleWorkerRequest"),
            ("SetDefault", "SetDefaultRequest"),
            ("UnregisterModel", "UnregisterModelRequest"),
        ]
    }


# generated modules -------------------------------------------------------------------------------
def test_shipped_modules_are_what_the_protos_generate() -> None:
    assert generate.stale() == []


def test_stale_reports_a_changed_module(tmp_path: Any) -> None:
    generate.generate(tmp_path)
    (tmp_path / "inference_pb2.py").write_text("# edited\n")
    (tmp_path / "management_pb2_grpc.py").unlink()
    assert generate.stale(tmp_path) == ["inference_pb2.py", "management_pb2_grpc.py"]


def test_messages_live_in_marserves_own_pool() -> None:
    from google.protobuf import descriptor_pool

    assert v2.DESCRIPTOR.pool is not descriptor_pool.Default()
    assert triton.DESCRIPTOR.pool is descriptor_pool.Default()
    assert v2.ModelInferRequest is not triton.ModelInferRequest


def test_repository_requests_are_read_in_kserves_and_tritons_layouts() -> None:
    from marserve.grpc.inference import repository_model_name

    kserve = v2.RepositoryModelLoadRequest(model_name="a")
    assert repository_model_name(kserve) == "a"
    for message in (triton.RepositoryModelLoadRequest, triton.RepositoryModelUnloadRequest):
        wire = message(model_name="b").SerializeToString()
        assert repository_model_name(v2.RepositoryModelLoadRequest.FromString(wire)) == "b"
        assert repository_model_name(v2.RepositoryModelUnloadRequest.FromString(wire)) == "b"
    assert repository_model_name(v2.RepositoryModelLoadRequest()) == ""
