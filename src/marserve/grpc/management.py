"""TorchServe's ``ManagementAPIsService`` on grpc_management_port, over the ModelManager.

Each call answers ``ManagementResponse.msg`` with the JSON document the REST management API
returns, indented as TorchServe's gRPC frontend does. Protobuf cannot tell an unset number from
0, so 0 means "not given" as in TorchServe (the REST defaults apply); an answer with an HTTP
error status becomes the gRPC status the one status table gives it. Registration and
unregistration obey ``enable_model_api`` exactly as over REST.
"""

from __future__ import annotations

from typing import Any

import grpc

from marserve.errors import InvalidInput, from_http_status
from marserve.grpc.errors import Context, Guard
from marserve.grpc.protos import management_pb2 as pb
from marserve.grpc.services import service_handler
from marserve.management import Answer, ModelManager
from marserve.management_params import Registration
from marserve.protocol.jsonbody import encode_json

SERVICE = pb.DESCRIPTOR.services_by_name["ManagementAPIsService"]


def _given(value: int) -> int | None:
    return value if value != 0 else None


def _required(value: str, name: str) -> str:
    if not value:
        raise InvalidInput(f"Parameter {name} is required")
    return value


def _reply(answer: Answer) -> Any:
    if answer.status >= 400:
        body = answer.body
        message = body.get("status") if isinstance(body, dict) else None
        raise from_http_status(str(message or "Management request failed"), answer.status)
    return pb.ManagementResponse(msg=encode_json(answer.body, indent=True).decode())


def _unsupported(request: pb.RegisterModelRequest) -> list[str]:
    return ["queue_timeout"] if request.queue_timeout else []


class ManagementService:
    """``org.pytorch.serve.grpc.management.ManagementAPIsService``."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    async def describe_model(self, request: pb.DescribeModelRequest, context: Context) -> Any:
        name = _required(request.model_name, "model_name")
        version = request.model_version or None
        if request.customized:
            return _reply(await self.manager.describe_customized(name, version))
        return _reply(self.manager.describe(name, version))

    async def list_models(self, request: pb.ListModelsRequest, context: Context) -> Any:
        limit = None if request.limit == 0 else request.limit
        return _reply(self.manager.list_models(limit, request.next_page_token))

    async def register_model(self, request: pb.RegisterModelRequest, context: Context) -> Any:
        unsupported = _unsupported(request)
        if unsupported:
            raise InvalidInput(f"Unsupported parameter(s): {', '.join(unsupported)}")
        registration = Registration(
            url=_required(request.url, "url"),
            model_name=request.model_name or None,
            handler=request.handler or None,
            runtime=request.runtime or None,
            batch_size=_given(request.batch_size),
            max_batch_delay=_given(request.max_batch_delay),
            initial_workers=_given(request.initial_workers),
            response_timeout=_given(request.response_timeout),
            synchronous=request.synchronous,
            s3_sse_kms=request.s3_sse_kms,
        )
        return _reply(await self.manager.register(registration))

    async def scale_worker(self, request: pb.ScaleWorkerRequest, context: Context) -> Any:
        answer = await self.manager.scale(
            _required(request.model_name, "model_name"),
            request.model_version or None,
            min_worker=_given(request.min_worker),
            max_worker=_given(request.max_worker),
            synchronous=request.synchronous,
        )
        return _reply(answer)

    async def set_default(self, request: pb.SetDefaultRequest, context: Context) -> Any:
        name = _required(request.model_name, "model_name")
        version = _required(request.model_version, "model_version")
        return _reply(self.manager.set_default(name, version))

    async def unregister_model(self, request: pb.UnregisterModelRequest, context: Context) -> Any:
        name = _required(request.model_name, "model_name")
        return _reply(await self.manager.unregister(name, request.model_version or None))

    def handler(self, guard: Guard) -> grpc.GenericRpcHandler:
        return service_handler(
            SERVICE,
            {
                "DescribeModel": self.describe_model,
                "ListModels": self.list_models,
                "RegisterModel": self.register_model,
                "ScaleWorker": self.scale_worker,
                "SetDefault": self.set_default,
                "UnregisterModel": self.unregister_model,
            },
            guard,
        )
