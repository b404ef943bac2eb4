"""The CPU image built with podman and run as KServe runs it; `make image-test` runs this file.

The image is built by deploy/docker/build.sh (offline, on a debootstrapped base) and started
with the kserve-torchserve runtime's args, user 1000, a read-only root filesystem, all
capabilities dropped and the seeds' model store mounted read-only at /mnt/models.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tc
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
EXAMPLE = ROOT / "examples" / "mnist"
RUNTIME_ARGS = [
    "torchserve",
    "--start",
    "--model-store=/mnt/models/model-store",
    "--ts-config=/mnt/models/config/config.properties",
]
USER_ARGS = ["--disable-token-auth", "--enable-model-api"]
READY_TIMEOUT_S = 180
GRACE_S = 30

pytestmark = pytest.mark.image


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", "--runtime", "runc", *args],
        check=check,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ulimits() -> list[str]:
    script = f"source {DOCKER / 'podman.sh'}; printf '%s\\n' \"${{ULIMITS[@]}}\""
    out = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True)
    return out.stdout.split()


@dataclass
class Container:
    name: str
    ports: dict[int, int]

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"

    def logs(self) -> str:
        out = podman("logs", self.name, check=False)
        return out.stdout + out.stderr


@pytest.fixture(scope="module")
def image() -> str:
    out = subprocess.run(
        ["bash", str(DOCKER / "build.sh")], check=True, capture_output=True, text=True, timeout=900
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def model_root() -> Iterator[Path]:
    """The seeds' store (config/ and model-store/), readable by uid 1000."""
    root = Path(tempfile.mkdtemp(prefix="marserve-image-"))
    try:
        store = root / "models"
        python = str(ROOT / ".venv" / "bin" / "python")
        build = [python, str(EXAMPLE / "build_store.py"), "--out", str(store)]
        subprocess.run(build, check=True, capture_output=True, timeout=300)
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield store
    finally:
        shutil.rmtree(root, ignore_errors=True)


def start(image: str, model_root: Path, *env: str) -> Container:
    name = f"marserve-test-{uuid.uuid4().hex[:10]}"
    ports = (8080, 8081, 8082, 7070, 7071)
    run = ["run", "-d", "--name", name, "--user", "1000", "--read-only"]
    run += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges", *ulimits()]
    run += ["-v", f"{model_root}:/mnt/models:ro"]
    run += [a for p in ports for a in ("-p", f"127.0.0.1::{p}")]
    run += [a for e in env for a in ("-e", e)]
    podman(*run, image, *RUNTIME_ARGS, *USER_ARGS)
    mapped = {}
    for port in ports:
        host = podman("port", name, f"{port}/tcp").stdout.strip().splitlines()[0]
        mapped[port] = int(host.rsplit(":", 1)[1])
    return Container(name, mapped)


def wait_ready(container: Container) -> float:
    started = time.monotonic()
    deadline = started + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(container.url(8080) + "/v1/models/mnist", timeout=2)
            if reply.status_code == 200 and reply.json().get("ready"):
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        state = podman("inspect", "-f", "{{.State.Running}}", container.name, check=False)
        if state.stdout.strip() == "false":
            break
        time.sleep(0.5)
    pytest.fail(f"container never became ready; logs:\n{container.logs()}")


def remove(container: Container) -> None:
    podman("rm", "-f", "-t", "0", container.name, check=False)


@pytest.fixture(scope="module")
def served(image: str, model_root: Path) -> Iterator[Container]:
    container = start(image, model_root, "TS_SERVICE_ENVELOPE=kserve", "PROTOCOL_VERSION=v1")
    try:
        wait_ready(container)
        yield container
    finally:
        remove(container)


def post(container: Container, path: str, body: bytes, timeout: float = 60) -> httpx.Response:
    return httpx.post(container.url(8080) + path, content=body, timeout=timeout)


V1 = (EXAMPLE / "requests" / "v1" / "mnist.json").read_bytes()
V2_TENSOR = (EXAMPLE / "requests" / "v2" / "mnist_v2_tensor.json").read_bytes()
V2_BYTES = (EXAMPLE / "requests" / "v2" / "mnist_v2_bytes.json").read_bytes()


def test_image_config_is_non_root_with_labels_and_healthcheck(image: str) -> None:
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "1000"
    assert config["Labels"]["org.opencontainers.image.title"] == "marserve"
    assert "org.opencontainers.image.version" in config["Labels"]
    exposed = {"8080/tcp", "8081/tcp", "8082/tcp", "7070/tcp", "7071/tcp"}
    assert exposed <= set(config["ExposedPorts"])


