"""The one exception hierarchy: every error the server raises carries an ``ErrorCode``."""

from __future__ import annotations

from marserve.status import ErrorCode, Status, code_for_http, status_of


class MarserveError(Exception):
    """Base of every error that maps to a response. ``message`` is safe to show to a client."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        http_status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        # A handler may pick any HTTP status (TorchServe's PredictionException(msg, code)).
        self._http_status = http_status
        self.headers = headers or {}

    @property
    def status(self) -> Status:
        return status_of(self.code)

    @property
    def http_status(self) -> int:
        return self._http_status if self._http_status is not None else self.status.http


class InvalidInput(MarserveError):
    code = ErrorCode.BAD_REQUEST


class Unauthenticated(MarserveError):
    code = ErrorCode.UNAUTHENTICATED


class Forbidden(MarserveError):
    code = ErrorCode.FORBIDDEN


class NotFound(MarserveError):
    code = ErrorCode.NOT_FOUND


class ModelNotFound(MarserveError):
    code = ErrorCode.MODEL_NOT_FOUND


class MethodNotAllowed(MarserveError):
    code = ErrorCode.METHOD_NOT_ALLOWED


class Conflict(MarserveError):
    code = ErrorCode.CONFLICT


class PayloadTooLarge(MarserveError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(MarserveError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class ServiceUnavailable(MarserveError):
    code = ErrorCode.SERVICE_UNAVAILABLE


class QueueFull(ServiceUnavailable):
    """The model's job queue is full."""


class RequestTimeout(MarserveError):
    code = ErrorCode.TIMEOUT


class InternalError(MarserveError):
    code = ErrorCode.INTERNAL


class ClientClosed(MarserveError):
    """The client went away (mid-body, or before its answer): no response can reach it."""

    code = ErrorCode.CANCELLED


class ArchiveError(InvalidInput):
    """A model archive is malformed or hostile; the message names the archive and member."""


class ConfigError(ValueError):
    """A configuration value is wrong; raised at start-up, never mapped to a response."""


def from_http_status(message: str, http_status: int) -> MarserveError:
    """An error for a status a handler chose, keeping that exact HTTP status."""
    return MarserveError(message, code=code_for_http(http_status), http_status=http_status)
