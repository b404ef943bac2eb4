"""v2 REST codec: the seeds' samples, the bad-input matrix (A1-A12, C1-C6), response encoding."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from marserve.errors import InternalError, InvalidInput, MarserveError, PayloadTooLarge
from marserve.protocol import DecodeLimits
from marserve.protocol.v2_json import (
    binary_output_default,
    check_binary_header,
    decode_infer_request,
    encode_error,
    encode_infer_response,
)
from marserve.types import InferRequest, InferResponse, RequestedOutput, Tensor

REQUESTS = Path(__file__).resolve().parents[1] / "data" / "requests"
LIMITS = DecodeLimits()


def decode(
    body: bytes, header_length: str | None = None, limits: DecodeLimits = LIMITS
) -> InferRequest:
    return decode_infer_request(
        body, model_name="mnist", model_version=None, header_length=header_length, limits=limits
    )


def inp(
    name: str = "x", shape: Any = (2, 2), datatype: Any = "FP32", data: Any = None, **extra: Any
) -> dict[str, Any]:
    shape = list(shape) if isinstance(shape, (list, tuple)) else shape
    item: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype}
    item["data"] = [1, 2, 3, 4] if data is None else data
    item.update(extra)
    return item


def body_of(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, str]:
    head = orjson.dumps(header)
    return head + b"".join(chunks), str(len(head))


# --- the seeds' samples -------------------------------------------------------------------


def test_seed_tensor_sample_decodes_to_fp32_1x28x28() -> None:
    body = (REQUESTS / "mnist_v2_tensor.json").read_bytes()
    request = decode(body)
    assert request.id == "d3b15cad-50a2-4eaf-80ce-8b0a428bd298"
    assert request.model_name == "mnist"
    [tensor] = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("input-0", "FP32", (1, 28, 28))
    assert tensor.data.dtype == np.float32 and tensor.data.shape == (1, 28, 28)
    expected = np.asarray(orjson.loads(body)["inputs"][0]["data"], dtype=np.float32)
    np.testing.assert_array_equal(tensor.data, expected)
    assert tensor.data.flags.writeable
    assert request.outputs == [] and request.parameters == {}


def test_seed_bytes_sample_resolves_wildcard_shape() -> None:
    body = (REQUESTS / "mnist_v2_bytes.json").read_bytes()
    [tensor] = decode(body).inputs
    assert tensor.datatype == "BYTES" and tensor.shape == (1,)
    value = tensor.data[0]
    assert isinstance(value, bytes) and value.startswith(b"iVBORw0KGgo")
    assert value == orjson.loads(body)["inputs"][0]["data"][0].encode()


def test_flat_and_nested_data_decode_alike() -> None:
    flat = decode(body_of(inp(shape=(2, 3), data=[1, 2, 3, 4, 5, 6]))).inputs[0]
    nested = decode(body_of(inp(shape=(2, 3), data=[[1, 2, 3], [4, 5, 6]]))).inputs[0]
    np.testing.assert_array_equal(flat.data, nested.data)
    assert flat.data.shape == nested.data.shape == (2, 3)


@pytest.mark.parametrize(
    ("datatype", "data", "dtype"),
    [
        ("BOOL", [True, False, True, False], np.bool_),
        ("BOOL", [1, 0, 1, 0], np.bool_),
        ("UINT8", [0, 1, 254, 255], np.uint8),
        ("UINT16", [0, 1, 2, 65535], np.uint16),
        ("UINT32", [0, 1, 2, 2**32 - 1], np.uint32),
        ("UINT64", [0, 1, 2, 2**64 - 1], np.uint64),
        ("INT8", [-128, 0, 1, 127], np.int8),
        ("INT16", [-(2**15), 0, 1, 2**15 - 1], np.int16),
        ("INT32", [-(2**31), 0, 1, 2**31 - 1], np.int32),
        ("INT64", [-(2**63), 0, 1, 2**63 - 1], np.int64),
        ("FP16", [0.5, -1.5, 65504.0, 1], np.float16),
        ("FP32", [0.5, -1.5, 3.0e38, 1], np.float32),
        ("FP64", [0.1, -1.5, 1.0e308, 1], np.float64),
    ],
)
def test_every_numeric_datatype_decodes_from_json(
    datatype: str, data: list[Any], dtype: Any
) -> None:
    [tensor] = decode(body_of(inp(datatype=datatype, data=data))).inputs
    assert tensor.data.dtype == np.dtype(dtype) and tensor.shape == (2, 2)
    np.testing.assert_array_equal(tensor.data.reshape(-1), np.asarray(data, dtype=dtype))


def test_request_fields_are_kept() -> None:
    body = body_of(
        inp(parameters={"content_type": "np"}),
        id="req-1",
        parameters={"binary_data_output": True, "priority": 3},
        outputs=[{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
    )
    request = decode(body)
    assert request.id == "req-1"
    assert request.parameters == {"binary_data_output": True, "priority": 3}
    assert request.inputs[0].parameters == {"content_type": "np"}
    assert [(o.name, o.binary_data) for o in request.outputs] == [("a", True), ("b", False)]
    assert binary_output_default(request) is True


def test_zero_size_tensor_decodes() -> None:
    [tensor] = decode(body_of(inp(shape=(0, 3), data=[]))).inputs
    assert tensor.shape == (0, 3) and tensor.data.dtype == np.float32


# --- the bad-input matrix: rows A1-A12 ------------------------------------------------------

BIG = 2**60 + 2
SMALL = DecodeLimits(max_decoded_bytes=1 << 20, max_outputs=2)

A_CASES: list[tuple[str, bytes, DecodeLimits, type[MarserveError], str]] = [
    ("A1 truncated", b'{"inputs": [', LIMITS, InvalidInput, "Unrecognized request format"),
    ("A1 trailing", body_of(inp()) + b" x", LIMITS, InvalidInput, "Unrecognized request format"),
    ("A1 bom", b"\xef\xbb\xbf" + body_of(inp()), LIMITS, InvalidInput, "Unrecognized request"),
    ("A1 empty", b"", LIMITS, InvalidInput, "Unrecognized request format"),
    ("A2 array", b"[]", LIMITS, InvalidInput, "Expected a JSON object"),
    ("A2 string", b'"x"', LIMITS, InvalidInput, "Expected a JSON object"),
    ("A2 null", b"null", LIMITS, InvalidInput, "Expected a JSON object"),
    ("A2 number", b"42", LIMITS, InvalidInput, "Expected a JSON object"),
    ("A3 no inputs", b'{"id": "1"}', LIMITS, InvalidInput, "missing required field 'inputs'"),
    ("A3 empty inputs", b'{"inputs": []}', LIMITS, InvalidInput, "non-empty list"),
    (
        "A3 no name",
        orjson.dumps({"inputs": [{"shape": [1]}]}),
        LIMITS,
        InvalidInput,
        "input 0: missing required field 'name'",
    ),
    (
        "A3 no shape",
        body_of({"name": "x", "datatype": "FP32", "data": [1]}),
        LIMITS,
        InvalidInput,
        "input 'x': missing required field 'shape'",
    ),
    (
        "A3 no datatype",
        body_of({"name": "x", "shape": [1], "data": [1]}),
        LIMITS,
        InvalidInput,
        "input 'x': missing required field 'datatype'",
    ),
    (
        "A3 no data",
        body_of({"name": "x", "shape": [1], "datatype": "FP32"}),
        LIMITS,
        InvalidInput,
        "input 'x': missing required field 'data'",
    ),
    ("A4 FP65", body_of(inp(datatype="FP65")), LIMITS, InvalidInput, "invalid datatype 'FP65'"),
    ("A4 lower case", body_of(inp(datatype="fp32")), LIMITS, InvalidInput, "upper case: 'FP32'"),
    (
        "A4 strings FP32",
        body_of(inp(data=["1", "2", "3", "4"])),
        LIMITS,
        InvalidInput,
        "expected numbers for FP32, got strings",
    ),
    (
        "A4 2 for BOOL",
        body_of(inp(datatype="BOOL", data=[1, 0, 2, 1])),
        LIMITS,
        InvalidInput,
        "value out of range for BOOL",
    ),
    (
        "A4 300 INT8",
        body_of(inp(datatype="INT8", data=[1, 2, 300, 4])),
        LIMITS,
        InvalidInput,
        "value out of range for INT8",
    ),
    (
        "A4 300 UINT8",
        body_of(inp(datatype="UINT8", data=[1, 2, 300, 4])),
        LIMITS,
        InvalidInput,
        "value out of range for UINT8",
    ),
    (
        "A4 -1 UINT32",
        body_of(inp(datatype="UINT32", data=[1, 2, -1, 4])),
        LIMITS,
        InvalidInput,
        "value out of range for UINT32",
    ),
    (
        "A4 float INT64",
        body_of(inp(datatype="INT64", data=[1, 2, 3.5, 4])),
        LIMITS,
        InvalidInput,
        "expected integers for INT64, got floating-point values",
    ),
    (
        "A4 2**63 INT64",
        body_of(inp(shape=[1], datatype="INT64", data=[2**63])),
        LIMITS,
        InvalidInput,
        "value out of range for INT64",
    ),
    (
        "A4 null FP32",
        body_of(inp(data=[1, None, 3, 4])),
        LIMITS,
        InvalidInput,
        "invalid value for FP32",
    ),
    (
        "A4 bool FP32",
        body_of(inp(data=[True, False, True, False])),
        LIMITS,
        InvalidInput,
        "expected numbers for FP32, got booleans",
    ),
    (
        "A4 number BYTES",
        body_of(inp(datatype="BYTES", data=["a", 1, "b", "c"])),
        LIMITS,
        InvalidInput,
        "BYTES data must be strings",
    ),
    (
        "A4 BF16 JSON",
        body_of(inp(datatype="BF16")),
        LIMITS,
        InvalidInput,
        "BF16 data must be sent as binary",
    ),
    (
        "A5 3 for 4",
        body_of(inp(data=[1, 2, 3])),
        LIMITS,
        InvalidInput,
        "input 'x': expected 4 elements, got 3",
    ),
    (
        "A5 5 for 4",
        body_of(inp(data=[1, 2, 3, 4, 5])),
        LIMITS,
        InvalidInput,
        "expected 4 elements, got 5",
    ),
    ("A5 ragged", body_of(inp(data=[[1, 2], [3]])), LIMITS, InvalidInput, "'data' is ragged"),
    ("A5 ragged mix", body_of(inp(data=[[1, 2], 3, 4])), LIMITS, InvalidInput, "ragged"),
    ("A5 data not list", body_of(inp(data=5)), LIMITS, InvalidInput, "'data' must be a list"),
    ("A6 negative", body_of(inp(shape=[2, -5])), LIMITS, InvalidInput, "invalid shape [2, -5]"),
    ("A6 float", body_of(inp(shape=[1.5])), LIMITS, InvalidInput, "invalid shape [1.5]"),
    ("A6 string", body_of(inp(shape=["2"])), LIMITS, InvalidInput, "invalid shape ['2']"),
    ("A6 bool", body_of(inp(shape=[True])), LIMITS, InvalidInput, "invalid shape [True]"),
    ("A6 two wildcards", body_of(inp(shape=[-1, -1])), LIMITS, InvalidInput, "invalid shape"),
    ("A6 > 2**63", body_of(inp(shape=[2**63])), LIMITS, InvalidInput, "dimension too large"),
    ("A6 shape not list", body_of(inp(shape=4)), LIMITS, InvalidInput, "'shape' must be a list"),
    (
        "A7 wraps uint64",
        body_of(inp(shape=[16, BIG])),
        LIMITS,
        InvalidInput,
        "element count 18446744073709551648 exceeds maximum",
    ),
    (
        "A7 byte overflow",
        body_of(inp(shape=[4, BIG])),
        LIMITS,
        InvalidInput,
        "exceeds maximum 67108864",
    ),
    (
        "A7 decoded size",
        body_of(inp(shape=[300_000], data=[0] * 4)),
        SMALL,
        PayloadTooLarge,
        "decoded size exceeds limit",
    ),
    (
        "A9 depth 120 data",
        body_of(inp(shape=[1], data=[0])).replace(b"[0]", b"[" * 120 + b"0" + b"]" * 120),
        LIMITS,
        InvalidInput,
        "JSON nesting depth exceeds maximum allowed limit (100)",
    ),
    (
        "A9 250k brackets",
        b'{"inputs": ' + b"[" * 250_000,
        LIMITS,
        InvalidInput,
        "JSON nesting depth exceeds maximum allowed limit (100)",
    ),
    (
        "A10 duplicate key",
        b'{"inputs": [], "inputs": ' + body_of(inp())[10:],
        LIMITS,
        InvalidInput,
        "duplicate key 'inputs'",
    ),
    (
        "A10 dup key in input",
        body_of(inp()).replace(b'"name":"x"', b'"name":"x","name":"y"'),
        LIMITS,
        InvalidInput,
        "duplicate key 'name'",
    ),
    ("A10 dup input", body_of(inp(), inp()), LIMITS, InvalidInput, "duplicate input name 'x'"),
    (
        "A10 dup output",
        body_of(inp(), outputs=[{"name": "OUTPUT0"}, {"name": "OUTPUT0"}]),
        LIMITS,
        InvalidInput,
        "duplicate output name 'OUTPUT0'",
    ),
    (
        "A10 too many outputs",
        body_of(inp(), outputs=[{"name": f"o{i}"} for i in range(3)]),
        SMALL,
        InvalidInput,
        "too many requested outputs: 3 (maximum 2)",
    ),
    (
        "A11 NaN",
        body_of(inp()).replace(b"[1,2,3,4]", b"[1,NaN,3,4]"),
        LIMITS,
        InvalidInput,
        "Unrecognized request format",
    ),
    (
        "A11 Infinity",
        body_of(inp()).replace(b"[1,2,3,4]", b"[1,Infinity,3,4]"),
        LIMITS,
        InvalidInput,
        "Unrecognized request format",
    ),
    (
        "A11 -Infinity",
        body_of(inp()).replace(b"[1,2,3,4]", b"[1,-Infinity,3,4]"),
        LIMITS,
        InvalidInput,
        "Unrecognized request format",
    ),
    (
        "A11 1e999",
        body_of(inp()).replace(b"[1,2,3,4]", b"[1,1e999,3,4]"),
        LIMITS,
        InvalidInput,
        "Unrecognized request format",
    ),
    (
        "A11 FP32 overflow",
        body_of(inp(data=[1, 3.5e38, 3, 4])),
        LIMITS,
        InvalidInput,
        "value out of range for FP32",
    ),
    (
        "A11 FP16 overflow",
        body_of(inp(datatype="FP16", data=[1, 70000, 3, 4])),
        LIMITS,
        InvalidInput,
        "value out of range for FP16",
    ),
    (
        "A12 invalid utf-8",
        body_of(inp(datatype="BYTES", data=["a", "b", "c", "QQ"])).replace(b"QQ", b"\xff\xfe"),
        LIMITS,
        InvalidInput,
        "Unrecognized request format",
    ),
    (
        "A12 lone surrogate",
        body_of(inp(datatype="BYTES", data=["a", "b", "c", "QQ"])).replace(b"QQ", b"\\ud800"),
        LIMITS,
        InvalidInput,
        "Unrecognized request format",
    ),
    (
        "A12 10 MB string",
        body_of(inp(shape=[1], datatype="BYTES", data=["x" * 10_000_000])),
        SMALL,
        PayloadTooLarge,
        "decoded size exceeds limit",
    ),
]


@pytest.mark.parametrize(
    ("body", "limits", "error", "message"),
    [case[1:] for case in A_CASES],
    ids=[case[0] for case in A_CASES],
)
def test_matrix_rows_a(
    body: bytes, limits: DecodeLimits, error: type[MarserveError], message: str
) -> None:
    with pytest.raises(error) as caught:
        decode(body, limits=limits)
    assert type(caught.value) is error
    assert message in caught.value.message
    assert "Traceback" not in caught.value.message and "marserve" not in caught.value.message


def test_a7_request_total_elements_is_bounded() -> None:
    limits = DecodeLimits(max_elements=6)
    body = body_of(inp("a", shape=[4], data=[1, 2, 3, 4]), inp("b", shape=[4], data=[1, 2, 3, 4]))
    with pytest.raises(InvalidInput, match="element count of the request exceeds maximum 6"):
        decode(body, limits=limits)


def test_a8_declared_shape_is_kept_for_the_model_check() -> None:
    data = np.zeros((1, 27, 28)).tolist()
    [tensor] = decode(body_of(inp(shape=[1, 27, 28], data=data))).inputs
    assert tensor.shape == (1, 27, 28)


def test_a9_brackets_inside_strings_do_not_count() -> None:
    text = '\\"' + "[" * 300 + "\\\\" + "{" * 300
    body = body_of(inp(shape=[1], datatype="BYTES", data=["placeholder"]))
    body = body.replace(b"placeholder", text.encode())
    [tensor] = decode(body).inputs
    assert tensor.data[0] == ('"' + "[" * 300 + "\\" + "{" * 300).encode()


def nested_parameters(levels: int) -> dict[str, Any]:
    value: Any = 0
    for _ in range(levels):
        value = {"k": value}
    return dict(value)


def test_a9_depth_at_the_limit_is_accepted() -> None:
    # the request object is level 1, "parameters" level 2 .. 100
    request = decode(body_of(inp(), parameters=nested_parameters(99)))
    assert "k" in request.parameters
    with pytest.raises(InvalidInput, match=r"depth exceeds maximum allowed limit \(100\)"):
        decode(body_of(inp(), parameters=nested_parameters(100)))


def test_data_nested_deeper_than_numpy_allows() -> None:
    nested: Any = 0
    for _ in range(70):
        nested = [nested]
    with pytest.raises(InvalidInput, match="'data' nests more than 64 levels"):
        decode(body_of(inp(shape=[1], data=nested)))


def test_a10_colons_in_strings_without_duplicates_are_fine() -> None:
    body = body_of(inp(name="a:b", shape=[2], datatype="BYTES", data=["x: 1", '"k": 2']))
    [tensor] = decode(body).inputs
    assert tensor.name == "a:b" and tensor.data.tolist() == [b"x: 1", b'"k": 2']


def test_a12_nul_bytes_survive_in_bytes_tensors() -> None:
    body = body_of(inp(shape=[2], datatype="BYTES", data=["a\u0000b", "\u0000\u0000"]))
    [tensor] = decode(body).inputs
    assert tensor.data.tolist() == [b"a\x00b", b"\x00\x00"]


def test_a12_unicode_is_utf8_encoded() -> None:
    body = body_of(inp(shape=[1], datatype="BYTES", data=["żółw 🐢"]))
    assert decode(body).inputs[0].data[0] == "żółw 🐢".encode()


# --- rows C1-C6: the binary tensor extension -----------------------------------------------


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


C_SIXTEEN = bytes_raw(*[b"s%d" % i for i in range(14)])
C_PAST_END = (100).to_bytes(4, "little") + b"abc"

C_CASES: list[tuple[str, bytes, str | None, str]] = [
    ("C1 no header", c_case(fp32_header(32), RAW32)[0], None, "Unrecognized request format"),
    ("C2 abc", c_case(fp32_header(32), RAW32)[0], "abc", "expected a non-negative integer"),
    ("C2 negative", c_case(fp32_header(32), RAW32)[0], "-1", "expected a non-negative integer"),
    ("C2 past body", c_case(fp32_header(32), RAW32)[0], "500", "exceeds the body length"),
    ("C2 > INT_MAX", c_case(fp32_header(32), RAW32)[0], "99999999999", "exceeds the body length"),
    ("C2 huge", c_case(fp32_header(32), RAW32)[0], "9" * 40, "expected a non-negative integer"),
    ("C3 trailing junk", *c_case(fp32_header(32), RAW32, b"junk"), "binary data size mismatch"),
    ("C3 truncated", *c_case(fp32_header(32), RAW32[:20]), "binary data size mismatch"),
    ("C3 no binary input", *c_case({"inputs": [inp()]}, b"junk"), "binary data size mismatch"),
    ("C4 40 for 32", *c_case(fp32_header(40), RAW32, b"\0" * 8), "expected 32 bytes, got 40"),
    ("C4 not multiple", *c_case(fp32_header(30), RAW32[:30]), "expected 32 bytes, got 30"),
    ("C4 wildcard", *c_case(fp32_header(30, (-1,)), RAW32[:30]), "not a whole number of FP32"),
    (
        "C5 14 for 16",
        *c_case(bytes_header(len(C_SIXTEEN), 16), C_SIXTEEN),
        "expected 16 string elements, got 14",
    ),
    (
        "C5 14 for 12",
        *c_case(bytes_header(len(C_SIXTEEN), 12), C_SIXTEEN),
        "expected 12 string elements, got at least 13",
    ),
    (
        "C5 past end",
        *c_case(bytes_header(len(C_PAST_END), 1), C_PAST_END),
        "runs past the end of the tensor data",
    ),
    (
        "C5 short prefix",
        *c_case(bytes_header(6, 2), bytes_raw(b"a"), b"\1"),
        "length prefix is truncated",
    ),
    (
        "C6 FP16 overflow",
        body_of(inp(datatype="FP16", data=[1, 2, 3, 1e6])),
        None,
        "value out of range for FP16",
    ),
    (
        "C binary and data",
        *c_case({"inputs": [inp(parameters={"binary_data_size": 4})]}, b"abcd"),
        "has both 'data' and 'binary_data_size'",
    ),
    (
        "C size w/o header",
        body_of(
            {"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}
        ),
        None,
        "no binary data",
    ),
    ("C bad size", *c_case(fp32_header(-4), RAW32), "must be a non-negative integer"),
    (
        "C BOOL byte 2",
        *c_case(
            {
                "inputs": [
                    {
                        "name": "b",
                        "shape": [2],
                        "datatype": "BOOL",
                        "parameters": {"binary_data_size": 2},
                    }
                ]
            },
            b"\x01\x02",
        ),
        "value out of range for BOOL",
    ),
]


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
    assert a.parameters == {}


def test_header_length_equal_to_body_means_no_binary_data() -> None:
    body = body_of(inp())
    [tensor] = decode(body, str(len(body))).inputs
    assert tensor.data.reshape(-1).tolist() == [1, 2, 3, 4]


# --- response encoding ----------------------------------------------------------------------


def response_of(*tensors: Tensor, **extra: Any) -> InferResponse:
    return InferResponse(model_name="mnist", outputs=list(tensors), **extra)


def test_json_response_shape_and_fields() -> None:
    out = Tensor.from_array("predict", np.array([[1, 2], [3, 4]], dtype=np.int64))
    body, headers = encode_infer_response(
        response_of(out, model_version="1.0", id="r1", parameters={"p": 1}), []
    )
    assert headers == {"Content-Type": "application/json"}
    assert orjson.loads(body) == {
        "model_name": "mnist",
        "model_version": "1.0",
        "id": "r1",
        "parameters": {"p": 1},
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [2, 2], "data": [1, 2, 3, 4]}
        ],
    }


def test_optional_response_fields_are_omitted() -> None:
    out = Tensor(name="predict", datatype="INT64", shape=(), data=np.array(1))
    body, _ = encode_infer_response(response_of(out), [])
    assert orjson.loads(body) == {
        "model_name": "mnist",
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [], "data": [1]}],
    }


def test_non_finite_outputs_are_valid_json_nulls() -> None:
    out = Tensor.from_array("y", np.array([1.5, np.nan, np.inf, -np.inf], dtype=np.float32))
    body, _ = encode_infer_response(response_of(out), [])
    assert b"NaN" not in body and b"Infinity" not in body
    assert orjson.loads(body)["outputs"][0]["data"] == [1.5, None, None, None]


def test_bytes_outputs_as_text_or_base64() -> None:
    text = Tensor.from_array("t", np.array([b"hello", "w\u00f6rld"], dtype=object))
    raw = Tensor.from_array("r", np.array([b"\xff\x00", b"ok"], dtype=object))
    body, _ = encode_infer_response(response_of(text, raw), [])
    t_out, r_out = orjson.loads(body)["outputs"]
    assert t_out["data"] == ["hello", "w\u00f6rld"] and "parameters" not in t_out
    assert r_out["data"] == ["/wA=", "b2s="]
    assert r_out["parameters"] == {"content_type": "base64"}


def test_bf16_outputs_widen_to_fp32_in_json() -> None:
    bits = (np.array([1.5, -2.0, 0.15625], dtype=np.float32).view(np.uint32) >> 16).astype("u2")
    out = Tensor(name="b", datatype="BF16", shape=(3,), data=bits)
    body, _ = encode_infer_response(response_of(out), [])
    assert orjson.loads(body)["outputs"][0]["data"] == [1.5, -2.0, 0.15625]


def test_requested_outputs_select_order_and_binary() -> None:
    a = Tensor.from_array("a", np.array([1, 2], dtype=np.int32))
    b = Tensor.from_array("b", np.array([0.5], dtype=np.float64))
    wanted = [RequestedOutput("b", binary_data=True), RequestedOutput("a")]
    body, headers = encode_infer_response(response_of(a, b), wanted)
    assert headers["Content-Type"] == "application/octet-stream"
    length = int(headers["Inference-Header-Content-Length"])
    header = orjson.loads(body[:length])
    assert [o["name"] for o in header["outputs"]] == ["b", "a"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert "data" not in header["outputs"][0] and header["outputs"][1]["data"] == [1, 2]
    assert body[length:] == np.array([0.5], "<f8").tobytes()


def test_binary_outputs_default_applies_when_nothing_requested() -> None:
    a = Tensor.from_array("a", np.array([1, 2], dtype=np.uint16))
    body, headers = encode_infer_response(response_of(a), [], binary_outputs_default=True)
    length = int(headers["Inference-Header-Content-Length"])
    assert body[length:] == b"\x01\x00\x02\x00"


def test_unknown_requested_output_is_a_client_error() -> None:
    a = Tensor.from_array("a", np.array([1], dtype=np.int32))
    with pytest.raises(InvalidInput, match="output 'zz' was requested"):
        encode_infer_response(response_of(a), [RequestedOutput("zz")])


def test_output_shape_must_match_its_data() -> None:
    bad = Tensor(name="y", datatype="FP32", shape=(3,), data=np.zeros(4, np.float32))
    with pytest.raises(InternalError, match="4 elements do not match shape"):
        encode_infer_response(response_of(bad), [])


def test_output_data_is_cast_to_its_datatype() -> None:
    out = Tensor(name="y", datatype="FP32", shape=(2,), data=np.array([0.1, 2.0]))
    body, headers = encode_infer_response(response_of(out), [RequestedOutput("y", True)])
    length = int(headers["Inference-Header-Content-Length"])
    assert body[length:] == np.array([0.1, 2.0], "<f4").tobytes()


def test_encode_error_body() -> None:
    assert orjson.loads(encode_error('bad "x"')) == {"error": 'bad "x"'}


def test_large_nested_batch_round_trips() -> None:
    batch = np.random.default_rng(0).random((64, 28, 28), dtype=np.float32)
    body = body_of(inp(shape=batch.shape, data=batch.tolist()))
    [tensor] = decode(body).inputs
    np.testing.assert_array_equal(tensor.data, batch)
    out, _ = encode_infer_response(response_of(Tensor.from_array("y", tensor.data)), [])
    assert math.isclose(
        sum(orjson.loads(out)["outputs"][0]["data"]), float(batch.sum()), rel_tol=1e-5
    )
