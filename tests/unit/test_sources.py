"""Registration sources: URL checks before any I/O, model names, store-relative paths, and the
addresses a download may reach (security matrix row F4)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from marserve.errors import Forbidden, InvalidInput, MarserveError, NotFound
from marserve.repository import ModelStore
from marserve.sources import (
    DownloadLimits,
    Resolver,
    check_model_name,
    checked_url,
    download,
    local_archive,
    pin,
)

ALLOWED = (r"https://models\.example\.com/[a-z]+/[a-z0-9_]+\.mar",)


@pytest.mark.parametrize(
    "url",
    [
        "https://models.example.com/prod/mnist.mar",
        "HTTPS://models.example.com/prod/mnist.mar",  # scheme case is normalised
        "https://MODELS.example.com/prod/mnist.mar",  # so is the host
    ],
)
def test_allowed(url: str) -> None:
    assert checked_url(url, ALLOWED) == "https://models.example.com/prod/mnist.mar"


@pytest.mark.parametrize(
    "url",
    [
        "https://models.example.com@evil.com/prod/mnist.mar",
        "https://user:pw@models.example.com/prod/mnist.mar",
        "https://models.example.com.evil.com/prod/mnist.mar",
        "https://evil.com/?x=https://models.example.com/prod/mnist.mar",
        "https://models.example.com/prod/../mnist.mar",
        "https://models.example.com/prod/%2e%2e/mnist.mar",
        "https://models.example.com\\prod\\mnist.mar",
        "https://models.example.com./prod/mnist.mar",
        "http://models.example.com/prod/mnist.mar",
        "file:///etc/passwd",
        "ftp://models.example.com/prod/mnist.mar",
        "gopher://models.example.com/prod/mnist.mar",
        "jar:https://models.example.com/prod/mnist.mar!/",
        "https://models.example.com/prod/mnist.mar\n",
        "https:///prod/mnist.mar",
    ],
)
def test_refused_before_io(url: str) -> None:
    with pytest.raises(Forbidden):
        checked_url(url, ALLOWED)


def test_nothing_is_allowed_by_default() -> None:
    with pytest.raises(Forbidden, match="allowed_urls"):
        checked_url("https://models.example.com/prod/mnist.mar", ())


@pytest.mark.parametrize("name", ["mnist", "m1", "model..1", "a.b-c_d", "9lives"])
def test_good_model_names(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "..",
        "../x",
        "a/b",
        "model;test",
        "model`x`",
        "model$(id)",
        " ..",
        ".hidden",
        "a" * 300,
        "név",
    ],
)
def test_bad_model_names(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_model_name(name)


def test_local_archives_stay_in_the_store(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    (store_dir / "m.mar").write_bytes(b"x")
    (tmp_path / "outside.mar").write_bytes(b"x")
    store = ModelStore(store_dir)
    assert local_archive("m.mar", store) == (store_dir / "m.mar").resolve()
    for url in (
        "../outside.mar",
        "/etc/passwd",
        str(tmp_path / "outside.mar"),
        "C:x.mar",
        "a/../../outside.mar",
        "~/x.mar",
    ):
        with pytest.raises(InvalidInput):
            local_archive(url, store)
    (store_dir / "link.mar").symlink_to(tmp_path / "outside.mar")
    with pytest.raises(InvalidInput):
        local_archive("link.mar", store)
    with pytest.raises(NotFound):
        local_archive("missing.mar", store)


# addresses: security matrix row F4 ------------------------------------------------------------

MODELS = (
    r"https?://(models|other)\.test(:[0-9]+)?/models/[a-z0-9_]+\.mar",
    r"http://(127\.0\.0\.1|localhost|127\.1):[0-9]+/models/[a-z0-9_]+\.mar",
    r"http://(0\.0\.0\.0|0\.1\.2\.3|224\.0\.0\.1|\[::\]|\[ff02::1\]|\[::ffff:0:0\])"
    r"/models/[a-z0-9_]+\.mar",
)
PAYLOAD = b"PK not really an archive, only bytes to copy"


class FakeDns:
    """A resolver whose answers a test chooses: the n-th lookup of a host gets its n-th answer
    (the last one repeats), so a test can play a name that rebinds between lookups."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.calls.append(host)
        answers = self.answers[host]
        return answers[min(self.calls.count(host), len(answers)) - 1]


