"""The gateway's HTTP/1.1 side on plain upstreams: framing, headers, errors, balance, faults."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from marserve.controlplane.gateway import GatewaySettings, Limits
from tests.e2e.gateway.harness import GatewayThread, Upstream, service

HOST = "echo.default.example.com"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[list[Upstream]]:
    started = [Upstream("a"), Upstream("b")]
    yield started
    for upstream in started:
        upstream.stop()


@pytest.fixture(scope="module")
def gw(upstreams: list[Upstream]) -> Iterator[GatewayThread]:
    limits = Limits(header_timeout_s=1.0, max_header_bytes=8192)
    thread = GatewayThread(GatewaySettings(limits=limits))
    thread.update([service("echo", [("echo-predictor-00001", 100, [upstreams[0].endpoint], None)])])
    yield thread
    thread.close()


@pytest.fixture
def client(gw: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, headers={"Host": HOST}, timeout=30) as opened:
        yield opened


def raw(gw: GatewayThread, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes on a fresh connection and read until the gateway closes it."""
    with socket.create_connection(("127.0.0.1", gw.gateway.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_post_reaches_the_replica_with_forwarding_headers(client: httpx.Client) -> None:
    response = client.post(
        "/echo",
        content=b"hello",
        headers={
            "X-Forwarded-For": "10.0.0.1",
            "Connection": "keep-alive, X-Secret",
            "X-Secret": "1",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["replica"] == "a" and body["length"] == 5
    got = {k.lower(): v for k, v in body["headers"]}
    assert got["host"] == HOST
    assert got["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert got["forwarded"] == f"for=127.0.0.1;host={HOST};proto=http"
    assert "x-secret" not in got and "keep-alive" not in got


def test_keep_alive_serves_many_requests_on_one_connection(client: httpx.Client) -> None:
    for i in range(20):
        assert client.post("/echo", content=b"x" * i).json()["length"] == i


def test_streaming_upload_chunked_and_sized(client: httpx.Client) -> None:
    block = bytes(range(256)) * 4096  # 1 MiB
    total = 24

    def chunks() -> Iterator[bytes]:
        for _ in range(total):
            yield block

    expected = hashlib.sha256(block * total).hexdigest()
    chunked = client.post("/echo", content=chunks())
    assert chunked.json()["length"] == len(block) * total
    assert chunked.json()["sha256"] == expected
    sized = client.post("/echo", content=block * total)
    assert (sized.json()["length"], sized.json()["sha256"]) == (len(block) * total, expected)


def test_streaming_download_is_relayed_chunk_by_chunk(client: httpx.Client) -> None:
    size = 32 * 1024 * 1024
    digest = hashlib.sha256()
    with client.stream("GET", f"/blob?n={size}") as response:
        assert response.headers["transfer-encoding"] == "chunked"
        received = 0
        for part in response.iter_raw():
            digest.update(part)
            received += len(part)
    block = bytes(range(256)) * 256
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(block * (size // len(block))).hexdigest()


def test_unknown_host_is_404_naming_it(gw: GatewayThread) -> None:
    response = httpx.get(f"{gw.url}/v1/models/x", headers={"Host": "nope.default.example.com:8080"})
    assert response.status_code == 404
    assert response.json() == {
        "error": "no InferenceService is served at host 'nope.default.example.com'"
    }


def test_curl_through_the_gateway(gw: GatewayThread, tmp_path: object) -> None:
    import subprocess

    out = subprocess.run(
        ["curl", "-s", "-H", f"Host: {HOST}", f"{gw.url}/echo", "-d", "x" * 5000],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    assert json.loads(out)["length"] == 5000  # curl's Expect: 100-continue is answered


def test_malformed_request_line_is_400_and_gateway_lives(gw: GatewayThread) -> None:
    answer = raw(gw, b"GARBAGE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"malformed request line" in answer
    assert httpx.get(f"{gw.url}/healthz").json() == {"status": "ok"}


def test_huge_headers_are_431(gw: GatewayThread) -> None:
    answer = raw(gw, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert httpx.get(f"{gw.url}/healthz").status_code == 200


def test_smuggling_framing_is_refused(gw: GatewayThread) -> None:
    request = (
        b"POST /echo HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    assert raw(gw, request).startswith(b"HTTP/1.1 400 ")


def test_slow_client_is_cut_at_the_header_timeout(gw: GatewayThread) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", gw.gateway.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: ")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 8
    assert httpx.get(f"{gw.url}/healthz").status_code == 200


def test_no_ready_replica_is_503_with_retry_after(
    gw: GatewayThread, upstreams: list[Upstream]
) -> None:
    gw.update(
        [
            service("echo", [("echo-predictor-00001", 100, [upstreams[0].endpoint], None)]),
            service("cold", [("cold-predictor-00001", 100, [], None)]),
        ]
    )
    response = httpx.get(f"{gw.url}/", headers={"Host": "cold.default.example.com"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "cold-predictor-00001 has no ready replica" in response.json()["error"]


def test_least_in_flight_sends_work_to_the_idle_replica(
    gw: GatewayThread, upstreams: list[Upstream]
) -> None:
    endpoints = [u.endpoint for u in upstreams]
    gw.update([service("echo", [("echo-predictor-00001", 100, endpoints, None)])])
    slow: list[str] = []
    hanging = threading.Thread(
        target=lambda: slow.append(
            httpx.get(f"{gw.url}/hang?s=3", headers={"Host": HOST}, timeout=30).json()["replica"]
        )
    )
    hanging.start()
    deadline = time.monotonic() + 10
    while gw.gateway.stats()[("default", "echo-predictor-00001")].in_flight < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with httpx.Client(base_url=gw.url, headers={"Host": HOST}) as quick:
        replicas = {quick.post("/echo", content=b"").json()["replica"] for _ in range(8)}
    hanging.join(30)
    assert len(replicas) == 1 and slow and replicas != set(slow)


def test_replica_killed_mid_request_is_502_for_that_request_only(gw: GatewayThread) -> None:
    doomed = Upstream("doomed")
    healthy = Upstream("healthy")
    try:
        gw.update([service("fault", [("fault-predictor-00001", 100, [doomed.endpoint], None)])])
        host = {"Host": "fault.default.example.com"}
        result: list[httpx.Response] = []
        request = threading.Thread(
            target=lambda: result.append(httpx.get(f"{gw.url}/hang?s=20", headers=host, timeout=30))
        )
        request.start()
        deadline = time.monotonic() + 10
        while gw.gateway.stats().get(("default", "fault-predictor-00001")) is None or (
            gw.gateway.stats()[("default", "fault-predictor-00001")].in_flight < 1
        ):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)
        doomed.stop()
        request.join(30)
        assert result[0].status_code == 502, result[0].text
        assert "closed the connection" in result[0].json()["error"]
        gw.update([service("fault", [("fault-predictor-00001", 100, [healthy.endpoint], None)])])
        after = httpx.post(f"{gw.url}/echo", headers=host, content=b"ok")
        assert after.status_code == 200 and after.json()["replica"] == "healthy"
    finally:
        doomed.stop()
        healthy.stop()


def test_metrics_and_stats_count_per_revision(gw: GatewayThread, upstreams: list[Upstream]) -> None:
    gw.update([service("echo", [("echo-predictor-00001", 100, [upstreams[0].endpoint], None)])])
    before = gw.gateway.stats()[("default", "echo-predictor-00001")].requests
    for _ in range(3):
        httpx.post(f"{gw.url}/echo", headers={"Host": HOST}, content=b"")
    deadline = time.monotonic() + 10  # the lease ends just after the answer's last byte is sent
    while (stats := gw.gateway.stats()[("default", "echo-predictor-00001")]).in_flight:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert stats.requests == before + 3
    text = httpx.get(f"{gw.url}/metrics").text
    assert (
        'marserve_gateway_requests_total{code="200",namespace="default",'
        'revision="echo-predictor-00001"}'
    ) in text
    assert "marserve_gateway_request_duration_seconds_bucket" in text
    assert "marserve_gateway_requests_in_flight" in text


def test_split_90_10_and_tag_hosts(upstreams: list[Upstream]) -> None:
    thread = GatewayThread(rand=random.Random(17).random)
    try:
        a, b = (u.endpoint for u in upstreams)
        thread.update(
            [
                service(
                    "canary",
                    [
                        ("canary-predictor-00001", 90, [a], "prev"),
                        ("canary-predictor-00002", 10, [b], "latest"),
                    ],
                )
            ]
        )
        with httpx.Client(base_url=thread.url, headers={"Host": "canary.default.example.com"}) as c:
            seen = [c.post("/echo", content=b"").json()["replica"] for _ in range(300)]
        assert 255 <= seen.count("a") <= 285, seen.count("a")  # 270 expected, ~5 sd each side
        for tag, replica in (("latest", "b"), ("prev", "a")):
            host = f"{tag}-canary-predictor.default.example.com"
            with httpx.Client(base_url=thread.url, headers={"Host": host}) as c:
                assert {c.post("/echo", content=b"").json()["replica"] for _ in range(20)} == {
                    replica
                }
    finally:
        thread.close()


def test_bearer_token_is_required_when_configured(upstreams: list[Upstream]) -> None:
    thread = GatewayThread(GatewaySettings(token="s3cret"))
    try:
        thread.update(
            [service("echo", [("echo-predictor-00001", 100, [upstreams[0].endpoint], None)])]
        )
        missing = httpx.post(f"{thread.url}/echo", headers={"Host": HOST}, content=b"")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.json() == {"error": "missing or invalid bearer token"}
        wrong = httpx.post(
            f"{thread.url}/echo",
            headers={"Host": HOST, "Authorization": "Bearer nope"},
            content=b"",
        )
        assert wrong.status_code == 401
        good = httpx.post(
            f"{thread.url}/echo",
            headers={"Host": HOST, "Authorization": "Bearer s3cret"},
            content=b"",
        )
        assert good.status_code == 200
        got = {k.lower() for k, _ in good.json()["headers"]}
        assert "authorization" not in got  # the gateway's credential never reaches a replica
    finally:
        thread.close()


def test_a_held_request_is_answered_once_a_replica_is_ready(upstreams: list[Upstream]) -> None:
    thread = GatewayThread(GatewaySettings(hold_s=20))
    try:
        thread.update([service("echo", [("echo-predictor-00001", 100, [], None)])])
        result: list[httpx.Response] = []
        waiter = threading.Thread(
            target=lambda: result.append(
                httpx.post(f"{thread.url}/echo", headers={"Host": HOST}, content=b"", timeout=30)
            )
        )
        waiter.start()
        deadline = time.monotonic() + 10
        while not thread.gateway.stats():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not result
        thread.update(
            [service("echo", [("echo-predictor-00001", 100, [upstreams[1].endpoint], None)])]
        )
        waiter.join(30)
        assert result[0].status_code == 200 and result[0].json()["replica"] == "b"
    finally:
        thread.close()


def test_stalled_upload_is_408_and_counted(gw: GatewayThread, upstreams: list[Upstream]) -> None:
    limits = Limits(body_timeout_s=1.0)
    thread = GatewayThread(GatewaySettings(limits=limits))
    try:
        thread.update(
            [service("echo", [("echo-predictor-00001", 100, [upstreams[0].endpoint], None)])]
        )
        with socket.create_connection(("127.0.0.1", thread.gateway.port), timeout=10) as sock:
            sock.sendall(
                b"POST /echo HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n"
                b"Content-Length: 1000000\r\n\r\n" + b"x" * 100000
            )
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"request body not received in time" in answer
        deadline = time.monotonic() + 10
        while thread.gateway.stats()[("default", "echo-predictor-00001")].in_flight:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert 'code="408"' in httpx.get(f"{thread.url}/metrics").text
    finally:
        thread.close()


@pytest.fixture
def h2(gw: GatewayThread, upstreams: list[Upstream]) -> Iterator[httpx.Client]:
    gw.update([service("echo", [("echo-predictor-00001", 100, [upstreams[0].endpoint], None)])])
    with httpx.Client(base_url=gw.url, http1=False, http2=True, timeout=30) as opened:
        yield opened


def test_h2c_request_to_a_rest_service_is_bridged_to_http1(h2: httpx.Client) -> None:
    response = h2.post("/echo", content=b"hello", headers={"Host": HOST})
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200 and response.json()["length"] == 5
    got = {k.lower(): v for k, v in response.json()["headers"]}
    assert got["host"] == HOST and got["x-forwarded-for"] == "127.0.0.1"


def test_h2c_streams_large_bodies_both_ways(h2: httpx.Client) -> None:
    block = bytes(range(256)) * 4096

    def chunks() -> Iterator[bytes]:
        for _ in range(12):
            yield block

    up = h2.post("/echo", content=chunks(), headers={"Host": HOST})
    assert up.json()["length"] == len(block) * 12
    assert up.json()["sha256"] == hashlib.sha256(block * 12).hexdigest()
    size = 16 * 1024 * 1024
    with h2.stream("GET", f"/blob?n={size}", headers={"Host": HOST}) as response:
        received = sum(len(part) for part in response.iter_raw())
    assert response.http_version == "HTTP/2" and received == size


def test_h2c_unknown_host_and_own_metrics(h2: httpx.Client) -> None:
    missing = h2.get("/x", headers={"Host": "nope.default.example.com"})
    assert missing.status_code == 404 and "nope.default.example.com" in missing.json()["error"]
    assert "marserve_gateway_requests_total" in h2.get("/metrics").text


def test_connections_beyond_the_cap_are_503_and_the_rest_still_served() -> None:
    thread = GatewayThread(GatewaySettings(max_connections=2, limits=Limits(header_timeout_s=5)))
    try:
        held = [socket.create_connection(("127.0.0.1", thread.gateway.port)) for _ in range(2)]
        deadline = time.monotonic() + 10
        while thread.gateway.open_connections < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        extra = raw(thread, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert extra.startswith(b"HTTP/1.1 503 ") and b"too many connections" in extra
        for sock in held:
            sock.close()
        while thread.gateway.open_connections >= 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert httpx.get(f"{thread.url}/healthz").status_code == 200
    finally:
        thread.close()


def test_h2c_garbage_after_the_preface_closes_only_that_connection(gw: GatewayThread) -> None:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    data_on_stream_0 = b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x"  # a PROTOCOL_ERROR
    answer = raw(gw, preface + data_on_stream_0)
    goaway = answer.find(b"\x07\x00\x00\x00\x00\x00")  # type GOAWAY, flags 0, stream 0
    assert goaway > 0 and answer[goaway + 10 : goaway + 14] == b"\x00\x00\x00\x01"  # error 1
    bad_preface = raw(gw, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
    assert bad_preface.startswith(b"HTTP/1.1 400 ") and b"malformed HTTP/2 preface" in bad_preface
    assert httpx.get(f"{gw.url}/healthz").status_code == 200
