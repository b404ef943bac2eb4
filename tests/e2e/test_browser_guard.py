"""Row E7 of the bad-input matrix against a real server with token auth off (local development):
DNS rebinding (a foreign Host), cross-site requests (a foreign Origin) and form bodies sent to
management, plus TorchServe's CORS keys and the ``allowed_hosts`` escape hatch."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import RunningServer, snapshot, start_server, write_config

EVIL = "evil.example"
APP = "https://app.example"


def _serve(tmp: Path, store: Path, **extra: object) -> RunningServer:
    config = write_config(
        tmp / "config.properties",
        enable_model_api="true",
        model_snapshot=snapshot({"name": "probe", "marName": "probe.mar"}),
        **extra,
    )
    return start_server(tmp, store, config)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, probe_store: Path) -> Iterator[RunningServer]:
    running = _serve(tmp_path_factory.mktemp("guarded"), probe_store)
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture(scope="module")
def cors_server(
    tmp_path_factory: pytest.TempPathFactory, probe_store: Path
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("cors")
    running = _serve(tmp, probe_store, cors_allowed_origin=APP, allowed_hosts="models.internal")
    yield running
    assert running.stop() == 0, running.log()


def management(server: RunningServer) -> httpx.Client:
    return httpx.Client(base_url=server.urls["management"], timeout=60)


def registered(server: RunningServer, name: str) -> bool:
    with management(server) as client:
        return client.get(f"/models/{name}").status_code == 200


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# DNS rebinding ------------------------------------------------------------------------------
def test_a_foreign_host_cannot_reach_management_or_metrics(server: RunningServer) -> None:
    port = port_of(server.urls["management"])
    with management(server) as client:
        refused = client.get("/models", headers={"Host": f"{EVIL}:{port}"})
        assert refused.status_code == 403
        assert "DNS rebinding" in refused.json()["message"]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"api.localhost:{port}"):
            assert client.get("/models", headers={"Host": host}).status_code == 200, host
    scrape = httpx.get(f"{server.urls['metrics']}/metrics", headers={"Host": EVIL})
    assert scrape.status_code == 403
    assert httpx.get(f"{server.urls['metrics']}/metrics").status_code == 200


def test_the_data_plane_answers_kserve_host_names(server: RunningServer) -> None:
    """KServe clients put the InferenceService's name in Host, as the seeds' curl does."""
    output = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Host: probe.default.example.com",
            f"{server.url}/predictions/probe",
            "-d",
            "{}",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert output == "200"


# cross-site requests ------------------------------------------------------------------------
def test_a_cross_site_registration_is_refused_and_registers_nothing(server: RunningServer) -> None:
    params = {"url": "probe.mar", "model_name": "csrf_copy", "synchronous": "true"}
    with management(server) as client:
        refused = client.post("/models", params=params, headers={"Origin": f"https://{EVIL}"})
        assert refused.status_code == 403
        assert "Cross-site request" in refused.json()["message"]
        assert not registered(server, "csrf_copy")
        # the same request without the foreign Origin goes through: the guard made the difference
        accepted = client.post("/models", params=params)
        assert accepted.status_code == 200, accepted.text
        assert registered(server, "csrf_copy")
        assert client.delete("/models/csrf_copy").status_code == 200


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_form_body_to_management_is_refused(server: RunningServer, content_type: str) -> None:
    params = {"url": "probe.mar", "model_name": "form_copy"}
    headers = {"Content-Type": content_type}
    with management(server) as client:
        refused = client.post("/models", params=params, headers=headers, content=b"x=1")
    assert refused.status_code == 403
    assert "cross-site request protection" in refused.json()["message"]
    assert not registered(server, "form_copy")


def test_inference_from_another_origin_is_refused_from_its_own_it_is_not(
    server: RunningServer,
) -> None:
    foreign = server.client.post("/predictions/probe", json={}, headers={"Origin": "null"})
    assert foreign.status_code == 403
    own = server.client.post("/predictions/probe", json={}, headers={"Origin": server.url})
    assert own.status_code == 200, own.text
    # reading is not a state change: a foreign Origin on GET is left to CORS in the browser
    assert server.client.get("/v1/models", headers={"Origin": f"https://{EVIL}"}).status_code == 200


def test_refusals_leave_the_server_serving(server: RunningServer) -> None:
    for _ in range(20):
        server.client.post("/predictions/probe", json={}, headers={"Origin": f"https://{EVIL}"})
    assert server.client.post("/predictions/probe", json={}).status_code == 200
    assert server.client.get("/ping").json() == {"status": "Healthy"}


# CORS and allowed_hosts ---------------------------------------------------------------------
def test_cors_allowed_origin_answers_preflights_and_admits_that_origin(
    cors_server: RunningServer,
) -> None:
    client = cors_server.client
    preflight = client.options(
        "/predictions/probe",
        headers={"Origin": APP, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == APP
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = client.post("/predictions/probe", json={}, headers={"Origin": APP})
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == APP
    other = client.post("/predictions/probe", json={}, headers={"Origin": f"https://{EVIL}"})
    assert other.status_code == 403
    assert "access-control-allow-origin" not in other.headers


def test_allowed_hosts_adds_names_a_loopback_listener_answers(cors_server: RunningServer) -> None:
    with management(cors_server) as client:
        assert client.get("/models", headers={"Host": "models.internal"}).status_code == 200
        assert client.get("/models", headers={"Host": EVIL}).status_code == 403