class Recorder:
    """A transport that records every request it is asked to send and answers with ``respond``."""

    def __init__(self, respond: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.sent: list[httpx.Request] = []
        self.respond = respond or (lambda request: httpx.Response(200, content=PAYLOAD))
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return self.respond(request)


def fetch(
    url: str,
    store: Path,
    dns: FakeDns | None = None,
    recorder: Recorder | None = None,
    limits: DownloadLimits | None = None,
) -> Path:
    extra = {"resolve": dns} if dns is not None else {}
    transport = recorder.transport if recorder is not None else None
    job = download(
        url, ModelStore(store), MODELS, limits or DownloadLimits(), transport=transport, **extra
    )
    return asyncio.run(job)


def leftovers(store: Path) -> list[str]:
    return sorted(p.name for p in store.iterdir())


@pytest.mark.parametrize(
    ("answers", "kind", "shown"),
    [
        (["127.0.0.1"], "a loopback", "127.0.0.1"),
        (["127.8.9.10"], "a loopback", "127.8.9.10"),
        (["::1"], "a loopback", "::1"),
        (["169.254.169.254"], "a link-local", "169.254.169.254"),  # cloud metadata
        (["fe80::1"], "a link-local", "fe80::1"),
        (["::ffff:127.0.0.1"], "a loopback", "::ffff:127.0.0.1"),
        (["::ffff:169.254.169.254"], "a link-local", "::ffff:169.254.169.254"),
        (["64:ff9b::a9fe:a9fe"], "a link-local", "64:ff9b::a9fe:a9fe"),  # NAT64 of the metadata
        (["93.184.216.34", "10.0.0.5", "127.0.0.1"], "a loopback", "127.0.0.1"),
        (["0.0.0.0"], "an unspecified", "0.0.0.0"),
        (["0.1.2.3"], "an unspecified", "0.1.2.3"),
        (["::"], "an unspecified", "::"),
        (["224.0.0.251"], "a multicast", "224.0.0.251"),
        (["ff02::fb"], "a multicast", "ff02::fb"),
        (["240.0.0.1"], "a reserved", "240.0.0.1"),
        (["255.255.255.255"], "a reserved", "255.255.255.255"),
    ],
)
def test_names_resolving_to_local_addresses_are_refused_before_connecting(
    tmp_path: Path, answers: list[str], kind: str, shown: str
) -> None:
    dns = FakeDns({"models.test": [answers]})
    recorder = Recorder()
    with pytest.raises(Forbidden) as refused:
        fetch("https://models.test/models/mnist.mar", tmp_path, dns, recorder)
    assert refused.value.http_status == 403
    assert refused.value.message == (
        f"URL not allowed: host models.test resolves to {kind} address ({shown})"
    )
    assert recorder.sent == []
    assert dns.calls == ["models.test"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("address", ["10.0.0.5", "172.16.3.4", "192.168.1.2", "fd00::5"])
def test_private_addresses_stay_allowed_for_names(tmp_path: Path, address: str) -> None:
    """In-cluster registries (MinIO and the like) resolve to private addresses."""
    recorder = Recorder()
    path = fetch(
        "http://models.test/models/mnist.mar",
        tmp_path,
        FakeDns({"models.test": [[address]]}),
        recorder,
    )
    assert path.read_bytes() == PAYLOAD
    [request] = recorder.sent
    assert request.url.host == address
    assert leftovers(tmp_path) == ["mnist.mar"]


def test_the_connection_goes_to_the_address_that_was_checked(tmp_path: Path) -> None:
    """A name that rebinds to loopback after the check: the one lookup decides, and the request
    names that address, with the host name kept for Host, SNI and certificate checks."""
    dns = FakeDns({"models.test": [["10.0.0.5"], ["127.0.0.1"]]})
    recorder = Recorder()
    path = fetch("https://models.test:8443/models/mnist.mar", tmp_path, dns, recorder)
    assert path.read_bytes() == PAYLOAD
    assert dns.calls == ["models.test"]
    [request] = recorder.sent
    assert (request.url.scheme, request.url.host, request.url.port) == ("https", "10.0.0.5", 8443)
    assert request.url.path == "/models/mnist.mar"
    assert request.headers["host"] == "models.test:8443"
    assert request.extensions["sni_hostname"] == "models.test"


def test_a_refused_answer_is_not_looked_up_again(tmp_path: Path) -> None:
    dns = FakeDns({"models.test": [["127.0.0.1"], ["10.0.0.5"]]})
    recorder = Recorder()
    with pytest.raises(Forbidden, match="loopback"):
        fetch("http://models.test/models/mnist.mar", tmp_path, dns, recorder)
    assert dns.calls == ["models.test"]
    assert recorder.sent == []


def test_plain_http_by_name_sends_no_sni(tmp_path: Path) -> None:
    recorder = Recorder()
    fetch(
        "http://models.test/models/mnist.mar",
        tmp_path,
        FakeDns({"models.test": [["10.0.0.5"]]}),
        recorder,
    )
    [request] = recorder.sent
    assert str(request.url) == "http://10.0.0.5/models/mnist.mar"
    assert request.headers["host"] == "models.test"
    assert "sni_hostname" not in request.extensions


def redirect_to(location: str) -> Callable[[httpx.Request], httpx.Response]:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/models/moved.mar":
            return httpx.Response(302, headers={"Location": location})
        return httpx.Response(200, content=PAYLOAD)

    return respond


def test_each_redirect_hop_is_resolved_once_and_pinned(tmp_path: Path) -> None:
    """A relative Location is resolved against the name-based URL, not the pinned address."""
    dns = FakeDns({"models.test": [["10.0.0.5"], ["10.0.0.6"], ["127.0.0.1"]]})
    recorder = Recorder(redirect_to("/models/mnist.mar"))
    path = fetch("http://models.test/models/moved.mar", tmp_path, dns, recorder)
    assert path.name == "moved.mar"
    assert path.read_bytes() == PAYLOAD
    assert dns.calls == ["models.test", "models.test"]
    assert [(r.url.host, r.url.path, r.headers["host"]) for r in recorder.sent] == [
        ("10.0.0.5", "/models/moved.mar", "models.test"),
        ("10.0.0.6", "/models/mnist.mar", "models.test"),
    ]


def test_a_redirect_to_a_name_resolving_to_loopback_is_refused(tmp_path: Path) -> None:
    dns = FakeDns({"models.test": [["93.184.216.34"]], "other.test": [["127.0.0.1"]]})
    recorder = Recorder(redirect_to("http://other.test/models/mnist.mar"))
    with pytest.raises(Forbidden) as refused:
        fetch("https://models.test/models/moved.mar", tmp_path, dns, recorder)
    assert refused.value.message == (
        "URL not allowed: host other.test resolves to a loopback address (127.0.0.1)"
    )
    assert dns.calls == ["models.test", "other.test"]
    assert [str(r.url) for r in recorder.sent] == ["https://93.184.216.34/models/moved.mar"]
    assert leftovers(tmp_path) == []


def test_a_redirect_to_a_loopback_literal_outside_allowed_urls_is_refused(tmp_path: Path) -> None:
    dns = FakeDns({"models.test": [["93.184.216.34"]]})
    recorder = Recorder(redirect_to("http://127.0.0.1/models/mnist.mar"))
    with pytest.raises(Forbidden, match="allowed_urls"):
        fetch("https://models.test/models/moved.mar", tmp_path, dns, recorder)
    assert len(recorder.sent) == 1


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://0.0.0.0/models/mnist.mar", "an unspecified"),
        ("http://0.1.2.3/models/mnist.mar", "an unspecified"),
        ("http://[::]/models/mnist.mar", "an unspecified"),
        ("http://[::ffff:0:0]/models/mnist.mar", "an unspecified"),
        ("http://224.0.0.1/models/mnist.mar", "a multicast"),
        ("http://[ff02::1]/models/mnist.mar", "a multicast"),
    ],
)
def test_unspecified_and_multicast_literals_are_refused_even_when_allowed(
    tmp_path: Path, url: str, kind: str
) -> None:
    dns = FakeDns({})
    recorder = Recorder()
    with pytest.raises(Forbidden, match=f"is {kind} address"):
        fetch(url, tmp_path, dns, recorder)
    assert recorder.sent == []
    assert dns.calls == []


