"""The management API, token authorization and registration safety against a real server."""

from __future__ import annotations

import json
import shutil
import stat
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import ARCHIVER, EXAMPLE, run
from tests.e2e.server import RunningServer, snapshot, start_server, write_config

PNG = (EXAMPLE / "test_data" / "3.png").read_bytes()


@pytest.fixture(scope="module")
def store(
    tmp_path_factory: pytest.TempPathFactory, ts_mnist_store: Path, probe_store: Path
) -> Path:
    """mnist.mar (1.0) and mnist_v2.mar (2.0) from torch-model-archiver, plus probe.mar."""
    root = tmp_path_factory.mktemp("managed") / "model-store"
    root.mkdir()
    shutil.copy(ts_mnist_store / "mnist.mar", root / "mnist.mar")
    shutil.copy(probe_store / "probe.mar", root / "probe.mar")
    build = tmp_path_factory.mktemp("v2")
    run(
        ARCHIVER,
        "--model-name",
        "mnist_v2",
        "--version",
        "2.0",
        "--model-file",
        EXAMPLE / "mnist.py",
        "--serialized-file",
        EXAMPLE / "mnist_cnn.pt",
        "--handler",
        EXAMPLE / "mnist_handler.py",
        "--export-path",
        build,
    )
    shutil.copy(build / "mnist_v2.mar", root / "mnist_v2.mar")
    return root


class Keys:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __getitem__(self, scope: str) -> dict[str, str]:
        key = json.loads(self.path.read_text())[scope]["key"]
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def managed(tmp_path_factory: pytest.TempPathFactory, store: Path) -> Iterator[RunningServer]:
    """Model API on, token auth on, the probe model loaded; mnist is registered by the tests."""
    tmp = tmp_path_factory.mktemp("managed-server")
    config = write_config(
        tmp / "config.properties",
        enable_model_api="true",
        model_snapshot=snapshot({"name": "probe", "marName": "probe.mar", "maxWorkers": 2}),
        # config.properties follows Java's escapes: "\\." there is the regex's literal dot
        allowed_urls=r"http://127\\.0\\.0\\.1:[0-9]+/models/[a-z0-9_]+\\.mar",
    )
    text = config.read_text().replace("disable_token_authorization=true\n", "")
    config.write_text(text)
    server = start_server(tmp, store, config, "--key-file", str(tmp / "key_file.json"), wait=False)
    server.keys = Keys(tmp / "key_file.json")  # type: ignore[attr-defined]
    server.mgmt = httpx.Client(base_url=server.urls["management"], timeout=60)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while server.client.get("/ping").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    yield server
    server.mgmt.close()  # type: ignore[attr-defined]
    assert server.stop() == 0, server.log()


def mgmt(server: RunningServer) -> httpx.Client:
    return server.mgmt  # type: ignore[attr-defined,no-any-return]


def keys(server: RunningServer) -> Keys:
    return server.keys  # type: ignore[attr-defined,no-any-return]


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def predict(server: RunningServer, path: str = "/predictions/probe") -> httpx.Response:
    return server.client.post(path, json={}, headers=keys(server)["inference"])


