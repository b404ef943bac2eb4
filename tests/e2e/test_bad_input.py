"""Rows A-E of the bad-input matrix: status, body, and a good request still answered after."""

from __future__ import annotations

import base64
import io
import json
import struct

import pytest
from PIL import Image

from tests.e2e.conftest import EXAMPLE
from tests.e2e.server import RunningServer

GOOD_V2 = (EXAMPLE / "requests" / "v2" / "mnist_v2_tensor.json").read_bytes()
LEAKS = ("Traceback", 'File "', "/tmp/", "site-packages", "marserve.")


def v2(inputs: object, **extra: object) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def tensor(shape: object, data: object, datatype: str = "FP32", name: str = "input-0") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


V2_CASES = {
    "A1 truncated json": (b'{"inputs": [', 400, "nrecognized request format"),
    "A1 trailing garbage": (GOOD_V2 + b"}}", 400, "nrecognized request format"),
    "A1 empty body": (b"", 400, ""),
    "A2 list": (b"[]", 400, "object"),
    "A2 string": (b'"x"', 400, "object"),
    "A2 null": (b"null", 400, "object"),
    "A3 no inputs": (b"{}", 400, "inputs"),
    "A3 no datatype": (v2([{"name": "a", "shape": [1], "data": [1]}]), 400, "datatype"),
    "A3 no shape": (v2([{"name": "a", "datatype": "FP32", "data": [1]}]), 400, "shape"),
    "A3 no name": (v2([{"shape": [1], "datatype": "FP32", "data": [1]}]), 400, "name"),
    "A4 unknown datatype": (v2([tensor([1], [1], "FP65")]), 400, "FP65"),
    "A4 lower-case datatype": (v2([tensor([1], [1], "fp32")]), 400, "fp32"),
    "A4 strings for FP32": (v2([tensor([2], ["a", "b"])]), 400, ""),
    "A4 300 for INT8": (v2([tensor([1], [300], "INT8")]), 400, "INT8"),
    "A4 -1 for UINT32": (v2([tensor([1], [-1], "UINT32")]), 400, "UINT32"),
    "A5 too few elements": (v2([tensor([2, 2], [1, 2, 3])]), 400, "4"),
    "A5 ragged": (v2([tensor([2, 2], [[1, 2], [3]])]), 400, ""),
    "A6 negative dim": (v2([tensor([2, -5], [1])]), 400, "shape"),
    "A6 float dim": (v2([tensor([1.5], [1])]), 400, "shape"),
    "A7 overflow": (v2([tensor([16, 2**60 + 2], [1])]), 400, ""),
    "A8 wrong shape for the model": (v2([tensor([1, 27, 28], [[[0.0] * 28] * 27])]), 400, ""),
    "A9 deep nesting": (b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "depth"),
    "A10 duplicate input names": (v2([tensor([1], [1.0]), tensor([1], [2.0])]), 400, "input-0"),
    "A12 invalid utf-8": (b'{"inputs": "\xff\xfe"}', 400, ""),
}


def assert_error(response, status: int, fragment: str, kserve: bool = True) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    if kserve:
        assert list(body) == ["error"]
        message = body["error"]
    else:
        assert set(body) == {"code", "type", "message"}
        assert body["code"] == status
        message = body["message"]
    assert fragment in message
    for leak in LEAKS:
        assert leak not in message


def assert_still_serving(server: RunningServer) -> None:
    response = server.client.post("/v2/models/mnist/infer", content=GOOD_V2)
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [0]


@pytest.mark.parametrize("case", sorted(V2_CASES))
def test_v2_bad_requests(mnist_server: RunningServer, case: str) -> None:
    body, status, fragment = V2_CASES[case]
    response = mnist_server.client.post("/v2/models/mnist/infer", content=body)
    assert_error(response, status, fragment)
    assert_still_serving(mnist_server)


V1_CASES = {
    "A1 malformed": (b'{"instances": [', 400, "nrecognized request format"),
    "A2 wrong type": (b"[1, 2]", 400, "object"),
    "A3 no instances": (b'{"x": 1}', 400, "instances"),
    "D1 bad base64": (b'{"instances": [{"data": "aGVs!!bG8="}]}', 400, ""),
    "D1 empty base64": (b'{"instances": [{"data": "@@@@"}]}', 400, ""),
    "D2 not an image": (
        json.dumps({"instances": [{"data": base64.b64encode(b"hello world").decode()}]}).encode(),
        400,
        "image",
    ),
}


