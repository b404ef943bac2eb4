"""The services on grpc_inference_port: KServe's ``inference.GRPCInferenceService`` and
TorchServe's ``InferenceAPIsService``, thin adapters over the same DataPlane as REST."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import Message

from marserve.dataplane import DataPlane
from marserve.errors import InvalidInput
from marserve.grpc import codec
from marserve.grpc.errors import Context, Guard, headers_of
from marserve.grpc.protos import grpc_predict_v2_pb2 as v2
from marserve.grpc.protos import inference_pb2 as ts
from marserve.grpc.services import service_handler
from marserve.management import ModelManager
from marserve.protocol.jsonbody import encode_json
from marserve.protocol.limits import DecodeLimits
from marserve.protocol.torchserve import encode_prediction_result

V2_SERVICE = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
TS_SERVICE = ts.DESCRIPTOR.services_by_name["InferenceAPIsService"]
# Health probes answer without a token, as REST's /ping and /v2/health/* do.
OPEN_METHODS = frozenset({"Ping", "ServerLive", "ServerReady"})
# The repository extension changes what is loaded: the management key, as over REST.
MANAGEMENT_METHODS = {"RepositoryModelLoad": "management", "RepositoryModelUnload": "management"}
_LENGTH_DELIMITED = 2  # protobuf wire type of strings
# Imported by name: not every types-protobuf release declares this module.
_unknown_fields: Any = importlib.import_module("google.protobuf.unknown_fields")


def _health(healthy: bool) -> str:
    status = "Healthy" if healthy else "Unhealthy"
    return encode_json({"status": status}, indent=True).decode()


def repository_model_name(request: Message) -> str:
    """The model a repository load/unload names, in KServe's layout or in Triton's.

    KServe's messages carry ``model_name`` as field 1; Triton's (what ``tritonclient.grpc``'s
    ``load_model``/``unload_model`` send) carry ``repository_name`` as field 1 and ``model_name``
    as field 2, which KServe's layout sees as an unknown field. A request with no field 1 and a
    text field 2 is read the Triton way, so both clients work.
    """
    name = getattr(request, "model_name", "")
    if name:
        return str(name)
    found = _unknown_fields.UnknownFieldSet(request)
    for index in range(len(found)):
        item = found[index]
        if item.field_number == 2 and item.wire_type == _LENGTH_DELIMITED:
            try:
                return bytes(item.data).decode("utf-8")
            except UnicodeDecodeError:
                break
    return ""


class OpenInferenceService:
    """``inference.GRPCInferenceService`` (KServe's Open Inference Protocol, v2)."""

    def __init__(self, dataplane: DataPlane, manager: ModelManager, limits: DecodeLimits) -> None:
        self.dataplane = dataplane
        self.manager = manager
        self.limits = limits

    async def server_live(self, request: v2.ServerLiveRequest, context: Context) -> Any:
        return v2.ServerLiveResponse(live=self.dataplane.live())

    async def server_ready(self, request: v2.ServerReadyRequest, context: Context) -> Any:
        return v2.ServerReadyResponse(ready=self.dataplane.ready())

    async def model_ready(self, request: v2.ModelReadyRequest, context: Context) -> Any:
        ready = self.dataplane.model_ready(request.name, request.version or None)
        return v2.ModelReadyResponse(ready=ready)

    async def server_metadata(self, request: v2.ServerMetadataRequest, context: Context) -> Any:
        return v2.ServerMetadataResponse(**self.dataplane.server_metadata())

    async def model_metadata(self, request: v2.ModelMetadataRequest, context: Context) -> Any:
        return v2.ModelMetadataResponse(
            **self.dataplane.model_metadata(request.name, request.version or None)
        )

    async def model_infer(self, request: v2.ModelInferRequest, context: Context) -> Any:
        infer_request = codec.decode_infer_request(request, self.limits)
        response = await self.dataplane.infer(infer_request, headers_of(context))
        return codec.encode_infer_response(
            response, infer_request.outputs, raw=codec.wants_raw_outputs(request)
        )

    async def repository_load(
        self, request: v2.RepositoryModelLoadRequest, context: Context
    ) -> Any:
        name = repository_model_name(request)
        await self.manager.repository_load(name)
        return v2.RepositoryModelLoadResponse(model_name=name, isLoaded=True)

    async def repository_unload(
        self, request: v2.RepositoryModelUnloadRequest, context: Context
    ) -> Any:
        name = repository_model_name(request)
        await self.manager.repository_unload(name)
        return v2.RepositoryModelUnloadResponse(model_name=name, isUnloaded=True)

    def handler(self, guard: Guard) -> grpc.GenericRpcHandler:
        return service_handler(
            V2_SERVICE,
            {
                "ServerLive": self.server_live,
                "ServerReady": self.server_ready,
                "ModelReady": self.model_ready,
                "ServerMetadata": self.server_metadata,
                "ModelMetadata": self.model_metadata,
                "ModelInfer": self.model_infer,
                "RepositoryModelLoad": self.repository_load,
                "RepositoryModelUnload": self.repository_unload,
            },
            guard,
        )


class TorchServeInferenceService:
    """TorchServe's ``org.pytorch.serve.grpc.inference.InferenceAPIsService``.

    ``input`` entries reach the handler as ``bytes`` under their names, as TorchServe's gRPC
    frontend passes them (no content type); ``prediction`` is the handler's output encoded as
    ``/predictions`` would send it (bytes as-is, text as UTF-8, anything else as JSON).
    """

    def __init__(self, dataplane: DataPlane, limits: DecodeLimits) -> None:
        self.dataplane = dataplane
        self.limits = limits

    async def ping(self, request: Any, context: Context) -> Any:
        return ts.TorchServeHealthResponse(health=_health(self.dataplane.ready()))

    async def _predict(self, request: ts.PredictionsRequest, context: Context) -> Any:
        if not request.model_name:
            raise InvalidInput("Parameter model_name is required")
        if len(request.input) > self.limits.max_inputs:
            raise InvalidInput(
                f"too many inputs: {len(request.input)} (max {self.limits.max_inputs})"
            )
        result = await self.dataplane.predict_one(
            request.model_name,
            request.model_version or None,
            dict(request.input),
            headers_of(context),
        )
        body, _ = encode_prediction_result(result.value)
        return ts.PredictionResponse(prediction=body)

    async def predictions(self, request: ts.PredictionsRequest, context: Context) -> Any:
        return await self._predict(request, context)

    async def stream_predictions(
        self, request: ts.PredictionsRequest, context: Context
    ) -> AsyncIterator[Any]:
        """A stream of one response: marserve's handlers answer each request once."""
        yield await self._predict(request, context)

    def handler(self, guard: Guard) -> grpc.GenericRpcHandler:
        return service_handler(
            TS_SERVICE,
            {"Ping": self.ping, "Predictions": self.predictions},
            guard,
            streaming={"StreamPredictions": self.stream_predictions},
        )
