"""Real object stores on 127.0.0.1 for the storage tests: moto (S3), gcp-storage-emulator (GCS),
Azurite (Azure Blob, from the npm cache the Makefile fills) and a TLS server with its own CA."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

AZURITE = Path(
    os.environ.get(
        "MARSERVE_AZURITE", "~/.cache/marserve/azurite-3.35.0/node_modules/.bin/azurite-blob"
    )
).expanduser()
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's documented, public well-known development key (not a secret).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@contextmanager
def moto_s3() -> Iterator[str]:
    """The endpoint URL of a fresh moto server."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextmanager
def gcs_emulator() -> Iterator[str]:
    """The STORAGE_EMULATOR_HOST of a fresh in-memory gcp-storage-emulator."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextmanager
def azurite(tmp: Path) -> Iterator[str]:
    """An Azure connection string for a fresh Azurite blob service."""
    port = free_port()
    process = subprocess.Popen(
        [
            str(AZURITE),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(tmp / "azurite"),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
        )
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(tmp / "azurite", ignore_errors=True)


class _FileHandler(http.server.SimpleHTTPRequestHandler):
    stall_after: int | None = None  # bytes of body sent before the server stops sending
    release: threading.Event

    def log_message(self, format: str, *args: object) -> None:
        pass

    def copyfile(self, source, outputfile) -> None:  # type: ignore[no-untyped-def]
        if self.stall_after is None:
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(self.stall_after))
        outputfile.flush()
        self.release.wait(30)  # stalled until the server stops: then the handler ends cleanly


@contextmanager
def tls_server(root: Path, tmp: Path, stall_after: int | None = None) -> Iterator[tuple[str, Path]]:
    """``(base URL, CA bundle)`` of an HTTPS server on 127.0.0.1 serving ``root``, its
    certificate signed by a CA made here (trustme); optionally stalling mid-body."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    bundle = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    release = threading.Event()
    handler = type("Handler", (_FileHandler,), {"stall_after": stall_after, "release": release})

    def make(*args: object) -> http.server.BaseHTTPRequestHandler:
        return handler(*args, directory=str(root))  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)  # type: ignore[arg-type]
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", bundle
    finally:
        release.set()
        server.shutdown()
        server.server_close()  # joins the handler threads (block_on_close)
