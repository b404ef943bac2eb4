"""Gateway's pure parts: host resolution, traffic split, least-in-flight, HTTP/1.1 head parsing."""

from __future__ import annotations

import asyncio
import random

import pytest

from marserve.controlplane.errors import Rejected
from marserve.controlplane.gateway.balance import least_in_flight
from marserve.controlplane.gateway.hosts import HostTable, normalize_host, pick_revision
from marserve.controlplane.gateway.http1 import forwarded_headers, parse_head
from marserve.controlplane.gateway.metrics import GatewayMetrics
from marserve.controlplane.gateway.router import Router
from marserve.controlplane.routing import Endpoint, RevisionRoute, ServiceRoute

A, B = Endpoint("127.0.0.1", 1001), Endpoint("127.0.0.1", 1002)
PREV = RevisionRoute("sk-predictor-00001", 80, (A,), "prev")
LATEST = RevisionRoute("sk-predictor-00002", 20, (B,), "latest")
SVC = ServiceRoute("kserve-test", "sk", "example.com", (PREV, LATEST))


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        ("SK.kserve-test.example.com", "sk.kserve-test.example.com"),
        ("sk.kserve-test.example.com:8080", "sk.kserve-test.example.com"),
        ("sk.kserve-test.example.com.", "sk.kserve-test.example.com"),
        ("[::1]:8080", "[::1]"),
    ],
)
def test_normalize_host(raw: str, host: str) -> None:
    assert normalize_host(raw) == host


def test_default_hosts_tags_and_unknown() -> None:
    table = HostTable([SVC])
    for host in (
        "sk.kserve-test.example.com",
        "sk-predictor.kserve-test.example.com:80",
        "sk.kserve-test.svc.cluster.local",
    ):
        resolved = table.resolve(host)
        assert resolved is not None and resolved.revisions == (PREV, LATEST)
    latest = table.resolve("latest-sk-predictor.kserve-test.example.com")
    assert latest is not None and latest.revisions == (LATEST,) and latest.tag == "latest"
    prev = table.resolve("prev-sk-predictor.kserve-test.example.com")
    assert prev is not None and prev.revisions == (PREV,)
    assert table.resolve("sk.other.example.com") is None
    assert table.resolve("sk-predictor-00001.kserve-test.example.com") is None


def test_explicit_hosts_replace_the_defaults() -> None:
    service = ServiceRoute("ns", "x", "example.com", (PREV,), hosts=frozenset({"X.Custom.IO"}))
    table = HostTable([service])
    assert table.resolve("x.custom.io") is not None
    assert table.resolve("x.ns.example.com") is None


def test_zero_percent_revision_only_by_tag() -> None:
    dark = RevisionRoute("sk-predictor-00003", 0, (B,), "dark")
    table = HostTable([ServiceRoute("ns", "sk", "example.com", (PREV, dark))])
    resolved = table.resolve("sk.ns.example.com")
    assert resolved is not None and resolved.revisions == (PREV,)
    assert table.resolve("dark-sk-predictor.ns.example.com") is not None


def test_split_follows_percent_with_a_fixed_seed() -> None:
    rand = random.Random(5).random
    picks = [pick_revision((PREV, LATEST), rand).name for _ in range(10_000)]
    assert 7_800 <= picks.count(PREV.name) <= 8_200


def test_least_in_flight_and_random_ties() -> None:
    assert least_in_flight([A, B], {A: 3, B: 1}, random.random) == B
    assert least_in_flight([A, B], {A: 0}, lambda: 0.99) == B
    assert least_in_flight([A, B], {}, lambda: 0.0) == A
    with pytest.raises(ValueError):
        least_in_flight([], {}, random.random)


