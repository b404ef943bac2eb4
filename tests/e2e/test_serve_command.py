"""The serve and stop commands with TorchServe's flags; archives from torch-model-archiver."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import EXAMPLE
from tests.e2e.server import pin_inference_port, serve_command, start_server, write_config


def test_torch_model_archiver_mar_is_served_unchanged(tmp_path: Path, ts_mnist_store: Path) -> None:
    config = write_config(tmp_path / "config.properties")
    server = start_server(tmp_path, ts_mnist_store, config, "--models", "mnist=mnist.mar", "--ncs")
    try:
        for digit in (0, 5, 9):
            image = (EXAMPLE / "test_data" / f"{digit}.png").read_bytes()
            response = server.client.post("/predictions/mnist", content=image)
            assert response.status_code == 200, response.text
            assert response.json() == digit
    finally:
        assert server.stop() == 0, server.log()


def test_load_models_all_serves_every_archive(tmp_path: Path, ts_mnist_store: Path) -> None:
    config = write_config(tmp_path / "config.properties", load_models="all")
    server = start_server(tmp_path, ts_mnist_store, config)
    try:
        assert server.client.get("/v1/models").json() == {"models": ["mnist"]}
    finally:
        assert server.stop() == 0, server.log()


def test_start_detaches_and_stop_stops(tmp_path: Path, ts_mnist_store: Path) -> None:
    config = write_config(tmp_path / "config.properties")
    pid_file = tmp_path / "marserve.pid"
    port_file = tmp_path / "ports.json"
    marserve = [sys.executable, "-m", "marserve"]
    started = subprocess.run(
        [
            *marserve,
            "serve",
            "--start",
            "--model-store",
            str(ts_mnist_store),
            "--ts-config",
            str(config),
            "--models",
            "mnist=mnist.mar",
            "--pid-file",
            str(pid_file),
            "--port-file",
            str(port_file),
            "--log-file",
            str(tmp_path / "daemon.log"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 60
    while not port_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    url = json.loads(port_file.read_text())["inference"]
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ping").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    assert httpx.get(f"{url}/ping").json() == {"status": "Healthy"}
    stopped = subprocess.run(
        [*marserve, "stop", "--pid-file", str(pid_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    assert not pid_file.exists()


def test_stop_without_a_server_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "marserve", "stop", "--pid-file", str(tmp_path / "none.pid")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "not running" in result.stderr


def test_bad_config_value_fails_with_a_clear_message(tmp_path: Path, ts_mnist_store: Path) -> None:
    config = tmp_path / "config.properties"
    config.write_text("job_queue_size=ten\n")
    result = subprocess.run(
        serve_command(ts_mnist_store, "--ts-config", str(config)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "job_queue_size" in result.stderr and "ten" in result.stderr


def test_a_port_in_use_is_a_clear_error(tmp_path: Path, ts_mnist_store: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "config.properties")
        pin_inference_port(config, port)
        pid_file = tmp_path / "pid"
        result = subprocess.run(
            serve_command(ts_mnist_store, "--ts-config", str(config), "--pid-file", str(pid_file)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert "cannot serve" in result.stderr and "Traceback" not in result.stderr
