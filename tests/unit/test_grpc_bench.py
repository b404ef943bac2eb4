"""The benchmark's gRPC rows: the raw-contents payload and the gRPC load generator, driven
against a small in-process gRPC server (one method answers, one always fails)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import grpc_load, harness, payloads  # noqa: E402
from bench.servers import ManagedServer, Ports  # noqa: E402

from marserve.grpc.protos import grpc_predict_v2_pb2 as pb  # noqa: E402

ECHO = "/test.Bench/Echo"
FAIL = "/test.Bench/Fail"


def _echo(request: bytes, context: Any) -> bytes:
    return b"ok:" + request[:8]


def _fail(request: bytes, context: Any) -> bytes:
    context.abort(grpc.StatusCode.UNAVAILABLE, "queue full")
    raise AssertionError("abort returns only by raising")


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    server = grpc.server(ThreadPoolExecutor(4))
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Fail": grpc.unary_unary_rpc_method_handler(_fail),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Bench", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_grpc_raw_payload_is_the_seeds_tensor_as_raw_contents(tmp_path: Path) -> None:
    values = [0.0, 0.5, 1.0, -2.0]
    v2 = {"inputs": [{"name": "input-0", "shape": [1, 2, 2], "datatype": "FP32", "data": values}]}
    body = payloads.grpc_raw_body(json.dumps(v2).encode(), "mnist")
    message = pb.ModelInferRequest.FromString(body)
    assert message.model_name == "mnist"
    (tensor,) = message.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("input-0", "FP32", [1, 2, 2])
    assert not tensor.HasField("contents")
    assert np.frombuffer(message.raw_input_contents[0], "<f4").tolist() == values


def test_grpc_raw_is_a_marserve_row() -> None:
    assert "grpc-raw" in harness.ROWS
    assert ("grpc-raw", 8) in harness.points(harness.Plan(), "marserve")
    assert all(row != "grpc-raw" for row, _ in harness.points(harness.Plan(), "torchserve"))


def test_probe_reports_success_and_failure(target: str) -> None:
    assert grpc_load.probe(target, ECHO, b"hello") == (True, repr(b"ok:hello"))
    assert grpc_load.probe(target, FAIL, b"x") == (False, "UNAVAILABLE: queue full")


def test_load_counts_answers_and_failures(target: str, tmp_path: Path) -> None:
    body = tmp_path / "body.bin"
    body.write_bytes(b"payload!")
    good = grpc_load.run_load(target, ECHO, body, concurrency=4, seconds=1.0)
    assert good.requests > 10 and good.errors == 0
    assert good.bytes == good.requests * len(b"ok:payload!")
    assert 0 < good.p50_us <= good.p99_us <= good.max_us
    assert 0.9e6 < good.duration_us < 3e6
    bad = grpc_load.run_load(target, FAIL, body, concurrency=2, seconds=0.5)
    assert bad.requests > 0 and bad.status_errors == bad.requests and bad.ok_per_s == 0


def test_the_harness_runs_grpc_rows_through_the_load_generator(target: str, tmp_path: Path) -> None:
    port = int(target.rsplit(":", 1)[1])
    server = ManagedServer(tmp_path / "run", Ports(1, 2, 3, port, 4))
    payload = payloads.Payload("grpc-raw", ECHO, b"tensor")
    run, sample = harness.load_runner(server, payload, tmp_path)
    assert run is not None and sample == repr(b"ok:tensor")
    result = run(2, 0.5)
    assert result.requests > 0 and result.errors == 0
    refused, reason = harness.load_runner(server, payloads.Payload("grpc-raw", FAIL, b""), tmp_path)
    assert refused is None and reason == "gRPC UNAVAILABLE: queue full"
