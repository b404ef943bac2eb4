"""Slow and hostile clients against a real server on raw sockets: closed in time."""

from __future__ import annotations

import contextlib
import http.client
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from tests.e2e.server import RunningServer, start_server, write_config

TIMEOUT_S = 2  # header, body and keep-alive timeouts of the server under test
SLACK_S = 1.5  # how late past its limit a connection may still be closed
CAP = 40  # max_connections
P99_FLOOR_S = (
    0.025  # baseline p99 floored here: on a shared 2-core box a sub-ms /ping has 10-40 ms hiccups
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("limits")
    store = tmp / "store"
    store.mkdir()
    config = write_config(
        tmp / "config.properties",
        header_read_timeout=TIMEOUT_S,
        body_read_timeout=TIMEOUT_S,
        keep_alive_timeout=TIMEOUT_S,
        max_connections=CAP,
        max_request_line_size=1024,
        max_header_size=4096,
        max_header_count=20,
        max_chunk_count=100,
        max_chunk_extension_size=256,
    )
    running = start_server(tmp, store, config)
    yield running
    assert running.stop() == 0, running.log()


def _address(server: RunningServer, listener: str = "inference") -> tuple[str, int]:
    host, port = server.urls[listener].split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


def _connect(server: RunningServer, listener: str = "inference") -> socket.socket:
    sock = socket.create_connection(_address(server, listener), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket, deadline_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; and when it closed (monotonic)."""
    sock.settimeout(0.2)
    data = b""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, time.monotonic()
        if not chunk:
            return data, time.monotonic()
        data += chunk
    raise AssertionError(f"still open after {deadline_s}s; got {data[:200]!r}")


def _status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


class PingProbe:
    """A normal client: /ping on its own keep-alive connection every 20 ms; latencies kept."""

    def __init__(self, server: RunningServer) -> None:
        self.address = _address(server)
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PingProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        conn = http.client.HTTPConnection(*self.address, timeout=5)
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                conn.request("GET", "/ping")
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    self.failures.append(f"status {response.status}")
            except (OSError, http.client.HTTPException) as error:
                self.failures.append(repr(error))
                conn = http.client.HTTPConnection(*self.address, timeout=5)
            self.latencies.append(time.perf_counter() - started)
            self._stop.wait(0.02)
        conn.close()

    def p99(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[98]


@pytest.fixture(scope="module")
def baseline(server: RunningServer) -> tuple[float, int, int]:
    """The quiet p99 of /ping, and the server's open FDs and RSS before any attack."""
    with PingProbe(server):
        time.sleep(1.0)  # warm-up: first requests, the first system-metrics sample
    with PingProbe(server) as probe:
        time.sleep(2.0)
    process = psutil.Process(server.pid)
    return probe.p99(), process.num_fds(), process.memory_info().rss


def _attack(
    server: RunningServer, baseline: tuple[float, int, int], run: Callable[[], None]
) -> None:
    """Run one attack with a normal client alongside: /ping always answers, p99 within 2x."""
    with PingProbe(server) as probe:
        started = time.monotonic()
        run()
        time.sleep(max(0.0, 0.6 - (time.monotonic() - started)))  # enough pings to judge by
    assert not probe.failures, probe.failures[:5]
    assert len(probe.latencies) >= 10
    print(f"/ping p99 {probe.p99() * 1e3:.1f} ms (baseline {baseline[0] * 1e3:.1f} ms)")
    assert probe.p99() <= 2 * max(baseline[0], P99_FLOOR_S), (probe.p99(), baseline[0])
    _settled(server, baseline)


def _settled(server: RunningServer, baseline: tuple[float, int, int]) -> None:
    """FDs back to baseline (within a few) and RSS within 32 MiB of it, soon after an attack."""
    process = psutil.Process(server.pid)
    deadline = time.monotonic() + 5
    while process.num_fds() > baseline[1] + 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.num_fds() <= baseline[1] + 4, (process.num_fds(), baseline[1])
    assert process.memory_info().rss <= baseline[2] + 32 * 2**20


def _many(server: RunningServer, count: int, first: bytes) -> list[socket.socket]:
    socks = [_connect(server) for _ in range(count)]
    for sock in socks:
        if first:
            sock.sendall(first)
    return socks


def _all_closed(socks: list[socket.socket], limit_s: float, statuses: set[int]) -> None:
    started = time.monotonic()
    for sock in socks:
        data, _ = _read_until_closed(sock, limit_s + SLACK_S - (time.monotonic() - started) + 0.5)
        assert _status(data) in statuses, data[:200]
        sock.close()
    assert time.monotonic() - started <= limit_s + SLACK_S + 0.5


def test_silent_connections_are_closed_without_an_answer(server, baseline) -> None:  # type: ignore[no-untyped-def]
    def run() -> None:
        _all_closed(_many(server, 30, b""), TIMEOUT_S, {0})

    _attack(server, baseline, run)


def test_slowloris_headers_get_408(server, baseline) -> None:  # type: ignore[no-untyped-def]
    def run() -> None:
        socks = _many(server, 30, b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        while time.monotonic() - started < TIMEOUT_S - 0.5:  # one header byte every 0.5 s
            time.sleep(0.5)
            for sock in socks:
                sock.sendall(b"X")
        _all_closed(socks, TIMEOUT_S - (time.monotonic() - started), {408})

    _attack(server, baseline, run)


@pytest.mark.parametrize(
    "head",
    [
        b"POST /predictions/none HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc",
        b"POST /predictions/none HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n",
    ],
    ids=["short-content-length", "chunked-without-last-chunk"],
)
def test_unfinished_bodies_get_408(server, baseline, head: bytes) -> None:  # type: ignore[no-untyped-def]
    def run() -> None:
        _all_closed(_many(server, 10, head), TIMEOUT_S, {408})

    _attack(server, baseline, run)


def test_trickled_upload_gets_408(server, baseline) -> None:  # type: ignore[no-untyped-def]
    head = b"POST /predictions/none HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"

    def run() -> None:
        socks = _many(server, 10, head)
        started = time.monotonic()
        while time.monotonic() - started < TIMEOUT_S - 0.3:  # bytes still arriving: deadline holds
            time.sleep(0.3)
            for sock in socks:
                sock.sendall(b"x")
        _all_closed(socks, TIMEOUT_S - (time.monotonic() - started), {408})

    _attack(server, baseline, run)


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 8000 + b"\r\n\r\n", 431),
        (
            b"GET /ping HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(50)) + b"\r\n",
            431,
        ),
        (b"GET /" + b"u" * (4 * 2**20), 414),  # a huge URL still arriving: cut off early
        (
            b"POST /predictions/none HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"1\r\nx\r\n" * 500,
            413,
        ),
        (
            b"POST /predictions/none HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"1;"
            + b"e" * 20000,
            400,
        ),
    ],
    ids=["long-url", "big-header", "many-headers", "huge-url", "many-chunks", "chunk-extension"],
)
def test_oversized_requests_are_refused_and_closed(  # type: ignore[no-untyped-def]
    server, baseline, request_head: bytes, status: int
) -> None:
    def run() -> None:
        for _ in range(3):
            sock = _connect(server)
            # closed while we were still sending: fine, the answer is already there
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(request_head)
            data, _ = _read_until_closed(sock, 2.0)
            assert _status(data) == status, data[:200]
            sock.close()

    _attack(server, baseline, run)


