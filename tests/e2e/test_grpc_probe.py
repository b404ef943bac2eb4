"""gRPC against a probe handler that chooses its own behaviour: what handlers receive, every
error status, message limits, a full queue and a timeout, over KServe v2 and TorchServe calls."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from marserve.grpc.protos import inference_pb2, inference_pb2_grpc
from tests.e2e.conftest import ARCHIVER, run
from tests.e2e.server import RunningServer, snapshot, start_server, write_config

MAX_REQUEST = 200_000
MAX_RESPONSE = 300_000
RESPONSE_TIMEOUT_S = 2
QUEUE = 2
HANDLER = '''
"""Answers one JSON command per row (bytes or text): sleep, set a status, raise, echo, pad."""
import json
import time

from ts.utils.util import PredictionException


def _command(value):
    if isinstance(value, (bytes, bytearray)):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def handle(data, context):
    if data is None:
        return None
    answers = []
    for index, row in enumerate(data):
        value = row.get("data", row.get("body"))
        command = _command(value)
        if command.get("sleep"):
            time.sleep(float(command["sleep"]))
        if command.get("status"):
            context.set_response_status(int(command["status"]), "the probe chose this", index)
        if command.get("refuse"):
            raise PredictionException("the probe refuses this input", int(command["refuse"]))
        answers.append(
            {
                "type": type(value).__name__,
                "header": context.get_request_header(index, "x-probe"),
                "echo": command.get("echo"),
                "pad": "x" * int(command.get("pad", 0)),
            }
        )
    return answers
'''


def build_probe_store(tmp: Path) -> Path:
    """A model store holding probe.mar (HANDLER), made by the real torch-model-archiver."""
    (tmp / "grpc_probe.py").write_text(HANDLER)
    (tmp / "empty.bin").write_bytes(b"")
    store = tmp / "store"
    store.mkdir()
    run(ARCHIVER, "--model-name", "probe", "--version", "1.0", "--serialized-file",
        tmp / "empty.bin", "--handler", tmp / "grpc_probe.py", "--export-path", store)  # fmt: skip
    return store


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("grpc-probe")
    store = build_probe_store(tmp)
    config = write_config(
        tmp / "config.properties",
        max_request_size=MAX_REQUEST,
        max_response_size=MAX_RESPONSE,
        job_queue_size=QUEUE,
        model_snapshot=snapshot(
            {"name": "probe", "marName": "probe.mar", "responseTimeout": RESPONSE_TIMEOUT_S}
        ),
    )
    server = start_server(tmp, store, config)
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def channel(probe: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(probe.grpc_target()) as opened:
        yield opened


@pytest.fixture(scope="module")
def v2(channel: grpc.Channel) -> service_pb2_grpc.GRPCInferenceServiceStub:
    return service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def ts(channel: grpc.Channel) -> inference_pb2_grpc.InferenceAPIsServiceStub:
    return inference_pb2_grpc.InferenceAPIsServiceStub(channel)


def v2_request(*commands: dict[str, Any], raw: bool = False) -> service_pb2.ModelInferRequest:
    """One BYTES input with one JSON command per element, typed or raw."""
    request = service_pb2.ModelInferRequest(model_name="probe")
    tensor = request.inputs.add(name="command", datatype="BYTES", shape=[len(commands)])
    encoded = [json.dumps(c).encode() for c in commands]
    if raw:
        request.raw_input_contents.append(
            b"".join(len(e).to_bytes(4, "little") + e for e in encoded)
        )
    else:
        tensor.contents.bytes_contents.extend(encoded)
    return request


def v2_answers(response: service_pb2.ModelInferResponse) -> list[dict[str, Any]]:
    (output,) = response.outputs
    assert output.datatype == "BYTES"
    return [json.loads(item) for item in output.contents.bytes_contents]


def ts_request(command: dict[str, Any]) -> inference_pb2.PredictionsRequest:
    return inference_pb2.PredictionsRequest(
        model_name="probe", input={"data": json.dumps(command).encode()}
    )


# what handlers receive ---------------------------------------------------------------------------
def test_typed_bytes_reach_the_handler_as_text_raw_bytes_as_bytes(
    v2: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    typed = v2_answers(v2.ModelInfer(v2_request({"echo": 1}, {"echo": 2})))
    assert [(a["type"], a["echo"]) for a in typed] == [("str", 1), ("str", 2)]
    response = v2.ModelInfer(v2_request({"echo": 3}, raw=True))
    (raw_output,) = response.raw_output_contents
    length = int.from_bytes(raw_output[:4], "little")
    assert json.loads(raw_output[4 : 4 + length])["type"] == "bytes"


def test_torchserve_inputs_reach_the_handler_as_bytes(
    ts: inference_pb2_grpc.InferenceAPIsServiceStub,
) -> None:
    answer = json.loads(ts.Predictions(ts_request({"echo": "hi"})).prediction)
    assert (answer["type"], answer["echo"]) == ("bytes", "hi")


def test_metadata_reaches_the_handler_as_headers(
    v2: service_pb2_grpc.GRPCInferenceServiceStub, ts: inference_pb2_grpc.InferenceAPIsServiceStub
) -> None:
    metadata = (("x-probe", "hello"),)
    assert v2_answers(v2.ModelInfer(v2_request({}), metadata=metadata))[0]["header"] == "hello"
    answer = json.loads(ts.Predictions(ts_request({}), metadata=metadata).prediction)
    assert answer["header"] == "hello"


# errors ------------------------------------------------------------------------------------------
STATUSES = [
    (400, grpc.StatusCode.INVALID_ARGUMENT),
    (401, grpc.StatusCode.UNAUTHENTICATED),
    (403, grpc.StatusCode.PERMISSION_DENIED),
    (404, grpc.StatusCode.NOT_FOUND),
    (413, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (422, grpc.StatusCode.INVALID_ARGUMENT),
    (500, grpc.StatusCode.INTERNAL),
    (502, grpc.StatusCode.INTERNAL),
    (503, grpc.StatusCode.UNAVAILABLE),
    (504, grpc.StatusCode.DEADLINE_EXCEEDED),
]


@pytest.mark.parametrize(("http_status", "code"), STATUSES)
def test_handler_statuses_become_grpc_codes(
    v2: service_pb2_grpc.GRPCInferenceServiceStub,
    ts: inference_pb2_grpc.InferenceAPIsServiceStub,
    http_status: int,
    code: grpc.StatusCode,
) -> None:
    for call, request in (
        (v2.ModelInfer, v2_request({"status": http_status})),
        (ts.Predictions, ts_request({"status": http_status})),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call(request)
        assert caught.value.code() is code
        assert caught.value.details() == "the probe chose this"


def test_prediction_exception_keeps_its_message(
    v2: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        v2.ModelInfer(v2_request({"refuse": 422}))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "the probe refuses this input"


def test_request_and_response_size_limits(
    v2: service_pb2_grpc.GRPCInferenceServiceStub, ts: inference_pb2_grpc.InferenceAPIsServiceStub
) -> None:
    small = MAX_REQUEST // 2
    assert v2_answers(v2.ModelInfer(v2_request({"echo": "x" * small})))[0]["echo"] == "x" * small
    with pytest.raises(grpc.RpcError) as caught:
        v2.ModelInfer(v2_request({"echo": "x" * MAX_REQUEST}))
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (
        len(ts.Predictions(ts_request({"pad": MAX_RESPONSE // 2})).prediction) > MAX_RESPONSE // 2
    )
    with pytest.raises(grpc.RpcError) as caught:
        ts.Predictions(ts_request({"pad": MAX_RESPONSE}))
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_full_queue_is_unavailable_with_retry_after(
    v2: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    """One worker, a queue of two: of six slow requests at once, some are turned away."""
    futures = [v2.ModelInfer.future(v2_request({"sleep": 0.5})) for _ in range(QUEUE + 4)]
    refused = []
    for future in futures:
        try:
            future.result()
        except grpc.RpcError as error:
            refused.append(error)
    assert 0 < len(refused) < QUEUE + 4
    for error in refused:
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert ("retry-after", "1") in tuple(error.trailing_metadata())


def test_tritonclient_sees_the_same_codes(probe: RunningServer) -> None:
    client = tc.InferenceServerClient(probe.grpc_target())
    tensor = tc.InferInput("command", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([json.dumps({"status": 503}).encode()], dtype=np.object_))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("probe", [tensor])
    client.close()
    assert str(caught.value.status()) == "StatusCode.UNAVAILABLE"


def test_a_handler_past_its_response_timeout_is_deadline_exceeded(
    probe: RunningServer, v2: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        v2.ModelInfer(v2_request({"sleep": RESPONSE_TIMEOUT_S + 3}))
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < RESPONSE_TIMEOUT_S + 2.5
    probe.wait_ready()  # the stuck worker is replaced
    assert v2_answers(v2.ModelInfer(v2_request({"echo": "back"})))[0]["echo"] == "back"
