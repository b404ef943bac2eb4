"""HTTPS on the REST listeners with TorchServe's keys (PEM files and a PKCS12 keystore),
checked with curl and httpx against a self-signed CA; plain HTTP to them is refused."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    load_pem_private_key,
    pkcs12,
)
from cryptography.x509 import load_pem_x509_certificate

from tests.e2e.server import RunningServer, serve_command, start_server, write_config

CURL = shutil.which("curl")
HTTPS = {
    "inference_address": "https://127.0.0.1:0",
    "management_address": "https://127.0.0.1:0",
    "metrics_address": "https://127.0.0.1:0",
}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path, Path, Path]:
    """A self-signed CA, its PEM, and a server key and certificate for 127.0.0.1 it issued."""
    folder = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    ca_pem, key, cert = folder / "ca.pem", folder / "server.key", folder / "server.pem"
    authority.cert_pem.write_to_path(str(ca_pem))
    issued.private_key_pem.write_to_path(str(key))
    issued.cert_chain_pems[0].write_to_path(str(cert))
    return authority, ca_pem, key, cert


def wait_https(server: RunningServer, ca_pem: Path) -> None:
    deadline = time.monotonic() + 60
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca_pem))) as client:
        while time.monotonic() < deadline:
            try:
                if client.get(server.urls["inference"] + "/ping").status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
    raise TimeoutError(server.log())


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, ca: tuple[trustme.CA, Path, Path, Path]
) -> Iterator[RunningServer]:
    _, ca_pem, key, cert = ca
    tmp = tmp_path_factory.mktemp("https-server")
    store = tmp / "model-store"
    store.mkdir()
    config = write_config(
        tmp / "config.properties", private_key_file=key, certificate_file=cert, **HTTPS
    )
    running = start_server(tmp, store, config, wait=False)
    wait_https(running, ca_pem)
    yield running
    assert running.stop() == 0, running.log()


def verified(ca_pem: Path) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(ca_pem)), timeout=30)


def test_every_rest_listener_speaks_tls(
    server: RunningServer, ca: tuple[trustme.CA, Path, Path, Path]
) -> None:
    ca_pem = ca[1]
    assert all(server.urls[api].startswith("https://") for api in ("inference", "management"))
    with verified(ca_pem) as client:
        assert client.get(server.urls["inference"] + "/ping").json() == {"status": "Healthy"}
        assert client.get(server.urls["management"] + "/models").json() == {"models": []}
        scraped = client.get(server.urls["metrics"] + "/metrics")
        assert scraped.status_code == 200 and "Requests2XX" in scraped.text
        options = client.request("OPTIONS", server.urls["inference"] + "/")
        assert options.status_code == 200


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_with_the_ca_and_without_it(
    server: RunningServer, ca: tuple[trustme.CA, Path, Path, Path]
) -> None:
    url = server.urls["inference"] + "/ping"
    ok = subprocess.run(
        [str(CURL), "-sS", "--cacert", str(ca[1]), url], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0 and '"Healthy"' in ok.stdout, ok.stderr
    unknown = subprocess.run([str(CURL), "-sS", url], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 60, unknown.stderr  # the certificate cannot be verified
    plain = url.replace("https://", "http://")
    refused = subprocess.run(
        [str(CURL), "-sS", "-o", "-", "-w", "%{http_code}", plain],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.stdout.endswith("403") and "only accepts HTTPS" in refused.stdout


def test_plain_http_to_an_https_port_is_refused_as_torchserve_does(
    server: RunningServer, ca: tuple[trustme.CA, Path, Path, Path]
) -> None:
    for api in ("inference", "management", "metrics"):
        plain = server.urls[api].replace("https://", "http://")
        answer = httpx.get(plain + "/ping", timeout=30)
        assert answer.status_code == 403
        assert answer.json()["message"] == "This marserve instance only accepts HTTPS requests"
    with verified(ca[1]) as client:  # still serving
        assert client.get(server.urls["inference"] + "/ping").status_code == 200


def test_a_broken_handshake_does_not_hurt_the_listener(
    server: RunningServer, ca: tuple[trustme.CA, Path, Path, Path]
) -> None:
    host, port = server.urls["inference"].removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        raw.sendall(b"\x16\x03\x01\x00\x05hello-not-tls")
        raw.settimeout(30)
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            raw.recv(100)
    with verified(ca[1]) as client:
        assert client.get(server.urls["inference"] + "/ping").status_code == 200
    assert "Traceback" not in server.log()


def keystore(ca: tuple[trustme.CA, Path, Path, Path], path: Path, password: bytes) -> Path:
    _, _, key, cert = ca
    data = pkcs12.serialize_key_and_certificates(
        b"marserve",
        load_pem_private_key(key.read_bytes(), None),  # type: ignore[arg-type]
        load_pem_x509_certificate(cert.read_bytes()),
        None,
        BestAvailableEncryption(password),
    )
    path.write_bytes(data)
    return path


def test_the_pkcs12_keystore_form(tmp_path: Path, ca: tuple[trustme.CA, Path, Path, Path]) -> None:
    store = tmp_path / "model-store"
    store.mkdir()
    config = write_config(
        tmp_path / "config.properties",
        keystore=keystore(ca, tmp_path / "keystore.p12", b"changeit"),
        keystore_pass="changeit",
        keystore_type="PKCS12",
        **HTTPS,
    )
    running = start_server(tmp_path, store, config, wait=False)
    try:
        wait_https(running, ca[1])
        with verified(ca[1]) as client:
            assert client.get(running.urls["management"] + "/models").status_code == 200
    finally:
        assert running.stop() == 0, running.log()


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({}, "needs private_key_file and certificate_file"),
        ({"keystore_type": "JKS", "keystore_pass": "x"}, "marserve reads PKCS12 keystores"),
        ({"keystore_pass": "wrong"}, "cannot load the TLS key and certificate"),
    ],
)
def test_tls_misconfiguration_stops_the_start_with_its_reason(
    tmp_path: Path, ca: tuple[trustme.CA, Path, Path, Path], keys: dict[str, str], message: str
) -> None:
    settings: dict[str, object] = {**HTTPS, **keys}
    if keys:
        settings["keystore"] = keystore(ca, tmp_path / "keystore.p12", b"changeit")
    config = write_config(tmp_path / "config.properties", **settings)
    store = tmp_path / "model-store"
    store.mkdir()
    command = serve_command(store, "--ts-config", str(config))
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