def test_resolution_failures_are_reported(tmp_path: Path) -> None:
    async def unknown(host: str) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def empty(host: str) -> list[str]:
        return []

    async def hangs(host: str) -> list[str]:
        await asyncio.sleep(10)
        return ["10.0.0.5"]

    store = ModelStore(tmp_path)
    url = "http://models.test/models/mnist.mar"
    recorder = Recorder()

    def attempt(resolve: Resolver, limits: DownloadLimits) -> None:
        transport = recorder.transport
        asyncio.run(download(url, store, MODELS, limits, resolve=resolve, transport=transport))

    with pytest.raises(InvalidInput, match=r"cannot resolve host models\.test"):
        attempt(unknown, DownloadLimits())
    with pytest.raises(InvalidInput, match=r"host models\.test has no addresses"):
        attempt(empty, DownloadLimits())
    with pytest.raises(MarserveError, match=r"Timed out resolving host models\.test") as slow:
        attempt(hangs, DownloadLimits(connect_timeout_s=0.05))
    assert slow.value.http_status == 504
    assert recorder.sent == []
    assert leftovers(tmp_path) == []


# real connections on 127.0.0.1 -------------------------------------------------------------


class _Origin(BaseHTTPRequestHandler):
    """Serves PAYLOAD for any path and records (path, Host header) of each request."""

    seen: list[tuple[str, str]] = []

    def do_GET(self) -> None:
        type(self).seen.append((self.path, self.headers.get("Host", "")))
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args: object) -> None:
        pass