def test_router_keeps_in_flight_across_updates_and_503s_without_replicas() -> None:
    async def scenario() -> None:
        router = Router(GatewayMetrics(), random.Random(1).random)
        only_prev = ServiceRoute("kserve-test", "sk", "example.com", (PREV,))
        router.update([only_prev])
        resolved = router.resolve("sk.kserve-test.example.com")
        assert resolved is not None
        async with router.admit(resolved) as lease:
            lease.code = 200
            router.update([only_prev])  # a new route set while the request runs
            assert router.states[("kserve-test", PREV.name)].in_flight[A] == 1
            stats = router.metrics.stats()[("kserve-test", PREV.name)]
            assert stats.in_flight == 1
        assert router.metrics.stats()[("kserve-test", PREV.name)].requests == 1
        router.update(
            [ServiceRoute("kserve-test", "sk", "example.com", (RevisionRoute(PREV.name, 100),))]
        )
        resolved = router.resolve("sk.kserve-test.example.com")
        assert resolved is not None
        with pytest.raises(Rejected) as caught:
            async with router.admit(resolved):
                pass
        assert caught.value.status == 503 and caught.value.retry_after == 1

    asyncio.run(scenario())


def test_parse_request_head() -> None:
    head = parse_head(
        b"POST /v1/models/m:predict HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n"
        b"Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-Keep: 2\r\n\r\n",
        request=True,
    )
    assert head.start == (b"POST", b"/v1/models/m:predict", b"HTTP/1.1")
    assert head.content_length == 12 and not head.chunked
    lines = forwarded_headers(head, peer="10.1.2.3", host="a", drop=frozenset())
    text = b"".join(lines)
    assert b"X-Keep: 2\r\n" in text and b"X-Hop" not in text and b"Connection" not in text
    assert b"X-Forwarded-For: 10.1.2.3\r\n" in text
    assert b"Forwarded: for=10.1.2.3;host=a;proto=http\r\n" in text


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"GET /\r\n\r\n", 400, "malformed request line"),
        (b"GET / HTTP/2.0\r\n\r\n", 400, "malformed request line"),
        (b"G(T / HTTP/1.1\r\n\r\n", 400, "malformed request line"),
        (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400, "malformed header line"),
        (
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "invalid Content-Length",
        ),
        (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "invalid Content-Length"),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not supported"),
        (
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            400,
            "both Content-Length and Transfer-Encoding",
        ),
    ],
)
def test_parse_rejects_bad_heads(raw: bytes, status: int, message: str) -> None:
    with pytest.raises(Rejected) as caught:
        parse_head(raw, request=True)
    assert caught.value.status == status and message in caught.value.message


def test_container_concurrency_queues_then_refuses_per_replica() -> None:
    async def scenario() -> None:
        router = Router(GatewayMetrics(), random.Random(1).random)
        revision = RevisionRoute("cc-predictor-00001", 100, (A,), None, container_concurrency=1)
        router.update([ServiceRoute("ns", "cc", "example.com", (revision,))])
        resolved = router.resolve("cc.ns.example.com")
        assert resolved is not None
        gate = asyncio.Event()
        order: list[int] = []

        async def one(i: int) -> None:
            async with router.admit(resolved) as lease:
                order.append(i)
                lease.code = 200
                await gate.wait()

        tasks = [asyncio.create_task(one(i)) for i in range(11)]  # 1 running + 10 queued (10x CC)
        await asyncio.sleep(0.05)
        assert order == [0]
        with pytest.raises(Rejected) as caught:
            async with router.admit(resolved):
                pass
        assert (caught.value.status, caught.value.message) == (503, "pending request queue full")
        gate.set()
        await asyncio.gather(*tasks)
        assert sorted(order) == list(range(11))
        stats = router.metrics.stats()[("ns", "cc-predictor-00001")]
        assert (stats.in_flight, stats.requests) == (0, 12)

    asyncio.run(scenario())


def test_a_held_request_past_the_revision_timeout_is_504() -> None:
    async def scenario() -> None:
        router = Router(GatewayMetrics(), random.Random(1).random, hold_s=60.0)
        cold = RevisionRoute(PREV.name, 100, (), timeout_s=0.2)  # at zero, timeout: 0.2 s
        router.update([ServiceRoute("kserve-test", "sk", "example.com", (cold,))])
        resolved = router.resolve("sk.kserve-test.example.com")
        assert resolved is not None
        started = asyncio.get_running_loop().time()
        with pytest.raises(Rejected) as caught:
            async with router.admit(resolved):
                pass
        waited = asyncio.get_running_loop().time() - started
        assert caught.value.status == 504 and 0.15 < waited < 5.0, waited
        assert PREV.name in caught.value.message and "timed out" in caught.value.message
        assert router.metrics.stats()[("kserve-test", PREV.name)].in_flight == 0

    asyncio.run(scenario())
