"""Control-plane errors, each carrying its Kubernetes Status reason and HTTP code."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error the API answers as a Kubernetes ``Status`` object."""

    reason = "InternalError"
    code = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.causes: list[dict[str, str]] = []
        self.details: dict[str, str] = {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        causes = list(self.causes)
        if self.field is not None and not causes:
            causes = [{"reason": "FieldValueInvalid", "field": self.field, "message": self.message}]
        if causes or self.details:
            body["details"] = {**self.details, "causes": causes}
        return body


class BadRequest(ApiError):
    reason = "BadRequest"
    code = 400


class NotFound(ApiError):
    reason = "NotFound"
    code = 404


class AlreadyExists(ApiError):
    reason = "AlreadyExists"
    code = 409


class Conflict(ApiError):
    reason = "Conflict"
    code = 409


class Gone(ApiError):
    reason = "Expired"
    code = 410


class Invalid(ApiError):
    reason = "Invalid"
    code = 422


class Unauthorized(ApiError):
    reason = "Unauthorized"
    code = 401


class Forbidden(ApiError):
    reason = "Forbidden"
    code = 403


class MethodNotAllowed(ApiError):
    reason = "MethodNotAllowed"
    code = 405


class NotAcceptable(ApiError):
    reason = "NotAcceptable"
    code = 406


class TooLarge(ApiError):
    reason = "RequestEntityTooLarge"
    code = 413


class UnsupportedMediaType(ApiError):
    reason = "UnsupportedMediaType"
    code = 415


class Rejected(Exception):
    """A request the gateway refuses (admission, routing): the HTTP status and message to send."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
