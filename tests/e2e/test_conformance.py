"""One conformance suite, four transports: the same Open Inference Protocol (v2) requests and the
same assertions (shapes, datatypes, values, ids, error codes) over REST with JSON data, REST with
the binary tensor extension, gRPC with typed contents and gRPC with raw contents.

Each transport encodes the abstract request its own way (BYTES elements travel as base64 text in
REST JSON, as KServe's samples do, and as bytes elsewhere) and decodes the answer into the same
shape. An error is compared through the one status table: REST must answer the HTTP status,
gRPC the code the table gives that status.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from tritonclient.grpc import service_pb2, service_pb2_grpc

from marserve import __version__
from marserve.status import grpc_for_http
from tests.e2e.conftest import EXAMPLE
from tests.e2e.server import RunningServer

REQUESTS = EXAMPLE / "requests" / "v2"
TENSOR_ID = "d3b15cad-50a2-4eaf-80ce-8b0a428bd298"
DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4"}
TYPED_FIELDS = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT64": "int64_contents",
    "INT32": "int_contents",
    "BYTES": "bytes_contents",
}


@dataclass
class Input:
    name: str
    datatype: str
    shape: list[int]
    values: list[Any]  # flat: numbers, or bytes for BYTES


@dataclass
class Request:
    model: str
    inputs: list[Input]
    version: str = ""
    id: str = ""
    outputs: list[str] = field(default_factory=list)


@dataclass
class Output:
    name: str
    datatype: str
    shape: list[int]
    values: list[Any]


@dataclass
class Answer:
    model_name: str
    model_version: str
    id: str
    outputs: list[Output]


class Refused(Exception):
    def __init__(self, code: Any, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def raw_bytes(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(len(v).to_bytes(4, "little") + v for v in values)
    return np.asarray(values, dtype=DTYPES.get(datatype, "<f4")).tobytes()  # unknown: as FP32


def from_raw(datatype: str, data: bytes) -> list[Any]:
    if datatype != "BYTES":
        return np.frombuffer(data, dtype=DTYPES[datatype]).tolist()  # type: ignore[no-any-return]
    items, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "little")
        items.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return items


# transports --------------------------------------------------------------------------------------
class Rest:
    def __init__(self, server: RunningServer, binary: bool) -> None:
        self.client = server.client
        self.binary = binary

    def _get(self, path: str) -> Any:
        response = self.client.get(path)
        if response.status_code >= 400:
            raise Refused(response.status_code, response.json()["error"])
        return response.json()

    def live(self) -> bool:
        return bool(self._get("/v2/health/live")["live"])

    def ready(self) -> bool:
        return bool(self._get("/v2/health/ready")["ready"])

    def _model(self, name: str, version: str) -> str:
        return f"/v2/models/{name}" + (f"/versions/{version}" if version else "")

    def model_ready(self, name: str, version: str = "") -> bool:
        return bool(self._get(self._model(name, version) + "/ready")["ready"])

    def server_metadata(self) -> dict[str, Any]:
        return self._get("/v2")  # type: ignore[no-any-return]

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        return self._get(self._model(name, version))  # type: ignore[no-any-return]

    def _body(self, request: Request) -> tuple[bytes, dict[str, str]]:
        doc: dict[str, Any] = {"inputs": []}
        if request.id:
            doc["id"] = request.id
        chunks = []
        for item in request.inputs:
            entry: dict[str, Any] = {"name": item.name, "datatype": item.datatype}
            entry["shape"] = item.shape
            if self.binary:
                chunks.append(raw_bytes(item.datatype, item.values))
                entry["parameters"] = {"binary_data_size": len(chunks[-1])}
            elif item.datatype == "BYTES":
                entry["data"] = [base64.b64encode(v).decode() for v in item.values]
            else:
                entry["data"] = item.values
            doc["inputs"].append(entry)
        if request.outputs:
            doc["outputs"] = [
                {"name": name, "parameters": {"binary_data": self.binary}}
                for name in request.outputs
            ]
        elif self.binary:
            doc["parameters"] = {"binary_data_output": True}
        header = json.dumps(doc).encode()
        if not self.binary:
            return header, {"Content-Type": "application/json"}
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        }
        return header + b"".join(chunks), headers

    def infer(self, request: Request) -> Answer:
        body, headers = self._body(request)
        response = self.client.post(
            self._model(request.model, request.version) + "/infer", content=body, headers=headers
        )
        if response.status_code >= 400:
            raise Refused(response.status_code, response.json()["error"])
        length = response.headers.get("inference-header-content-length")
        header = response.content if length is None else response.content[: int(length)]
        binary = b"" if length is None else response.content[int(length) :]
        doc = json.loads(header)
        outputs, offset = [], 0
        for out in doc["outputs"]:
            size = out.get("parameters", {}).get("binary_data_size")
            if size is None:
                values = out["data"]
                if out["datatype"] == "BYTES":
                    values = [v.encode() for v in values]
            else:
                values = from_raw(out["datatype"], binary[offset : offset + size])
                offset += size
            outputs.append(Output(out["name"], out["datatype"], out["shape"], values))
        return Answer(doc["model_name"], doc.get("model_version", ""), doc.get("id", ""), outputs)

    def matches(self, refused: Refused, http_status: int) -> bool:
        return bool(refused.code == http_status)


class Grpc:
    def __init__(self, server: RunningServer, raw: bool) -> None:
        self.channel = grpc.insecure_channel(server.grpc_target())
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.raw = raw

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(request)
        except grpc.RpcError as error:
            raise Refused(error.code(), error.details()) from None

    def live(self) -> bool:
        return bool(self._call("ServerLive", service_pb2.ServerLiveRequest()).live)

    def ready(self) -> bool:
        return bool(self._call("ServerReady", service_pb2.ServerReadyRequest()).ready)

    def model_ready(self, name: str, version: str = "") -> bool:
        request = service_pb2.ModelReadyRequest(name=name, version=version)
        return bool(self._call("ModelReady", request).ready)

    def server_metadata(self) -> dict[str, Any]:
        response = self._call("ServerMetadata", service_pb2.ServerMetadataRequest())
        return json_format.MessageToDict(response, preserving_proto_field_name=True)

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        request = service_pb2.ModelMetadataRequest(name=name, version=version)
        doc = json_format.MessageToDict(
            self._call("ModelMetadata", request), preserving_proto_field_name=True
        )
        for tensor in doc.get("inputs", []) + doc.get("outputs", []):
            tensor["shape"] = [int(d) for d in tensor["shape"]]  # int64 is text in proto JSON
        return doc

    def infer(self, request: Request) -> Answer:
        message = service_pb2.ModelInferRequest(
            model_name=request.model, model_version=request.version, id=request.id
        )
        for item in request.inputs:
            tensor = message.inputs.add(name=item.name, datatype=item.datatype, shape=item.shape)
            if self.raw:
                message.raw_input_contents.append(raw_bytes(item.datatype, item.values))
            else:
                typed = TYPED_FIELDS.get(item.datatype, "fp32_contents")  # unknown: as FP32
                getattr(tensor.contents, typed).extend(item.values)
        for name in request.outputs:
            message.outputs.add(name=name)
        response = self._call("ModelInfer", message)
        outputs = []
        for index, out in enumerate(response.outputs):
            if response.raw_output_contents:
                assert self.raw, "typed requests get typed answers"
                values = from_raw(out.datatype, response.raw_output_contents[index])
            else:
                values = list(getattr(out.contents, TYPED_FIELDS[out.datatype]))
            outputs.append(Output(out.name, out.datatype, list(out.shape), values))
        return Answer(response.model_name, response.model_version, response.id, outputs)

    def matches(self, refused: Refused, http_status: int) -> bool:
        return bool(refused.code.value[0] == int(grpc_for_http(http_status)))


TRANSPORTS = ["rest-json", "rest-binary", "grpc-typed", "grpc-raw"]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest, mnist_server: RunningServer) -> Iterator[Any]:
    kind = request.param
    if kind.startswith("rest"):
        yield Rest(mnist_server, binary=kind == "rest-binary")
        return
    opened = Grpc(mnist_server, raw=kind == "grpc-raw")
    yield opened
    opened.channel.close()


def refused(transport: Any, request: Request) -> Refused:
    with pytest.raises(Refused) as caught:
        transport.infer(request)
    return caught.value


# requests ----------------------------------------------------------------------------------------
def png(digit: int) -> bytes:
    return (EXAMPLE / "test_data" / f"{digit}.png").read_bytes()


def seed_tensor() -> list[float]:
    document = json.loads((REQUESTS / "mnist_v2_tensor.json").read_text())
    return [float(v) for v in np.asarray(document["inputs"][0]["data"], dtype=np.float32).ravel()]


def image_request(*digits: int, model: str = "mnist", **fields: Any) -> Request:
    images = Input("input-0", "BYTES", [len(digits)], [png(d) for d in digits])
    return Request(model, [images], **fields)


# health and metadata -----------------------------------------------------------------------------
def test_health(transport: Any) -> None:
    assert transport.live() is True
    assert transport.ready() is True
    assert transport.model_ready("mnist") is True
    assert transport.model_ready("mnist", "1.0") is True
    for name, version in (("nope", ""), ("mnist", "9.9")):
        with pytest.raises(Refused) as caught:
            transport.model_ready(name, version)
        assert transport.matches(caught.value, 404)


def test_metadata(transport: Any) -> None:
    assert transport.server_metadata() == {
        "name": "marserve",
        "version": __version__,
        "extensions": ["binary_tensor_data", "model_repository"],
    }
    # the archive declares no signature: metadata reports what a prediction took and returned
    tensor = Input("input-0", "FP32", [1, 28, 28], seed_tensor())
    transport.infer(Request("mnist", [tensor]))
    expected = {
        "name": "mnist",
        "versions": ["1.0"],
        "platform": "pytorch",
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 28, 28]}],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
    }
    assert transport.model_metadata("mnist") == expected
    assert transport.model_metadata("mnist", "1.0") == expected
    with pytest.raises(Refused) as caught:
        transport.model_metadata("nope")
    assert transport.matches(caught.value, 404)


# inference ---------------------------------------------------------------------------------------
def test_the_seeds_tensor_is_a_zero_and_keeps_its_id(transport: Any) -> None:
    tensor = Input("input-0", "FP32", [1, 28, 28], seed_tensor())
    answer = transport.infer(Request("mnist", [tensor], id=TENSOR_ID))
    assert answer == Answer("mnist", "1.0", TENSOR_ID, [Output("predict", "INT64", [1], [0])])


def test_the_seeds_image_is_a_zero(transport: Any) -> None:
    document = json.loads((REQUESTS / "mnist_v2_bytes.json").read_text())
    image = base64.b64decode(document["inputs"][0]["data"][0])
    answer = transport.infer(Request("mnist", [Input("input-0", "BYTES", [-1], [image])]))
    assert answer.outputs == [Output("predict", "INT64", [1], [0])]
    assert answer.id  # none was sent: the server makes one


def test_a_batch_answers_each_element_in_order(transport: Any) -> None:
    answer = transport.infer(image_request(2, 7, 1, 8, version="1.0", outputs=["predict"]))
    assert answer.model_version == "1.0"
    assert answer.outputs == [Output("predict", "INT64", [4], [2, 7, 1, 8])]


def test_ids_are_echoed_or_made(transport: Any) -> None:
    assert transport.infer(image_request(5, id="my-request")).id == "my-request"
    first, second = transport.infer(image_request(5)).id, transport.infer(image_request(5)).id
    assert first and second and first != second


@pytest.mark.parametrize(
    ("request_", "status", "words"),
    [
        (image_request(1, model="nope"), 404, "nope"),
        (image_request(1, version="9.9"), 404, "9.9"),
        (Request("mnist", [Input("input-0", "FP32", [1, 28, 28], [0.0] * 10)]), 400, "input-0"),
        (Request("mnist", [Input("input-0", "INT32", [2, -1], [1, 2, 3])]), 400, "input-0"),
        (
            Request("mnist", [Input("x", "FP32", [1], [1.0]), Input("x", "FP32", [1], [1.0])]),
            400,
            "x",
        ),
        (image_request(1, outputs=["probabilities"]), 400, "probabilities"),
    ],
)
def test_errors(transport: Any, request_: Request, status: int, words: str) -> None:
    error = refused(transport, request_)
    assert transport.matches(error, status), error
    assert words in error.message


def test_an_unknown_datatype_is_invalid(transport: Any) -> None:
    error = refused(transport, Request("mnist", [Input("input-0", "FLOAT32", [1], [1.0])]))
    assert transport.matches(error, 400)
    assert "invalid datatype 'FLOAT32'" in error.message
