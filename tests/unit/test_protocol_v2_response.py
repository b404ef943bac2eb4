"""v2 REST codec, responses: fields, JSON data policy (NaN, BYTES, BF16), binary outputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from marserve.errors import InternalError, InvalidInput
from marserve.protocol import DecodeLimits
from marserve.protocol.v2_json import decode_infer_request, encode_error, encode_infer_response
from marserve.types import InferResponse, RequestedOutput, Tensor


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
    spec = {"name": "x", "shape": list(batch.shape), "datatype": "FP32", "data": batch.tolist()}
    request = decode_infer_request(
        orjson.dumps({"inputs": [spec]}),
        model_name="m",
        model_version=None,
        header_length=None,
        limits=DecodeLimits(),
    )
    [tensor] = request.inputs
    np.testing.assert_array_equal(tensor.data, batch)
    out, _ = encode_infer_response(response_of(Tensor.from_array("y", tensor.data)), [])
    data = orjson.loads(out)["outputs"][0]["data"]
    assert len(data) == batch.size
    np.testing.assert_array_equal(np.asarray(data, dtype=np.float32), batch.reshape(-1))
