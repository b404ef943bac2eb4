"""Requests from ``marserve convert`` are answered right by ``marserve serve`` of MNIST."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.e2e.conftest import EXAMPLE
from tests.e2e.server import RunningServer

DIGITS = [3, 1, 4, 1, 5, 9, 2, 6]
PNGS = [EXAMPLE / "test_data" / f"{digit}.png" for digit in DIGITS]


def convert(tmp_path: Path, *args: str | Path) -> Path:
    """Run the real CLI in a child process and return the request file it wrote."""
    out = tmp_path / f"request-{len(list(tmp_path.iterdir()))}.json"
    command = [sys.executable, "-m", "marserve", "convert", *map(str, args), "-o", str(out)]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return out


def curl(url: str, body: Path) -> object:
    output = subprocess.run(
        ["curl", "-s", "--max-time", "60", url, "-d", f"@{body}"],
        check=True,
        capture_output=True,
    ).stdout
    return json.loads(output)


@pytest.fixture(scope="module")
def v2_stub(mnist_server: RunningServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(mnist_server.grpc_target()) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def test_image_v1_batch_with_curl(mnist_server: RunningServer, tmp_path: Path) -> None:
    body = convert(tmp_path, "image-v1", *PNGS)
    answer = curl(f"{mnist_server.url}/v1/models/mnist:predict", body)
    assert answer == {"predictions": DIGITS}


def test_image_v2_bytes_batch_with_curl(mnist_server: RunningServer, tmp_path: Path) -> None:
    body = convert(tmp_path, "image-v2-bytes", *PNGS, "--id", "bytes-1")
    answer = curl(f"{mnist_server.url}/v2/models/mnist/infer", body)
    assert isinstance(answer, dict) and answer["id"] == "bytes-1"
    assert answer["outputs"] == [
        {"name": "predict", "shape": [len(DIGITS)], "datatype": "INT64", "data": DIGITS}
    ]


def test_image_v2_tensor_batch_with_curl(mnist_server: RunningServer, tmp_path: Path) -> None:
    body = convert(tmp_path, "image-v2-tensor", *PNGS)
    answer = curl(f"{mnist_server.url}/v2/models/mnist/infer", body)
    assert isinstance(answer, dict)
    assert answer["outputs"][0]["data"] == DIGITS


@pytest.mark.parametrize("form", ["image-v2-bytes", "image-v2-tensor"])
def test_grpc_json_forms_over_grpc(
    v2_stub: service_pb2_grpc.GRPCInferenceServiceStub, tmp_path: Path, form: str
) -> None:
    body = convert(tmp_path, form, *PNGS, "--grpc", "--model", "mnist", "--id", form)
    request = json_format.Parse(body.read_text(), service_pb2.ModelInferRequest())
    response = v2_stub.ModelInfer(request, timeout=60)
    assert response.id == form
    (output,) = response.outputs
    assert list(output.contents.int64_contents) == DIGITS
