"""v2 REST codec, JSON requests: the seeds' samples and rows A1-A12 of the bad-input matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from marserve.errors import InvalidInput, MarserveError, PayloadTooLarge
from marserve.protocol import DecodeLimits
from marserve.protocol.v2_json import binary_output_default, decode_infer_request
from marserve.types import InferRequest

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

# fmt: off
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
    ("A3 no name", orjson.dumps({"inputs": [{"shape": [1]}]}), LIMITS, InvalidInput,
     "input 0: missing required field 'name'"),
    ("A3 no shape", body_of({"name": "x", "datatype": "FP32", "data": [1]}), LIMITS,
     InvalidInput, "input 'x': missing required field 'shape'"),
    ("A3 no datatype", body_of({"name": "x", "shape": [1], "data": [1]}), LIMITS,
     InvalidInput, "input 'x': missing required field 'datatype'"),
    ("A3 no data", body_of({"name": "x", "shape": [1], "datatype": "FP32"}), LIMITS,
     InvalidInput, "input 'x': missing required field 'data'"),
    ("A4 FP65", body_of(inp(datatype="FP65")), LIMITS, InvalidInput, "invalid datatype 'FP65'"),
    ("A4 lower case", body_of(inp(datatype="fp32")), LIMITS, InvalidInput, "upper case: 'FP32'"),
    ("A4 strings FP32", body_of(inp(data=["1", "2", "3", "4"])), LIMITS, InvalidInput,
     "expected numbers for FP32, got strings"),
    ("A4 2 for BOOL", body_of(inp(datatype="BOOL", data=[1, 0, 2, 1])), LIMITS, InvalidInput,
     "value out of range for BOOL"),
    ("A4 300 INT8", body_of(inp(datatype="INT8", data=[1, 2, 300, 4])), LIMITS, InvalidInput,
     "value out of range for INT8"),
    ("A4 300 UINT8", body_of(inp(datatype="UINT8", data=[1, 2, 300, 4])), LIMITS, InvalidInput,
     "value out of range for UINT8"),
    ("A4 -1 UINT32", body_of(inp(datatype="UINT32", data=[1, 2, -1, 4])), LIMITS, InvalidInput,
     "value out of range for UINT32"),
    ("A4 float INT64", body_of(inp(datatype="INT64", data=[1, 2, 3.5, 4])), LIMITS,
     InvalidInput, "expected integers for INT64, got floating-point values"),
    ("A4 2**63 INT64", body_of(inp(shape=[1], datatype="INT64", data=[2**63])), LIMITS,
     InvalidInput, "value out of range for INT64"),
    ("A4 2**64 UINT64", body_of(inp(shape=[2], datatype="UINT64", data=[0, 7])).replace(
     b"[0,7]", b"[0,18446744073709551616]"), LIMITS, InvalidInput, "for UINT64"),
    ("A4 null FP32", body_of(inp(data=[1, None, 3, 4])), LIMITS, InvalidInput,
     "invalid value for FP32"),
    ("A4 bool FP32", body_of(inp(data=[True, False, True, False])), LIMITS, InvalidInput,
     "expected numbers for FP32, got booleans"),
    ("A4 number BYTES", body_of(inp(datatype="BYTES", data=["a", 1, "b", "c"])), LIMITS,
     InvalidInput, "BYTES data must be strings"),
    ("A4 BF16 JSON", body_of(inp(datatype="BF16")), LIMITS, InvalidInput,
     "BF16 data must be sent as binary"),
    ("A5 3 for 4", body_of(inp(data=[1, 2, 3])), LIMITS, InvalidInput,
     "input 'x': expected 4 elements, got 3"),
    ("A5 5 for 4", body_of(inp(data=[1, 2, 3, 4, 5])), LIMITS, InvalidInput,
     "expected 4 elements, got 5"),
    ("A5 ragged", body_of(inp(data=[[1, 2], [3]])), LIMITS, InvalidInput, "'data' is ragged"),
    ("A5 ragged mix", body_of(inp(data=[[1, 2], 3, 4])), LIMITS, InvalidInput, "ragged"),
    ("A5 ragged BYTES", body_of(inp(datatype="BYTES", data=[["a", "b"], ["c"]])), LIMITS,
     InvalidInput, "nested lists of equal length"),
    ("A5 data not list", body_of(inp(data=5)), LIMITS, InvalidInput, "'data' must be a list"),
    ("A5 wildcard misfit", body_of(inp(shape=[-1, 3])), LIMITS, InvalidInput,
     "4 elements do not fit shape [-1, 3]"),
    ("A6 negative", body_of(inp(shape=[2, -5])), LIMITS, InvalidInput, "invalid shape [2, -5]"),
    ("A6 float", body_of(inp(shape=[1.5])), LIMITS, InvalidInput, "invalid shape [1.5]"),
    ("A6 string", body_of(inp(shape=["2"])), LIMITS, InvalidInput, "invalid shape ['2']"),
    ("A6 bool", body_of(inp(shape=[True])), LIMITS, InvalidInput, "invalid shape [True]"),
    ("A6 two wildcards", body_of(inp(shape=[-1, -1])), LIMITS, InvalidInput, "invalid shape"),
    ("A6 > 2**63", body_of(inp(shape=[2**63])), LIMITS, InvalidInput, "dimension too large"),
    ("A6 shape not list", body_of(inp(shape=4)), LIMITS, InvalidInput, "'shape' must be a list"),
    ("A6 65 dimensions", body_of(inp(shape=[1] * 65)), LIMITS, InvalidInput, "maximum 64"),
    ("A7 wraps uint64", body_of(inp(shape=[16, BIG])), LIMITS, InvalidInput,
     "element count 18446744073709551648 exceeds maximum"),
    ("A7 byte overflow", body_of(inp(shape=[4, BIG])), LIMITS, InvalidInput,
     "exceeds maximum 67108864"),
    ("A7 decoded size", body_of(inp(shape=[300_000], data=[0] * 4)), SMALL, PayloadTooLarge,
     "decoded size exceeds limit"),
    ("A9 depth 120 data", body_of(inp(shape=[1], data=[0])).replace(
     b"[0]", b"[" * 120 + b"0" + b"]" * 120), LIMITS, InvalidInput,
     "JSON nesting depth exceeds maximum allowed limit (100)"),
    ("A9 250k brackets", b'{"inputs": ' + b"[" * 250_000, LIMITS, InvalidInput,
     "JSON nesting depth exceeds maximum allowed limit (100)"),
    ("A10 duplicate key", b'{"inputs": [], "inputs": ' + body_of(inp())[10:], LIMITS,
     InvalidInput, "duplicate key 'inputs'"),
    ("A10 dup key in input", body_of(inp()).replace(b'"name":"x"', b'"name":"x","name":"y"'),
     LIMITS, InvalidInput, "duplicate key 'name'"),
    ("A10 dup input", body_of(inp(), inp()), LIMITS, InvalidInput, "duplicate input name 'x'"),
    ("A10 dup output", body_of(inp(), outputs=[{"name": "OUTPUT0"}, {"name": "OUTPUT0"}]),
     LIMITS, InvalidInput, "duplicate output name 'OUTPUT0'"),
    ("A10 too many outputs", body_of(inp(), outputs=[{"name": f"o{i}"} for i in range(3)]),
     SMALL, InvalidInput, "too many requested outputs: 3 (maximum 2)"),
    ("A10 too many inputs", body_of(*[inp(f"i{i}") for i in range(3)]),
     DecodeLimits(max_inputs=2), InvalidInput, "too many inputs: 3 (maximum 2)"),
    ("A10 binary_data type", body_of(inp(), outputs=[{"name": "o", "parameters": {
     "binary_data": "yes"}}]), LIMITS, InvalidInput, "'binary_data' must be a boolean"),
    ("A11 NaN", body_of(inp()).replace(b"[1,2,3,4]", b"[1,NaN,3,4]"), LIMITS, InvalidInput,
     "Unrecognized request format"),
    ("A11 Infinity", body_of(inp()).replace(b"[1,2,3,4]", b"[1,Infinity,3,4]"), LIMITS,
     InvalidInput, "Unrecognized request format"),
    ("A11 -Infinity", body_of(inp()).replace(b"[1,2,3,4]", b"[1,-Infinity,3,4]"), LIMITS,
     InvalidInput, "Unrecognized request format"),
    ("A11 1e999", body_of(inp()).replace(b"[1,2,3,4]", b"[1,1e999,3,4]"), LIMITS,
     InvalidInput, "Unrecognized request format"),
    ("A11 FP32 overflow", body_of(inp(data=[1, 3.5e38, 3, 4])), LIMITS, InvalidInput,
     "value out of range for FP32"),
    ("A11 FP16 overflow", body_of(inp(datatype="FP16", data=[1, 70000, 3, 4])), LIMITS,
     InvalidInput, "value out of range for FP16"),
    ("A12 invalid utf-8", body_of(inp(datatype="BYTES", data=["a", "b", "c", "QQ"])).replace(
     b"QQ", b"\xff\xfe"), LIMITS, InvalidInput, "Unrecognized request format"),
    ("A12 lone surrogate", body_of(inp(datatype="BYTES", data=["a", "b", "c", "QQ"])).replace(
     b"QQ", b"\\ud800"), LIMITS, InvalidInput, "Unrecognized request format"),
    ("A12 10 MB string", body_of(inp(shape=[1], datatype="BYTES", data=["x" * 10_000_000])),
     SMALL, PayloadTooLarge, "decoded size exceeds limit"),
    ("A14 parameters type", body_of(inp(), parameters=[1]), LIMITS, InvalidInput,
     "request: 'parameters' must be a JSON object"),
    ("A14 input parameters", body_of(inp(parameters="x")), LIMITS, InvalidInput,
     "input 'x': 'parameters' must be a JSON object"),
    ("id not a string", body_of(inp(), id=5), LIMITS, InvalidInput, "'id' must be a string"),
]
# fmt: on


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
