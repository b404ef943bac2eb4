"""The one place where gRPC calls meet token authorization, metrics, and exceptions become statuses.

Every method a marserve gRPC service registers is wrapped by :class:`Guard`: it checks the
``authorization`` metadata (``Bearer <key>``) for the listener's scope unless the method is a
health probe, runs the method, and turns a ``MarserveError`` into the status the one status table
gives its HTTP status (400 -> INVALID_ARGUMENT, 404 -> NOT_FOUND, 503 -> UNAVAILABLE, ...). The
error's headers (``Retry-After``, ``WWW-Authenticate``) travel as trailing metadata. Any other
exception is logged and answered INTERNAL without details.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc

from marserve.auth import TokenAuthority
from marserve.errors import MarserveError
from marserve.status import GrpcCode, grpc_for_http

log = logging.getLogger("marserve.grpc")

Context = grpc.aio.ServicerContext[Any, Any]
Unary = Callable[[Any, Context], Awaitable[Any]]
Streaming = Callable[[Any, Context], AsyncIterator[Any]]
Observer = Callable[[str, Any, int, float, "BaseException | None"], None]
CLIENT_CLOSED = 499  # the client cancelled or went away before the answer (nginx's code)

_STATUS_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def grpc_status(code: GrpcCode) -> grpc.StatusCode:
    """grpcio's enum member for a status-table code."""
    return _STATUS_CODES[int(code)]


def status_of(exc: MarserveError) -> grpc.StatusCode:
    """The gRPC status for an error, from its HTTP status through the one status table."""
    return grpc_status(grpc_for_http(exc.http_status))


def metadata_value(context: Context, key: str) -> str | None:
    """The first text value of an invocation metadata key (keys are lower case in gRPC)."""
    for name, value in context.invocation_metadata() or ():
        if name == key and isinstance(value, str):
            return value
    return None


def headers_of(context: Context) -> dict[str, str]:
    """Invocation metadata as request headers for handlers (binary ``-bin`` entries left out)."""
    headers: dict[str, str] = {}
    for name, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            headers.setdefault(name, value)
    return headers


async def abort(context: Context, exc: MarserveError) -> NoReturn:
    """End the call with the error's status, message and headers (as trailing metadata)."""
    trailing = tuple(
        (name.lower(), value) for name, value in exc.headers.items() if value.isascii()
    )
    await context.abort(status_of(exc), exc.message, trailing)


class _Outcome:
    """How one call ended, as an HTTP status for metrics (200 until something else happens)."""

    __slots__ = ("error", "status")

    def __init__(self) -> None:
        self.status = 200
        self.error: BaseException | None = None

    async def fail(self, context: Context, method: str, exc: Exception) -> NoReturn:
        self.error = exc
        if isinstance(exc, MarserveError):
            self.status = exc.http_status
            await abort(context, exc)
        self.status = 500
        log.error("unexpected error in gRPC method %s", method, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, "Internal server error")


@dataclass(frozen=True, slots=True)
class Guard:
    """Token check, error mapping and measurement for the methods of one listener (scope
    ``inference`` or ``management``); ``auth`` is None when token authorization is off.

    ``observe(method, request, http_status, seconds, error)`` is told how every call ended
    (499 when the client went away first), for metrics; its own failures are logged, never sent.
    """

    auth: TokenAuthority | None
    scope: str
    open_methods: frozenset[str] = frozenset()
    method_scopes: Mapping[str, str] = field(default_factory=dict)  # exceptions to ``scope``
    observe: Observer | None = None

    def _authorize(self, method: str, context: Context) -> None:
        if self.auth is not None and method not in self.open_methods:
            scope = self.method_scopes.get(method, self.scope)
            self.auth.check(metadata_value(context, "authorization"), scope)

    def _observed(self, method: str, request: Any, outcome: _Outcome, started: float) -> None:
        if self.observe is None:
            return
        try:
            seconds = time.perf_counter() - started
            self.observe(method, request, outcome.status, seconds, outcome.error)
        except Exception:
            log.exception("could not record gRPC method %s", method)

    def unary(self, method: str, implementation: Unary) -> Unary:
        async def guarded(request: Any, context: Context) -> Any:
            started, outcome = time.perf_counter(), _Outcome()
            try:
                self._authorize(method, context)
                return await implementation(request, context)
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                outcome.status = CLIENT_CLOSED
                log.debug("gRPC %s: the client cancelled or its deadline passed", method)
                raise
            except Exception as exc:
                await outcome.fail(context, method, exc)
            finally:
                self._observed(method, request, outcome, started)

        return guarded

    def streaming(self, method: str, implementation: Streaming) -> Streaming:
        async def guarded(request: Any, context: Context) -> AsyncIterator[Any]:
            started, outcome = time.perf_counter(), _Outcome()
            try:
                self._authorize(method, context)
                async for response in implementation(request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                outcome.status = CLIENT_CLOSED
                log.debug("gRPC %s: the client cancelled or its deadline passed", method)
                raise
            except Exception as exc:
                await outcome.fail(context, method, exc)
            finally:
                self._observed(method, request, outcome, started)

        return guarded
