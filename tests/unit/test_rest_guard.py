"""Connection limits: the pure parts (violations, answers, FD headroom) and their config keys."""

from __future__ import annotations

import resource
from http import HTTPStatus
from pathlib import Path

import pytest

from marserve.errors import ConfigError
from marserve.rest.guard import (
    FD_SPARE,
    RESERVE,
    ConnectionLimits,
    answer,
    fd_shortfall,
    framing_allowed,
    head_violation,
    protocol_for,
)
from marserve.settings import load_settings

LIMITS = ConnectionLimits(max_request_line=100, max_header_bytes=1000, max_header_count=5)


@pytest.mark.parametrize(
    ("url", "headers", "head_bytes", "status"),
    [
        (100, 5, 1100, None),
        (101, 0, 0, HTTPStatus.REQUEST_URI_TOO_LONG),
        (10, 6, 0, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE),
        (10, 1, 1101, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE),
        (101, 6, 5000, HTTPStatus.REQUEST_URI_TOO_LONG),  # the request line is judged first
    ],
)
def test_head_violation(url: int, headers: int, head_bytes: int, status: HTTPStatus | None) -> None:
    violation = head_violation(LIMITS, url, headers, head_bytes)
    assert (violation.status if violation else None) == status


def test_answer_is_a_complete_closing_response() -> None:
    raw = answer(HTTPStatus.REQUEST_TIMEOUT, "request headers not received in time")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"connection: close" in head
    assert f"content-length: {len(body)}".encode() in head
    assert b"headers not received in time" in body


@pytest.mark.parametrize(
    ("soft", "listeners", "cap", "short"),
    [
        (1024, 3, 1000, 3 * (1000 + RESERVE) + FD_SPARE - 1024),
        (65536, 3, 1000, 0),
        (resource.RLIM_INFINITY, 3, 10**6, 0),
        (3 * (10 + RESERVE) + FD_SPARE, 3, 10, 0),
    ],
)
def test_fd_shortfall(soft: int, listeners: int, cap: int, short: int) -> None:
    assert fd_shortfall(soft, listeners, ConnectionLimits(max_connections=cap)) == short


def test_protocol_for_binds_limits_per_listener() -> None:
    a, b = protocol_for(LIMITS), protocol_for(ConnectionLimits())
    assert a.LIMITS is LIMITS and ConnectionLimits() == b.LIMITS and a is not b


def test_config_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.properties"
    path.write_text(
        "header_read_timeout=3\nbody_read_timeout=4\nkeep_alive_timeout=5\nmax_connections=7\n"
        "max_request_line_size=512\nmax_header_size=2048\nmax_header_count=9\nmax_chunk_count=11\n"
        "max_chunk_extension_size=17\ngrpc_max_concurrent_streams=13\ngrpc_keepalive_min_time=15\n"
    )
    limits = ConnectionLimits.of(settings := load_settings(path))
    assert limits == ConnectionLimits(3, 4, 5, 7, 512, 2048, 9, 11, 17)
    assert (settings.grpc_max_concurrent_streams, settings.grpc_keepalive_min_time_s) == (13, 15)


@pytest.mark.parametrize(
    "line", ["max_connections=0", "header_read_timeout=-1", "max_request_line_size=10"]
)
def test_config_keys_reject_bad_values(tmp_path: Path, line: str) -> None:
    path = tmp_path / "config.properties"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=line.split("=")[0]):
        load_settings(path)


def test_framing_allowed_grows_with_chunks() -> None:
    limits = ConnectionLimits(max_chunk_extension=100)
    assert framing_allowed(limits, 0) == 132
    assert framing_allowed(limits, 9) == 1320
