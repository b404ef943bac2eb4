"""Security matrix row F4 over the management API of a real server, with the system resolver:
an allowed URL whose host name resolves to loopback, first or after a redirect, is 403 and the
origin listening at that address is never contacted."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import RunningServer, start_server, write_config


class _Origin(BaseHTTPRequestHandler):
    """A model host on 127.0.0.1: /models/moved_* redirects to /models/fetched.mar on this same
    port but by the name localhost; anything else serves a few bytes. Every path is recorded."""

    requests: list[str] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        if self.path.startswith("/models/moved_"):
            self.send_response(302)
            port = self.server.server_address[1]
            self.send_header("Location", f"http://localhost:{port}/models/fetched.mar")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"PK")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def origin() -> Iterator[int]:
    _Origin.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("addresses") / "model-store"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store: Path) -> Iterator[RunningServer]:
    """Model API on; allowed_urls lets both 127.0.0.1 and the name localhost through (the
    backslashes are doubled because .properties files unescape them)."""
    store.mkdir()
    tmp = tmp_path_factory.mktemp("addresses-server")
    config = write_config(
        tmp / "config.properties",
        enable_model_api="true",
        allowed_urls=r"http://(127\\.0\\.0\\.1|localhost):[0-9]+/models/[a-z0-9_]+\\.mar",
    )
    running = start_server(tmp, store, config)
    yield running
    assert running.stop() == 0, running.log()


def register(server: RunningServer, url: str) -> httpx.Response:
    with httpx.Client(base_url=server.urls["management"], timeout=60) as client:
        return client.post("/models", params={"url": url})


def test_a_name_resolving_to_loopback_is_403_before_connecting(
    server: RunningServer, store: Path, origin: int
) -> None:
    response = register(server, f"http://localhost:{origin}/models/fetched.mar")
    assert response.status_code == 403, response.text
    assert response.json()["message"] == (
        "URL not allowed: host localhost resolves to a loopback address (127.0.0.1)"
    )
    assert _Origin.requests == []
    assert list(store.iterdir()) == []


def test_a_redirect_to_a_name_resolving_to_loopback_is_403(
    server: RunningServer, store: Path, origin: int
) -> None:
    """The first hop is an IP literal the operator allowed, so it is fetched; its redirect names
    a host that resolves to loopback, and that hop is refused before it connects."""
    response = register(server, f"http://127.0.0.1:{origin}/models/moved_here.mar")
    assert response.status_code == 403, response.text
    assert response.json()["message"] == (
        "URL not allowed: host localhost resolves to a loopback address (127.0.0.1)"
    )
    assert _Origin.requests == ["/models/moved_here.mar"]
    assert list(store.iterdir()) == []