@pytest.mark.parametrize("case", sorted(V1_CASES))
def test_v1_bad_requests(mnist_server: RunningServer, case: str) -> None:
    body, status, fragment = V1_CASES[case]
    response = mnist_server.client.post("/v1/models/mnist:predict", content=body)
    assert_error(response, status, fragment)
    assert_still_serving(mnist_server)


def _bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (12000, 12000)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"not an image at all", "application/octet-stream", 400),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png", 400),
        (_bomb_png(), "image/png", 400),
        (b"\x80\x04K\x01.", "application/x-python-pickle", 415),
        (b'{"data": ', "application/json", 400),
    ],
    ids=["D2 text", "D2 truncated png", "D3 bomb", "A13 pickle", "A1 json"],
)
def test_predictions_bad_bodies(
    mnist_server: RunningServer, body: bytes, content_type: str, status: int
) -> None:
    response = mnist_server.client.post(
        "/predictions/mnist", content=body, headers={"content-type": content_type}
    )
    assert_error(response, status, "", kserve=False)
    assert_still_serving(mnist_server)


def test_binary_extension_errors(mnist_server: RunningServer) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [1, 28, 28],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 3136},
                }
            ]
        }
    ).encode()
    payload = header + b"\x00" * 3136
    octet = {"content-type": "application/octet-stream"}
    cases = [
        ({}, payload, "header"),  # C1: no Inference-Header-Content-Length
        ({"inference-header-content-length": "abc"}, payload, ""),  # C2
        ({"inference-header-content-length": "-1"}, payload, ""),
        ({"inference-header-content-length": "99999999999"}, payload, ""),
        ({"inference-header-content-length": str(len(header))}, payload[:-4], ""),  # C3 short
        ({"inference-header-content-length": str(len(header))}, payload + b"junk", ""),  # C3
    ]
    for headers, body, fragment in cases:
        response = mnist_server.client.post(
            "/v2/models/mnist/infer", content=body, headers={**octet, **headers}
        )
        assert_error(response, 400, fragment)
    good = mnist_server.client.post(
        "/v2/models/mnist/infer",
        content=payload,
        headers={**octet, "inference-header-content-length": str(len(header))},
    )
    assert good.status_code == 200, good.text
    assert_still_serving(mnist_server)


def test_bytes_tensor_with_bad_length_prefix(mnist_server: RunningServer) -> None:
    element = struct.pack("<I", 100) + b"short"
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(element)},
                }
            ]
        }
    ).encode()
    response = mnist_server.client.post(
        "/v2/models/mnist/infer",
        content=header + element,
        headers={"inference-header-content-length": str(len(header))},
    )
    assert_error(response, 400, "")


def test_body_over_max_request_size_is_413(mnist_server: RunningServer) -> None:
    response = mnist_server.client.post("/predictions/mnist", content=b"\x00" * 6_553_501)
    assert_error(response, 413, "max_request_size", kserve=False)
    response = mnist_server.client.post("/v2/models/mnist/infer", content=b" " * 6_553_501)
    assert_error(response, 413, "max_request_size")
    assert_still_serving(mnist_server)


def test_body_just_under_the_limit_is_served(mnist_server: RunningServer) -> None:
    padding = 6_553_500 - len(GOOD_V2)
    response = mnist_server.client.post("/v2/models/mnist/infer", content=GOOD_V2 + b" " * padding)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("method", "path", "status", "kserve"),
    [
        ("POST", "/v2/models/nope/infer", 404, True),
        ("POST", "/v2/models/mnist/versions/9.9/infer", 404, True),
        ("POST", "/v1/models/nope:predict", 404, True),
        ("POST", "/v1/models/mnist:frobnicate", 404, True),
        ("POST", "/predictions/nope", 404, False),
        ("POST", "/predictions/mnist/9.9", 404, False),
        ("POST", "/predictions/..%2f..%2fetc", 404, False),
        ("GET", "/v2/models/mnist/infer", 405, True),
        ("DELETE", "/predictions/mnist", 405, False),
        ("GET", "/no/such/path", 404, False),
    ],
)
def test_routing_errors(
    mnist_server: RunningServer, method: str, path: str, status: int, kserve: bool
) -> None:
    response = mnist_server.client.request(method, path, content=GOOD_V2)
    assert_error(response, status, "", kserve=kserve)
    assert_still_serving(mnist_server)


def test_unknown_model_message_names_the_model(mnist_server: RunningServer) -> None:
    response = mnist_server.client.post("/v2/models/nope/infer", content=GOOD_V2)
    assert "nope" in response.json()["error"]
