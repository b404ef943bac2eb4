"""v2 gRPC messages <-> domain types: typed contents, raw contents, parameters, limits, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format

from marserve.errors import InvalidInput, PayloadTooLarge
from marserve.grpc import codec
from marserve.grpc.protos import grpc_predict_v2_pb2 as pb
from marserve.protocol.limits import DecodeLimits
from marserve.types import InferResponse, RequestedOutput, Tensor

REQUESTS = Path(__file__).resolve().parents[2] / "examples" / "mnist" / "requests" / "v2"
LIMITS = DecodeLimits()


def request(*inputs: pb.ModelInferRequest.InferInputTensor, **fields: Any) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m", **fields)
    message.inputs.extend(inputs)
    return message


def tensor(name: str, datatype: str, shape: list[int], **contents: Any) -> Any:
    item = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    for field, values in contents.items():
        getattr(item.contents, field).extend(values)
    return item


def decode(message: pb.ModelInferRequest, limits: DecodeLimits = LIMITS) -> Any:
    return codec.decode_infer_request(message, limits)


# typed contents ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("datatype", "field", "values", "dtype"),
    [
        ("BOOL", "bool_contents", [True, False], np.bool_),
        ("INT8", "int_contents", [-128, 127], np.int8),
        ("INT16", "int_contents", [-32768, 32767], np.int16),
        ("INT32", "int_contents", [-(2**31), 2**31 - 1], np.int32),
        ("INT64", "int64_contents", [-(2**63), 2**63 - 1], np.int64),
        ("UINT8", "uint_contents", [0, 255], np.uint8),
        ("UINT16", "uint_contents", [0, 65535], np.uint16),
        ("UINT32", "uint_contents", [0, 2**32 - 1], np.uint32),
        ("UINT64", "uint64_contents", [0, 2**64 - 1], np.uint64),
        ("FP32", "fp32_contents", [0.5, -1.25], np.float32),
        ("FP64", "fp64_contents", [0.1, 1e300], np.float64),
    ],
)
def test_typed_contents_become_arrays_of_the_datatype(
    datatype: str, field: str, values: list[Any], dtype: Any
) -> None:
    decoded = decode(request(tensor("x", datatype, [2, 1], **{field: values})))
    (only,) = decoded.inputs
    assert only.datatype == datatype and only.shape == (2, 1)
    assert only.data.dtype == np.dtype(dtype)
    assert only.data.reshape(-1).tolist() == values


def test_bytes_contents_keep_their_bytes_and_are_not_marked_binary() -> None:
    decoded = decode(request(tensor("t", "BYTES", [-1], bytes_contents=[b"a\x00b", b""])))
    (only,) = decoded.inputs
    assert only.shape == (2,)
    assert only.data.tolist() == [b"a\x00b", b""]
    assert codec.BINARY_MARK not in only.parameters


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (tensor("x", "INT8", [1], int_contents=[128]), "out of range for INT8"),
        (tensor("x", "UINT16", [1], uint_contents=[70000]), "out of range for UINT16"),
        (tensor("x", "FP32", [2], fp32_contents=[1.0]), "expected 2 elements, got 1"),
        (tensor("x", "FP32", [3], fp64_contents=[1.0] * 3), "belongs in contents.fp32_contents"),
        (tensor("x", "FP32", [1], fp32_contents=[1], int_contents=[1]), "not int_contents"),
        (tensor("x", "FP16", [1], fp32_contents=[1.0]), "must be sent in raw_input_contents"),
        (tensor("x", "BF16", [0]), "must be sent in raw_input_contents"),
        (tensor("x", "fp32", [1], fp32_contents=[1.0]), "datatypes are upper case: 'FP32'"),
        (tensor("x", "FLOAT", [1], fp32_contents=[1.0]), "invalid datatype 'FLOAT'"),
        (tensor("x", "FP32", [-2], fp32_contents=[1.0]), "invalid shape"),
        (tensor("x", "FP32", [-1, -1], fp32_contents=[1.0]), "invalid shape"),
        (tensor("x", "FP32", [4, -1], fp32_contents=[1.0] * 6), "do not fit shape"),
        (tensor("", "FP32", [1], fp32_contents=[1.0]), "input 0: 'name' must be"),
    ],
)
def test_bad_inputs_are_invalid_input_naming_the_problem(item: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        decode(request(item))
    assert caught.value.http_status == 400


def test_request_level_rules() -> None:
    with pytest.raises(InvalidInput, match="'inputs' must be a non-empty list"):
        decode(request())
    one = tensor("x", "INT64", [1], int64_contents=[1])
    with pytest.raises(InvalidInput, match="duplicate input name 'x'"):
        decode(request(one, one))
    with pytest.raises(InvalidInput, match="too many inputs: 3"):
        decode(
            request(*[tensor(f"i{n}", "INT64", [0]) for n in range(3)]), DecodeLimits(max_inputs=2)
        )
    wanted = request(one)
    wanted.outputs.add(name="a")
    wanted.outputs.add(name="a")
    with pytest.raises(InvalidInput, match="duplicate output name 'a'"):
        decode(wanted)


def test_element_and_byte_budgets_apply_across_inputs() -> None:
    limits = DecodeLimits(max_elements=5)
    a = tensor("a", "INT64", [3], int64_contents=[1, 2, 3])
    b = tensor("b", "INT64", [3], int64_contents=[1, 2, 3])
    with pytest.raises(InvalidInput, match="element count"):
        decode(request(a, b), limits)
    with pytest.raises(PayloadTooLarge):
        decode(request(a), DecodeLimits(max_decoded_bytes=16))


# raw contents ------------------------------------------------------------------------------------
def test_raw_contents_fill_each_input_in_order() -> None:
    image = np.arange(6, dtype=np.float16).reshape(2, 3)
    message = request(tensor("img", "FP16", [2, 3]), tensor("n", "INT32", [-1]))
    message.raw_input_contents.append(image.astype("<f2").tobytes())
    message.raw_input_contents.append(np.array([7, 8], dtype="<i4").tobytes())
    decoded = decode(message)
    assert decoded.inputs[0].data.dtype == np.float16
    np.testing.assert_array_equal(decoded.inputs[0].data, image)
    assert decoded.inputs[1].shape == (2,) and decoded.inputs[1].data.tolist() == [7, 8]
    assert codec.wants_raw_outputs(message)


def test_raw_bytes_are_marked_binary_for_the_data_plane() -> None:
    message = request(tensor("png", "BYTES", [2]))
    message.raw_input_contents.append(b"\x02\x00\x00\x00\x89P\x01\x00\x00\x00z")
    (only,) = decode(message).inputs
    assert only.data.tolist() == [b"\x89P", b"z"]
    assert codec.BINARY_MARK in only.parameters


@pytest.mark.parametrize(
    ("raws", "message"),
    [
        ([], None),
        ([b"\x00" * 8, b""], "raw_input_contents has 2 entries for 1 inputs"),
        ([b"\x00" * 7], "expected 8 bytes, got 7"),
    ],
)
def test_raw_contents_must_match_the_inputs(raws: list[bytes], message: str | None) -> None:
    item = tensor("x", "INT64", [1], int64_contents=[5] if not raws else [])
    built = request(item)
    built.raw_input_contents.extend(raws)
    if message is None:
        assert decode(built).inputs[0].data.tolist() == [5]
        return
    with pytest.raises(InvalidInput, match=message):
        decode(built)


def test_raw_and_typed_contents_do_not_mix() -> None:
    message = request(tensor("x", "INT64", [1], int64_contents=[1]))
    message.raw_input_contents.append(b"\x00" * 8)
    with pytest.raises(InvalidInput, match="both contents and raw_input_contents"):
        decode(message)


# request fields and parameters ------------------------------------------------------------------
def test_empty_version_and_id_mean_unset_and_parameters_are_plain_values() -> None:
    message = request(tensor("x", "INT64", [1], int64_contents=[1]))
    message.parameters["b"].bool_param = True
    message.parameters["i"].int64_param = -4
    message.parameters["s"].string_param = "x"
    message.parameters["d"].double_param = 0.25
    message.parameters["u"].uint64_param = 2**64 - 1
    message.parameters["unset"].CopyFrom(pb.InferParameter())
    message.inputs[0].parameters["content_type"].string_param = "str"
    out = message.outputs.add(name="predict")
    out.parameters["binary_data"].bool_param = False
    decoded = decode(message)
    assert decoded.model_version is None and decoded.id is None
    assert decoded.parameters == {
        "b": True,
        "i": -4,
        "s": "x",
        "d": 0.25,
        "u": 2**64 - 1,
        "unset": None,
    }
    assert decoded.inputs[0].parameters == {"content_type": "str"}
    assert decoded.outputs == [RequestedOutput(name="predict", parameters={"binary_data": False})]
    message.model_version, message.id = "2.0", "req-1"
    decoded = decode(message)
    assert (decoded.model_version, decoded.id) == ("2.0", "req-1")


@pytest.mark.parametrize(
    ("sample", "datatype", "shape"),
    [
        ("mnist_v2_tensor_grpc.json", "FP32", (1, 28, 28)),
        ("mnist_v2_bytes_grpc.json", "BYTES", (1,)),
    ],
)
def test_the_seeds_grpc_samples_decode(sample: str, datatype: str, shape: tuple[int, ...]) -> None:
    message = json_format.Parse((REQUESTS / sample).read_text(), pb.ModelInferRequest())
    decoded = decode(message)
    (only,) = decoded.inputs
    assert (decoded.model_name, only.datatype, only.shape) == ("mnist", datatype, shape)
    if datatype == "BYTES":
        # protobuf JSON carries bytes fields as base64: the message holds the PNG itself
        assert only.data[0].startswith(b"\x89PNG\r\n")


# responses ---------------------------------------------------------------------------------------
def response(*tensors: Tensor, **fields: Any) -> InferResponse:
    return InferResponse(model_name="m", outputs=list(tensors), **fields)


def test_typed_response_by_default() -> None:
    out = Tensor.from_array("predict", np.array([3, 1], dtype=np.int64))
    words = Tensor("words", "BYTES", (2,), np.array([b"a", "\u00e9"], dtype=object))
    message = codec.encode_infer_response(
        response(out, words, model_version="1.0", id="abc", parameters={"k": 1}), [], raw=False
    )
    assert (message.model_name, message.model_version, message.id) == ("m", "1.0", "abc")
    assert message.parameters["k"].int64_param == 1
    assert list(message.outputs[0].contents.int64_contents) == [3, 1]
    assert list(message.outputs[0].shape) == [2]
    assert list(message.outputs[1].contents.bytes_contents) == [b"a", "\u00e9".encode()]
    assert not message.raw_output_contents


def test_raw_response_when_asked_or_when_a_datatype_has_no_typed_field() -> None:
    half = Tensor.from_array("h", np.array([[1.5, 2.0]], dtype=np.float16))
    ints = Tensor.from_array("i", np.array([1], dtype=np.int8))
    message = codec.encode_infer_response(response(ints, half), [], raw=False)
    assert message.raw_output_contents == [b"\x01", np.array([1.5, 2.0], dtype="<f2").tobytes()]
    assert not message.outputs[0].HasField("contents")
    assert list(message.outputs[1].shape) == [1, 2]
    raw = codec.encode_infer_response(response(ints), [], raw=True)
    assert list(raw.raw_output_contents) == [b"\x01"]


def test_requested_outputs_select_and_order_the_response() -> None:
    a = Tensor.from_array("a", np.array([1.0], dtype=np.float32))
    b = Tensor.from_array("b", np.array([2.0], dtype=np.float64))
    message = codec.encode_infer_response(response(a, b), [RequestedOutput("b")], raw=False)
    assert [o.name for o in message.outputs] == ["b"]
    assert list(message.outputs[0].contents.fp64_contents) == [2.0]
    with pytest.raises(InvalidInput, match="output 'c' was requested"):
        codec.encode_infer_response(response(a), [RequestedOutput("c")], raw=False)


def test_parameters_of_every_type_round_trip() -> None:
    values = {"b": False, "i": -(2**63), "u": 2**64 - 1, "d": 1.5, "s": "x", "other": [1]}
    target = pb.ModelInferResponse().parameters
    codec.set_parameters(target, values)
    assert target["u"].WhichOneof("parameter_choice") == "uint64_param"
    assert target["b"].WhichOneof("parameter_choice") == "bool_param"
    assert codec.parameters_of(target) == {**values, "other": "[1]"}
