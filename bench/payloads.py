"""The MNIST example's files and the request bodies each benchmark row sends."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

EXAMPLE_FILES = (
    "mnist.py",
    "mnist_handler.py",
    "mnist_cnn.pt",
    "requests/v1/mnist.json",
    "requests/v2/mnist_v2_tensor.json",
)


GRPC_MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True, slots=True)
class Payload:
    """One request shape: where it goes, its body and its headers."""

    row: str
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def missing_example_files(example_dir: Path) -> list[str]:
    """Files the harness needs that ``example_dir`` lacks (a PNG under test_data/ included)."""
    missing = [name for name in EXAMPLE_FILES if not (example_dir / name).is_file()]
    if not sorted((example_dir / "test_data").glob("*.png")):
        missing.append("test_data/*.png")
    return missing


def wait_for_example(example_dir: Path, timeout_s: float, poll_s: float = 5.0) -> list[str]:
    """Poll until the example is complete or ``timeout_s`` passes; return what is still missing."""
    deadline = time.monotonic() + timeout_s
    missing = missing_example_files(example_dir)
    while missing and time.monotonic() < deadline:
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        missing = missing_example_files(example_dir)
    return missing


def png_path(example_dir: Path) -> Path:
    """The test image every PNG row sends: test_data/0.png, else the first PNG there."""
    preferred = example_dir / "test_data" / "0.png"
    if preferred.is_file():
        return preferred
    return sorted((example_dir / "test_data").glob("*.png"))[0]


def _first_fp32(v2_json: bytes) -> tuple[dict[str, object], list[int], bytes]:
    """The first input of a v2 JSON request, its shape and its raw little-endian FP32 bytes."""
    request = orjson.loads(v2_json)
    first = request["inputs"][0]
    if first.get("datatype") != "FP32":
        raise ValueError(f"expected an FP32 input, got {first.get('datatype')!r}")
    shape = [int(dim) for dim in first["shape"]]
    raw = np.asarray(first["data"], dtype="<f4").reshape(shape).tobytes()
    return first, shape, raw


def binary_tensor_body(v2_json: bytes) -> tuple[bytes, int]:
    """Re-encode the first input of a v2 JSON request with the binary tensor extension.

    Returns the body (JSON header then the raw little-endian FP32 bytes) and the header length
    that goes in ``Inference-Header-Content-Length``.
    """
    first, shape, raw = _first_fp32(v2_json)
    header = {
        "inputs": [
            {
                "name": first["name"],
                "shape": shape,
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    head = orjson.dumps(header)
    return head + raw, len(head)


def grpc_raw_body(v2_json: bytes, model: str) -> bytes:
    """The first input of a v2 JSON request as a serialized gRPC ``ModelInferRequest`` whose
    tensor travels in ``raw_input_contents`` (the gRPC fast path)."""
    from marserve.grpc.protos import grpc_predict_v2_pb2 as pb

    first, shape, raw = _first_fp32(v2_json)
    message = pb.ModelInferRequest(model_name=model)
    message.inputs.add(name=str(first["name"]), datatype="FP32", shape=shape)
    message.raw_input_contents.append(raw)
    return message.SerializeToString()


def build_payloads(example_dir: Path, model: str) -> dict[str, Payload]:
    """Every row's payload, keyed by row name (png, v1, v2-json, v2-binary, grpc-raw).

    gRPC rows carry the method in ``path`` and the serialized request in ``body``.
    """
    v1 = (example_dir / "requests/v1/mnist.json").read_bytes()
    v2 = (example_dir / "requests/v2/mnist_v2_tensor.json").read_bytes()
    binary, head_len = binary_tensor_body(v2)
    json_type = {"Content-Type": "application/json"}
    return {
        "png": Payload(
            "png",
            f"/predictions/{model}",
            png_path(example_dir).read_bytes(),
            {"Content-Type": "image/png"},
        ),
        "v1": Payload("v1", f"/v1/models/{model}:predict", v1, json_type),
        "v2-json": Payload("v2-json", f"/v2/models/{model}/infer", v2, json_type),
        "v2-binary": Payload(
            "v2-binary",
            f"/v2/models/{model}/infer",
            binary,
            {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(head_len),
            },
        ),
        "grpc-raw": Payload("grpc-raw", GRPC_MODEL_INFER, grpc_raw_body(v2, model)),
    }