def test_keep_alive_idle_connection_is_closed(server) -> None:  # type: ignore[no-untyped-def]
    sock = _connect(server)
    sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    started = time.monotonic()
    data, closed_at = _read_until_closed(sock, TIMEOUT_S + SLACK_S + 1)
    sock.close()
    assert _status(data) == 200
    assert TIMEOUT_S - 0.5 <= closed_at - started <= TIMEOUT_S + SLACK_S


def test_connection_cap_keeps_room_for_ping(server, baseline) -> None:  # type: ignore[no-untyped-def]
    held = _many(server, CAP, b"")
    try:
        time.sleep(0.2)
        sock = _connect(server)
        sock.sendall(b"GET /predictions/none HTTP/1.1\r\nHost: x\r\n\r\n")
        data, _ = _read_until_closed(sock, 2.0)
        assert _status(data) == 503, data[:200]
        sock.close()
        for path in (b"/ping", b"/v2/health/live"):
            sock = _connect(server)
            sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data, _ = _read_until_closed(sock, 2.0)
            assert _status(data) == 200, (path, data[:200])
            sock.close()
        beyond = _many(server, 40, b"")  # over cap + reserve: refused outright
        refused = 0
        for sock in beyond:
            sock.settimeout(1.0)
            try:
                refused += sock.recv(1) == b""
            except (ConnectionResetError, TimeoutError):
                refused += 1
            sock.close()
        assert refused >= 40 - 32
    finally:
        for sock in held:
            sock.close()
    _settled(server, baseline)


def test_management_and_metrics_listeners_are_guarded(server) -> None:  # type: ignore[no-untyped-def]
    for listener in ("management", "metrics"):
        sock = _connect(server, listener)
        sock.sendall(b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n")
        data, _ = _read_until_closed(sock, 2.0)
        assert _status(data) == 414, (listener, data[:200])
        sock.close()
        silent = _connect(server, listener)
        _read_until_closed(silent, TIMEOUT_S + SLACK_S)
        silent.close()


def test_well_formed_chunked_body_within_limits_is_served(server) -> None:  # type: ignore[no-untyped-def]
    sock = _connect(server)
    body = b"".join(b"4;name=value\r\nabcd\r\n" for _ in range(90)) + b"0\r\n\r\n"
    sock.sendall(
        b"POST /predictions/none HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + body
    )
    data, _ = _read_until_closed(sock, 5.0)
    sock.close()
    assert _status(data) == 404, data[:200]  # reached the app: no such model


def test_grpc_metadata_over_max_header_size_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(server.grpc_target()) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        live = stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5)
        assert live.live
        with pytest.raises(grpc.RpcError) as info:
            stub.ServerLive(
                service_pb2.ServerLiveRequest(), metadata=[("x-big", "b" * 8000)], timeout=5
            )
        assert info.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL)
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5).live  # still serving
