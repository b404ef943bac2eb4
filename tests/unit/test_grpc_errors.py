"""gRPC statuses come from the one status table, by the error's HTTP status."""

from __future__ import annotations

import grpc
import pytest

from marserve import errors
from marserve.grpc.errors import grpc_status, status_of
from marserve.status import STATUS, GrpcCode

S = grpc.StatusCode


@pytest.mark.parametrize(
    ("http_status", "expected"),
    [
        (400, S.INVALID_ARGUMENT),
        (401, S.UNAUTHENTICATED),
        (403, S.PERMISSION_DENIED),
        (404, S.NOT_FOUND),
        (413, S.RESOURCE_EXHAUSTED),
        (422, S.INVALID_ARGUMENT),
        (500, S.INTERNAL),
        (502, S.INTERNAL),
        (503, S.UNAVAILABLE),
        (504, S.DEADLINE_EXCEEDED),
    ],
)
def test_handler_chosen_statuses_map_as_the_issue_lists(
    http_status: int, expected: grpc.StatusCode
) -> None:
    assert status_of(errors.from_http_status("x", http_status)) is expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (errors.InvalidInput, S.INVALID_ARGUMENT),
        (errors.ArchiveError, S.INVALID_ARGUMENT),
        (errors.ModelNotFound, S.NOT_FOUND),
        (errors.PayloadTooLarge, S.RESOURCE_EXHAUSTED),
        (errors.Unauthenticated, S.UNAUTHENTICATED),
        (errors.Forbidden, S.PERMISSION_DENIED),
        (errors.ServiceUnavailable, S.UNAVAILABLE),
        (errors.RequestTimeout, S.DEADLINE_EXCEEDED),
        (errors.InternalError, S.INTERNAL),
        (errors.MarserveError, S.INTERNAL),
    ],
)
def test_error_classes_map_through_their_code(
    error: type[errors.MarserveError], expected: grpc.StatusCode
) -> None:
    assert status_of(error("x")) is expected


def test_every_table_entry_names_a_grpcio_status() -> None:
    for status in STATUS.values():
        assert grpc_status(status.grpc).value[0] == int(status.grpc)
    assert grpc_status(GrpcCode.OK) is S.OK
