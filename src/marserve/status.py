"""The only table from an error code to its HTTP status, gRPC status and TorchServe type name."""

from __future__ import annotations

import enum
from typing import NamedTuple


class GrpcCode(enum.IntEnum):
    """gRPC status codes (numbers from the gRPC spec; no grpcio import needed here)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class Status(NamedTuple):
    http: int
    grpc: GrpcCode
    ts_type: str  # the "type" field of TorchServe's error body


class ErrorCode(str, enum.Enum):
    """Every error the server can answer with. The value is a stable machine-readable name."""

    BAD_REQUEST = "bad_request"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    MODEL_NOT_FOUND = "model_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    CANCELLED = "cancelled"
    INTERNAL = "internal"
    NOT_IMPLEMENTED = "not_implemented"
    SERVICE_UNAVAILABLE = "service_unavailable"
    TIMEOUT = "timeout"
    OUT_OF_RESOURCES = "out_of_resources"


STATUS: dict[ErrorCode, Status] = {
    ErrorCode.BAD_REQUEST: Status(400, GrpcCode.INVALID_ARGUMENT, "BadRequestException"),
    ErrorCode.UNAUTHENTICATED: Status(401, GrpcCode.UNAUTHENTICATED, "InvalidKeyException"),
    ErrorCode.FORBIDDEN: Status(403, GrpcCode.PERMISSION_DENIED, "ForbiddenException"),
    ErrorCode.NOT_FOUND: Status(404, GrpcCode.NOT_FOUND, "ResourceNotFoundException"),
    ErrorCode.MODEL_NOT_FOUND: Status(404, GrpcCode.NOT_FOUND, "ModelNotFoundException"),
    ErrorCode.METHOD_NOT_ALLOWED: Status(405, GrpcCode.UNIMPLEMENTED, "MethodNotAllowedException"),
    ErrorCode.CONFLICT: Status(409, GrpcCode.ABORTED, "ConflictStatusException"),
    ErrorCode.PAYLOAD_TOO_LARGE: Status(413, GrpcCode.RESOURCE_EXHAUSTED, "RequestTooLarge"),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: Status(
        415, GrpcCode.INVALID_ARGUMENT, "UnsupportedMediaTypeException"
    ),
    ErrorCode.CANCELLED: Status(499, GrpcCode.CANCELLED, "RequestCancelled"),
    ErrorCode.INTERNAL: Status(500, GrpcCode.INTERNAL, "InternalServerException"),
    ErrorCode.NOT_IMPLEMENTED: Status(501, GrpcCode.UNIMPLEMENTED, "NotImplementedException"),
    ErrorCode.SERVICE_UNAVAILABLE: Status(503, GrpcCode.UNAVAILABLE, "ServiceUnavailableException"),
    ErrorCode.TIMEOUT: Status(504, GrpcCode.DEADLINE_EXCEEDED, "RequestTimeout"),
    ErrorCode.OUT_OF_RESOURCES: Status(507, GrpcCode.RESOURCE_EXHAUSTED, "OutOfResources"),
}

_BY_HTTP: dict[int, ErrorCode] = {}
for _code, _status in STATUS.items():
    _BY_HTTP.setdefault(_status.http, _code)


def status_of(code: ErrorCode) -> Status:
    """The HTTP/gRPC/TorchServe status of an error code."""
    return STATUS[code]


def code_for_http(http_status: int) -> ErrorCode:
    """The error code for an HTTP status a handler chose (``PredictionException(msg, 418)``)."""
    if http_status in _BY_HTTP:
        return _BY_HTTP[http_status]
    return ErrorCode.BAD_REQUEST if 400 <= http_status < 500 else ErrorCode.INTERNAL


def grpc_for_http(http_status: int) -> GrpcCode:
    """The gRPC code for any HTTP status, including ones outside the table."""
    return STATUS[code_for_http(http_status)].grpc
