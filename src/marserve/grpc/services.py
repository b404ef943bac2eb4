"""Turns a service descriptor and its method implementations into a grpcio handler.

marserve registers its services from the descriptors of the shipped ``*_pb2`` modules instead of
the generated ``*_pb2_grpc`` servicer classes, so the server needs no generated gRPC code (only
clients use it) and each method is wrapped once, at start-up, by the listener's :class:`Guard`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from marserve.grpc.errors import Guard, Streaming, Unary


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def service_handler(
    service: ServiceDescriptor,
    unary: Mapping[str, Unary],
    guard: Guard,
    streaming: Mapping[str, Streaming] | None = None,
) -> grpc.GenericRpcHandler:
    """A handler for ``service`` serving the given methods; others answer UNIMPLEMENTED."""
    streaming = streaming or {}
    known = {method.name for method in service.methods}
    unknown = sorted((set(unary) | set(streaming)) - known)
    if unknown:
        raise ValueError(f"{service.full_name} has no method(s) {', '.join(unknown)}")
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        if method.client_streaming:
            continue
        if method.server_streaming:
            if method.name in unary:
                raise ValueError(f"{service.full_name}.{method.name} streams its responses")
            stream = streaming.get(method.name)
            if stream is not None:
                handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                    guard.streaming(method.name, stream),
                    request_deserializer=request_class.FromString,
                    response_serializer=_serialize,
                )
            continue
        call = unary.get(method.name)
        if call is not None:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                guard.unary(method.name, call),
                request_deserializer=request_class.FromString,
                response_serializer=_serialize,
            )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