def serve(httpd: ThreadingHTTPServer) -> Iterator[int]:
    _Origin.seen = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture()
def origin() -> Iterator[int]:
    """The port of a plain HTTP origin on 127.0.0.1."""
    yield from serve(ThreadingHTTPServer(("127.0.0.1", 0), _Origin))


def test_an_allowed_ip_literal_is_fetched_as_written(tmp_path: Path, origin: int) -> None:
    dns = FakeDns({})
    path = fetch(f"http://127.0.0.1:{origin}/models/mnist.mar", tmp_path, dns)
    assert path.read_bytes() == PAYLOAD
    assert dns.calls == []
    assert _Origin.seen == [("/models/mnist.mar", f"127.0.0.1:{origin}")]
    assert leftovers(tmp_path) == ["mnist.mar"]


@pytest.mark.parametrize("host", ["localhost", "127.1"])
def test_the_system_resolver_refuses_names_of_this_host(
    tmp_path: Path, origin: int, host: str
) -> None:
    """No fake DNS: ``localhost`` (from /etc/hosts) and the numeric name ``127.1`` both reach
    getaddrinfo, which answers 127.0.0.1; the origin listening there must see nothing."""
    with pytest.raises(Forbidden, match=f"host {host} resolves to a loopback address"):
        fetch(f"http://{host}:{origin}/models/mnist.mar", tmp_path)
    assert _Origin.seen == []
    assert leftovers(tmp_path) == []