# token authorization ------------------------------------------------------------------------
def test_key_file_is_private_and_keys_are_long(managed: RunningServer) -> None:
    path = keys(managed).path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert set(document) == {"inference", "management", "API"}
    for scope in document.values():
        assert len(scope["key"]) >= 22  # >= 128 bits of base64url


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "bearer {inference}", "Bearer {inference} {inference}", "{inference}"],
)
def test_missing_or_malformed_tokens_are_401(
    managed: RunningServer, authorization: str | None
) -> None:
    headers = {}
    if authorization is not None:
        key = keys(managed)["inference"]["Authorization"].split()[1]
        headers["Authorization"] = authorization.format(inference=key)
    response = managed.client.post("/predictions/probe", json={}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert set(response.json()) == {"code", "type", "message"}
    v2 = managed.client.post("/v2/models/probe/infer", content=b"{}", headers=headers)
    assert v2.status_code == 401 and "error" in v2.json()


def test_token_in_the_query_string_is_ignored(managed: RunningServer) -> None:
    key = keys(managed)["inference"]["Authorization"].split()[1]
    assert managed.client.post(f"/predictions/probe?token={key}", json={}).status_code == 401


def test_wrong_scope_is_403(managed: RunningServer) -> None:
    assert mgmt(managed).get("/models", headers=keys(managed)["inference"]).status_code == 403
    response = managed.client.post(
        "/predictions/probe", json={}, headers=keys(managed)["management"]
    )
    assert response.status_code == 403


def test_right_scopes_pass_and_probes_stay_open(managed: RunningServer) -> None:
    assert predict(managed).status_code == 200
    assert mgmt(managed).get("/models", headers=keys(managed)["management"]).status_code == 200
    assert managed.client.get("/ping").status_code == 200
    assert managed.client.get("/v2/health/ready").status_code == 200


def test_rotating_the_inference_key(managed: RunningServer) -> None:
    old = keys(managed)["inference"]
    response = mgmt(managed).get(
        "/token", params={"type": "inference"}, headers=keys(managed)["API"]
    )
    assert response.status_code == 200, response.text
    new = response.json()["inference"]["key"]
    assert managed.client.post("/predictions/probe", json={}, headers=old).status_code == 401
    reply = managed.client.post(
        "/predictions/probe", json={}, headers={"Authorization": f"Bearer {new}"}
    )
    assert reply.status_code == 200
    assert keys(managed)["inference"] == {"Authorization": f"Bearer {new}"}
    not_api = mgmt(managed).get(
        "/token", params={"type": "inference"}, headers=keys(managed)["management"]
    )
    assert not_api.status_code == 403


# registration, versions, scaling ----------------------------------------------------------
def register(server: RunningServer, **params: str) -> httpx.Response:
    return mgmt(server).post("/models", params=params, headers=keys(server)["management"])


def test_register_versions_default_and_unregister(managed: RunningServer, store: Path) -> None:
    auth = keys(managed)["management"]
    first = register(managed, url="mnist.mar", synchronous="true", initial_workers="1")
    assert first.status_code == 200, first.text
    assert 'Model "mnist" Version: 1.0 registered' in first.json()["status"]
    assert register(managed, url="mnist.mar").status_code == 409
    second = register(managed, url="mnist_v2.mar", model_name="mnist", initial_workers="1")
    assert second.status_code == 200, second.text
    for path, digit in [("/predictions/mnist", 3), ("/predictions/mnist/2.0", 3)]:
        reply = managed.client.post(path, content=PNG, headers=keys(managed)["inference"])
        assert reply.status_code == 200 and reply.json() == digit
    described = mgmt(managed).get("/models/mnist/all", headers=auth).json()
    assert [d["modelVersion"] for d in described] == ["1.0", "2.0"]
    assert [d["isDefault"] for d in described] == [True, False]
    assert described[0]["workers"][0]["status"] == "READY"
    assert described[0]["modelUrl"] == "mnist.mar"
    assert mgmt(managed).put("/models/mnist/2.0/set-default", headers=auth).status_code == 200
    assert mgmt(managed).get("/models/mnist", headers=auth).json()[0]["modelVersion"] == "2.0"
    assert mgmt(managed).delete("/models/mnist/2.0", headers=auth).status_code == 400
    mgmt(managed).put("/models/mnist/1.0/set-default", headers=auth)
    assert mgmt(managed).delete("/models/mnist/2.0", headers=auth).status_code == 200
    gone = managed.client.post(
        "/predictions/mnist/2.0", content=PNG, headers=keys(managed)["inference"]
    )
    assert gone.status_code == 404
    assert mgmt(managed).delete("/models/mnist", headers=auth).status_code == 200
    assert mgmt(managed).get("/models/mnist", headers=auth).status_code == 404
    assert predict(managed).status_code == 200


def test_list_pages(managed: RunningServer) -> None:
    auth = keys(managed)["management"]
    register(managed, url="mnist.mar")
    try:
        page = mgmt(managed).get("/models", params={"limit": 1}, headers=auth).json()
        assert page["models"] == [{"modelName": "mnist", "modelUrl": "mnist.mar"}]
        rest = (
            mgmt(managed)
            .get(
                "/models",
                params={"limit": 1, "next_page_token": page["nextPageToken"]},
                headers=auth,
            )
            .json()
        )
        assert rest["models"][0]["modelName"] == "probe" and "nextPageToken" not in rest
    finally:
        mgmt(managed).delete("/models/mnist", headers=auth)


def worker_count(server: RunningServer) -> int:
    return len(psutil.Process(server.pid).children())


def test_scaling_is_seen_as_worker_processes(managed: RunningServer) -> None:
    auth = keys(managed)["management"]
    before = worker_count(managed)
    up = mgmt(managed).put(
        "/models/probe",
        params={"min_worker": 2, "max_worker": 2, "synchronous": "true"},
        headers=auth,
    )
    assert up.status_code == 200, up.text
    assert worker_count(managed) == before + 1
    assert len(mgmt(managed).get("/models/probe", headers=auth).json()[0]["workers"]) == 2
    down = mgmt(managed).put(
        "/models/probe",
        params={"min_worker": 1, "max_worker": 1, "synchronous": "true"},
        headers=auth,
    )
    assert down.status_code == 200
    deadline = time.monotonic() + 10
    while worker_count(managed) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker_count(managed) == before
    assert predict(managed).status_code == 200


def test_autoscaling_adds_a_worker_under_sustained_load(managed: RunningServer) -> None:
    auth = keys(managed)["management"]
    mgmt(managed).put("/models/probe", params={"min_worker": 1, "max_worker": 2}, headers=auth)
    try:

        def busy(_: int) -> int:
            return managed.client.post(
                "/predictions/probe", json={"sleep": 0.4}, headers=keys(managed)["inference"]
            ).status_code

        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(busy, range(24)))
        assert set(codes) == {200}
        described = mgmt(managed).get("/models/probe", headers=auth).json()[0]
        assert described["currentWorkers"] == 2
        assert described["maxWorkers"] == 2
    finally:
        mgmt(managed).put(
            "/models/probe",
            params={"min_worker": 1, "max_worker": 1, "synchronous": "true"},
            headers=auth,
        )


