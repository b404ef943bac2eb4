"""Ready means ready: start-up, scale-down and worker restarts never turn requests away."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ARCHIVER, run
from tests.e2e.server import (
    RunningServer,
    pin_inference_port,
    serve_command,
    snapshot,
    start_server,
    write_config,
)

DEADLINE_S = 60.0

# Loads at once, unless the flag file named in its model directory's ``flag.txt`` exists: then
# its initialisation takes a minute (a worker that stays STARTING while the test runs).
SLOW_START_HANDLER = """
import os
import time


def handle(data, context):
    if data is None:
        flag = open(os.path.join(context.system_properties["model_dir"], "flag.txt")).read()
        if os.path.exists(flag.strip()):
            time.sleep(60)
        return None
    return [{"pid": os.getpid()} for _ in data]
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _first_answer(url: str, process: subprocess.Popen[bytes], body: dict[str, object]) -> int:
    """Poll ``url`` from launch: the status of the first HTTP answer the server gives."""
    deadline = time.monotonic() + DEADLINE_S
    with httpx.Client(timeout=30.0) as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, "marserve exited during start-up"
            try:
                return client.post(url, json=body).status_code
            except httpx.TransportError:
                time.sleep(0.005)
    raise TimeoutError(f"no answer from {url} within {DEADLINE_S}s")


def test_the_port_answers_only_once_the_startup_models_can_serve(
    tmp_path: Path, probe_store: Path
) -> None:
    port = _free_port()
    config = write_config(
        tmp_path / "config.properties",
        model_snapshot=snapshot(
            {"name": "probe", "marName": "probe.mar", "minWorkers": 2, "maxWorkers": 2}
        ),
    )
    text = config.read_text().replace(
        "inference_address=http://127.0.0.1:0", f"inference_address=http://127.0.0.1:{port}"
    )
    config.write_text(text)
    server = start_server(tmp_path, probe_store, config, wait=False)
    try:
        # start_server returns once the port file exists (the port listens): the model serves
        assert server.url == f"http://127.0.0.1:{port}"
        assert server.client.post("/predictions/probe", json={"echo": 1}).status_code == 200
        assert server.client.get("/ping").json() == {"status": "Healthy"}
        describe = httpx.get(f"{server.urls['management']}/models/probe").json()[0]
        assert [w["status"] for w in describe["workers"]] == ["READY", "READY"]
    finally:
        assert server.stop() == 0, server.log()


def test_a_client_polling_from_launch_gets_its_first_answer_from_a_ready_model(
    tmp_path: Path, probe_store: Path
) -> None:
    port = _free_port()
    config = write_config(
        tmp_path / "config.properties",
        model_snapshot=snapshot({"name": "probe", "marName": "probe.mar"}),
    )
    pin_inference_port(config, port)
    pid_file = tmp_path / "marserve.pid"
    command = serve_command(probe_store, "--ts-config", str(config), "--pid-file", str(pid_file))
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/predictions/probe"
        assert _first_answer(url, process, {"echo": 1}) == 200
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def slow_start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    """A server with ``slow``: one READY worker; more workers stay STARTING while ``flag`` is."""
    tmp = tmp_path_factory.mktemp("slow-start")
    flag = tmp / "slow.flag"
    (tmp / "flag.txt").write_text(str(flag))
    handler = tmp / "slow_handler.py"
    handler.write_text(SLOW_START_HANDLER)
    store = tmp / "store"
    store.mkdir()
    weights = tmp / "empty.bin"
    weights.write_bytes(b"")
    run(
        ARCHIVER,
        *("--model-name", "slow", "--version", "1.0", "--serialized-file", weights),
        *("--handler", handler, "--extra-files", tmp / "flag.txt", "--export-path", store),
    )
    config = write_config(
        tmp / "config.properties",
        enable_model_api="true",
        model_snapshot=snapshot({"name": "slow", "marName": "slow.mar", "maxWorkers": 4}),
    )
    server = start_server(tmp, store, config)
    yield server, flag
    flag.unlink(missing_ok=True)
    assert server.stop() == 0, server.log()


def _states(server: RunningServer) -> list[str]:
    describe = httpx.get(f"{server.urls['management']}/models/slow").json()[0]
    return sorted(w["status"] for w in describe["workers"])


def test_scaling_down_stops_the_starting_worker_and_keeps_serving(
    slow_start: tuple[RunningServer, Path],
) -> None:
    server, flag = slow_start
    management = server.urls["management"]
    flag.write_text("slow")
    try:
        scaled = httpx.put(f"{management}/models/slow?min_worker=2&max_worker=2")
        assert scaled.status_code == 202, scaled.text
        deadline = time.monotonic() + DEADLINE_S
        while _states(server) != ["READY", "STARTING"]:
            assert time.monotonic() < deadline, _states(server)
            time.sleep(0.05)
        down = httpx.put(
            f"{management}/models/slow?min_worker=1&max_worker=1&synchronous=true", timeout=60
        )
        assert down.status_code == 200, down.text
        for _ in range(5):
            answer = server.client.post("/predictions/slow", json={})
            assert answer.status_code == 200, answer.text
        assert server.client.get("/ping").status_code == 200
        assert _states(server) == ["READY"]
        describe = httpx.get(f"{management}/models/slow").json()[0]
        assert describe["lastError"] is None  # stopping a loading worker is not a failure
        assert "failed to start" not in server.log()
    finally:
        flag.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory, probe_store: Path) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("readiness-probe")
    config = write_config(
        tmp / "config.properties",
        model_snapshot=snapshot({"name": "probe", "marName": "probe.mar", "responseTimeout": 60}),
    )
    server = start_server(tmp, probe_store, config)
    yield server
    assert server.stop() == 0, server.log()


def test_a_request_during_the_only_workers_restart_waits_for_it(probe: RunningServer) -> None:
    before = probe.worker_pids()
    crashed = probe.client.post("/predictions/probe", json={"exit": True})
    assert crashed.status_code == 500
    # while its successor loads, every readiness endpoint says so, with KServe's codes
    model = probe.client.get("/v1/models/probe")
    assert (model.status_code, model.json()) == (503, {"name": "probe", "ready": False})
    assert probe.client.get("/ping").status_code == 503
    assert probe.client.get("/v2/health/ready").status_code == 503
    # the worker is gone and its successor is loading: this request waits, then runs on it
    answer = probe.client.post("/predictions/probe", json={"echo": "after"}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["echo"] == "after"
    assert answer.json()["pid"] not in before
    assert probe.client.get("/v1/models/probe").json() == {"name": "probe", "ready": True}
    assert probe.client.get("/ping").json() == {"status": "Healthy"}


def test_a_model_scaled_to_zero_is_not_ready_but_the_server_is(
    slow_start: tuple[RunningServer, Path],
) -> None:
    server, _ = slow_start
    management = server.urls["management"]
    try:
        zero = httpx.put(f"{management}/models/slow?min_worker=0&max_worker=0&synchronous=true")
        assert zero.status_code == 200, zero.text
        assert server.client.get("/ping").json() == {"status": "Healthy"}
        assert server.client.get("/v2/health/ready").status_code == 200
        assert server.client.get("/v1/models/slow").status_code == 503
        refused = server.client.post("/predictions/slow", json={})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    finally:
        back = httpx.put(
            f"{management}/models/slow?min_worker=1&max_worker=1&synchronous=true", timeout=60
        )
        assert back.status_code == 200, back.text
    assert server.client.post("/predictions/slow", json={}).status_code == 200