# A test CA and a certificate for models.test signed by it (EC P-256, valid 2000-2100): made with
# `openssl ca` for this test, so that https by name can be checked against a local origin.
TEST_CA = """-----BEGIN CERTIFICATE-----
MIIBajCCAQ+gAwIBAgIBATAKBggqhkjOPQQDAjAbMRkwFwYDVQQDDBBtYXJzZXJ2
ZSB0ZXN0IENBMCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAwWjAbMRkw
FwYDVQQDDBBtYXJzZXJ2ZSB0ZXN0IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcD
QgAE/8Wq/TQpf/vWXweYVG5THZj3YZmmXWIGZ4tot7PL7+5PQigfpLYgmqhWt9Lg
aFohTeqv/OfNz/2qO+HsDJaPTKNCMEAwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8B
Af8EBAMCAQYwHQYDVR0OBBYEFPmxJ3s2LeXa7rXl0yap5bx50f1GMAoGCCqGSM49
BAMCA0kAMEYCIQD75lK/buOixoF5cFsdfOzN9eV7ajVFxYkO1lpeMbXkEgIhAKbs
B7OHUdDr0xvEGgF46qXS6GoxqbWSH3rK4yMnOCVu
-----END CERTIFICATE-----
"""
MODELS_TEST_CERT = """-----BEGIN CERTIFICATE-----
MIIBsTCCAVegAwIBAgIBAjAKBggqhkjOPQQDAjAbMRkwFwYDVQQDDBBtYXJzZXJ2
ZSB0ZXN0IENBMCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAwWjAWMRQw
EgYDVQQDDAttb2RlbHMudGVzdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABB0w
bYzduE91EB6Hxhc5NhSng6RtPms/moYOyC8sEIaDneDb/t56xKuL2vf0Vd3Qe4cp
JxidHvGeLuxxQIr1p3CjgY4wgYswDAYDVR0TAQH/BAIwADAOBgNVHQ8BAf8EBAMC
B4AwEwYDVR0lBAwwCgYIKwYBBQUHAwEwFgYDVR0RBA8wDYILbW9kZWxzLnRlc3Qw
HQYDVR0OBBYEFLoIsrtztjLINi+VlqVQ4UOWckX/MB8GA1UdIwQYMBaAFPmxJ3s2
LeXa7rXl0yap5bx50f1GMAoGCCqGSM49BAMCA0gAMEUCIHvQraJB+65I3NMoGjg5
KlYFHHZTfxhBm0xoL17L8Ae+AiEAkj5vNoIY3VNa0EhGb52m/n5bULRKXnt+TiV/
FsAYMGw=
-----END CERTIFICATE-----
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQghDYd8Sb/w9LiCMvn
WdI4oiwGfDiV2I23+tO2PFVP2B2hRANCAAQdMG2M3bhPdRAeh8YXOTYUp4OkbT5r
P5qGDsgvLBCGg53g2/7eesSri9r39FXd0HuHKScYnR7xni7scUCK9adw
-----END PRIVATE KEY-----
"""


@pytest.fixture()
def tls_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, list[str]]]:
    """An HTTPS origin on 127.0.0.1 holding a certificate for models.test only (no IP in it),
    and the TLS server names its clients sent."""
    chain = tmp_path_factory.mktemp("tls") / "models.test.pem"
    chain.write_text(MODELS_TEST_CERT)
    names: list[str] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain)
    context.sni_callback = lambda sock, name, ctx: names.append(name or "")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    for port in serve(httpd):
        yield port, names


def test_https_by_name_verifies_the_certificate_for_the_name(
    tls_origin: tuple[int, list[str]],
) -> None:
    """The request goes to 127.0.0.1, yet TLS must send and verify ``models.test``: a
    certificate check against the IP would fail, since the certificate names only the host."""
    port, names = tls_origin
    hop = pin(f"https://models.test:{port}/models/mnist.mar", ipaddress.ip_address("127.0.0.1"))
    assert hop.connect_url == f"https://127.0.0.1:{port}/models/mnist.mar"

    async def get() -> bytes:
        trust = ssl.create_default_context(cadata=TEST_CA)
        async with httpx.AsyncClient(verify=trust) as client, hop.stream(client) as response:
            assert response.status_code == 200
            return await response.aread()

    assert asyncio.run(get()) == PAYLOAD
    assert names == ["models.test"]
    assert _Origin.seen == [("/models/mnist.mar", f"models.test:{port}")]


# the whole-download deadline (row F6) --------------------------------------------------------


class _Trickle(BaseHTTPRequestHandler):
    """Promises a 1 MiB archive, then sends one byte every 50 ms: no single read ever waits
    long, so only a deadline on the whole download can end it."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        try:
            for _ in range(200):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: object) -> None:
        pass


def test_a_trickling_download_ends_at_the_deadline_with_504(tmp_path: Path) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    for port in serve(httpd):
        limits = DownloadLimits(timeout_s=0.5, connect_timeout_s=5.0)
        started = time.monotonic()
        with pytest.raises(MarserveError) as caught:
            fetch(f"http://127.0.0.1:{port}/models/slow.mar", tmp_path, limits=limits)
        assert caught.value.http_status == 504
        assert "Timed out downloading" in caught.value.message
        assert time.monotonic() - started < 5.0  # the 200 bytes would take 10 s
        assert leftovers(tmp_path) == []  # the partial file is gone
