"""Container image: its size, and cold start to first prediction next to ``marserve serve``.

``python -m bench.image [--rounds 3]`` builds the CPU image (deploy/docker/build.sh, cached),
builds the seeds' store, then alternates, round by round, two cold starts to the first
``POST /v1/models/mnist:predict`` that answers 200:

- ``container``: ``podman run`` of the image as KServe runs it (user 1000, read-only root and
  model mount, the runtime's args), timed from the ``podman run`` call;
- ``host``: ``marserve serve --foreground`` on the same store outside any container.

Both print in one table (median and each round, seconds). On a shared machine the figures are
noisy: compare the two rows of one run, not runs on different days.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "deploy" / "docker"
EXAMPLE = ROOT / "examples" / "mnist"
BODY = (EXAMPLE / "requests" / "v1" / "mnist.json").read_bytes()
RUNTIME_ARGS = [
    "torchserve",
    "--start",
    "--model-store=/mnt/models/model-store",
    "--ts-config=/mnt/models/config/config.properties",
    "--disable-token-auth",
]
TIMEOUT_S = 300


def podman(*args: str) -> str:
    cmd = ["podman", "--runtime", "runc", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def ulimits() -> list[str]:
    script = f"source {DOCKER / 'podman.sh'}; printf '%s\\n' \"${{ULIMITS[@]}}\""
    return subprocess.run(
        ["bash", "-c", script], check=True, capture_output=True, text=True
    ).stdout.split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def first_prediction(url: str, started: float) -> float:
    while time.monotonic() - started < TIMEOUT_S:
        try:
            reply = httpx.post(f"{url}/v1/models/mnist:predict", content=BODY, timeout=5)
            if reply.status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"no prediction from {url} within {TIMEOUT_S}s")


def container_start(image: str, store: Path) -> float:
    name = f"marserve-bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    run = ["run", "-d", "--name", name, "--user", "1000", "--read-only", "--cap-drop", "ALL"]
    run += [*ulimits(), "-v", f"{store}:/mnt/models:ro", "-p", f"127.0.0.1:{port}:8080"]
    started = time.monotonic()
    try:
        podman(*run, image, *RUNTIME_ARGS)
        return first_prediction(f"http://127.0.0.1:{port}", started)
    finally:
        subprocess.run(
            ["podman", "--runtime", "runc", "rm", "-f", "-t", "5", name], capture_output=True
        )


def host_start(store: Path, work: Path) -> float:
    port = free_port()
    config = work / "config.properties"
    text = (store / "config" / "config.properties").read_text()
    config.write_text(
        text + f"\ninference_address=http://127.0.0.1:{port}\n"
        f"management_address=http://127.0.0.1:{free_port()}\n"
        f"metrics_address=http://127.0.0.1:{free_port()}\n"
        f"grpc_inference_port={free_port()}\ngrpc_management_port={free_port()}\n"
    )
    cmd = [str(Path(sys.executable).parent / "marserve"), "serve", "--foreground",
           "--model-store", str(store / "model-store"), "--ts-config", str(config),
           "--pid-file", str(work / "pid")]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return first_prediction(f"http://127.0.0.1:{port}", started)
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    build_started = time.monotonic()
    image = subprocess.run(["bash", str(DOCKER / "build.sh")], check=True, capture_output=True,
                           text=True).stdout.split()[-1]  # fmt: skip
    build_s = time.monotonic() - build_started
    size = json.loads(podman("image", "inspect", image))[0]["Size"]
    work = Path(tempfile.mkdtemp(prefix="marserve-bench-image-"))
    try:
        store = work / "models"
        subprocess.run([sys.executable, str(EXAMPLE / "build_store.py"), "--out", str(store)],
                       check=True, capture_output=True)  # fmt: skip
        for path in [work, *work.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        times: dict[str, list[float]] = {"container": [], "host": []}
        for _ in range(rounds):
            times["container"].append(container_start(image, store))
            times["host"].append(host_start(store, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"image {image}: {size / 1e6:.0f} MB (build, cache as found: {build_s:.1f}s)")
    print(f"{'cold start to first prediction':32} {'median s':>9}  rounds")
    for name, values in times.items():
        shown = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:32} {statistics.median(values):9.2f}  {shown}")


if __name__ == "__main__":
    main()