def test_no_compilers_in_the_final_image(image: str) -> None:
    probe = "for c in gcc cc g++ c++ make; do command -v $c; done; true"
    out = podman("run", "--rm", *ulimits(), "--entrypoint", "/bin/sh", image, "-c", probe)
    assert out.stdout.strip() == ""


def test_runs_as_uid_1000_on_a_read_only_root(served: Container) -> None:
    assert podman("exec", served.name, "id", "-u").stdout.strip() == "1000"
    touch = podman("exec", served.name, "touch", "/opt/marserve/x", check=False)
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr
    assert podman("healthcheck", "run", served.name, check=False).returncode == 0


def test_v1_predict_and_explain(served: Container) -> None:
    reply = post(served, "/v1/models/mnist:predict", V1)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"predictions": [2]}
    explained = post(served, "/v1/models/mnist:explain", V1, timeout=120)
    assert explained.status_code == 200, explained.text
    assert np.asarray(explained.json()["explanations"]).size == 28 * 28


def test_v2_tensor_and_bytes(served: Container) -> None:
    for body in (V2_TENSOR, V2_BYTES):
        reply = post(served, "/v2/models/mnist/infer", body)
        assert reply.status_code == 200, reply.text
        expected = {"name": "predict", "shape": [1], "datatype": "INT64", "data": [0]}
        assert reply.json()["outputs"] == [expected]


def test_bad_input_is_a_clear_400(served: Container) -> None:
    reply = post(served, "/v2/models/mnist/infer", b'{"inputs": "nope"}')
    assert reply.status_code == 400
    assert "inputs" in reply.text


def test_tritonclient_grpc_on_8081(served: Container) -> None:
    client = tc.InferenceServerClient(f"127.0.0.1:{served.ports[8081]}")
    try:
        assert client.is_model_ready("mnist")
        body = json.loads(V2_TENSOR)["inputs"][0]
        data = np.asarray(body["data"], dtype=np.float32).reshape(body["shape"])
        infer_input = tc.InferInput(body["name"], list(data.shape), "FP32")
        infer_input.set_data_from_numpy(data)
        result = client.infer("mnist", [infer_input])
        assert result.as_numpy("predict").tolist() == [0]
    finally:
        client.close()


def test_metrics_on_8082(served: Container) -> None:
    post(served, "/v1/models/mnist:predict", V1)
    reply = httpx.get(served.url(8082) + "/metrics", timeout=10)
    assert reply.status_code == 200
    names = {family.name for family in text_string_to_metric_families(reply.text)}
    assert "marserve_requests" in names, sorted(names)


def test_logs_go_to_stdout(served: Container) -> None:
    out = podman("logs", served.name)
    assert "mnist" in out.stdout


def test_sigterm_drains_requests_in_flight_then_exits(image: str, model_root: Path) -> None:
    container = start(image, model_root, "PROTOCOL_VERSION=v2")
    try:
        wait_ready(container)
        # 4 x 24 explained rows (within the default job queue of 100): seconds of work, so the
        # requests are still running when the signal comes, however fast the machine.
        instances = json.loads(V1)["instances"] * 24
        body = json.dumps({"instances": instances}).encode()
        with ThreadPoolExecutor(4) as pool:
            flights = [
                pool.submit(post, container, "/v1/models/mnist:explain", body, 120)
                for _ in range(4)
            ]
            time.sleep(0.3)
            assert not any(f.done() for f in flights), "requests finished before SIGTERM"
            sent = time.monotonic()
            podman("kill", "--signal", "TERM", container.name)
            replies = [f.result() for f in flights]
        assert [r.status_code for r in replies] == [200] * 4, [r.text for r in replies]
        waited = podman("wait", container.name, timeout=GRACE_S + 10).stdout.strip()
        assert time.monotonic() - sent < GRACE_S
        assert waited == "0", container.logs()
    finally:
        remove(container)


def test_pngs_as_kserve_bytes_on_v1(served: Container) -> None:
    for digit in (3, 7):
        png = (EXAMPLE / "test_data" / f"{digit}.png").read_bytes()
        body = json.dumps({"instances": [{"data": base64.b64encode(png).decode()}]}).encode()
        assert post(served, "/v1/models/mnist:predict", body).json() == {"predictions": [digit]}