@pytest.mark.parametrize(
    "params",
    [
        {"min_worker": "2", "max_worker": "1"},
        {"min_worker": "-1"},
        {"max_worker": "-1"},
        {"max_worker": "1000000000"},
    ],
)
def test_bad_scale_parameters_are_400(managed: RunningServer, params: dict[str, str]) -> None:
    response = mgmt(managed).put(
        "/models/probe", params=params, headers=keys(managed)["management"]
    )
    assert response.status_code == 400, response.text
    assert predict(managed).status_code == 200


# rows E and F ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"url": "../mnist.mar"}, 400),
        ({"url": "a/../../mnist.mar"}, 400),
        ({"url": "/etc/passwd"}, 400),
        ({"url": "file:///etc/passwd"}, 403),
        ({"url": "gopher://127.0.0.1/x.mar"}, 403),
        ({"url": "http://169.254.169.254/latest/meta-data/"}, 403),
        ({"url": "http://0x7f000001/models/x.mar"}, 403),
        ({"url": "http://[::1]/models/x.mar"}, 403),
        ({"url": "http://127.0.0.1:1@evil.example/models/x.mar"}, 403),
        ({"url": "http://127.0.0.1:1/models/../x.mar"}, 403),
        ({"url": "http://127.0.0.1:1/models/%2e%2e/x.mar"}, 403),
        ({"url": "http://127.0.0.1:1\\models\\x.mar"}, 403),
        ({"url": "HTTP://evil.example/models/x.mar"}, 403),
        ({"url": "mnist.mar", "model_name": "../evil"}, 400),
        ({"url": "mnist.mar", "model_name": "model;test"}, 400),
        ({"url": "mnist.mar", "handler": "os:system"}, 400),
        ({"url": "nope.mar"}, 404),
        ({}, 400),
    ],
)
def test_registration_refusals(
    managed: RunningServer, store: Path, params: dict[str, str], status: int
) -> None:
    before = files_under(store.parent)
    response = register(managed, **params)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"code", "type", "message"}
    assert files_under(store.parent) == before
    assert predict(managed).status_code == 200


def hostile_archive(path: Path, member: str) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        manifest = {
            "runtime": "python",
            "model": {"modelName": "evil", "handler": "h.py", "modelVersion": "1.0"},
        }
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        archive.writestr("h.py", "def handle(data, context):\n    return data\n")
        archive.writestr(member, b"x")


def zip_bomb(path: Path) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        manifest = {"runtime": "python", "model": {"modelName": "bomb", "handler": "h.py"}}
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        archive.writestr("h.py", "def handle(data, context):\n    return data\n")
        archive.writestr("zeros.bin", b"\x00" * (300 << 20))


@pytest.mark.parametrize("member", ["../../evil.py", "/etc/cron.d/x", "a/../../x"])
def test_zip_slip_over_the_api_is_refused(managed: RunningServer, store: Path, member: str) -> None:
    archive = store / "evil.mar"
    hostile_archive(archive, member)
    try:
        before = files_under(store.parent.parent)
        response = register(managed, url="evil.mar")
        assert response.status_code == 400, response.text
        assert "evil.mar" in response.json()["message"]
        assert files_under(store.parent.parent) == before
        assert predict(managed).status_code == 200
    finally:
        archive.unlink()


def test_zip_bomb_over_the_api_is_refused(managed: RunningServer, store: Path) -> None:
    archive = store / "bomb.mar"
    zip_bomb(archive)
    try:
        response = register(managed, url="bomb.mar")
        assert response.status_code in (400, 413), response.text
        assert predict(managed).status_code == 200
    finally:
        archive.unlink()


