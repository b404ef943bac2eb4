"""The exception a handler raises to answer with a status it chooses (TorchServe's signature)."""

from __future__ import annotations

from marserve.errors import MarserveError, from_http_status


class PredictionException(Exception):
    """Raised by a handler to fail a request with ``error_code`` as its HTTP status.

    Same constructor and attributes as TorchServe's ``ts.utils.util.PredictionException``.
    """

    def __init__(self, message: str, error_code: int = 500) -> None:
        self.message = message
        self.error_code = error_code
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} : {self.error_code}"

    def to_error(self) -> MarserveError:
        """The server-side error carrying this exception's message and exact HTTP status."""
        return from_http_status(self.message, self.error_code)
