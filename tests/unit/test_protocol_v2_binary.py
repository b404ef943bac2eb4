"""v2 binary tensor extension: rows C1-C6 of the bad-input matrix, and round trips against what
tritonclient.http builds and parses for every datatype, binary and JSON."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from marserve.errors import InvalidInput
from marserve.protocol import DecodeLimits
from marserve.protocol.v2_json import (
    check_binary_header,
    decode_infer_request,
    encode_infer_response,
)
from marserve.types import NUMPY_DTYPES, InferRequest, InferResponse, RequestedOutput, Tensor

LIMITS = DecodeLimits()


def decode(body: bytes, header_length: str | None = None) -> InferRequest:
    return decode_infer_request(
        body, model_name="m", model_version="1", header_length=header_length, limits=LIMITS
    )


def header_of(json_size: int | None) -> str | None:
    return None if json_size is None else str(json_size)


def inp(
    name: str = "x", shape: Any = (2, 2), datatype: str = "FP32", **extra: Any
) -> dict[str, Any]:
    item: dict[str, Any] = {"name": name, "shape": list(shape), "datatype": datatype}
    return {"data": [1, 2, 3, 4], **item, **extra}


def body_of(*inputs: dict[str, Any]) -> bytes:
    return orjson.dumps({"inputs": list(inputs)})


def binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, str]:
    head = orjson.dumps(header)
    return head + b"".join(chunks), str(len(head))


# --- rows C1-C6 -----------------------------------------------------------------------------


def fp32_header(size: int, shape: tuple[int, ...] = (2, 4)) -> dict[str, Any]:
    spec = {"name": "x", "shape": list(shape), "datatype": "FP32"}
    return {"inputs": [{**spec, "parameters": {"binary_data_size": size}}]}


RAW32 = np.arange(8, dtype="<f4").tobytes()


def bytes_raw(*items: bytes) -> bytes:
    return b"".join(len(item).to_bytes(4, "little") + item for item in items)


def bytes_header(size: int, count: int) -> dict[str, Any]:
    spec = {"name": "s", "shape": [count], "datatype": "BYTES"}
    return {"inputs": [{**spec, "parameters": {"binary_data_size": size}}]}


def c_case(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, str]:
    return binary_body(header, *chunks)


FOURTEEN = bytes_raw(*[b"s%d" % i for i in range(14)])
PAST_END = (100).to_bytes(4, "little") + b"abc"

BOOL_HEADER = {
    "inputs": [
        {"name": "b", "shape": [2], "datatype": "BOOL", "parameters": {"binary_data_size": 2}}
    ]
}
NO_DATA = {"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}

# fmt: off
C_CASES: list[tuple[str, bytes, str | None, str]] = [
    ("C1 no header", c_case(fp32_header(32), RAW32)[0], None, "Unrecognized request format"),
    ("C2 abc", c_case(fp32_header(32), RAW32)[0], "abc", "expected a non-negative integer"),
    ("C2 negative", c_case(fp32_header(32), RAW32)[0], "-1", "expected a non-negative integer"),
    ("C2 past body", c_case(fp32_header(32), RAW32)[0], "500", "exceeds the body length"),
    ("C2 > INT_MAX", c_case(fp32_header(32), RAW32)[0], "99999999999", "exceeds the body length"),
    ("C2 huge", c_case(fp32_header(32), RAW32)[0], "9" * 40, "expected a non-negative integer"),
    ("C2 unicode digits", c_case(fp32_header(32), RAW32)[0], "\u0663\u0662", "non-negative"),
    ("C3 trailing junk", *c_case(fp32_header(32), RAW32, b"junk"), "binary data size mismatch"),
    ("C3 truncated", *c_case(fp32_header(32), RAW32[:20]), "binary data size mismatch"),
    ("C3 no binary input", *c_case({"inputs": [inp()]}, b"junk"), "binary data size mismatch"),
    ("C4 40 for 32", *c_case(fp32_header(40), RAW32, b"\0" * 8), "expected 32 bytes, got 40"),
    ("C4 not multiple", *c_case(fp32_header(30), RAW32[:30]), "expected 32 bytes, got 30"),
    ("C4 wildcard", *c_case(fp32_header(30, (-1,)), RAW32[:30]), "not a whole number of FP32"),
    ("C5 14 for 16", *c_case(bytes_header(len(FOURTEEN), 16), FOURTEEN),
     "expected 16 string elements, got 14"),
    ("C5 14 for 12", *c_case(bytes_header(len(FOURTEEN), 12), FOURTEEN),
     "expected 12 string elements, got at least 13"),
    ("C5 past end", *c_case(bytes_header(len(PAST_END), 1), PAST_END),
     "runs past the end of the tensor data"),
    ("C5 short prefix", *c_case(bytes_header(6, 2), bytes_raw(b"a"), b"\1"),
     "length prefix is truncated"),
    ("C6 FP16 overflow", body_of(inp(datatype="FP16", data=[1, 2, 3, 1e6])), None,
     "value out of range for FP16"),
    ("C binary and data", *c_case({"inputs": [inp(parameters={"binary_data_size": 4})]}, b"abcd"),
     "has both 'data' and 'binary_data_size'"),
    ("C size w/o header", body_of(NO_DATA), None, "no binary data"),
    ("C bad size", *c_case(fp32_header(-4), RAW32), "must be a non-negative integer"),
    ("C bool size", *c_case(fp32_header(True), RAW32), "must be a non-negative integer"),
    ("C BOOL byte 2", *c_case(BOOL_HEADER, b"\x01\x02"), "value out of range for BOOL"),
]
# fmt: on


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [case[1:] for case in C_CASES],
    ids=[case[0] for case in C_CASES],
)
def test_matrix_rows_c(body: bytes, header_length: str | None, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode(body, header_length)
    assert message in caught.value.message


def test_c1_octet_stream_without_header_length() -> None:
    with pytest.raises(InvalidInput, match="'inference-header-content-length' header is missing"):
        check_binary_header("application/octet-stream", None)
    check_binary_header("application/octet-stream", "12")
    check_binary_header("application/json", None)
    check_binary_header(None, None)


def test_c6_fp16_json_is_supported_consistently() -> None:
    [tensor] = decode(body_of(inp(datatype="FP16", data=[0.5, 1.5, -2, 65504]))).inputs
    assert tensor.data.dtype == np.float16
    np.testing.assert_array_equal(tensor.data.reshape(-1), np.array([0.5, 1.5, -2, 65504], "f2"))


def test_binary_and_json_inputs_mix_in_order() -> None:
    header = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}},
            inp("j", shape=[2], datatype="INT64", data=[5, 6]),
            {
                "name": "s",
                "shape": [-1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": 9},
            },
        ]
    }
    body, length = binary_body(header, np.array([1, -2], "<i4").tobytes(), bytes_raw(b"x", b""))
    a, j, s = decode(body, length).inputs
    assert a.data.tolist() == [1, -2] and a.data.dtype == np.int32 and a.data.flags.writeable
    assert j.data.tolist() == [5, 6]
    assert s.shape == (2,) and s.data.tolist() == [b"x", b""]
    assert a.parameters == {"binary_data_size": 8}  # kept: marks binary BYTES for handlers
    assert j.parameters == {}


def test_header_length_equal_to_body_means_no_binary_data() -> None:
    body = body_of(inp())
    [tensor] = decode(body, str(len(body))).inputs
    assert tensor.data.reshape(-1).tolist() == [1, 2, 3, 4]


# --- round trips with tritonclient ----------------------------------------------------------


RNG = np.random.default_rng(7)
SHAPE = (2, 3)


def sample(datatype: str) -> np.ndarray[Any, Any]:
    """A (2, 3) array as a tritonclient user would build it for ``datatype``."""
    if datatype == "BYTES":
        values = [b"", b"a\x00b", b"\xff\xfe", "żółw".encode(), b"x" * 300, b"\x00"]
        return np.array(values, dtype=object).reshape(SHAPE)
    if datatype == "BOOL":
        return RNG.integers(0, 2, SHAPE).astype(bool)
    if datatype == "BF16":
        return np.array([[1.5, -2.0, 0.0], [3.25, 1e30, -1e-3]], dtype=ml_dtypes.bfloat16)
    dtype = NUMPY_DTYPES[datatype]
    if dtype.kind == "f":
        return (RNG.standard_normal(SHAPE) * 100).astype(dtype)
    info = np.iinfo(dtype)
    corners = np.array([info.min, info.max, 0, 1, info.max - 1, info.min + 1], dtype=dtype)
    return corners.reshape(SHAPE)


def as_domain(datatype: str, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """What marserve keeps for ``array``: BF16 as uint16 bit patterns, the rest unchanged."""
    return array.view(np.uint16) if datatype == "BF16" else array


ALL = list(NUMPY_DTYPES)
JSON_ABLE = [datatype for datatype in ALL if datatype != "BF16"]


@pytest.mark.parametrize("datatype", ALL)
def test_decodes_tritonclient_binary_inputs(datatype: str) -> None:
    array = sample(datatype)
    tensor_in = triton.InferInput("x", list(SHAPE), datatype)
    tensor_in.set_data_from_numpy(array, binary_data=True)
    wanted = [triton.InferRequestedOutput("y", binary_data=True)]
    body, json_size = triton.InferenceServerClient.generate_request_body(
        [tensor_in], outputs=wanted, request_id="r7"
    )
    assert json_size is not None
    request = decode(body, header_of(json_size))
    [tensor] = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", datatype, SHAPE)
    assert tensor.data.dtype == NUMPY_DTYPES[datatype]
    expected = as_domain(datatype, array)
    assert tensor.data.tolist() == expected.tolist()
    assert request.id == "r7"
    assert [(o.name, o.binary_data) for o in request.outputs] == [("y", True)]


@pytest.mark.parametrize("datatype", [d for d in JSON_ABLE if d != "BYTES"] + ["BYTES"])
def test_decodes_tritonclient_json_inputs(datatype: str) -> None:
    array = sample(datatype)
    if datatype == "BYTES":  # tritonclient can only send UTF-8 text as JSON
        array = np.array(["", "a\x00b", "é", "żółw", "x" * 300, "\x00"], dtype=object)
        array = array.reshape(SHAPE)
    tensor_in = triton.InferInput("x", list(SHAPE), datatype)
    tensor_in.set_data_from_numpy(array, binary_data=False)
    body, json_size = triton.InferenceServerClient.generate_request_body(
        [tensor_in], outputs=[triton.InferRequestedOutput("y", binary_data=False)]
    )
    assert json_size is None
    [tensor] = decode(body).inputs
    if datatype == "BYTES":
        assert tensor.data.tolist() == [[s.encode() for s in row] for row in array.tolist()]
    else:
        np.testing.assert_array_equal(tensor.data, array)
        assert tensor.data.dtype == array.dtype


def test_decodes_several_tritonclient_inputs_without_requested_outputs() -> None:
    arrays = {"a": sample("FP32"), "b": sample("BYTES"), "c": sample("INT8")}
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else triton.np_to_triton_dtype(array.dtype)
        tensor_in = triton.InferInput(name, list(array.shape), datatype)
        tensor_in.set_data_from_numpy(array, binary_data=name != "c")
        inputs.append(tensor_in)
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs)
    request = decode(body, header_of(json_size))
    assert [t.name for t in request.inputs] == ["a", "b", "c"]
    for tensor in request.inputs:
        assert tensor.data.tolist() == arrays[tensor.name].tolist()
    # tritonclient asks for binary outputs when it names none
    assert request.parameters["binary_data_output"] is True and request.outputs == []


def test_empty_bytes_tensor_round_trips() -> None:
    tensor_in = triton.InferInput("x", [0], "BYTES")
    tensor_in.set_data_from_numpy(np.array([], dtype=object), binary_data=True)
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor_in])
    [tensor] = decode(body, header_of(json_size)).inputs
    assert tensor.shape == (0,) and tensor.data.dtype == object


def response_with(datatype: str) -> tuple[InferResponse, np.ndarray[Any, Any]]:
    array = sample(datatype)
    data = as_domain(datatype, array)
    out = Tensor(name="y", datatype=datatype, shape=SHAPE, data=data)
    return InferResponse(model_name="m", outputs=[out], model_version="1", id="r1"), array


@pytest.mark.parametrize("datatype", ALL)
def test_tritonclient_parses_binary_outputs(datatype: str) -> None:
    response, array = response_with(datatype)
    body, headers = encode_infer_response(response, [RequestedOutput("y", binary_data=True)])
    assert headers["Content-Type"] == "application/octet-stream"
    length = int(headers["Inference-Header-Content-Length"])
    result = triton.InferenceServerClient.parse_response_body(body, header_length=length)
    got = result.as_numpy("y")
    assert got.shape == SHAPE
    if datatype == "BF16":
        assert got.view(np.uint16).tolist() == array.view(np.uint16).tolist()
    else:
        assert got.tolist() == array.tolist()
    assert result.get_response()["id"] == "r1"


@pytest.mark.parametrize("datatype", JSON_ABLE)
def test_tritonclient_parses_json_outputs(datatype: str) -> None:
    response, array = response_with(datatype)
    if datatype == "BYTES":
        array = np.array(["", "a\x00b", "é", "żółw", "x" * 3, "\x00"], dtype=object)
        array = array.reshape(SHAPE)
        response.outputs[0].data = np.array([s.encode() for s in array.reshape(-1)], dtype=object)
    body, headers = encode_infer_response(response, [])
    assert headers == {"Content-Type": "application/json"}
    got = triton.InferenceServerClient.parse_response_body(body).as_numpy("y")
    assert got.shape == SHAPE
    if datatype == "BYTES":
        assert got.tolist() == array.tolist()
    else:
        np.testing.assert_array_equal(got, array)


def test_binary_request_round_trip_through_both_codecs() -> None:
    """tritonclient request -> marserve decode -> identity model -> marserve encode -> parse."""
    arrays = {d: sample(d) for d in ALL}
    inputs = []
    for datatype, array in arrays.items():
        tensor_in = triton.InferInput(datatype.lower(), list(SHAPE), datatype)
        tensor_in.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor_in)
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs)
    request = decode(body, header_of(json_size))
    response = InferResponse(model_name="m", outputs=list(request.inputs))
    default = request.parameters.get("binary_data_output") is True
    out_body, headers = encode_infer_response(response, [], binary_outputs_default=default)
    length = int(headers["Inference-Header-Content-Length"])
    result = triton.InferenceServerClient.parse_response_body(out_body, header_length=length)
    for datatype, array in arrays.items():
        got = result.as_numpy(datatype.lower())
        assert got.tolist() == array.tolist() or datatype == "BF16"
        if datatype == "BF16":
            assert got.view(np.uint16).tolist() == array.view(np.uint16).tolist()