class _Origin(BaseHTTPRequestHandler):
    """A local model host: /models/*.mar serves a file; /hop and /models/redirect_* redirect."""

    requests: list[str] = []
    payload = b""

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        if self.path.startswith(("/hop", "/models/redirect_")):
            self.send_response(302)
            target = self.path.split("to=", 1)[1] if "to=" in self.path else "/elsewhere/x.mar"
            self.send_header("Location", target)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def origin(store: Path) -> Iterator[str]:
    _Origin.payload = (store / "mnist_v2.mar").read_bytes()
    _Origin.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_from_an_allowed_url(managed: RunningServer, store: Path, origin: str) -> None:
    auth = keys(managed)["management"]
    response = register(
        managed, url=f"{origin}/models/fetched.mar", model_name="fetched", initial_workers="1"
    )
    try:
        assert response.status_code == 200, response.text
        assert (store / "fetched.mar").is_file()
        reply = managed.client.post(
            "/predictions/fetched", content=PNG, headers=keys(managed)["inference"]
        )
        assert reply.json() == 3
    finally:
        mgmt(managed).delete("/models/fetched", headers=auth)
        (store / "fetched.mar").unlink(missing_ok=True)
    assert not [p for p in store.iterdir() if p.name.startswith(".download")]


def test_redirects_are_checked_before_they_are_followed(
    managed: RunningServer, store: Path, origin: str
) -> None:
    before = files_under(store.parent)
    hop = register(managed, url=f"{origin}/hop?to={origin}/models/x.mar")
    assert hop.status_code == 403  # /hop itself is not an allowed URL
    assert _Origin.requests == []  # refused before any connection
    bounce = register(managed, url=f"{origin}/models/redirect_me.mar")
    assert bounce.status_code == 403, bounce.text
    assert "allowed_urls" in bounce.json()["message"]
    assert _Origin.requests == ["/models/redirect_me.mar"]  # /elsewhere was never fetched
    assert files_under(store.parent) == before
    assert predict(managed).status_code == 200


def test_v2_repository_extension(managed: RunningServer) -> None:
    auth = keys(managed)["management"]
    index = managed.client.post("/v2/repository/index", headers=auth).json()
    assert {"name": "probe", "version": "1.0", "state": "READY", "reason": ""} in index
    assert any(e["name"] == "mnist" and e["state"] == "UNAVAILABLE" for e in index)
    assert managed.client.post("/v2/repository/models/mnist/load", headers=auth).status_code == 200
    ready = managed.client.get("/v2/models/mnist/ready", headers=keys(managed)["inference"])
    assert ready.status_code == 200
    assert (
        managed.client.post("/v2/repository/models/mnist/unload", headers=auth).status_code == 200
    )
    assert (
        managed.client.get("/v2/models/mnist/ready", headers=keys(managed)["inference"]).status_code
        == 404
    )


def test_model_api_is_off_by_default(tmp_path: Path, store: Path) -> None:
    config = write_config(
        tmp_path / "config.properties",
        model_snapshot=snapshot({"name": "probe", "marName": "probe.mar"}),
    )
    server = start_server(tmp_path, store, config)
    try:
        management = httpx.Client(base_url=server.urls["management"])
        before = files_under(store.parent)
        assert management.post("/models", params={"url": "mnist.mar"}).status_code == 405
        assert management.delete("/models/probe").status_code == 405
        assert management.get("/models").status_code == 200
        assert management.get("/models/probe").json()[0]["modelName"] == "probe"
        assert server.client.post("/v2/repository/models/mnist/load").status_code == 405
        assert files_under(store.parent) == before
        management.close()
    finally:
        assert server.stop() == 0


def test_unknown_model_names_in_management_are_404(managed: RunningServer) -> None:
    auth = keys(managed)["management"]
    for name in ("nope", "%2e%2e", "model$(id)", "a" * 300):
        assert mgmt(managed).get(f"/models/{name}", headers=auth).status_code == 404


def test_unregister_drains_in_flight_requests(managed: RunningServer) -> None:
    auth = keys(managed)["management"]
    registered = register(managed, url="probe.mar", model_name="probe_b", initial_workers="1")
    assert registered.status_code == 200, registered.text

    def slow(_: int) -> int:
        return managed.client.post(
            "/predictions/probe_b", json={"sleep": 0.5}, headers=keys(managed)["inference"]
        ).status_code

    with ThreadPoolExecutor(3) as pool:
        in_flight = [pool.submit(slow, i) for i in range(3)]
        time.sleep(0.2)
        started = time.monotonic()
        answer = mgmt(managed).delete("/models/probe_b", headers=auth)
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - started >= 0.2  # it waited for the queue to drain
        assert [f.result() for f in in_flight] == [200, 200, 200]
    after = managed.client.post("/predictions/probe_b", json={}, headers=keys(managed)["inference"])
    assert after.status_code == 404
    assert predict(managed).status_code == 200
